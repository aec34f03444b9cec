//! A table on this machine's filesystem: one Parquet file, or a folder tree,
//! usually Hive-partitioned (`dt=2026-11-25/part-00000.parquet`). Entries
//! whose names start with `_` or `.` are not data (`_SUCCESS`, `_lakescore/`,
//! `.part.crc`, staging folders) and are skipped at every level; every other
//! file is expected to be Parquet.
//!
//! Files are memory-mapped when the caller allows it ([`MmapChoice::auto`]):
//! the fastest way to read a local lake, and today's bar for every other
//! way. Otherwise they are read with positioned reads, near ranges together.

use std::collections::HashSet;
use std::fs::{self, File};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use memmap2::{Advice, Mmap, UncheckedAdvice};

use super::guard::Guarded;
use super::{DataFile, FileBytes, SourceError, TableSource, ranges_of, read_coalesced, suffix_of};

/// Whether a local table's files may be memory-mapped.
///
/// Mapping is the fast path, but it has a precondition the library cannot
/// check: no file may change while it is mapped. A file rewritten in place
/// makes reads see other bytes, and one truncated ends the process with
/// SIGBUS. So mapping is opt-in, through the `unsafe` [`MmapChoice::auto`]
/// (the caller's promise), as in ripgrep's `MmapChoice`; the default reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MmapChoice(Choice);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Choice {
    #[default]
    Never,
    Auto,
}

impl MmapChoice {
    /// Map every file.
    ///
    /// # Safety
    ///
    /// The caller promises that no file of the table is modified or
    /// truncated, by this process or another, while the table is read.
    /// (Lake files are written once, published by a rename, and replaced by
    /// new files, never rewritten: the command line makes this promise and
    /// the README says so.)
    pub unsafe fn auto() -> MmapChoice {
        MmapChoice(Choice::Auto)
    }

    /// Read files with positioned reads (`pread`) into buffers: safe whatever
    /// else happens to the files, at the cost of a copy.
    pub fn never() -> MmapChoice {
        MmapChoice(Choice::Never)
    }

    pub fn is_auto(self) -> bool {
        self.0 == Choice::Auto
    }
}

/// A local Parquet file or folder tree.
#[derive(Debug, Clone)]
pub struct LocalTable {
    root: PathBuf,
    mmap: MmapChoice,
}

impl LocalTable {
    pub fn new(root: impl Into<PathBuf>, mmap: MmapChoice) -> LocalTable {
        LocalTable {
            root: root.into(),
            mmap,
        }
    }

    /// Opens one file, mapped or read as `mmap` says.
    pub fn open_file(path: &Path, mmap: MmapChoice) -> Result<Arc<dyn FileBytes>, SourceError> {
        let open_error = |source| SourceError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(open_error)?;
        let len = file.metadata().map_err(open_error)?.len();
        if !mmap.is_auto() || len == 0 {
            // (An empty file cannot be mapped; the reader says what it is.)
            return Ok(Arc::new(ReadFile { file, len }));
        }
        // SAFETY: the mapping is read-only, and the caller of
        // `MmapChoice::auto` promised that the file does not change while
        // it is mapped. Should it be truncated all the same, the guard turns
        // the SIGBUS into an error naming the file.
        let mmap = unsafe { Mmap::map(&file) }.map_err(open_error)?;
        let Some(guard) = Guarded::new(mmap.as_ptr(), mmap.len()) else {
            return Ok(Arc::new(ReadFile { file, len }));
        };
        let map = Arc::new(GuardedMap { guard, mmap });
        let bytes = Bytes::from_owner(MappedBytes(Arc::clone(&map)));
        Ok(Arc::new(MappedFile { map, bytes, file }))
    }
}

impl TableSource for LocalTable {
    fn location(&self) -> &Path {
        &self.root
    }

    fn list(&self) -> Result<Vec<DataFile>, SourceError> {
        find_data_files(&self.root)
    }

    fn open(&self, file: &DataFile) -> Result<Arc<dyn FileBytes>, SourceError> {
        LocalTable::open_file(&file.location, self.mmap)
    }
}

/// A local file's version: its modification time, to the nanosecond the
/// filesystem keeps.
pub(crate) fn version_of(metadata: &fs::Metadata) -> Option<String> {
    let modified = metadata.modified().ok()?;
    let since_epoch = modified.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(format!(
        "mtime {}.{:09}",
        since_epoch.as_secs(),
        since_epoch.subsec_nanos()
    ))
}

/// A mapping and its guard; the guard goes first (fields drop in order),
/// before the pages it watches are unmapped.
struct GuardedMap {
    guard: Guarded,
    mmap: Mmap,
}

/// Keeps the mapping alive for as long as any `Bytes` slice of it exists.
struct MappedBytes(Arc<GuardedMap>);

impl AsRef<[u8]> for MappedBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0.mmap
    }
}

/// A memory-mapped file: readers slice the mapping.
struct MappedFile {
    map: Arc<GuardedMap>,
    bytes: Bytes,
    /// The open file, to see whether its size changed.
    file: File,
}

/// The open file's size and version.
fn stat_of(file: &File) -> Option<(u64, Option<String>)> {
    let metadata = file.metadata().ok()?;
    Some((metadata.len(), version_of(&metadata)))
}

/// How `file`'s size differs from the `opened` one, if it does.
fn size_change(file: &File, opened: u64) -> Option<String> {
    let now = file.metadata().ok()?.len();
    (now != opened).then(|| format!("its size went from {opened} to {now} bytes"))
}

impl std::fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedFile").field("len", &self.map.mmap.len()).finish()
    }
}

impl MappedFile {
    /// The page-aligned part of the mapping that `range` covers (offsets come
    /// from the file: clamped rather than trusted).
    fn pages(&self, range: &Range<u64>) -> Option<(usize, usize)> {
        let page = page_size();
        let start = (range.start as usize).min(self.map.mmap.len());
        let end = (range.end as usize).min(self.map.mmap.len());
        let aligned_start = start / page * page;
        (end > aligned_start).then(|| (aligned_start, end - aligned_start))
    }
}

impl FileBytes for MappedFile {
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
        Some(self.bytes.clone())
    }

    fn changed(&self) -> Option<String> {
        match self.map.guard.vanished() {
            true => Some("part of it could not be read while mapped (it was truncated, or an I/O error)".into()),
            false => size_change(&self.file, self.map.mmap.len() as u64),
        }
    }

    fn stat_now(&self) -> Option<(u64, Option<String>)> {
        stat_of(&self.file)
    }

    fn will_need(&self, ranges: &[Range<u64>]) {
        for (start, len) in ranges.iter().filter_map(|r| self.pages(r)) {
            // Advice is best effort: a failure changes speed, never results.
            let _ = populate(&self.map.mmap, start, len);
        }
    }

    fn done_with(&self, ranges: &[Range<u64>]) {
        for (start, len) in ranges.iter().filter_map(|r| self.pages(r)) {
            // SAFETY: the mapping is a read-only shared file mapping that this
            // process never writes. MADV_DONTNEED on it only discards resident
            // pages, and the next access reads them from the file again, so
            // no slice of the mapping ever sees different bytes.
            let _ = unsafe {
                self.map
                    .mmap
                    .unchecked_advise_range(UncheckedAdvice::DontNeed, start, len)
            };
        }
    }
}

/// Maps the pages of a range in one call (`MADV_POPULATE_READ`, Linux 5.14+)
/// rather than one page fault per 64 KB as the decoder walks it: a tenth of
/// the page faults and about 5% of the run time on the 10M-row benchmark.
/// Older kernels get the `WILLNEED` read-ahead hint instead.
fn populate(mmap: &Mmap, start: usize, len: usize) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    if mmap.advise_range(Advice::PopulateRead, start, len).is_ok() {
        return Ok(());
    }
    mmap.advise_range(Advice::WillNeed, start, len)
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as usize } else { 4096 }
}

/// A file read with positioned reads: what a source that cannot map does.
#[derive(Debug)]
struct ReadFile {
    file: File,
    len: u64,
}

/// Ranges closer than this are read in one call (the bytes between are
/// cheaper to read than another system call).
const LOCAL_MAX_GAP: u64 = 64 * 1024;

impl ReadFile {
    fn read(&self, range: Range<u64>) -> std::io::Result<Bytes> {
        if range.start > range.end || range.end > self.len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "bytes {}..{} are not in a file of {} bytes",
                    range.start, range.end, self.len
                ),
            ));
        }
        let mut buffer = vec![0; (range.end - range.start) as usize];
        self.file.read_exact_at(&mut buffer, range.start)?;
        Ok(Bytes::from(buffer))
    }
}

impl FileBytes for ReadFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn suffix(&self, n: u64) -> std::io::Result<Bytes> {
        self.read(self.len - n.min(self.len)..self.len)
    }

    fn ranges(&self, ranges: &[Range<u64>]) -> std::io::Result<Vec<Bytes>> {
        read_coalesced(ranges, LOCAL_MAX_GAP, |range| self.read(range))
    }

    fn changed(&self) -> Option<String> {
        size_change(&self.file, self.len)
    }

    fn stat_now(&self) -> Option<(u64, Option<String>)> {
        stat_of(&self.file)
    }
}

/// Data files under `input`, each with its path relative to `input`, in path
/// order. A file given directly is its own table, named by its file name.
fn find_data_files(input: &Path) -> Result<Vec<DataFile>, SourceError> {
    let metadata = fs::metadata(input).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => SourceError::InputNotFound {
            path: input.to_path_buf(),
        },
        _ => SourceError::Inspect {
            path: input.to_path_buf(),
            source,
        },
    })?;
    if metadata.is_file() {
        let name = input
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| input.to_path_buf());
        return Ok(vec![data_file(input.to_path_buf(), name, &metadata)]);
    }
    let mut found = Vec::new();
    let mut visited = HashSet::new();
    walk(input, Path::new(""), &mut visited, &mut found)?;
    if found.is_empty() {
        return Err(SourceError::NoDataFiles {
            path: input.to_path_buf(),
        });
    }
    Ok(found)
}

fn walk(
    dir: &Path,
    relative: &Path,
    visited: &mut HashSet<PathBuf>,
    found: &mut Vec<DataFile>,
) -> Result<(), SourceError> {
    let read_error = |source| SourceError::ReadDir {
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
        let metadata = fs::metadata(&path).map_err(|source| SourceError::Inspect {
            path: path.clone(),
            source,
        })?;
        if metadata.is_dir() {
            walk(&path, &relative.join(&name), visited, found)?;
        } else {
            found.push(data_file(path, relative.join(&name), &metadata));
        }
    }
    Ok(())
}

fn data_file(location: PathBuf, relative_path: PathBuf, metadata: &fs::Metadata) -> DataFile {
    DataFile {
        partition_values: partition_values(&relative_path),
        location,
        relative_path,
        size: metadata.len(),
        version: version_of(metadata),
        deleted_rows: None,
        column_names: None,
    }
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
    fn a_read_outside_the_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ten");
        std::fs::write(&path, b"0123456789").unwrap();
        let file = LocalTable::open_file(&path, MmapChoice::never()).unwrap();
        assert_eq!(&file.ranges(&[2..5, 8..10]).unwrap()[1][..], b"89");
        assert_eq!(&file.suffix(4).unwrap()[..], b"6789");
        #[allow(clippy::reversed_empty_ranges)]
        for bad in [5..3, 8..11, 20..30] {
            let error = file.ranges(std::slice::from_ref(&bad)).unwrap_err();
            assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput, "{bad:?}");
        }
    }

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
