//! LightGBM text models (`Booster.save_model`, `version=v3` and `v4`).
//!
//! ```text
//! tree
//! version=v4
//! num_class=1
//! num_tree_per_iteration=1
//! max_feature_idx=33
//! objective=binary sigmoid:1
//! feature_names=age tenure_days ...
//! feature_infos=[18:95] ... -1:0:1:2 (a categorical feature's values)
//!
//! Tree=0
//! num_leaves=63
//! split_feature=... threshold=... decision_type=... left_child=... right_child=...
//! leaf_value=... cat_boundaries=... cat_threshold=...
//! ...
//! end of trees
//! ...
//! pandas_categorical:[["a", "b"], ...] or null
//! ```
//! Children `>= 0` are internal nodes, `< 0` the leaf `!child`. Tree `i`
//! adds to class `i % num_tree_per_iteration`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use super::objective::Transform;
use super::{Bitset, Ensemble, FileNode, LgbMissing, Library, Node, Test, Tree, breadth_first};
use crate::model::{Categories, Feature, ModelError};

/// Whether `bytes` look like a LightGBM text model.
pub fn looks_like(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(256)];
    head.starts_with(b"tree\n") || head.starts_with(b"tree\r\n")
}

pub fn ensemble_from_text(path: &Path, bytes: &[u8]) -> Result<Ensemble, ModelError> {
    let invalid = |field: &str, problem: String| ModelError::Invalid {
        path: path.to_path_buf(),
        field: field.to_string(),
        problem,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| {
        invalid(
            "the file",
            format!(
                "is not UTF-8 text (byte {}): not a LightGBM text model",
                e.valid_up_to()
            ),
        )
    })?;

    // Header: key=value lines up to the first `Tree=`.
    let mut lines = text.lines().map(|l| l.trim_end_matches('\r')).peekable();
    let mut header = HashMap::new();
    let mut flags = Vec::new();
    while let Some(&line) = lines.peek() {
        if line.starts_with("Tree=") || line == "end of trees" {
            break;
        }
        lines.next();
        match line.split_once('=') {
            Some((k, v)) => {
                header.insert(k.to_string(), v.to_string());
            }
            None if !line.is_empty() => flags.push(line.to_string()),
            None => {}
        }
    }
    let version = header.get("version").map(String::as_str).unwrap_or("");
    if !matches!(version, "v2" | "v3" | "v4") {
        return Err(invalid(
            "`version`",
            format!("is `{version}`; lakescore reads LightGBM text models v2 to v4"),
        ));
    }
    let get_count = |key: &str| -> Result<usize, ModelError> {
        header
            .get(key)
            .ok_or_else(|| invalid(&format!("`{key}`"), "is missing from the header".into()))?
            .parse()
            .map_err(|_| invalid(&format!("`{key}`"), format!("is `{}`, not a count", header[key])))
    };
    let num_class = get_count("num_class")?;
    let per_iteration = get_count("num_tree_per_iteration")?;
    let n_features = header
        .get("max_feature_idx")
        .and_then(|v| v.parse::<i64>().ok())
        .and_then(|m| usize::try_from(m).ok()?.checked_add(1))
        .filter(|&n| n <= crate::model::MAX_FEATURES)
        .ok_or_else(|| {
            invalid(
                "`max_feature_idx`",
                "is missing, negative or beyond any real table".into(),
            )
        })?;
    if per_iteration == 0 || per_iteration > 1 << 16 {
        return Err(invalid("`num_tree_per_iteration`", format!("is {per_iteration}")));
    }
    let names: Vec<String> = match header.get("feature_names") {
        Some(names) => names.split(' ').map(str::to_string).collect(),
        None => (0..n_features).map(|i| format!("Column_{i}")).collect(),
    };
    if names.len() != n_features {
        return Err(invalid(
            "`feature_names`",
            format!("has {} names for {n_features} features", names.len()),
        ));
    }
    let objective = header.get("objective").map(String::as_str).unwrap_or("regression");
    let transform = transform(objective).map_err(|p| invalid("`objective`", p))?;
    let average_output = flags.iter().any(|f| f == "average_output");

    // Trees.
    let mut trees = Vec::new();
    while let Some(line) = lines.next() {
        if line == "end of trees" {
            break;
        }
        let Some(index) = line.strip_prefix("Tree=") else {
            continue;
        };
        let mut fields = HashMap::new();
        for line in lines.by_ref() {
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once('=') {
                fields.insert(k, v);
            }
        }
        let t = trees.len();
        let nodes = tree_nodes(&fields, n_features).map_err(|p| invalid(&format!("Tree={index}"), p))?;
        trees.push(Tree {
            group: t % per_iteration,
            nodes,
        });
    }
    if trees.len() % per_iteration != 0 {
        return Err(invalid(
            "the trees",
            format!(
                "{} trees is not a whole number of iterations of {per_iteration}",
                trees.len()
            ),
        ));
    }
    let n_groups = per_iteration;
    if num_class > 1 && num_class != n_groups {
        return Err(invalid(
            "`num_class`",
            format!("is {num_class}, but there are {n_groups} trees per iteration"),
        ));
    }

    let categories = pandas_categories(text, &header, n_features).map_err(|p| invalid("`pandas_categorical`", p))?;
    let features = names
        .into_iter()
        .zip(categories)
        .map(|(name, categories)| Feature {
            name,
            missing_value: f64::NAN,
            categories,
        })
        .collect();
    let iterations = trees.len() / per_iteration;
    Ok(Ensemble {
        library: Library::LightGBM,
        features,
        trees,
        n_groups,
        base_margin: vec![0.0; n_groups],
        average_over: (average_output && iterations > 0).then_some(iterations),
        transform,
        aggregate: Default::default(),
    })
}

/// The objective line (`binary sigmoid:1`, `multiclass num_class:4`, ...)
/// -> the output transform, as LightGBM's `ConvertOutput`.
fn transform(objective: &str) -> Result<Transform, String> {
    let mut words = objective.split(' ');
    let name = words.next().unwrap_or("");
    let params: HashMap<&str, &str> = words.filter_map(|w| w.split_once(':')).collect();
    let has_flag = |flag: &str| objective.split(' ').skip(1).any(|w| w == flag);
    let sigmoid = || -> Result<f64, String> {
        match params.get("sigmoid") {
            Some(v) => v.parse().map_err(|_| format!("has sigmoid `{v}`, not a number")),
            None => Ok(1.0),
        }
    };
    Ok(match name {
        "binary" | "multiclassova" | "multiova" | "ova" => Transform::LgbSigmoid { sigmoid: sigmoid()? },
        "cross_entropy" | "xentropy" => Transform::LgbSigmoid { sigmoid: 1.0 },
        "multiclass" | "softmax" => Transform::LgbSoftmax,
        "cross_entropy_lambda" | "xentlambda" => Transform::LgbLogOnePlusExp,
        "poisson" | "gamma" | "tweedie" => Transform::LgbExp,
        "regression"
        | "regression_l2"
        | "l2"
        | "mean_squared_error"
        | "mse"
        | "l2_root"
        | "root_mean_squared_error"
        | "rmse"
        | "regression_l1"
        | "l1"
        | "mean_absolute_error"
        | "mae"
        | "fair"
        | "quantile"
        | "mape"
        | "mean_absolute_percentage_error" => {
            if has_flag("sqrt") {
                Transform::LgbSquare
            } else {
                Transform::Identity
            }
        }
        // Huber ignores `sqrt` (its ConvertOutput is the identity).
        "huber" => Transform::Identity,
        "lambdarank" | "rank_xendcg" | "xendcg" | "xe_ndcg" | "xe_ndcg_mart" | "xendcg_mart" | "custom" | "none" => {
            Transform::Identity
        }
        other => return Err(format!("is `{other}`, which lakescore does not know")),
    })
}

fn tree_nodes(fields: &HashMap<&str, &str>, n_features: usize) -> Result<Vec<Node>, String> {
    if fields.get("is_linear").is_some_and(|v| v.trim() != "0") {
        return Err(
            "is a linear tree (`linear_tree=true`): lakescore does not support linear trees; \
             retrain without linear_tree"
                .into(),
        );
    }
    let num_leaves: usize = fields
        .get("num_leaves")
        .and_then(|v| v.parse().ok())
        .ok_or("has no valid `num_leaves`")?;
    let leaf_value = parse_list::<f64>(fields, "leaf_value")?;
    if leaf_value.len() != num_leaves || num_leaves == 0 {
        return Err(format!("has {} leaf values for {num_leaves} leaves", leaf_value.len()));
    }
    if num_leaves == 1 {
        return Ok(vec![Node::Leaf { value: leaf_value[0] }]);
    }
    let n_internal = num_leaves - 1;
    let split_feature = parse_list::<usize>(fields, "split_feature")?;
    let threshold = parse_list::<f64>(fields, "threshold")?;
    let decision_type = parse_list::<u8>(fields, "decision_type")?;
    let left = parse_list::<i64>(fields, "left_child")?;
    let right = parse_list::<i64>(fields, "right_child")?;
    for (name, len) in [
        ("split_feature", split_feature.len()),
        ("threshold", threshold.len()),
        ("decision_type", decision_type.len()),
        ("left_child", left.len()),
        ("right_child", right.len()),
    ] {
        if len != n_internal {
            return Err(format!("`{name}` has {len} entries for {n_internal} splits"));
        }
    }
    let num_cat: usize = fields.get("num_cat").and_then(|v| v.parse().ok()).unwrap_or(0);
    let (cat_boundaries, cat_threshold) = if num_cat > 0 {
        (
            parse_list::<usize>(fields, "cat_boundaries")?,
            parse_list::<u32>(fields, "cat_threshold")?,
        )
    } else {
        (Vec::new(), Vec::new())
    };

    // References: `>= 0` internal node, `< 0` leaf `!c`.
    let key = |reference: i64| {
        if reference < 0 {
            n_internal.saturating_add((!reference) as usize)
        } else {
            reference as usize
        }
    };
    breadth_first(0i64, n_internal + num_leaves, key, |reference| {
        if reference < 0 {
            let leaf = (!reference) as usize;
            let value = *leaf_value
                .get(leaf)
                .ok_or_else(|| format!("refers to leaf {leaf} of {num_leaves}"))?;
            return Ok(FileNode::Leaf(value));
        }
        let i = reference as usize;
        if i >= n_internal {
            return Err(format!("refers to split {i} of {n_internal}"));
        }
        let feature = split_feature[i];
        if feature >= n_features {
            return Err(format!("split {i} uses feature {feature} of {n_features}"));
        }
        let d = decision_type[i];
        let test = if d & 1 == 1 {
            // The threshold of a categorical split is the index of its
            // category set: a whole number, below the number of sets.
            let k = threshold[i];
            let words = (k >= 0.0 && k.fract() == 0.0 && k < cat_boundaries.len() as f64)
                .then_some(k as usize)
                .and_then(|k| cat_boundaries.get(k).zip(cat_boundaries.get(k.checked_add(1)?)))
                .and_then(|(&a, &b)| cat_threshold.get(a..b))
                .ok_or_else(|| format!("split {i} refers to category set {k}, which `cat_boundaries` lacks"))?;
            Test::LgbCategory {
                left_set: Bitset(words.to_vec()),
            }
        } else {
            Test::LgbLessEq {
                threshold: threshold[i],
                default_left: d & 2 == 2,
                missing: match (d >> 2) & 3 {
                    0 => LgbMissing::None,
                    1 => LgbMissing::Zero,
                    2 => LgbMissing::NaN,
                    other => return Err(format!("split {i} has missing type {other}")),
                },
            }
        };
        Ok(FileNode::Split {
            feature,
            test,
            left: left[i],
            right: right[i],
        })
    })
}

fn parse_list<T: std::str::FromStr>(fields: &HashMap<&str, &str>, key: &str) -> Result<Vec<T>, String> {
    let text = fields.get(key).ok_or_else(|| format!("has no `{key}`"))?;
    text.split(' ')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| format!("`{key}` has `{s}`, not a number")))
        .collect()
}

/// `pandas_categorical:[[...], ...]` (the Python package's record of the
/// category columns it trained on, in column order) paired with the
/// categorical features, which `feature_infos` marks with a value list
/// (`-1:0:3`) instead of a range (`[0:1]`).
fn pandas_categories(
    text: &str,
    header: &HashMap<String, String>,
    n_features: usize,
) -> Result<Vec<Option<Arc<Categories>>>, String> {
    let mut out = vec![None; n_features];
    let Some(json) = text
        .lines()
        .rev()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix("pandas_categorical:"))
    else {
        return Ok(out);
    };
    let lists = match serde_json::from_str::<Value>(json) {
        // No category columns: categorical features hold their codes.
        Ok(Value::Null) => return Ok(out),
        Ok(Value::Array(lists)) if lists.is_empty() => return Ok(out),
        Ok(Value::Array(lists)) => lists,
        _ => return Err("is not a JSON list of category lists".into()),
    };
    // A categorical feature's info lists the category codes it saw
    // (`0:1:3`); a numeric one a range (`[0:1]`), an unused one `none`.
    let infos: Vec<&str> = header
        .get("feature_infos")
        .map(|i| i.split(' ').collect())
        .unwrap_or_default();
    if infos.len() != n_features {
        return Err(format!(
            "needs `feature_infos` with one entry per feature ({n_features}), found {}",
            infos.len()
        ));
    }
    let categorical: Vec<(usize, &str)> = infos
        .iter()
        .enumerate()
        .filter(|(_, info)| !info.starts_with('[') && **info != "none")
        .map(|(i, info)| (i, *info))
        .collect();
    if categorical.len() != lists.len() {
        return Err(format!(
            "lists {} category columns, but the model has {} categorical features",
            lists.len(),
            categorical.len()
        ));
    }
    for ((feature, info), list) in categorical.into_iter().zip(lists) {
        let Value::Array(values) = list else {
            return Err(format!("the entry for feature {feature} is not a list"));
        };
        // Every code the feature was trained on must name a category, or the
        // lists are paired with the wrong features.
        let beyond = info
            .split(':')
            .filter_map(|c| c.parse::<i64>().ok())
            .find(|&c| c >= values.len() as i64);
        if let Some(code) = beyond {
            return Err(format!(
                "has {} categories for feature {feature}, which was trained on code {code}",
                values.len()
            ));
        }
        let categories = if values.iter().all(Value::is_string) {
            Categories::from_strings(
                values
                    .iter()
                    .map(|v| v.as_str().unwrap_or_default().to_string())
                    .collect(),
            )
        } else if let Some(numbers) = values.iter().map(Value::as_f64).collect::<Option<Vec<_>>>() {
            Categories::from_numbers(numbers)
        } else {
            return Err(format!(
                "the categories of feature {feature} mix strings and numbers or hold other values"
            ));
        };
        out[feature] = Some(Arc::new(categories));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objective_lines() {
        assert_eq!(
            transform("binary sigmoid:1").unwrap(),
            Transform::LgbSigmoid { sigmoid: 1.0 }
        );
        assert_eq!(
            transform("binary sigmoid:0.5").unwrap(),
            Transform::LgbSigmoid { sigmoid: 0.5 }
        );
        assert_eq!(transform("multiclass num_class:4").unwrap(), Transform::LgbSoftmax);
        assert_eq!(transform("regression sqrt").unwrap(), Transform::LgbSquare);
        assert_eq!(transform("regression").unwrap(), Transform::Identity);
        assert_eq!(
            transform("tweedie tweedie_variance_power:1.5").unwrap(),
            Transform::LgbExp
        );
        assert!(transform("made_up").unwrap_err().contains("made_up"));
    }
}
