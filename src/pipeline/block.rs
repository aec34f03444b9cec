//! One block of rows, after decoding: the contract's look at the features as
//! they came, fill values, quarantined rows set aside, the model, the
//! contract's look at the scores, and the output columns. The pass's workers
//! (row groups of files) and the in-memory [`crate::scorer::Scorer`] (Arrow
//! batches) both go through these steps, so a block scores the same either
//! way.

use super::row_policies::{drop_rows, fill_missing, flags_column};
use super::*;

/// What every block of a pass goes through, fixed for the pass.
pub(crate) struct BlockSteps<'a> {
    pub contract: &'a Contract,
    pub model: &'a dyn Model,
    /// (feature, fill value) of features whose missing value is not NaN.
    pub fills: &'a [(usize, f64)],
    /// (feature, missing value) of categorical features.
    pub unknown_fills: &'a [(usize, f64)],
    /// The output has the flags column.
    pub flags: bool,
    /// How many score columns are published; the rest (a shadow run's
    /// challengers) go to the shadow table.
    pub published_scores: usize,
}

/// A block's output: the published columns (ids, scores, flags), and the
/// shadow table's rows (ids, then the challengers' scores) when the pass
/// shadows.
pub(crate) struct BlockOutput {
    pub columns: Vec<ArrayRef>,
    pub shadow: Option<Vec<ArrayRef>>,
}

impl BlockSteps<'_> {
    /// Checks and profiles the block's features as they came (NaN for every
    /// missing value: rules count real nulls), rows `first_row..` of work
    /// unit `unit`, marking the rows row rules act on; then replaces missing
    /// values by the model's fill values.
    pub fn inspect_features(
        &self,
        block: &mut FeatureBlock,
        inspection: &mut Inspection,
        unit: usize,
        first_row: usize,
        marks: &mut RowMarks,
    ) {
        inspection.inspect_features(self.contract, block, unit, first_row, marks);
        fill_missing(block, self.fills, self.unknown_fills, |j| inspection.batch_nulls(j));
    }

    /// The block without its quarantined rows, and which rows were kept
    /// (`None`: all of them).
    pub fn set_aside_quarantined(&self, block: FeatureBlock, marks: &RowMarks) -> (FeatureBlock, Option<BooleanArray>) {
        if !marks.any_quarantined {
            return (block, None);
        }
        let keep = BooleanArray::from_iter(marks.quarantined.iter().map(|&q| Some(!q)));
        (drop_rows(block, &marks.quarantined), Some(keep))
    }

    /// The model's scores for the block, one column per output, checked in
    /// shape (then for the caller to inspect: the pass times the two apart).
    pub fn score(&self, block: FeatureBlock) -> Result<Vec<Vec<f32>>> {
        predict_checked(self.model, block)
    }

    /// The output columns of a block of `n_rows` input rows: the id columns
    /// (without quarantined rows), the scores, the flags.
    pub fn output(
        &self,
        ids: &[ArrayRef],
        keep: Option<&BooleanArray>,
        scores: Vec<Vec<f32>>,
        marks: &RowMarks,
        n_rows: usize,
    ) -> Result<BlockOutput, arrow::error::ArrowError> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(ids.len() + scores.len() + 1);
        for id in ids {
            columns.push(match keep {
                Some(keep) => arrow::compute::filter(id, keep)?,
                None => Arc::clone(id),
            });
        }
        let mut scores: Vec<ArrayRef> = scores
            .into_iter()
            .map(|s| Arc::new(Float32Array::from(s)) as ArrayRef)
            .collect();
        let shadow = (scores.len() > self.published_scores).then(|| {
            let mut shadow = columns.clone();
            shadow.extend(scores.drain(self.published_scores..));
            shadow
        });
        columns.extend(scores);
        if self.flags {
            columns.push(flags_column(marks, self.contract, n_rows));
        }
        Ok(BlockOutput { columns, shadow })
    }
}

/// The model's scores for a block, checked to be one column per output of one
/// score per row.
fn predict_checked(model: &dyn Model, block: FeatureBlock) -> Result<Vec<Vec<f32>>> {
    let n_rows = block.n_rows;
    let scores = model.predict(block)?;
    if scores.n_rows != n_rows
        || scores.outputs.len() != model.n_outputs()
        || scores.outputs.iter().any(|o| o.len() != n_rows)
    {
        return Err(Error::Internal(format!(
            "model `{}` returned {} outputs of {:?} rows for {n_rows} rows",
            model.info().name,
            scores.outputs.len(),
            scores.outputs.iter().map(Vec::len).collect::<Vec<_>>()
        )));
    }
    Ok(scores.outputs)
}
