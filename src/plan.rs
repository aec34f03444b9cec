//! Plan: find the Parquet files of a table, read each footer once, resolve the
//! columns the run needs by name, and cut the table into work units (one row
//! group of one file each).
//!
//! A table is a single file or a folder tree, usually Hive-partitioned
//! (`dt=2026-11-25/part-00000.parquet`). Entries whose names start with `_` or
//! `.` are not data (`_SUCCESS`, `_lakescore/`, `.part.crc`, staging folders)
//! and are skipped at every level; every other file is expected to be Parquet.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::scan::{ParquetFile, ScanError};
use crate::util::Suggestion;

/// The id column carried to the output when the user names none.
pub const DEFAULT_ID_COLUMN: &str = "customer_id";

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("input `{}` does not exist", path.display())]
    InputNotFound { path: PathBuf },
    #[error("cannot read input `{}`", path.display())]
    Inspect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot list input folder `{}`", path.display())]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("input `{}` holds no data files (names starting with `_` or `.` are not data)", path.display())]
    NoDataFiles { path: PathBuf },
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
    /// Path relative to the input root; the output file gets the same one.
    pub relative_path: PathBuf,
    /// `k=v` folders on the way to the file, in order, values unescaped.
    pub partition_values: Vec<(String, String)>,
    /// For each model feature, the index of its (top-level) column.
    pub feature_roots: Vec<usize>,
    /// For each id column, the index of its (top-level) column.
    pub id_roots: Vec<usize>,
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
        self.files
            .iter()
            .map(|f| f.file.metadata.metadata().file_metadata().num_rows() as u64)
            .sum()
    }

    pub fn total_row_groups(&self) -> usize {
        self.files.iter().map(|f| f.file.num_row_groups()).sum()
    }
}

/// Plans the table at `input`. Footers are read in parallel on the current
/// rayon pool; errors are reported for the first bad file in path order, so the
/// same input always gives the same message.
pub fn plan_table(input: &Path, request: &ColumnRequest) -> Result<TablePlan> {
    let found = find_data_files(input)?;
    let opened: Vec<Result<ParquetFile>> = found
        .par_iter()
        .map(|(path, _)| ParquetFile::open(path).map_err(PlanError::from))
        .collect();
    let files = opened.into_iter().collect::<Result<Vec<_>>>()?;

    let id_columns = match &request.id_columns {
        IdColumns::Named(names) => names.clone(),
        IdColumns::Default => default_id_columns(&files)?,
    };
    let files = files
        .into_iter()
        .zip(found)
        .map(|(file, (_, relative_path))| plan_file(file, relative_path, &request.features, &id_columns))
        .collect::<Result<Vec<_>>>()?;
    Ok(TablePlan {
        input: input.to_path_buf(),
        files,
        id_columns,
    })
}

fn default_id_columns(files: &[ParquetFile]) -> Result<Vec<String>> {
    let has_default = |f: &ParquetFile| f.metadata.schema().field_with_name(DEFAULT_ID_COLUMN).is_ok();
    match files.iter().find(|f| !has_default(f)) {
        None => Ok(vec![DEFAULT_ID_COLUMN.to_string()]),
        Some(_) if !files.iter().any(has_default) => Ok(Vec::new()),
        Some(lacking) => Err(PlanError::DefaultIdColumnNotEverywhere {
            path: lacking.path.clone(),
        }),
    }
}

fn plan_file(
    file: ParquetFile,
    relative_path: PathBuf,
    features: &[String],
    id_columns: &[String],
) -> Result<FilePlan> {
    let schema = file.metadata.schema().clone();
    let column_names = || schema.fields().iter().map(|f| f.name().as_str());
    let root_of = |name: &str| schema.fields().iter().position(|f| f.name() == name);

    let mut feature_roots = Vec::with_capacity(features.len());
    for feature in features {
        let root = root_of(feature).ok_or_else(|| PlanError::MissingFeature {
            path: file.path.clone(),
            feature: feature.clone(),
            suggestion: Suggestion::closest(feature, column_names()),
        })?;
        feature_roots.push(root);
    }
    let mut id_roots = Vec::with_capacity(id_columns.len());
    for column in id_columns {
        let root = root_of(column).ok_or_else(|| PlanError::MissingIdColumn {
            path: file.path.clone(),
            column: column.clone(),
            suggestion: Suggestion::closest(column, column_names()),
        })?;
        id_roots.push(root);
    }

    Ok(FilePlan {
        partition_values: partition_values(&relative_path),
        feature_roots,
        id_roots,
        relative_path,
        file,
    })
}

/// Data files under `input`, each with its path relative to `input`, in path
/// order. A file given directly is its own table, named by its file name.
pub fn find_data_files(input: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    let metadata = fs::metadata(input).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => PlanError::InputNotFound {
            path: input.to_path_buf(),
        },
        _ => PlanError::Inspect {
            path: input.to_path_buf(),
            source,
        },
    })?;
    if metadata.is_file() {
        let name = input
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| input.to_path_buf());
        return Ok(vec![(input.to_path_buf(), name)]);
    }
    let mut found = Vec::new();
    let mut visited = HashSet::new();
    walk(input, Path::new(""), &mut visited, &mut found)?;
    if found.is_empty() {
        return Err(PlanError::NoDataFiles {
            path: input.to_path_buf(),
        });
    }
    Ok(found)
}

fn walk(
    dir: &Path,
    relative: &Path,
    visited: &mut HashSet<PathBuf>,
    found: &mut Vec<(PathBuf, PathBuf)>,
) -> Result<()> {
    let read_error = |source| PlanError::ReadDir {
        path: dir.to_path_buf(),
        source,
    };
    // Symbolic links are followed; a link back up the tree is visited once.
    if !visited.insert(fs::canonicalize(dir).map_err(read_error)?) {
        return Ok(());
    }
    let mut entries = fs::read_dir(dir)
        .map_err(read_error)?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(read_error)?;
    entries.sort();
    for name in entries {
        let text = name.to_string_lossy();
        if text.starts_with('_') || text.starts_with('.') {
            continue;
        }
        let path = dir.join(&name);
        // Follows symbolic links; a dangling one is an error, not a skip.
        let metadata = fs::metadata(&path).map_err(|source| PlanError::Inspect {
            path: path.clone(),
            source,
        })?;
        if metadata.is_dir() {
            walk(&path, &relative.join(&name), visited, found)?;
        } else {
            found.push((path, relative.join(&name)));
        }
    }
    Ok(())
}

/// `k=v` components of the folders above a file, with Hive's `%XX` escapes
/// decoded.
pub fn partition_values(relative_path: &Path) -> Vec<(String, String)> {
    let Some(parent) = relative_path.parent() else {
        return Vec::new();
    };
    parent
        .components()
        .filter_map(|c| {
            let text = c.as_os_str().to_string_lossy();
            let (key, value) = text.split_once('=')?;
            (!key.is_empty()).then(|| (unescape_hive(key), unescape_hive(value)))
        })
        .collect()
}

fn unescape_hive(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex_digit = |k: usize| bytes.get(k).and_then(|b| (*b as char).to_digit(16));
        if bytes[i] == b'%'
            && let (Some(high), Some(low)) = (hex_digit(i + 1), hex_digit(i + 2))
        {
            out.push((high * 16 + low) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_hive_partition_values() {
        let values = partition_values(Path::new("dt=2026-11-25/region=north%2Feast/part-0.parquet"));
        assert_eq!(
            values,
            vec![
                ("dt".into(), "2026-11-25".into()),
                ("region".into(), "north/east".into())
            ]
        );
        assert!(partition_values(Path::new("part-0.parquet")).is_empty());
        assert!(partition_values(Path::new("plain/part-0.parquet")).is_empty());
        assert_eq!(unescape_hive("100%"), "100%");
        assert_eq!(unescape_hive("a%3Ab"), "a:b");
        assert_eq!(unescape_hive("%é"), "%é");
    }
}
