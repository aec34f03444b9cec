//! Where a table's bytes come from. A [`TableSource`] lists the table's data
//! files (where each is, its size, its partition values; for a table format,
//! the snapshot they belong to); a [`FileBytes`] reads byte ranges of one
//! file: the footer with one suffix read, a row group's projected column
//! chunks with coalesced reads. Everything after the bytes (the footer's
//! parsing, leaf readers, the Arrow path, features) is [`crate::scan`]'s and
//! the same for every source.
//!
//! The first source is a local folder or file ([`LocalTable`]). It maps files
//! into memory when the caller says it may ([`MmapChoice::auto`], an unsafe
//! promise that no file changes while mapped, as in ripgrep), and otherwise
//! reads them with positioned reads into buffers, like a remote source would.
//!
//! What a new source must guarantee:
//! - `list` names every data file of the table once, in a stable order
//!   (the output mirrors it, and resume keys digest it), with the path the
//!   output file gets and the partition values rows belong to;
//! - `open` reads the file as it was listed: the same bytes for as long as
//!   the run reads it (a source that can detect a change, by an ETag or a
//!   version, fails the read rather than return other bytes);
//! - `suffix` and `ranges` return exactly the bytes asked for, or an error
//!   naming the file; retries and timeouts are the source's own business;
//! - `DataFile::version` and `FileBytes::stat_now` say what changes when the
//!   file's bytes change (a modification time, an ETag), so that a run can
//!   refuse to publish scores of a file that changed under it.

#[cfg(feature = "delta")]
pub mod delta;
mod guard;
pub mod local;
pub mod object;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

pub use local::{LocalTable, MmapChoice};
pub use object::ObjectTable;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
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
    #[error("cannot open input file `{}`", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A Delta table whose log cannot be read, or that uses what lakescore
    /// does not read (the message names the Delta feature).
    #[error("Delta table `{}` {problem}", path.display())]
    Delta { path: PathBuf, problem: String },
    /// An input on object storage could not be listed or reached.
    #[error(transparent)]
    Remote(#[from] crate::store::StoreError),
}

/// The folder whose presence makes a folder a Delta table.
pub const DELTA_LOG: &str = "_delta_log";

/// Whether the table at `location` is a Delta table, holding [`DELTA_LOG`]:
/// a local folder, or, when the caller parsed it as one, the URL on object
/// storage `remote` (one LIST request).
pub fn is_delta_table(location: &Path, remote: Option<&crate::store::Remote>) -> Result<bool, SourceError> {
    let Some(remote) = remote else {
        return Ok(location.join(DELTA_LOG).is_dir());
    };
    crate::store::any_object_below(remote, DELTA_LOG).map_err(|error| {
        SourceError::Remote(crate::store::StoreError::Request {
            operation: "LIST",
            url: remote.join(DELTA_LOG).url,
            message: crate::store::message_of(&error),
        })
    })
}

/// Which version of a table to read: a table format's (Delta) snapshot; a
/// folder has only the one it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TableVersion {
    #[default]
    Latest,
    /// This version.
    At(u64),
    /// The latest version committed at or before this instant (seconds
    /// since the epoch).
    AsOf(i64),
}

/// One data file of a table, as its source lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    /// Where it is, for messages and reports: a path, later a URL.
    pub location: PathBuf,
    /// Its path inside the table (`dt=2026-11-25/part-0.parquet`); the
    /// output file gets the same one.
    pub relative_path: PathBuf,
    pub size: u64,
    /// The partition values its rows belong to, in order (`dt` =
    /// `2026-11-25`): from `k=v` folders, or from a table format's log.
    pub partition_values: Vec<(String, String)>,
    /// What changes when the file's bytes change, as the source knows it:
    /// the modification time on a local disk (an ETag on object storage).
    /// A run checks it again before publishing; `None` when the source has
    /// nothing of the kind.
    pub version: Option<String>,
    /// Rows of the file the table no longer holds (a Delta deletion vector):
    /// their indexes in the file, ascending. They are not read into the
    /// output, scored or counted.
    pub deleted_rows: Option<Arc<Vec<u64>>>,
    /// The table's names of the file's top-level columns, by the name the
    /// file stores each under, where a table format stores them under
    /// others (Delta column mapping): readers see the table's names
    /// ([`crate::scan::ParquetFile::read_listed`]).
    pub column_names: Option<Arc<ColumnNames>>,
}

/// A table: what lists its data files and opens each for reading.
pub trait TableSource: Send + Sync {
    /// The table's location, for messages, reports and lineage.
    fn location(&self) -> &Path;

    /// The version of the table the files belong to, for a table format
    /// (`None` for a folder, which has no versions).
    fn snapshot(&self) -> Option<String> {
        None
    }

    /// Every data file, in a stable order.
    fn list(&self) -> Result<Vec<DataFile>, SourceError>;

    /// A reader of one listed file's bytes.
    fn open(&self, file: &DataFile) -> Result<Arc<dyn FileBytes>, SourceError>;

    /// What the table's reads cost, for a source that counts its requests
    /// (object storage); `None` for a local one.
    fn io_counters(&self) -> Option<Arc<crate::store::IoCounters>> {
        None
    }
}

/// Byte ranges of one file. Called from the worker threads, concurrently.
pub trait FileBytes: Send + Sync + std::fmt::Debug {
    /// The file's size in bytes.
    fn len(&self) -> u64;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The last `n` bytes (`n` at most [`FileBytes::len`]): how the footer is
    /// read, with a size hint, and a second time only when it is larger.
    fn suffix(&self, n: u64) -> std::io::Result<Bytes>;

    /// The bytes of each range, in order. Ranges close to each other are
    /// best read together (one request, then sliced).
    fn ranges(&self, ranges: &[Range<u64>]) -> std::io::Result<Vec<Bytes>>;

    /// The whole file as one buffer, when the source holds it at no cost (a
    /// memory map): readers then slice it and never call `ranges`.
    fn whole(&self) -> Option<Bytes> {
        None
    }

    /// How the file changed since it was opened, if the source can tell
    /// cheaply: pages of a mapped file that vanished (read as zeros), or a
    /// size that is no longer the one opened. What was read is then not the
    /// file, and the reader must fail, saying so.
    fn changed(&self) -> Option<String> {
        None
    }

    /// The size and version (see [`DataFile::version`]) of the file this
    /// reader reads, now: of the open file, not of whatever its path names
    /// by now (a file replaced by a rename is not the one read). `None`
    /// when the source cannot tell.
    fn stat_now(&self) -> Option<(u64, Option<String>)> {
        None
    }

    /// Whether every read is pinned to the version the file was listed at
    /// (an object read with `If-Match` on its ETag): a read of another
    /// version fails, so there is nothing to check again before publishing.
    fn pinned(&self) -> bool {
        false
    }

    /// The ranges will be read soon: a mapped file faults them in at once, a
    /// remote one starts fetching them (a later [`FileBytes::ranges`] of the
    /// same ranges collects them).
    fn will_need(&self, _ranges: &[Range<u64>]) {}

    /// The ranges have been read (a mapped file lets their pages go, so the
    /// mapping does not grow the process's resident memory).
    fn done_with(&self, _ranges: &[Range<u64>]) {}
}

/// Physical (stored) name -> the table's (logical) name, per top-level
/// column.
pub type ColumnNames = std::collections::HashMap<String, String>;

/// A file held in memory: bytes a caller hands over (a table read elsewhere,
/// the fuzz targets). `whole` says whether readers may slice it as a mapped
/// file, or fetch row groups as any other source.
#[derive(Debug, Clone)]
pub struct InMemoryFile {
    pub bytes: Bytes,
    pub whole: bool,
}

impl FileBytes for InMemoryFile {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn suffix(&self, n: u64) -> std::io::Result<Bytes> {
        Ok(suffix_of(&self.bytes, n))
    }

    fn ranges(&self, ranges: &[Range<u64>]) -> std::io::Result<Vec<Bytes>> {
        ranges_of(&self.bytes, ranges)
    }

    fn whole(&self) -> Option<Bytes> {
        self.whole.then(|| self.bytes.clone())
    }
}

/// The last `n` bytes of a file held whole (at most all of them).
fn suffix_of(bytes: &Bytes, n: u64) -> Bytes {
    let len = bytes.len();
    bytes.slice(len - (n as usize).min(len)..)
}

/// Ranges of a file held whole, each checked against its size (offsets come
/// from the file's footer).
fn ranges_of(bytes: &Bytes, ranges: &[Range<u64>]) -> std::io::Result<Vec<Bytes>> {
    let len = bytes.len() as u64;
    ranges
        .iter()
        .map(|r| match r.start <= r.end && r.end <= len {
            true => Ok(bytes.slice(r.start as usize..r.end as usize)),
            false => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("bytes {}..{} are not in a file of {len} bytes", r.start, r.end),
            )),
        })
        .collect()
}

/// Merges ranges whose gap is at most `max_gap` bytes: the reads a source
/// makes for `ranges`, and for each range, which read holds it.
fn coalesce(ranges: &[Range<u64>], max_gap: u64) -> (Vec<Range<u64>>, Vec<usize>) {
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_by_key(|&i| ranges[i].start);
    let mut reads: Vec<Range<u64>> = Vec::new();
    let mut read_of = vec![0; ranges.len()];
    for i in order {
        let range = &ranges[i];
        match reads.last_mut() {
            Some(last) if range.start <= last.end.saturating_add(max_gap) => {
                last.end = last.end.max(range.end);
            }
            _ => reads.push(range.clone()),
        }
        read_of[i] = reads.len() - 1;
    }
    (reads, read_of)
}

/// Reads `ranges` through `read` (one call per coalesced read) and slices
/// each range out of its read.
pub fn read_coalesced(
    ranges: &[Range<u64>],
    max_gap: u64,
    mut read: impl FnMut(Range<u64>) -> std::io::Result<Bytes>,
) -> std::io::Result<Vec<Bytes>> {
    let (reads, read_of) = coalesce(ranges, max_gap);
    let buffers = reads
        .iter()
        .map(|r| read(r.clone()))
        .collect::<std::io::Result<Vec<Bytes>>>()?;
    Ok(slice_reads(ranges, &reads, &read_of, &buffers))
}

/// Each range sliced out of the read that holds it (`read_of[i]` is the
/// read of `ranges[i]`; `buffers` are the reads' bytes).
fn slice_reads(ranges: &[Range<u64>], reads: &[Range<u64>], read_of: &[usize], buffers: &[Bytes]) -> Vec<Bytes> {
    ranges
        .iter()
        .zip(read_of)
        .map(|(range, &k)| {
            let base = reads[k].start;
            buffers[k].slice((range.start - base) as usize..(range.end - base) as usize)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_ranges_are_read_together() {
        let ranges = [100..200, 0..50, 210..300, 5_000..5_100, 40..60];
        let (reads, read_of) = coalesce(&ranges, 64);
        assert_eq!(reads, vec![0..300, 5_000..5_100]);
        assert_eq!(read_of, vec![0, 0, 0, 1, 0]);
        let file: Vec<u8> = (0..6_000u32).map(|i| (i % 251) as u8).collect();
        let mut calls = 0;
        let got = read_coalesced(&ranges, 64, |r| {
            calls += 1;
            Ok(Bytes::copy_from_slice(&file[r.start as usize..r.end as usize]))
        })
        .unwrap();
        assert_eq!(calls, 2);
        for (range, bytes) in ranges.iter().zip(got) {
            assert_eq!(&bytes[..], &file[range.start as usize..range.end as usize]);
        }
    }
}
