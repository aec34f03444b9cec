//! Objectives: how a tree ensemble's raw margin becomes its prediction, in
//! the library's own precision (XGBoost float32, LightGBM float64), and how
//! XGBoost's base score becomes a margin.

/// Margin -> prediction, per row over its output groups.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transform {
    /// Regression, ranking, `binary:logitraw`: the margin itself.
    Identity,
    /// XGBoost `binary:logistic`, `reg:logistic`: float32 sigmoid.
    XgbSigmoid,
    /// XGBoost `binary:hinge`: 1 when the margin is positive, else 0.
    XgbHinge,
    /// XGBoost `reg:tweedie`, `reg:gamma`, `count:poisson`, `survival:cox`,
    /// float32 exp.
    XgbExp,
    /// XGBoost `survival:aft` (xgboost >= 2.1 builds): exp in double, as float32.
    XgbExpInDouble,
    /// XGBoost `multi:softprob`: float32 softmax across groups.
    XgbSoftmax,
    /// XGBoost `multi:softmax`: the index of the largest margin.
    XgbArgmax,
    /// LightGBM `binary` and `cross_entropy` (sigmoid 1): `1 / (1 + exp(-sigmoid * x))`.
    LgbSigmoid { sigmoid: f64 },
    /// LightGBM `multiclass`: softmax across classes.
    LgbSoftmax,
    /// LightGBM `cross_entropy_lambda`: `log(1 + exp(x))`.
    LgbLogOnePlusExp,
    /// LightGBM `poisson`, `gamma`, `tweedie`: `exp(x)`.
    LgbExp,
    /// LightGBM regression trained with `reg_sqrt`: `sign(x) * x * x`.
    LgbSquare,
}

impl Transform {
    /// The range every transformed score lies in, where the transform bounds it.
    pub fn range(self, n_groups: usize) -> Option<(f64, f64)> {
        match self {
            Transform::XgbSigmoid | Transform::XgbHinge | Transform::XgbSoftmax => Some((0.0, 1.0)),
            Transform::LgbSigmoid { .. } | Transform::LgbSoftmax => Some((0.0, 1.0)),
            Transform::XgbArgmax => Some((0.0, n_groups.saturating_sub(1) as f64)),
            Transform::XgbExp | Transform::XgbExpInDouble | Transform::LgbExp | Transform::LgbLogOnePlusExp => {
                Some((0.0, f64::INFINITY))
            }
            Transform::Identity | Transform::LgbSquare => None,
        }
    }

    /// Columns of the prediction for `n_groups` margin groups.
    pub fn n_outputs(self, n_groups: usize) -> usize {
        match self {
            Transform::XgbArgmax => 1,
            _ => n_groups,
        }
    }

    /// Applies the transform to row-major `margins` (`n_rows` x `n_groups`),
    /// returning one column per output.
    pub fn apply(self, margins: &[f64], n_rows: usize, n_groups: usize) -> Vec<Vec<f32>> {
        let n_out = self.n_outputs(n_groups);
        let mut columns = vec![Vec::with_capacity(n_rows); n_out];
        let mut row_out = vec![0.0f64; n_out];
        for row in margins.chunks_exact(n_groups) {
            self.apply_row(row, &mut row_out);
            for (column, &v) in columns.iter_mut().zip(&row_out) {
                column.push(v as f32);
            }
        }
        columns
    }

    /// The prediction of one row, into `out` (`n_outputs` values).
    pub fn apply_row(self, margin: &[f64], out: &mut [f64]) {
        match self {
            Transform::Identity => out.copy_from_slice(margin),
            Transform::XgbSigmoid => each(margin, out, |x| xgb_sigmoid(x as f32) as f64),
            Transform::XgbHinge => each(margin, out, |x| if x as f32 > 0.0 { 1.0 } else { 0.0 }),
            Transform::XgbExp => each(margin, out, |x| (x as f32).exp() as f64),
            Transform::XgbExpInDouble => each(margin, out, |x| ((x as f32) as f64).exp() as f32 as f64),
            Transform::XgbSoftmax => xgb_softmax(margin, out),
            Transform::XgbArgmax => {
                // XGBoost keeps the first of equal maxima.
                let mut best = 0;
                for (k, &x) in margin.iter().enumerate() {
                    if (x as f32) > (margin[best] as f32) {
                        best = k;
                    }
                }
                out[0] = best as f64;
            }
            Transform::LgbSigmoid { sigmoid } => each(margin, out, |x| 1.0 / (1.0 + (-sigmoid * x).exp())),
            Transform::LgbSoftmax => {
                let max = margin.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let mut sum = 0.0;
                for (o, &x) in out.iter_mut().zip(margin) {
                    *o = (x - max).exp();
                    sum += *o;
                }
                out.iter_mut().for_each(|o| *o /= sum);
            }
            Transform::LgbLogOnePlusExp => each(margin, out, |x| x.exp().ln_1p()),
            Transform::LgbExp => each(margin, out, f64::exp),
            // LightGBM's `Common::Sign` is an integer: 0 for ±0.
            Transform::LgbSquare => each(margin, out, |x| {
                let sign = f64::from(i32::from(x > 0.0) - i32::from(x < 0.0));
                sign * x * x
            }),
        }
    }
}

fn each(margin: &[f64], out: &mut [f64], f: impl Fn(f64) -> f64) {
    for (o, &x) in out.iter_mut().zip(margin) {
        *o = f(x);
    }
}

/// XGBoost's `common::Sigmoid` (src/common/math.h), float32 throughout.
pub fn xgb_sigmoid(x: f32) -> f32 {
    const EPS: f32 = 1e-16;
    let x = (-x).min(88.7);
    let denominator = x.exp() + 1.0 + EPS;
    1.0 / denominator
}

/// XGBoost's `common::Softmax` of float32 margins (held as f64), into `out`:
/// float32 exponentials, summed in double, divided in float32. No
/// allocation: it runs once per row.
pub fn xgb_softmax(margin: &[f64], out: &mut [f64]) {
    let max = margin.iter().fold(margin[0] as f32, |m, &x| m.max(x as f32));
    let mut sum = 0.0f64;
    for (o, &x) in out.iter_mut().zip(margin) {
        let e = (x as f32 - max).exp();
        sum += e as f64;
        *o = e as f64;
    }
    let sum = sum as f32;
    out.iter_mut().for_each(|o| *o = (*o as f32 / sum) as f64);
}

/// Columns of the raw margins.
pub fn margin_columns(margins: &[f64], n_rows: usize, n_groups: usize) -> Vec<Vec<f32>> {
    (0..n_groups)
        .map(|g| (0..n_rows).map(|r| margins[r * n_groups + g] as f32).collect())
        .collect()
}
