//! Random tree ensembles of a given shape, for the evaluator's tests and
//! benchmarks: the evaluator must agree with [`Ensemble::reference_margins`]
//! on any ensemble, not only on those a library happened to train.

use super::objective::Transform;
use super::{Aggregate, Bitset, Ensemble, LgbMissing, Library, Node, OnnxRule, Test, Tree};
use crate::datagen::Rng;
use crate::model::Feature;

/// The shape of a random ensemble.
#[derive(Debug, Clone)]
pub struct Shape {
    pub library: Library,
    pub n_trees: usize,
    pub n_features: usize,
    pub n_groups: usize,
    /// Leaves per tree.
    pub leaves: usize,
    /// Grow every leaf of a level before the next (XGBoost's depth-wise
    /// trees: `leaves` should be a power of two) or split a random leaf each
    /// time (LightGBM's leaf-wise trees, deep and unbalanced).
    pub balanced: bool,
    /// Share of splits that are categorical.
    pub categorical_share: f64,
    /// This many distinct thresholds per feature (as float32 too), drawn
    /// once per feature, as trained models have few: XGBoost's `hist`
    /// method cuts each feature into at most 256 bins. `None`: every
    /// threshold drawn afresh.
    pub distinct_thresholds: Option<usize>,
    pub seed: u64,
}

/// Feature values, feature-major: standard normal, `nan_share` of them NaN;
/// a fifth on the threshold grid (see [`random_ensemble`]) or one float32 or
/// float64 step beside it, where `<` and `<=` and the roundings differ; small
/// integers (categories) in features divisible by 5, with probes that
/// categorical rules treat specially (-0.5, 2.5, 2^24, 1e10, ±inf).
pub fn random_rows(n_rows: usize, n_features: usize, nan_share: f64, seed: u64) -> Vec<f64> {
    const PROBES: [f64; 7] = [
        -0.5,
        2.5,
        16_777_216.0,
        16_777_217.0,
        1e10,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ];
    let mut rng = Rng::new(seed);
    let mut values = Vec::with_capacity(n_rows * n_features);
    for j in 0..n_features {
        for _ in 0..n_rows {
            let u = rng.uniform();
            let v = if u < nan_share {
                f64::NAN
            } else if j % 5 == 0 {
                if rng.uniform() < 0.05 {
                    PROBES[rng.below(PROBES.len() as u64) as usize]
                } else {
                    (rng.uniform() * 12.0).floor() - 1.0
                }
            } else if u < nan_share + 0.2 {
                let on_grid = grid_value(&mut rng);
                match rng.below(5) {
                    0 => on_grid,
                    1 => f64::from((on_grid as f32).next_up()),
                    2 => f64::from((on_grid as f32).next_down()),
                    3 => on_grid.next_up(),
                    _ => on_grid.next_down(),
                }
            } else {
                rng.normal(0.0, 1.0)
            };
            values.push(v);
        }
    }
    values
}

/// A multiple of 1/4 around 0: thresholds and values meet there.
fn grid_value(rng: &mut Rng) -> f64 {
    (rng.normal(0.0, 1.0) * 4.0).round() / 4.0
}

/// [`random_ensemble`], and for ONNX also the same trees taking the
/// smallest and the largest leaf (`MIN`, `MAX`; base margin 0), so that a
/// test covers every way leaves combine.
pub fn random_ensembles_every_aggregate(shape: &Shape) -> Vec<Ensemble> {
    let ensemble = random_ensemble(shape);
    let mut ensembles = Vec::new();
    if shape.library == Library::Onnx {
        for aggregate in [Aggregate::Min, Aggregate::Max] {
            let mut e = ensemble.clone();
            e.aggregate = aggregate;
            e.base_margin = vec![0.0; e.n_groups];
            ensembles.push(e);
        }
    }
    ensembles.push(ensemble);
    ensembles
}

pub fn random_ensemble(shape: &Shape) -> Ensemble {
    let mut rng = Rng::new(shape.seed);
    let grids: Vec<Vec<f64>> = match shape.distinct_thresholds {
        Some(n) => (0..shape.n_features)
            .map(|_| {
                // Exactly n distinct values (as float32 too), half of them on
                // the grid the rows also meet while it has room.
                let mut grid: Vec<f64> = Vec::with_capacity(n);
                while grid.len() < n.max(1) {
                    let t = threshold(&mut rng);
                    if !grid.iter().any(|&g| g as f32 == t as f32) {
                        grid.push(t);
                    }
                }
                grid
            })
            .collect(),
        None => Vec::new(),
    };
    let trees = (0..shape.n_trees)
        .map(|t| Tree {
            group: t % shape.n_groups,
            nodes: random_tree(shape, &grids, &mut rng),
        })
        .collect();
    Ensemble {
        library: shape.library,
        features: (0..shape.n_features)
            .map(|j| Feature {
                name: format!("f{j}"),
                missing_value: f64::NAN,
                categories: None,
            })
            .collect(),
        trees,
        n_groups: shape.n_groups,
        base_margin: vec![0.25; shape.n_groups],
        average_over: None,
        transform: Transform::Identity,
        aggregate: Default::default(),
    }
}

/// `grids`: each feature's thresholds, when they are limited.
fn random_tree(shape: &Shape, grids: &[Vec<f64>], rng: &mut Rng) -> Vec<Node> {
    // Grow as a list of leaves, then renumber breadth-first.
    #[derive(Clone)]
    enum Grow {
        Leaf,
        Split(usize, Test, usize, usize),
    }
    let mut nodes = vec![Grow::Leaf];
    let mut open = vec![0usize];
    while open.len() < shape.leaves.max(1) {
        let pick = if shape.balanced {
            0
        } else {
            rng.below(open.len() as u64) as usize
        };
        let at = open.remove(pick);
        let feature = rng.below(shape.n_features as u64) as usize;
        let categorical = rng.uniform() < shape.categorical_share;
        let grid = grids.get(feature).map(Vec::as_slice);
        let test = random_test(shape.library, categorical, grid, rng);
        let (l, r) = (nodes.len(), nodes.len() + 1);
        nodes.push(Grow::Leaf);
        nodes.push(Grow::Leaf);
        nodes[at] = Grow::Split(feature, test, l, r);
        open.push(l);
        open.push(r);
    }
    let mut out = Vec::with_capacity(nodes.len());
    let mut queue = std::collections::VecDeque::from([0usize]);
    while let Some(i) = queue.pop_front() {
        match &nodes[i] {
            Grow::Leaf => out.push(Node::Leaf {
                value: match shape.library {
                    Library::XGBoost | Library::Onnx => (rng.normal(0.0, 1.0) * 0.1) as f32 as f64,
                    Library::LightGBM => rng.normal(0.0, 1.0) * 0.1,
                },
            }),
            Grow::Split(feature, test, l, r) => {
                let first = out.len() + queue.len() + 1;
                out.push(Node::Split {
                    feature: *feature,
                    test: test.clone(),
                    left: first,
                    right: first + 1,
                });
                queue.push_back(*l);
                queue.push_back(*r);
            }
        }
    }
    out
}

/// Half on the grid that [`random_rows`] also draws from, half anywhere.
fn threshold(rng: &mut Rng) -> f64 {
    if rng.uniform() < 0.5 {
        grid_value(rng)
    } else {
        rng.normal(0.0, 1.0)
    }
}

/// `grid`: the feature's thresholds, when they are limited.
fn random_test(library: Library, categorical: bool, grid: Option<&[f64]>, rng: &mut Rng) -> Test {
    let draw_threshold = |rng: &mut Rng| match grid {
        Some(grid) => grid[rng.below(grid.len() as u64) as usize],
        None => threshold(rng),
    };
    let default_left = rng.uniform() < 0.5;
    let set = |rng: &mut Rng| Bitset::from_categories((0..12).filter(|_| rng.uniform() < 0.4).collect::<Vec<_>>());
    match (library, categorical) {
        (Library::XGBoost, false) => Test::XgbLess {
            threshold: draw_threshold(rng) as f32,
            default_left,
        },
        (Library::XGBoost, true) => Test::XgbCategory {
            right_set: set(rng),
            default_left,
        },
        (Library::LightGBM, false) => Test::LgbLessEq {
            threshold: draw_threshold(rng),
            default_left,
            missing: [LgbMissing::None, LgbMissing::Zero, LgbMissing::NaN][rng.below(3) as usize],
        },
        (Library::LightGBM, true) => Test::LgbCategory { left_set: set(rng) },
        (Library::Onnx, false) => Test::OnnxCompare {
            rule: [OnnxRule::Leq, OnnxRule::Lt, OnnxRule::Gte, OnnxRule::Gt][rng.below(4) as usize],
            threshold: draw_threshold(rng) as f32,
            missing_left: default_left,
        },
        (Library::Onnx, true) => Test::OnnxMember {
            values: (0..1 + rng.below(3)).map(|_| grid_value(rng) as f32).collect(),
            member_left: rng.uniform() < 0.5,
            missing_left: default_left,
        },
    }
}
