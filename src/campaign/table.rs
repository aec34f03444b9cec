//! Reading the small tables of a campaign (outcomes, logged assignments):
//! named columns of every file of a table, batch by batch, in path order,
//! with the file and row group at hand for errors.

use std::path::Path;

use arrow::array::ArrayRef;
use arrow::datatypes::DataType;
use parquet::arrow::ProjectionMask;

use crate::cancel::CancelToken;
use crate::error::Result;
use crate::plan::PlanError;
use crate::scan::ParquetFile;
use crate::source::{LocalTable, MmapChoice, ObjectTable, TableSource};
use crate::util::Suggestion;

/// Rows decoded at a time.
const BATCH_ROWS: usize = 8192;

/// A column to read: its name and what it is for (errors say `outcome
/// column `converted``), and whether a table may lack it.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    pub name: &'a str,
    pub role: &'static str,
    pub required: bool,
}

/// Where a batch came from: its file, row group, and the row of the row
/// group it starts at.
#[derive(Debug, Clone, Copy)]
pub struct At<'a> {
    pub path: &'a Path,
    pub row_group: usize,
    pub first_row: usize,
}

impl At<'_> {
    /// "row R of row group G of `file`", for the batch's row `i`.
    pub fn row(&self, i: usize) -> String {
        format!(
            "row {} of row group {} of `{}`",
            self.first_row + i,
            self.row_group,
            self.path.display()
        )
    }
}

/// The data files of `input`, in path order.
pub fn open(input: &Path) -> Result<Vec<ParquetFile>> {
    let text = input.to_string_lossy();
    let remote = match crate::store::is_remote(&text) {
        true => Some(crate::store::Remote::parse(&text)?),
        false => None,
    };
    // Listed as a folder, a Delta table would show files its log removed.
    if crate::source::is_delta_table(input, remote.as_ref()).map_err(PlanError::from)? {
        return Err(crate::Error::Usage(format!(
            "`{}` is a Delta table: outcome and assignment tables are read as Parquet files or folders, not Delta tables, for now",
            input.display()
        )));
    }
    let source: Box<dyn TableSource> = match remote {
        Some(remote) => Box::new(ObjectTable::new(remote)),
        None => Box::new(LocalTable::new(input, MmapChoice::never())),
    };
    source
        .list()
        .map_err(PlanError::from)?
        .iter()
        .map(|file| {
            let data = source.open(file).map_err(PlanError::from)?;
            Ok(ParquetFile::read(&file.location, data)?)
        })
        .collect()
}

/// What identifies a file's content whatever its name: the digest of its
/// bytes.
pub fn content_digest(file: &ParquetFile) -> Result<String> {
    Ok(file.content_sha256()?)
}

/// Calls `each` with every batch of the `wanted` columns (in that order;
/// `None` for an optional column a file lacks).
pub fn for_each_batch(
    files: &[ParquetFile],
    wanted: &[Wanted<'_>],
    cancel: &CancelToken,
    mut each: impl FnMut(At<'_>, &[Option<ArrayRef>]) -> Result<()>,
) -> Result<()> {
    for file in files {
        let schema = file.schema();
        let mut roots = Vec::new();
        for column in wanted {
            match schema.index_of(column.name) {
                Ok(root) => roots.push(Some(root)),
                Err(_) if !column.required => roots.push(None),
                Err(_) => {
                    let names = schema.fields().iter().map(|f| f.name().as_str());
                    return Err(PlanError::MissingColumn {
                        path: file.path.clone(),
                        role: column.role,
                        column: column.name.to_string(),
                        suggestion: Suggestion::closest(column.name, names),
                    }
                    .into());
                }
            }
        }
        let mut selected: Vec<usize> = roots.iter().flatten().copied().collect();
        selected.sort_unstable();
        selected.dedup();
        let projection = ProjectionMask::roots(file.metadata.parquet_schema(), selected.iter().copied());
        for row_group in 0..file.num_row_groups() {
            cancel.check()?;
            file.for_each_batch(row_group, &projection, BATCH_ROWS, |first_row, batch| {
                let columns: Vec<Option<ArrayRef>> = roots
                    .iter()
                    .map(|root| root.map(|r| batch.column(selected.binary_search(&r).expect("selected")).clone()))
                    .collect();
                each(
                    At {
                        path: &file.path,
                        row_group,
                        first_row,
                    },
                    &columns,
                )
            })?;
        }
    }
    Ok(())
}

/// A column's type error.
pub fn type_error(
    path: &Path,
    role: &'static str,
    column: &str,
    data_type: &DataType,
    expected: &'static str,
) -> PlanError {
    PlanError::ColumnType {
        path: path.to_path_buf(),
        role,
        column: column.to_string(),
        data_type: data_type.to_string(),
        expected,
    }
}

/// Values of a 0/1 column (boolean, integer or float) as `Some(bool)`,
/// `None` for nulls; anything else is an error naming the row.
pub fn flags(array: &ArrayRef, at: At<'_>, role: &'static str, column: &str) -> Result<Vec<Option<bool>>> {
    use arrow::array::{Array, AsArray};
    if let DataType::Boolean = array.data_type() {
        let a = array.as_boolean();
        return Ok((0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i))).collect());
    }
    as_numbers(array, at, role, column, "expected a boolean or 0/1 numbers")?
        .iter()
        .enumerate()
        .map(|(i, &v)| match v {
            v if v.is_nan() => Ok(None),
            0.0 => Ok(Some(false)),
            1.0 => Ok(Some(true)),
            other => Err(crate::Error::Usage(format!(
                "{role} column `{column}` holds `{other}` in {}; expected 0 or 1",
                at.row(i)
            ))),
        })
        .collect()
}

/// Values of a string column (arm names), `None` for nulls.
pub fn strings(array: &ArrayRef, at: At<'_>, role: &'static str, column: &str) -> Result<Vec<Option<String>>> {
    use arrow::array::Array;
    let as_text = match array.data_type() {
        DataType::Utf8 => array.clone(),
        DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(_, _) => {
            arrow::compute::cast(array, &DataType::Utf8)
                .map_err(|_| type_error(at.path, role, column, array.data_type(), "expected strings"))?
        }
        other => return Err(type_error(at.path, role, column, other, "expected strings").into()),
    };
    use arrow::array::AsArray;
    let a = as_text.as_string::<i32>();
    Ok((0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i).to_string()))
        .collect())
}

/// Values of a timestamp or date column as seconds since the epoch, `None`
/// for nulls.
pub fn seconds(array: &ArrayRef, at: At<'_>, role: &'static str, column: &str) -> Result<Vec<Option<i64>>> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Date32Type, Date64Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType};
    use arrow::datatypes::{TimestampNanosecondType, TimestampSecondType};
    let n = array.len();
    let valid = |i: usize| array.is_valid(i);
    Ok(match array.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => {
            let a = array.as_primitive::<TimestampSecondType>();
            (0..n).map(|i| valid(i).then(|| a.value(i))).collect()
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            let a = array.as_primitive::<TimestampMillisecondType>();
            (0..n).map(|i| valid(i).then(|| a.value(i).div_euclid(1000))).collect()
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            let a = array.as_primitive::<TimestampMicrosecondType>();
            (0..n)
                .map(|i| valid(i).then(|| a.value(i).div_euclid(1_000_000)))
                .collect()
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            let a = array.as_primitive::<TimestampNanosecondType>();
            (0..n)
                .map(|i| valid(i).then(|| a.value(i).div_euclid(1_000_000_000)))
                .collect()
        }
        DataType::Date32 => {
            let a = array.as_primitive::<Date32Type>();
            (0..n)
                .map(|i| valid(i).then(|| i64::from(a.value(i)) * 86_400))
                .collect()
        }
        DataType::Date64 => {
            let a = array.as_primitive::<Date64Type>();
            (0..n).map(|i| valid(i).then(|| a.value(i).div_euclid(1000))).collect()
        }
        other => return Err(type_error(at.path, role, column, other, "expected a timestamp or a date").into()),
    })
}

/// Values of a numeric column as f64 (NaN for nulls); anything else is a
/// type error naming the column.
pub fn numbers(array: &ArrayRef, at: At<'_>, role: &'static str, column: &str) -> Result<Vec<f64>> {
    as_numbers(array, at, role, column, "expected numbers")
}

fn as_numbers(
    array: &ArrayRef,
    at: At<'_>,
    role: &'static str,
    column: &str,
    expected: &'static str,
) -> Result<Vec<f64>> {
    if !crate::features::is_numeric(array.data_type()) {
        return Err(type_error(at.path, role, column, array.data_type(), expected).into());
    }
    let mut values = Vec::with_capacity(array.len());
    crate::features::append_column(array.as_ref(), f64::NAN, &mut values);
    Ok(values)
}

/// The ids of a column, refusing types that are not integers or strings.
pub fn ids(
    array: &ArrayRef,
    at: At<'_>,
    role: &'static str,
    column: &str,
) -> Result<Vec<Option<crate::bandit::IdKey>>> {
    if !crate::bandit::is_id_type(array.data_type()) {
        return Err(type_error(at.path, role, column, array.data_type(), "expected integers or strings").into());
    }
    Ok(crate::bandit::id_keys(array.as_ref()))
}
