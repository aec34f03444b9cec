//! XGBoost models as `Booster.save_model` writes them (xgboost 1.7 to 3.x):
//! JSON, or the same document in UBJSON (`.ubj`).
//!
//! The document: `learner.learner_model_param` (base score, classes,
//! targets), `learner.objective.name`, `learner.feature_names`/`feature_types`,
//! and `learner.gradient_booster`: `gbtree` with `model.trees` and
//! `model.tree_info` (each tree's output group), or `dart` wrapping a gbtree
//! plus `weight_drop` (each tree's weight). xgboost ≥ 3.1 also stores the
//! training categories of categorical features in `model.cats`.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use super::objective::Transform;
use super::{Bitset, Ensemble, FileNode, Library, Node, Test, Tree, breadth_first};
use crate::model::{Categories, Feature, ModelError};

/// Parses XGBoost's JSON, which is not quite JSON: xgboost 1.7 and 2.x write
/// bare `NaN` and `Infinity` (categorical splits' conditions). Those tokens,
/// outside strings, become strings that [`numbers_f32`] reads back.
pub fn parse_json(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    match serde_json::from_slice(bytes) {
        Ok(value) => Ok(value),
        Err(first) => {
            let mut fixed = Vec::with_capacity(bytes.len() + 64);
            let (mut in_string, mut escaped, mut changed) = (false, false, false);
            let mut i = 0;
            while i < bytes.len() {
                let b = bytes[i];
                if in_string {
                    fixed.push(b);
                    match (escaped, b) {
                        (true, _) => escaped = false,
                        (false, b'\\') => escaped = true,
                        (false, b'"') => in_string = false,
                        _ => {}
                    }
                    i += 1;
                    continue;
                }
                if b == b'"' {
                    in_string = true;
                }
                let token = [&b"-Infinity"[..], b"Infinity", b"NaN", b"-nan", b"nan", b"-inf", b"inf"]
                    .into_iter()
                    .find(|t| bytes[i..].starts_with(t));
                match token {
                    Some(t) => {
                        fixed.push(b'"');
                        fixed.extend_from_slice(t);
                        fixed.push(b'"');
                        i += t.len();
                        changed = true;
                    }
                    None => {
                        fixed.push(b);
                        i += 1;
                    }
                }
            }
            if !changed {
                return Err(first);
            }
            serde_json::from_slice(&fixed)
        }
    }
}

/// More output groups than this is a corrupt file, not a model.
const MAX_GROUPS: usize = 1 << 16;

/// Reads an XGBoost JSON or UBJSON document (already decoded).
pub fn ensemble_from_document(path: &Path, document: &Value) -> Result<Ensemble, ModelError> {
    let invalid = |field: &str, problem: String| ModelError::Invalid {
        path: path.to_path_buf(),
        field: format!("`{field}`"),
        problem,
    };
    let learner = document
        .get("learner")
        .ok_or_else(|| invalid("learner", "is missing: not an XGBoost model".into()))?;
    let param = learner
        .get("learner_model_param")
        .ok_or_else(|| invalid("learner.learner_model_param", "is missing".into()))?;
    let objective_name = learner
        .pointer("/objective/name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("learner.objective.name", "is missing".into()))?;

    let num_class = count_param(param, "num_class").map_err(|p| invalid("learner_model_param.num_class", p))?;
    let num_target = count_param(param, "num_target").map_err(|p| invalid("learner_model_param.num_target", p))?;
    let num_feature = count_param(param, "num_feature").map_err(|p| invalid("learner_model_param.num_feature", p))?;
    let n_groups = num_class.max(num_target).max(1);
    if n_groups > MAX_GROUPS {
        return Err(invalid(
            "learner_model_param.num_class",
            format!("asks for {n_groups} outputs"),
        ));
    }
    if num_feature > crate::model::MAX_FEATURES {
        return Err(invalid(
            "learner_model_param.num_feature",
            format!(
                "is {num_feature}, more than lakescore reads ({})",
                crate::model::MAX_FEATURES
            ),
        ));
    }
    // From xgboost 2.0 the right child is always read as left + 1.
    let major_version = document.pointer("/version/0").and_then(Value::as_u64).unwrap_or(1);

    let booster = learner
        .get("gradient_booster")
        .ok_or_else(|| invalid("learner.gradient_booster", "is missing".into()))?;
    let booster_name = booster.get("name").and_then(Value::as_str).unwrap_or("");
    // DART's tree weights sit beside the gbtree (xgboost <= 3.2), beside
    // `model` (3.3, where the booster is named gbtree) or inside it (3.4).
    let model = match booster_name {
        "gbtree" => booster.get("model"),
        "dart" => booster.pointer("/gbtree/model").or_else(|| booster.get("model")),
        "gblinear" => {
            return Err(invalid(
                "gradient_booster.name",
                "is `gblinear`: linear boosters are not supported; export its weights as a linear model".into(),
            ));
        }
        other => {
            return Err(invalid(
                "gradient_booster.name",
                format!("is `{other}`; expected gbtree or dart"),
            ));
        }
    };
    let weight_drop = booster
        .get("weight_drop")
        .or_else(|| model.and_then(|m| m.get("weight_drop")));
    let weights = match weight_drop {
        Some(w) => Some(
            numbers_f32(Some(w))
                .ok_or_else(|| invalid("gradient_booster.weight_drop", "must be a list of numbers".into()))?,
        ),
        None if booster_name == "dart" => {
            return Err(invalid(
                "gradient_booster.weight_drop",
                "is missing from a DART model".into(),
            ));
        }
        None => None,
    };
    let model = model.ok_or_else(|| invalid("gradient_booster.model", "is missing".into()))?;
    let trees_json = model
        .get("trees")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("gradient_booster.model.trees", "is missing".into()))?;
    let tree_info = integers(model.get("tree_info"))
        .ok_or_else(|| invalid("gradient_booster.model.tree_info", "must be a list of integers".into()))?;
    if tree_info.len() != trees_json.len() {
        return Err(invalid(
            "gradient_booster.model.tree_info",
            format!("has {} entries for {} trees", tree_info.len(), trees_json.len()),
        ));
    }
    if let Some(weights) = &weights
        && weights.len() != trees_json.len()
    {
        return Err(invalid(
            "gradient_booster.weight_drop",
            format!("has {} weights for {} trees", weights.len(), trees_json.len()),
        ));
    }

    // Trees take their place from their `id`, when they have one.
    let mut order: Vec<usize> = (0..trees_json.len()).collect();
    let ids: Option<Vec<u64>> = trees_json.iter().map(|t| t.get("id").and_then(Value::as_u64)).collect();
    if let Some(ids) = ids {
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        if sorted.iter().enumerate().any(|(i, &id)| id != i as u64) {
            return Err(invalid(
                "gradient_booster.model.trees",
                "have ids that are not 0..n, each once".into(),
            ));
        }
        order.sort_by_key(|&t| ids[t]);
    }
    let mut trees = Vec::with_capacity(trees_json.len());
    for (position, &t) in order.iter().enumerate() {
        let tree = &trees_json[t];
        let t = position;
        let group = usize::try_from(tree_info[t])
            .ok()
            .filter(|&g| g < n_groups)
            .ok_or_else(|| {
                invalid(
                    "gradient_booster.model.tree_info",
                    format!("puts tree {t} in group {}, but the model has {n_groups}", tree_info[t]),
                )
            })?;
        let weight = weights.as_ref().map(|w| w[t]);
        let nodes = tree_nodes(tree, weight, num_feature, major_version >= 2)
            .map_err(|problem| invalid(&format!("learner.gradient_booster.model.trees[{t}]"), problem))?;
        trees.push(Tree { group, nodes });
    }

    let (transform, link) = objective(objective_name).ok_or_else(|| {
        invalid(
            "learner.objective.name",
            format!("is `{objective_name}`, which lakescore does not know"),
        )
    })?;
    let base_score = base_score(param).map_err(|p| invalid("learner_model_param.base_score", p))?;
    let base_margin: Vec<f64> = match base_score.len() {
        1 => vec![link.margin(base_score[0]) as f64; n_groups],
        n if n == n_groups => base_score.iter().map(|&b| link.margin(b) as f64).collect(),
        n => {
            return Err(invalid(
                "learner_model_param.base_score",
                format!("has {n} values for {n_groups} outputs"),
            ));
        }
    };

    let features = features(learner, model, num_feature).map_err(|(field, problem)| invalid(&field, problem))?;
    Ok(Ensemble {
        library: Library::XGBoost,
        features,
        trees,
        n_groups,
        base_margin,
        average_over: None,
        transform,
        aggregate: Default::default(),
    })
}

/// `"3"` (as XGBoost writes its parameters) or `3`.
fn count_param(param: &Value, key: &str) -> Result<usize, String> {
    match param.get(key) {
        None => Ok(0),
        Some(Value::String(s)) => s.parse().map_err(|_| format!("is `{s}`, not a count")),
        Some(v) => v
            .as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| format!("is `{v}`, not a count")),
    }
}

/// `"5E-1"` (xgboost < 3), `"[5E-1]"` or `"[1E0,2E0]"` (3.x, one per target).
fn base_score(param: &Value) -> Result<Vec<f32>, String> {
    let text = match param.get("base_score") {
        None => return Ok(vec![0.5]),
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => return Err(format!("is `{other}`, not a number")),
    };
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(&text);
    inner
        .split(',')
        .map(|s| {
            s.trim()
                .parse::<f32>()
                .map_err(|_| format!("is `{text}`, not a number or list of numbers"))
        })
        .collect()
}

/// Base score (response space) -> margin, per objective.
#[derive(Debug, Clone, Copy)]
enum Link {
    Identity,
    Logit,
    Log,
}

impl Link {
    /// XGBoost's `ProbToMargin`, in float32.
    fn margin(self, base_score: f32) -> f32 {
        match self {
            Link::Identity => base_score,
            Link::Logit => {
                // xgboost >= 3.2 clamps the base score into (0, 1) first.
                const RT_EPS: f32 = 1e-6;
                let b = base_score.clamp(RT_EPS, 1.0 - RT_EPS);
                -(1.0f32 / b - 1.0f32).ln()
            }
            Link::Log => base_score.ln(),
        }
    }
}

fn objective(name: &str) -> Option<(Transform, Link)> {
    Some(match name {
        "binary:logistic" | "reg:logistic" => (Transform::XgbSigmoid, Link::Logit),
        // logitraw's base score is already a margin (ProbToMargin is the identity).
        "binary:logitraw" => (Transform::Identity, Link::Identity),
        "binary:hinge" => (Transform::XgbHinge, Link::Identity),
        "reg:squarederror"
        | "reg:linear"
        | "reg:squaredlogerror"
        | "reg:pseudohubererror"
        | "reg:absoluteerror"
        | "reg:quantileerror" => (Transform::Identity, Link::Identity),
        "reg:tweedie" | "reg:gamma" | "count:poisson" | "survival:cox" => (Transform::XgbExp, Link::Log),
        "survival:aft" => (Transform::XgbExpInDouble, Link::Log),
        "multi:softprob" => (Transform::XgbSoftmax, Link::Identity),
        "multi:softmax" => (Transform::XgbArgmax, Link::Identity),
        name if name.starts_with("rank:") => (Transform::Identity, Link::Identity),
        _ => return None,
    })
}

/// The features: names (`f0`, `f1`, ... when the model has none), and for
/// categorical features the training categories when the model stores them.
fn features(learner: &Value, model: &Value, num_feature: usize) -> Result<Vec<Feature>, (String, String)> {
    let names: Vec<String> = match learner.get("feature_names").and_then(Value::as_array) {
        Some(names) if !names.is_empty() => names
            .iter()
            .map(|n| n.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| ("learner.feature_names".to_string(), "must be strings".to_string()))?,
        _ => (0..num_feature).map(|i| format!("f{i}")).collect(),
    };
    if names.len() != num_feature {
        return Err((
            "learner.feature_names".into(),
            format!("has {} names for {num_feature} features", names.len()),
        ));
    }
    let categorical: Vec<bool> = match learner.get("feature_types").and_then(Value::as_array) {
        Some(types) if !types.is_empty() => types.iter().map(|t| t.as_str() == Some("c")).collect(),
        _ => vec![false; num_feature],
    };
    let categories = stored_categories(model, num_feature).map_err(|p| ("gradient_booster.model.cats".into(), p))?;
    Ok(names
        .into_iter()
        .enumerate()
        .map(|(i, name)| Feature {
            name,
            missing_value: f64::NAN,
            categories: if categorical.get(i).copied().unwrap_or(false) {
                categories.get(i).cloned().flatten()
            } else {
                None
            },
        })
        .collect())
}

/// `model.cats` (xgboost ≥ 3.1): per feature, `enc[i]` holds its training
/// categories, strings as `{"offsets", "values"}` (UTF-8 bytes) or numbers as
/// `{"type", "values"}`; a category's code is its position.
fn stored_categories(model: &Value, num_feature: usize) -> Result<Vec<Option<Arc<Categories>>>, String> {
    let Some(enc) = model.pointer("/cats/enc").and_then(Value::as_array) else {
        return Ok(vec![None; num_feature]);
    };
    if enc.is_empty() {
        return Ok(vec![None; num_feature]);
    }
    if enc.len() != num_feature {
        return Err(format!(
            "has categories for {} features, the model has {num_feature}",
            enc.len()
        ));
    }
    enc.iter()
        .enumerate()
        .map(|(i, feature)| {
            let values = feature.get("values").and_then(Value::as_array);
            match (feature.get("offsets").and_then(Value::as_array), values) {
                (_, None) => Ok(None),
                (_, Some(v)) if v.is_empty() => Ok(None),
                (Some(offsets), Some(values)) => {
                    // UTF-8 bytes, written as signed int8 by xgboost.
                    let bytes: Vec<u8> = values
                        .iter()
                        .map(|b| b.as_i64().filter(|b| (-128..=255).contains(b)).map(|b| b as u8))
                        .collect::<Option<_>>()
                        .ok_or_else(|| format!("enc[{i}].values must be bytes"))?;
                    let offsets: Vec<usize> = offsets
                        .iter()
                        .map(|o| o.as_u64().map(|o| o as usize))
                        .collect::<Option<_>>()
                        .ok_or_else(|| format!("enc[{i}].offsets must be integers"))?;
                    let names = offsets
                        .windows(2)
                        .map(|w| {
                            bytes
                                .get(w[0]..w[1])
                                .and_then(|b| String::from_utf8(b.to_vec()).ok())
                                .ok_or_else(|| format!("enc[{i}] has an invalid string at offsets {}..{}", w[0], w[1]))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    let mut categories = Categories::from_strings(names);
                    categories.unknown_is_error = true;
                    Ok(Some(Arc::new(categories)))
                }
                (None, Some(values)) => {
                    let numbers: Vec<f64> = values
                        .iter()
                        .map(Value::as_f64)
                        .collect::<Option<_>>()
                        .ok_or_else(|| format!("enc[{i}].values must be numbers"))?;
                    let mut categories = Categories::from_numbers(numbers);
                    categories.unknown_is_error = true;
                    Ok(Some(Arc::new(categories)))
                }
            }
        })
        .collect()
}

/// A tree's nodes from its column arrays, renumbered breadth-first from the
/// root (so children follow parents and deleted nodes, which no split
/// reaches, drop out). `weight` is the DART weight, applied to each leaf in
/// float32 as XGBoost does.
fn tree_nodes(
    tree: &Value,
    weight: Option<f32>,
    num_feature: usize,
    right_is_left_plus_one: bool,
) -> Result<Vec<Node>, String> {
    let field = |name: &str| tree.get(name).ok_or_else(|| format!("has no `{name}`"));
    let leaf_vector = tree
        .pointer("/tree_param/size_leaf_vector")
        .map(|v| match v {
            Value::String(s) => s.parse::<usize>().unwrap_or(0),
            other => other.as_u64().unwrap_or(0) as usize,
        })
        .unwrap_or(0);
    if leaf_vector > 1 {
        return Err(format!(
            "has vector leaves ({leaf_vector} values per leaf, multi_strategy=\"multi_output_tree\"), \
             which lakescore does not support; train with the default one_output_per_tree"
        ));
    }
    let left = integers(Some(field("left_children")?)).ok_or("`left_children` must be integers")?;
    let right = integers(Some(field("right_children")?)).ok_or("`right_children` must be integers")?;
    let split_index = integers(Some(field("split_indices")?)).ok_or("`split_indices` must be integers")?;
    let condition = numbers_f32(Some(field("split_conditions")?)).ok_or("`split_conditions` must be numbers")?;
    let default_left = integers(Some(field("default_left")?)).ok_or("`default_left` must be 0/1 values")?;
    let n = left.len();
    let split_type = match tree.get("split_type") {
        Some(v) => integers(Some(v)).ok_or("`split_type` must be integers")?,
        None => vec![0; n],
    };
    for (name, len) in [
        ("right_children", right.len()),
        ("split_indices", split_index.len()),
        ("split_conditions", condition.len()),
        ("default_left", default_left.len()),
        ("split_type", split_type.len()),
    ] {
        if len != n {
            return Err(format!("`{name}` has {len} entries, `left_children` {n}"));
        }
    }
    if n == 0 {
        return Err("has no nodes".into());
    }
    // Categorical splits: node -> the categories that go right.
    let mut right_sets = std::collections::HashMap::new();
    if split_type.contains(&1) {
        let list = |name: &str| match tree.get(name) {
            None => Err(format!("has categorical splits but no `{name}`")),
            Some(v) => integers(Some(v)).ok_or_else(|| format!("`{name}` must be integers")),
        };
        let (nodes, segments) = (list("categories_nodes")?, list("categories_segments")?);
        let (sizes, categories) = (list("categories_sizes")?, list("categories")?);
        if segments.len() != nodes.len() || sizes.len() != nodes.len() {
            return Err("`categories_nodes`, `categories_segments` and `categories_sizes` differ in length".into());
        }
        for k in 0..nodes.len() {
            let range = usize::try_from(segments[k])
                .ok()
                .zip(usize::try_from(sizes[k]).ok())
                .and_then(|(start, size)| Some(start..start.checked_add(size)?));
            let set = range
                .and_then(|range| categories.get(range))
                .ok_or_else(|| format!("categorical node {} reads past `categories`", nodes[k]))?;
            let set = set
                .iter()
                .map(|&c| u32::try_from(c).map_err(|_| format!("category {c} is not a valid category")))
                .collect::<Result<Vec<_>, _>>()?;
            // Categories at or beyond 2^24 never match in XGBoost (such
            // input goes left), so they are left out of the set.
            let set = set.into_iter().filter(|&c| (c as f32) < super::XGB_MAX_CATEGORY);
            let node = usize::try_from(nodes[k]).map_err(|_| format!("categorical node {} is not a node", nodes[k]))?;
            right_sets.insert(node, Bitset::from_categories(set));
        }
    }

    breadth_first(
        0usize,
        n,
        |i| i,
        |i| {
            if left[i] == -1 {
                let value = match weight {
                    Some(w) => condition[i] * w,
                    None => condition[i],
                };
                return Ok(FileNode::Leaf(value as f64));
            }
            let child = |c: i64| {
                usize::try_from(c)
                    .ok()
                    .filter(|&c| c < n)
                    .ok_or_else(|| format!("node {i} has child {c}, out of range"))
            };
            let left_child = child(left[i])?;
            // What xgboost >= 2 reads, whatever `right_children` says.
            let right_child = if right_is_left_plus_one {
                child(left[i] + 1)?
            } else {
                child(right[i])?
            };
            let feature = usize::try_from(split_index[i])
                .ok()
                .filter(|&f| f < num_feature)
                .ok_or_else(|| {
                    format!(
                        "node {i} splits on feature {}, but the model has {num_feature}",
                        split_index[i]
                    )
                })?;
            let default_left = default_left[i] != 0;
            let test = match split_type[i] {
                0 => Test::XgbLess {
                    threshold: condition[i],
                    default_left,
                },
                1 => Test::XgbCategory {
                    right_set: right_sets
                        .remove(&i)
                        .ok_or_else(|| format!("categorical node {i} has no categories"))?,
                    default_left,
                },
                other => return Err(format!("node {i} has split type {other}")),
            };
            Ok(FileNode::Split {
                feature,
                test,
                left: left_child,
                right: right_child,
            })
        },
    )
}

fn integers(value: Option<&Value>) -> Option<Vec<i64>> {
    value?
        .as_array()?
        .iter()
        .map(|v| match v {
            Value::Bool(b) => Some(*b as i64),
            other => other.as_i64(),
        })
        .collect()
}

/// Numbers as float32; non-finite values arrive as strings from UBJSON.
fn numbers_f32(value: Option<&Value>) -> Option<Vec<f32>> {
    value?
        .as_array()?
        .iter()
        .map(|v| match v {
            Value::String(s) => match s.as_str() {
                "NaN" | "nan" | "-nan" => Some(f32::NAN),
                "Infinity" | "inf" => Some(f32::INFINITY),
                "-Infinity" | "-inf" => Some(f32::NEG_INFINITY),
                _ => None,
            },
            other => other.as_f64().map(|x| x as f32),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_score_in_each_version_format() {
        let p = |s: &str| base_score(&serde_json::json!({ "base_score": s })).unwrap();
        assert_eq!(p("5E-1"), vec![0.5]);
        assert_eq!(p("[2.79625E-1]"), vec![0.279625]);
        assert_eq!(p("[1E0,2E0,3E0]"), vec![1.0, 2.0, 3.0]);
        assert!(base_score(&serde_json::json!({ "base_score": "x" })).is_err());
    }

    #[test]
    fn bare_nan_and_infinity_tokens_are_read() {
        let v = parse_json(br#"{"a": [NaN, -Infinity, 1.5], "s": "NaN inside a string", "t": "x\"NaN"}"#).unwrap();
        assert_eq!(numbers_f32(v.get("a")).unwrap()[1], f32::NEG_INFINITY);
        assert!(numbers_f32(v.get("a")).unwrap()[0].is_nan());
        assert_eq!(v["s"], "NaN inside a string");
        assert!(parse_json(b"{not json").is_err());
    }

    #[test]
    fn logit_link_matches_float32_math() {
        assert_eq!(Link::Logit.margin(0.5), 0.0);
        let b = 0.279625f32;
        assert_eq!(Link::Logit.margin(b), -(1.0f32 / b - 1.0).ln());
        assert_eq!(Link::Log.margin(1.0), 0.0);
    }
}
