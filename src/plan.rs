//! Plan: list a table's data files through its [`TableSource`], read each
//! footer once, resolve the columns the run needs by name, and cut the table
//! into work units (one row group of one file each).

use std::path::PathBuf;

use rayon::prelude::*;

use crate::cancel::CancelToken;
use crate::scan::{ParquetFile, ScanError};
use crate::source::{DataFile, SourceError, TableSource};
use crate::util::Suggestion;

/// The id column carried to the output when the user names none.
pub const DEFAULT_ID_COLUMN: &str = "customer_id";

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The table's files cannot be listed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The run was asked to stop while it planned.
    #[error(transparent)]
    Stopped(#[from] crate::cancel::Stopped),
    #[error("the deletion vector of `{}` deletes row {row}, and the file has {rows} rows: the table's log does not describe this file", path.display())]
    DeletedRowOutOfRange { path: PathBuf, row: u64, rows: u64 },
    #[error("model feature `{feature}` has no column in `{}`{suggestion}", path.display())]
    MissingFeature {
        path: PathBuf,
        feature: String,
        suggestion: Suggestion,
    },
    #[error("id column `{column}` does not exist in `{}`{suggestion}", path.display())]
    MissingIdColumn {
        path: PathBuf,
        column: String,
        suggestion: Suggestion,
    },
    #[error("{role} column `{column}` does not exist in `{}`{suggestion}", path.display())]
    MissingColumn {
        path: PathBuf,
        role: &'static str,
        column: String,
        suggestion: Suggestion,
    },
    #[error("{role} column `{column}` of `{}` is {data_type}; {expected}", path.display())]
    ColumnType {
        path: PathBuf,
        role: &'static str,
        column: String,
        data_type: String,
        expected: &'static str,
    },
    #[error(
        "default id column `{DEFAULT_ID_COLUMN}` is in some files of the table but not in `{}`; \
         name the id columns with `--id-column`",
        path.display()
    )]
    DefaultIdColumnNotEverywhere { path: PathBuf },
    /// A data file's footer could not be read (`crate::Error::Scan` at the top).
    #[error(transparent)]
    Scan(#[from] ScanError),
}

type Result<T, E = PlanError> = std::result::Result<T, E>;

/// Which id columns to carry from input to output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdColumns {
    /// `customer_id` when the table has it, otherwise none.
    Default,
    /// Exactly these, each of which must exist.
    Named(Vec<String>),
}

/// The columns a run needs from every file.
#[derive(Debug, Clone)]
pub struct ColumnRequest {
    pub features: Vec<String>,
    pub id_columns: IdColumns,
}

/// One input file, ready to be scanned.
#[derive(Debug)]
pub struct FilePlan {
    pub file: ParquetFile,
    /// For each model feature, the index of its (top-level) column.
    pub feature_roots: Vec<usize>,
    /// For each id column, the index of its (top-level) column.
    pub id_roots: Vec<usize>,
    /// The file as its source listed it: its path relative to the input
    /// root (the output file gets the same one) and its partition values
    /// among the rest; before publishing, a run checks it is still the same (size,
    /// version, footer).
    pub listed: DataFile,
}

impl FilePlan {
    /// How many of the file's rows the table holds (a Delta deletion
    /// vector's left out).
    pub fn live_rows(&self) -> u64 {
        let rows = self.file.metadata.metadata().file_metadata().num_rows().max(0) as u64;
        rows - self
            .listed
            .deleted_rows
            .as_ref()
            .map_or(0, |deleted| deleted.len() as u64)
    }

    /// The rows of row group `row_group` the table deleted (a Delta
    /// deletion vector), as indexes within the row group, ascending.
    pub fn deleted_in(&self, row_group: usize) -> Vec<usize> {
        let Some(rows) = &self.listed.deleted_rows else {
            return Vec::new();
        };
        let groups = self.file.metadata.metadata().row_groups();
        let first: u64 = groups[..row_group].iter().map(|g| g.num_rows().max(0) as u64).sum();
        let end = first + groups[row_group].num_rows().max(0) as u64;
        let (from, to) = (
            rows.partition_point(|&row| row < first),
            rows.partition_point(|&row| row < end),
        );
        rows[from..to].iter().map(|&row| (row - first) as usize).collect()
    }
}

/// Which of the `n` rows from row `start` of a row group the table deleted,
/// given the row group's deleted rows (`deleted_in`); `None` when none.
pub fn deleted_mask(deleted: &[usize], start: usize, n: usize) -> Option<Vec<bool>> {
    let from = deleted.partition_point(|&row| row < start);
    let to = deleted.partition_point(|&row| row < start + n);
    if from == to {
        return None;
    }
    let mut gone = vec![false; n];
    for &row in &deleted[from..to] {
        gone[row - start] = true;
    }
    Some(gone)
}

/// A whole table, planned.
#[derive(Debug)]
pub struct TablePlan {
    pub input: PathBuf,
    pub files: Vec<FilePlan>,
    pub id_columns: Vec<String>,
}

/// The unit of parallel work: one row group of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkUnit {
    pub file_idx: usize,
    pub row_group: usize,
    pub n_rows: usize,
}

impl TablePlan {
    /// All row groups of all files, in output order.
    pub fn work_units(&self) -> Vec<WorkUnit> {
        self.files
            .iter()
            .enumerate()
            .flat_map(|(file_idx, plan)| {
                (0..plan.file.num_row_groups()).map(move |row_group| WorkUnit {
                    file_idx,
                    row_group,
                    n_rows: plan.file.row_group_rows(row_group),
                })
            })
            .collect()
    }

    pub fn total_rows(&self) -> u64 {
        self.files.iter().map(FilePlan::live_rows).sum()
    }

    pub fn total_row_groups(&self) -> usize {
        self.files.iter().map(|f| f.file.num_row_groups()).sum()
    }
}

/// Plans the table at `input`. Footers are read in parallel on the current
/// rayon pool; errors are reported for the first bad file in path order, so the
/// same input always gives the same message.
/// A stop asked for through `cancel` is heard before each file.
pub fn plan_table(input: &dyn TableSource, request: &ColumnRequest, cancel: &CancelToken) -> Result<TablePlan> {
    cancel.check()?;
    let found = input.list()?;
    let opened: Vec<Result<ParquetFile>> = found
        .par_iter()
        .map(|file| {
            cancel.check()?;
            crate::test_hooks::in_plan();
            let bytes = input.open(file)?;
            Ok(ParquetFile::read_listed(file, bytes)?)
        })
        .collect();
    let files = opened.into_iter().collect::<Result<Vec<_>>>()?;

    let id_columns = match &request.id_columns {
        IdColumns::Named(names) => names.clone(),
        IdColumns::Default => default_id_columns(&files)?,
    };
    let files = files
        .into_iter()
        .zip(found)
        .map(|(file, listed)| plan_file(file, listed, &request.features, &id_columns))
        .collect::<Result<Vec<_>>>()?;
    Ok(TablePlan {
        input: input.location().to_path_buf(),
        files,
        id_columns,
    })
}

fn default_id_columns(files: &[ParquetFile]) -> Result<Vec<String>> {
    let has_default = |f: &ParquetFile| f.schema().field_with_name(DEFAULT_ID_COLUMN).is_ok();
    match files.iter().find(|f| !has_default(f)) {
        None => Ok(vec![DEFAULT_ID_COLUMN.to_string()]),
        Some(_) if !files.iter().any(has_default) => Ok(Vec::new()),
        Some(lacking) => Err(PlanError::DefaultIdColumnNotEverywhere {
            path: lacking.path.clone(),
        }),
    }
}

/// The top-level column of each feature and of each id column in `schema`
/// (of the file or batch `path` names), or an error naming the first one
/// missing, with the closest name there is.
pub fn column_roots(
    schema: &arrow::datatypes::Schema,
    path: &std::path::Path,
    features: &[String],
    id_columns: &[String],
) -> Result<(Vec<usize>, Vec<usize>)> {
    let column_names = || schema.fields().iter().map(|f| f.name().as_str());
    let root_of = |name: &str| schema.fields().iter().position(|f| f.name() == name);
    let mut feature_roots = Vec::with_capacity(features.len());
    for feature in features {
        let root = root_of(feature).ok_or_else(|| PlanError::MissingFeature {
            path: path.to_path_buf(),
            feature: feature.clone(),
            suggestion: Suggestion::closest(feature, column_names()),
        })?;
        feature_roots.push(root);
    }
    let mut id_roots = Vec::with_capacity(id_columns.len());
    for column in id_columns {
        let root = root_of(column).ok_or_else(|| PlanError::MissingIdColumn {
            path: path.to_path_buf(),
            column: column.clone(),
            suggestion: Suggestion::closest(column, column_names()),
        })?;
        id_roots.push(root);
    }
    Ok((feature_roots, id_roots))
}

fn plan_file(file: ParquetFile, listed: DataFile, features: &[String], id_columns: &[String]) -> Result<FilePlan> {
    let (feature_roots, id_roots) = column_roots(file.schema(), &file.path, features, id_columns)?;
    let rows = file.metadata.metadata().file_metadata().num_rows().max(0) as u64;
    if let Some(&row) = listed.deleted_rows.as_ref().and_then(|deleted| deleted.last())
        && row >= rows
    {
        return Err(PlanError::DeletedRowOutOfRange {
            path: file.path.clone(),
            row,
            rows,
        });
    }
    Ok(FilePlan {
        feature_roots,
        id_roots,
        file,
        listed,
    })
}

/// Errors out when a file the run read changed since it was planned (see
/// [`ParquetFile::check_unchanged`]). Run before publishing, so that a file
/// rewritten or truncated during the run fails it, naming the file, rather
/// than publishing scores of bytes `_SUCCESS` does not describe.
pub fn check_unchanged(plan: &TablePlan) -> Result<()> {
    plan.files
        .par_iter()
        .try_for_each(|planned| planned.file.check_unchanged(&planned.listed))
        .map_err(PlanError::Scan)
}
