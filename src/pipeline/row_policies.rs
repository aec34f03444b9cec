//! What row rules do to rows in the pass: fill values after inspection,
//! quarantined rows dropped from the block and written to the quarantine
//! table, the flags column, and the keys of the uniqueness rule.

use super::*;

/// Puts each feature's fill value where the inspection saw NaN, and the
/// missing value of categorical features where it saw an unknown category.
/// `nulls(feature)` is the inspection's count of the batch's nulls: most
/// features of most batches have none, and are not looked at again.
pub(super) fn fill_missing(
    block: &mut FeatureBlock,
    fills: &[(usize, f64)],
    unknown_fills: &[(usize, f64)],
    nulls: impl Fn(usize) -> u64,
) {
    let n = block.n_rows;
    for &(feature, fill) in fills {
        if nulls(feature) > 0 {
            let values = &mut block.values[feature * n..(feature + 1) * n];
            // Branch-free, so that it vectorises.
            for v in values {
                *v = if v.is_nan() { fill } else { *v };
            }
        }
    }
    for &(feature, missing) in unknown_fills {
        for v in &mut block.values[feature * n..(feature + 1) * n] {
            if *v == features::UNKNOWN_CATEGORY {
                *v = missing;
            }
        }
    }
}

/// The block without the rows marked `drop`.
pub(super) fn drop_rows(block: FeatureBlock, drop: &[bool]) -> FeatureBlock {
    let n = block.n_rows;
    let kept = drop.iter().filter(|&&d| !d).count();
    let mut values = Vec::with_capacity(kept * block.n_features);
    for column in block.values.chunks_exact(n.max(1)).take(block.n_features) {
        values.extend(column.iter().zip(drop).filter(|(_, d)| !**d).map(|(v, _)| *v));
    }
    FeatureBlock {
        n_rows: kept,
        n_features: block.n_features,
        values,
    }
}

/// The flag rules each scored row broke (null for none), for the kept rows.
pub(super) fn flags_column(marks: &RowMarks, contract: &Contract, n_rows: usize) -> ArrayRef {
    let values: StringArray = (0..n_rows)
        .filter(|&row| marks.quarantined.get(row).is_none_or(|q| !q))
        .map(|row| match marks.any_flagged {
            true => marks.reason_text(row, &contract.rules, contract::Policy::Flag),
            false => None,
        })
        .collect();
    Arc::new(values)
}

/// The quarantined rows of a batch as rows of the quarantine table.
#[allow(clippy::too_many_arguments)]
pub(super) fn quarantine_rows(
    table: &PreparedTable,
    file: &FilePlan,
    row_group: usize,
    first_row: usize,
    ids: &[ArrayRef],
    marks: &RowMarks,
    contract: &Contract,
    keep: &BooleanArray,
) -> Result<RecordBatch> {
    let internal = |e: arrow::error::ArrowError| {
        Error::Internal(format!(
            "cannot set aside the quarantined rows of row group {row_group} of `{}`: {e}",
            file.file.path.display()
        ))
    };
    let dropped = arrow::compute::not(keep).map_err(internal)?;
    let rows: Vec<usize> = (0..marks.quarantined.len()).filter(|&r| marks.quarantined[r]).collect();
    let mut columns: Vec<ArrayRef> = ids
        .iter()
        .map(|id| arrow::compute::filter(id, &dropped))
        .collect::<Result<_, _>>()
        .map_err(internal)?;
    let path = file.listed.relative_path.display().to_string();
    columns.push(Arc::new(StringArray::from(vec![path; rows.len()])));
    columns.push(Arc::new(Int32Array::from(vec![row_group as i32; rows.len()])));
    columns.push(Arc::new(Int64Array::from_iter_values(
        rows.iter().map(|&r| (first_row + r) as i64),
    )));
    columns.push(Arc::new(StringArray::from_iter_values(rows.iter().map(|&r| {
        marks
            .reason_text(r, &contract.rules, contract::Policy::Quarantine)
            .unwrap_or_default()
    }))));
    RecordBatch::try_new(Arc::clone(&table.quarantine_schema), columns).map_err(|e| {
        Error::Usage(format!(
            "the id columns of `{}` differ in type from the first file's, so its quarantined rows cannot join one \
             quarantine table: {e}",
            file.file.path.display()
        ))
    })
}

/// [`row_keys`] of one integer id column, from its leaf reader: the same
/// keys, without decoding the column through Arrow.
pub(super) fn leaf_keys(leaf: &LeafReader, keys: &mut Vec<u64>) {
    let mut push = |values: &mut dyn Iterator<Item = u64>| match leaf.definition_levels() {
        Some(levels) => {
            for &level in levels {
                keys.push(if level == 0 {
                    NULL_KEY
                } else {
                    values.next().unwrap_or(NULL_KEY)
                });
            }
        }
        None => keys.extend(values),
    };
    match leaf.values() {
        crate::scan::LeafValues::Int64(_, values) => push(&mut values.iter().map(|&v| v as u64)),
        crate::scan::LeafValues::Int32(_, values) => push(&mut values.iter().map(|&v| i64::from(v) as u64)),
        _ => unreachable!("key readers read integer columns"),
    }
}

/// A 64-bit key per row for the uniqueness rule: the value itself for one
/// integer column (exact; a null id takes one fixed key), otherwise a hash of
/// the row's values in Arrow's row format (two different ids share a key with
/// odds of about n^2 / 2^65, and the examples then show both).
pub(crate) fn row_keys(columns: &[&ArrayRef], n_rows: usize) -> Result<Vec<u64>, arrow::error::ArrowError> {
    use arrow::array::AsArray;
    use arrow::datatypes::{Int32Type, Int64Type};
    use std::hash::{Hash, Hasher};
    if let [column] = columns {
        let exact = |i: usize, value: i64| if column.is_null(i) { NULL_KEY } else { value as u64 };
        match column.data_type() {
            DataType::Int64 => {
                let values = column.as_primitive::<Int64Type>().values();
                return Ok(values.iter().enumerate().map(|(i, &v)| exact(i, v)).collect());
            }
            DataType::Int32 => {
                let values = column.as_primitive::<Int32Type>().values();
                return Ok(values
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| exact(i, i64::from(v)))
                    .collect());
            }
            _ => {}
        }
    }
    let fields = columns
        .iter()
        .map(|c| arrow::row::SortField::new(c.data_type().clone()))
        .collect();
    let arrays: Vec<ArrayRef> = columns.iter().map(|c| Arc::clone(c)).collect();
    let rows = arrow::row::RowConverter::new(fields).and_then(|converter| converter.convert_columns(&arrays))?;
    Ok((0..n_rows)
        .map(|i| {
            // SipHash with fixed keys: the same on every run and thread.
            let mut hasher = std::hash::DefaultHasher::new();
            rows.row(i).as_ref().hash(&mut hasher);
            hasher.finish()
        })
        .collect())
}

fn quarantine_error(path: &Path, source: parquet::errors::ParquetError) -> Error {
    Error::Sink(SinkError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Appends rows to a side table (quarantine, shadow scores), creating its staged file on first use.
pub(super) fn append_side_table(
    writer: &mut Option<ArrowWriter<std::fs::File>>,
    path: &Path,
    schema: &SchemaRef,
    batch: &RecordBatch,
) -> Result<()> {
    if writer.is_none() {
        let io_error = |source| {
            Error::Sink(SinkError::Create {
                path: path.to_path_buf(),
                source,
            })
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_error)?;
        }
        let file = std::fs::File::create(path).map_err(io_error)?;
        let properties = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build();
        *writer = Some(
            ArrowWriter::try_new(file, Arc::clone(schema), Some(properties)).map_err(|e| quarantine_error(path, e))?,
        );
    }
    let writer = writer.as_mut().expect("created above");
    writer.write(batch).map_err(|e| quarantine_error(path, e))
}

/// Closes a side table and makes it durable before it is published.
pub(super) fn finish_side_table(writer: ArrowWriter<std::fs::File>, path: &Path) -> Result<()> {
    let file = writer.into_inner().map_err(|e| quarantine_error(path, e))?;
    file.sync_all().map_err(|source| {
        Error::Sink(SinkError::Sync {
            path: path.to_path_buf(),
            source,
        })
    })
}
