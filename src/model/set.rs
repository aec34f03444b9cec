//! Several models scored in one pass: a champion and its challengers read one
//! feature block (each feature column decoded once, shared by every model
//! that reads it), and each adds its own score columns.
//!
//! A [`ModelSet`] is itself a [`Model`], so the pipeline runs it like any
//! other. Columns that no model reads but something watching the scores needs
//! (an evaluation's label) ride along as extra features, and a [`ScoreTap`]
//! sees every block's scores next to them.

use std::sync::Arc;

use super::{Feature, FeatureBlock, Model, ModelError, ModelInfo, Scores};
use crate::util::sha256_hex;

/// Something that watches a [`ModelSet`]'s scores as they are computed:
/// `extras` holds the values of the set's extra features (feature-major, as
/// in [`FeatureBlock`]), `scores` every model's outputs, in set order.
pub trait ScoreTap: Send + Sync {
    fn tap(&self, extras: &FeatureBlock, scores: &[Vec<f32>]) -> Result<(), ModelError>;
}

/// Models that share one feature block.
pub struct ModelSet {
    info: ModelInfo,
    models: Vec<Box<dyn Model>>,
    /// Every model's features and then the extras, each (column, missing
    /// value, categories) once.
    features: Vec<Feature>,
    /// The table column each of `features` reads.
    columns: Vec<String>,
    /// Per model, the position in `features` of each of its features.
    picks: Vec<Vec<usize>>,
    /// The positions of the extra features.
    extras: Vec<usize>,
    /// The model whose features lead the block in order (the champion's
    /// do): it takes the block itself, cut after them, without a copy.
    takes_block: Option<usize>,
    tap: Option<Arc<dyn ScoreTap>>,
}

impl std::fmt::Debug for ModelSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelSet")
            .field(
                "models",
                &self.models.iter().map(|m| &m.info().name).collect::<Vec<_>>(),
            )
            .field("features", &self.features.len())
            .finish()
    }
}

impl ModelSet {
    /// The set of `models`, each with the table column each of its features
    /// reads (a package may map a feature to a column of another name); the
    /// first is the champion, whose identity the set takes, with a digest of
    /// every model's bytes as its own. `extras` are read from the columns of
    /// their names; `tap` watches the scores.
    pub fn new(
        models: Vec<(Box<dyn Model>, Vec<String>)>,
        extras: Vec<Feature>,
        tap: Option<Arc<dyn ScoreTap>>,
    ) -> ModelSet {
        assert!(!models.is_empty(), "a model set needs a model");
        let mut features: Vec<Feature> = Vec::new();
        let mut columns: Vec<String> = Vec::new();
        // Which model added each entry (extras: none).
        let mut owners: Vec<usize> = Vec::new();
        // One entry per (column, missing value, categories): models that read
        // a column alike share its values. A model's own features stay apart
        // (so that the champion's lead the block, one entry each). NaN (the
        // usual missing value) is not equal to itself: compare bits.
        let mut position_of = |feature: &Feature, column: &str, owner: usize| {
            let shared = (0..features.len()).find(|&i| {
                owners[i] != owner
                    && columns[i] == column
                    && features[i].missing_value.to_bits() == feature.missing_value.to_bits()
                    && features[i].categories == feature.categories
            });
            shared.unwrap_or_else(|| {
                features.push(feature.clone());
                columns.push(column.to_string());
                owners.push(owner);
                features.len() - 1
            })
        };
        let picks: Vec<Vec<usize>> = models
            .iter()
            .enumerate()
            .map(|(k, (m, reads))| {
                assert_eq!(m.features().len(), reads.len(), "a column per feature");
                m.features()
                    .iter()
                    .zip(reads)
                    .map(|(f, c)| position_of(f, c, k))
                    .collect()
            })
            .collect();
        let extras = extras.iter().map(|f| position_of(f, &f.name, usize::MAX)).collect();
        let models: Vec<Box<dyn Model>> = models.into_iter().map(|(m, _)| m).collect();
        let mut info = models[0].info().clone();
        if models.len() > 1 {
            let identities: Vec<String> = models
                .iter()
                .map(|m| format!("{} {}", m.info().name, m.info().sha256))
                .collect();
            info.sha256 = sha256_hex(identities.join("\n").as_bytes());
        }
        let leads = |p: &Vec<usize>| p.iter().enumerate().all(|(i, &j)| i == j);
        let takes_block = picks.iter().position(leads);
        ModelSet {
            info,
            models,
            features,
            columns,
            picks,
            extras,
            takes_block,
            tap,
        }
    }

    /// The table column each of [`Model::features`] reads.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }
}

/// The rows of `block` for the features at `positions`, as a block of its own.
fn pick(block: &FeatureBlock, positions: &[usize]) -> FeatureBlock {
    let n = block.n_rows;
    let mut values = Vec::with_capacity(n * positions.len());
    for &j in positions {
        values.extend_from_slice(&block.values[j * n..(j + 1) * n]);
    }
    FeatureBlock {
        n_rows: n,
        n_features: positions.len(),
        values,
    }
}

impl Model for ModelSet {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn info_mut(&mut self) -> &mut ModelInfo {
        &mut self.info
    }

    fn features(&self) -> &[Feature] {
        &self.features
    }

    fn n_outputs(&self) -> usize {
        self.models.iter().map(|m| m.n_outputs()).sum()
    }

    fn predict(&self, block: FeatureBlock) -> Result<Scores, ModelError> {
        let n_rows = block.n_rows;
        let extras = self.tap.as_ref().map(|_| pick(&block, &self.extras));
        let mut outputs = Vec::with_capacity(self.n_outputs());
        // The block is feature-major, so its first features are a prefix:
        // the model that reads them takes the block, last.
        let takes_block = self.takes_block;
        let mut block = Some(block);
        let mut by_model: Vec<Option<Vec<Vec<f32>>>> = vec![None; self.models.len()];
        for (k, model) in self.models.iter().enumerate() {
            if Some(k) == takes_block {
                continue;
            }
            let own = pick(block.as_ref().expect("taken last"), &self.picks[k]);
            by_model[k] = Some(model.predict(own)?.outputs);
        }
        if let Some(k) = takes_block {
            let mut own = block.take().expect("not yet taken");
            own.n_features = self.picks[k].len();
            own.values.truncate(own.n_features * n_rows);
            by_model[k] = Some(self.models[k].predict(own)?.outputs);
        }
        for scores in by_model {
            outputs.extend(scores.expect("every model predicted"));
        }
        if let (Some(tap), Some(extras)) = (&self.tap, extras) {
            tap.tap(&extras, &outputs)?;
        }
        Ok(Scores { n_rows, outputs })
    }

    fn members(&self) -> Vec<&ModelInfo> {
        self.models.iter().map(|m| m.info()).collect()
    }

    fn cpu_kernels(&self) -> Option<String> {
        let each: Vec<String> = self
            .models
            .iter()
            .filter_map(|m| Some(format!("{}: {}", m.info().name, m.cpu_kernels()?)))
            .collect();
        (!each.is_empty()).then(|| each.join("; "))
    }

    fn output_range(&self) -> Option<(f64, f64)> {
        let mut hull: Option<(f64, f64)> = None;
        for model in &self.models {
            let (lo, hi) = model.output_range()?;
            hull = Some(match hull {
                Some((a, b)) => (a.min(lo), b.max(hi)),
                None => (lo, hi),
            });
        }
        hull
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelFormat;
    use std::sync::Mutex;

    /// A model whose one output is the sum of its features.
    #[derive(Debug)]
    struct Sum {
        info: ModelInfo,
        features: Vec<Feature>,
    }

    fn sum(name: &str, columns: &[&str]) -> Box<dyn Model> {
        Box::new(Sum {
            info: ModelInfo {
                name: name.into(),
                version: None,
                format: ModelFormat::Linear,
                path: name.into(),
                sha256: format!("{name}-bytes"),
                registry: None,
            },
            features: columns
                .iter()
                .map(|c| Feature {
                    name: c.to_string(),
                    missing_value: f64::NAN,
                    categories: None,
                })
                .collect(),
        })
    }

    impl Model for Sum {
        fn info(&self) -> &ModelInfo {
            &self.info
        }
        fn info_mut(&mut self) -> &mut ModelInfo {
            &mut self.info
        }
        fn features(&self) -> &[Feature] {
            &self.features
        }
        fn n_outputs(&self) -> usize {
            1
        }
        fn predict(&self, block: FeatureBlock) -> Result<Scores, ModelError> {
            let n = block.n_rows;
            let out = (0..n)
                .map(|i| (0..block.n_features).map(|j| block.values[j * n + i]).sum::<f64>() as f32)
                .collect();
            Ok(Scores {
                n_rows: n,
                outputs: vec![out],
            })
        }
    }

    /// A block's extras and scores, as a tap saw them.
    type Sighting = (Vec<f64>, Vec<Vec<f32>>);

    #[derive(Default)]
    struct Seen(Mutex<Vec<Sighting>>);

    impl ScoreTap for Seen {
        fn tap(&self, extras: &FeatureBlock, scores: &[Vec<f32>]) -> Result<(), ModelError> {
            self.0.lock().unwrap().push((extras.values.clone(), scores.to_vec()));
            Ok(())
        }
    }

    #[test]
    fn shared_features_are_read_once_and_each_model_sees_its_own() {
        let seen = Arc::new(Seen::default());
        let label = Feature {
            name: "label".into(),
            missing_value: f64::NAN,
            categories: None,
        };
        // The challenger's package maps its feature `b2` to column `b`.
        let columns = |c: &[&str]| c.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        let set = ModelSet::new(
            vec![
                (sum("champion", &["a", "b"]), columns(&["a", "b"])),
                (sum("challenger", &["b2", "c"]), columns(&["b", "c"])),
            ],
            vec![label],
            Some(seen.clone()),
        );
        assert_eq!(set.columns(), ["a", "b", "c", "label"]);
        let names: Vec<&str> = set.features().iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "label"]);
        assert_eq!(set.n_outputs(), 2);
        assert_ne!(
            set.info().sha256,
            "champion-bytes",
            "the set's digest covers every model"
        );
        // Two rows: a = 1,2; b = 10,20; c = 100,200; label = 0,1.
        let block = FeatureBlock {
            n_rows: 2,
            n_features: 4,
            values: vec![1.0, 2.0, 10.0, 20.0, 100.0, 200.0, 0.0, 1.0],
        };
        let scores = set.predict(block).unwrap();
        assert_eq!(scores.outputs, vec![vec![11.0, 22.0], vec![110.0, 220.0]]);
        let seen = seen.0.lock().unwrap();
        assert_eq!(seen[0].0, vec![0.0, 1.0]);
        assert_eq!(seen[0].1, scores.outputs);
    }
}
