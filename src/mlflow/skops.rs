//! The LightGBM booster inside a skops file, which is how MLflow saves a
//! scikit-learn-API LightGBM model (`LGBMClassifier`, `LGBMRegressor`) by
//! default. A skops file is a zip archive whose `schema.json` describes the
//! object tree; LightGBM's `Booster` keeps its model as text in its state
//! (`_handle`, what `Booster.__getstate__` stores: `model_to_string()`).
//! Only that JSON is read: nothing in the archive is executed or
//! unpickled.

use std::io::{Cursor, Read};

use serde_json::Value;

/// The most of `schema.json` read: a booster's text with thousands of trees
/// is tens of megabytes; more is not a model.
const SCHEMA_LIMIT: u64 = 1 << 30;

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
        .take(SCHEMA_LIMIT)
        .read_to_string(&mut schema)
        .map_err(|e| format!("has a `schema.json` that cannot be read: {e}"))?;
    if schema.len() as u64 >= SCHEMA_LIMIT {
        return Err(format!("has a `schema.json` larger than {SCHEMA_LIMIT} bytes"));
    }
    let schema: Value =
        serde_json::from_str(&schema).map_err(|e| format!("has a `schema.json` that is not JSON: {e}"))?;
    let root_class = schema.get("__class__").and_then(Value::as_str).unwrap_or("");
    let root_module = schema.get("__module__").and_then(Value::as_str).unwrap_or("");
    if root_module != "lightgbm.sklearn" || !root_class.starts_with("LGBM") {
        return Err(format!(
            "holds a `{root_module}.{root_class}`, not one of LightGBM's scikit-learn models"
        ));
    }
    let booster = schema
        .pointer("/content/content/_Booster")
        .filter(|b| is_booster(b))
        .ok_or("holds no `lightgbm.basic.Booster` where LightGBM keeps it (`_Booster`)")?;
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

/// Whether an object node is a `lightgbm.basic.Booster`.
fn is_booster(node: &Value) -> bool {
    node.get("__class__").and_then(Value::as_str) == Some("Booster")
        && node.get("__module__").and_then(Value::as_str) == Some("lightgbm.basic")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_booster_is_where_lightgbm_keeps_it() {
        let schema = serde_json::json!({
            "__class__": "LGBMClassifier", "__module__": "lightgbm.sklearn",
            "content": {"content": {"_Booster": {
                "__class__": "Booster", "__module__": "lightgbm.basic",
                "content": {"content": {"_handle": {
                    "__class__": "str", "content": "\"tree\\nversion=v4\\n\"", "is_json": true
                }}}
            }}}
        });
        let booster = schema.pointer("/content/content/_Booster").unwrap();
        assert!(is_booster(booster));
        assert!(!is_booster(&schema));
        assert_eq!(
            booster.pointer("/content/content/_handle/content"),
            Some(&Value::String("\"tree\\nversion=v4\\n\"".into()))
        );
    }

    #[test]
    fn the_fixture_gives_the_booster_lightgbm_saved() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mlflow");
        let skops = std::fs::read(root.join("lightgbm/model.skops")).unwrap();
        let saved = std::fs::read_to_string(root.join("raw/lightgbm.txt")).unwrap();
        let text = lightgbm_booster_text(&skops).unwrap();
        // The same trees; save_model adds nothing before the parameters.
        assert_eq!(text.split("end of trees").next(), saved.split("end of trees").next());
    }

    #[test]
    fn what_is_not_a_skops_archive_says_so() {
        assert!(!is_skops(b"tree\nversion=v4"));
        assert!(lightgbm_booster_text(b"PK\x03\x04 broken").unwrap_err().contains("zip"));
    }
}
