//! The LightGBM booster inside a skops file, which is how MLflow saves a
//! scikit-learn-API LightGBM model (`LGBMClassifier`, `LGBMRegressor`) by
//! default. A skops file is a zip archive whose `schema.json` describes the
//! object tree; LightGBM's `Booster` keeps its model as text in its state
//! (`_handle`, what `Booster.__getstate__` stores: `model_to_string()`).
//! Only that JSON is read: nothing in the archive is executed or
//! unpickled.

use std::io::{Cursor, Read};

use serde_json::Value;

/// Whether `bytes` is a zip archive (what a skops file is).
pub fn is_skops(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04")
}

/// The text model of the LightGBM booster in a skops archive, or why it has
/// none.
pub fn lightgbm_booster_text(bytes: &[u8]) -> Result<String, String> {
    let mut archive =
        zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| format!("is not a readable zip archive: {e}"))?;
    let mut schema = String::new();
    archive
        .by_name("schema.json")
        .map_err(|e| format!("has no readable `schema.json`: {e}"))?
        .read_to_string(&mut schema)
        .map_err(|e| format!("has a `schema.json` that cannot be read: {e}"))?;
    let schema: Value =
        serde_json::from_str(&schema).map_err(|e| format!("has a `schema.json` that is not JSON: {e}"))?;
    let booster = find_booster(&schema).ok_or("holds no `lightgbm.basic.Booster` with a model")?;
    let handle = booster
        .pointer("/content/content/_handle")
        .ok_or("holds a Booster without its model (`_handle`)")?;
    // A string node keeps its value JSON-encoded (`"\"tree\\nversion=v4…\""`).
    let text = match handle.get("content") {
        Some(Value::String(encoded)) if handle.get("is_json") == Some(&Value::Bool(true)) => {
            serde_json::from_str::<String>(encoded)
                .map_err(|e| format!("holds a Booster model that is not a string: {e}"))?
        }
        Some(Value::String(text)) => text.clone(),
        _ => return Err("holds a Booster whose model is not text".into()),
    };
    if !text.starts_with("tree\n") {
        return Err("holds a Booster whose model is not LightGBM's text format".into());
    }
    Ok(text)
}

/// The first node of class `lightgbm.basic.Booster` in the object tree.
fn find_booster(node: &Value) -> Option<&Value> {
    match node {
        Value::Object(map) => {
            let is_booster = map.get("__class__").and_then(Value::as_str) == Some("Booster")
                && map.get("__module__").and_then(Value::as_str) == Some("lightgbm.basic");
            if is_booster {
                return Some(node);
            }
            map.values().find_map(find_booster)
        }
        Value::Array(items) => items.iter().find_map(find_booster),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_booster_text_is_found_in_the_object_tree() {
        let schema = serde_json::json!({
            "__class__": "LGBMClassifier", "__module__": "lightgbm.sklearn",
            "content": {"content": {"_Booster": {
                "__class__": "Booster", "__module__": "lightgbm.basic",
                "content": {"content": {"_handle": {
                    "__class__": "str", "content": "\"tree\\nversion=v4\\n\"", "is_json": true
                }}}
            }}}
        });
        assert_eq!(
            find_booster(&schema).and_then(|b| b.pointer("/content/content/_handle/content")),
            Some(&Value::String("\"tree\\nversion=v4\\n\"".into()))
        );
        assert!(find_booster(&serde_json::json!({"a": [1, {"b": 2}]})).is_none());
    }

    #[test]
    fn what_is_not_a_skops_archive_says_so() {
        assert!(!is_skops(b"tree\nversion=v4"));
        assert!(lightgbm_booster_text(b"PK\x03\x04 broken").unwrap_err().contains("zip"));
    }
}
