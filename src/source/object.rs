//! A table on object storage (`s3://bucket/lake/customers/`): one object, or
//! the objects under a prefix, Hive-partitioned as a local folder is (keys
//! with a segment starting with `_` or `.` are not data).
//!
//! Every read is a ranged GET carrying the ETag the listing saw
//! (`If-Match`), so an object replaced during the run fails the read instead
//! of mixing two versions: the footer with one request of
//! [`crate::scan::FOOTER_READ_HINT`] bytes (a second only for a larger
//! footer); a row group's projected column chunks in as few requests as
//! keep the bytes fetched within [`WASTE`] of the bytes needed, sent
//! together. The pass asks for the next row groups ahead of the workers
//! ([`FileBytes::will_need`]), so the network stays busy while they decode.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt};

use super::local::partition_values;
use super::{DataFile, FileBytes, SourceError, TableSource};
use crate::store::{self, Fetch, IoCounters, Remote, StoreError, relative_key};

/// The share of bytes a row group's requests may fetch beyond its column
/// chunks (the gaps between chunks read through): fewer requests, at most
/// this much more transfer.
pub const WASTE: f64 = 0.10;

/// Row groups fetched ahead per file, at most: the pass asks for one per
/// worker; this bounds what a misbehaving caller could pile up.
const MAX_AHEAD: usize = 64;

/// A table on object storage.
#[derive(Debug, Clone)]
pub struct ObjectTable {
    remote: Remote,
    location: PathBuf,
}

impl ObjectTable {
    pub fn new(remote: Remote) -> ObjectTable {
        ObjectTable {
            location: PathBuf::from(&remote.url),
            remote,
        }
    }

    /// What the table's reads cost so far.
    pub fn counters(&self) -> Arc<IoCounters> {
        Arc::clone(&self.remote.counters)
    }
}

impl TableSource for ObjectTable {
    fn location(&self) -> &Path {
        &self.location
    }

    fn list(&self) -> Result<Vec<DataFile>, SourceError> {
        let remote = self.remote.clone();
        store::block_on(list_data_files(remote))
    }

    fn open(&self, file: &DataFile) -> Result<Arc<dyn FileBytes>, SourceError> {
        let relative = file.relative_path.to_string_lossy();
        let path = match file.location.as_os_str() == self.location.as_os_str() {
            // The table is this one object.
            true => self.remote.path.clone(),
            false => self.remote.join(&relative).path,
        };
        Ok(self.open_object(path, file))
    }

    fn io_counters(&self) -> Option<Arc<IoCounters>> {
        Some(self.counters())
    }
}

impl ObjectTable {
    /// A reader of the object at `path` (in this table's store), as `file`
    /// lists it: for a table format, whose log names a file by a path that
    /// need not be the one its output takes.
    pub(crate) fn open_object(&self, path: ObjectPath, file: &DataFile) -> Arc<dyn FileBytes> {
        // The listing gave the size and the ETag: opening costs no request.
        Arc::new(ObjectFile {
            store: Arc::clone(&self.remote.store),
            path,
            url: file.location.to_string_lossy().into_owned(),
            size: file.size,
            e_tag: file
                .version
                .as_deref()
                .and_then(|v| v.strip_prefix(ETAG))
                .map(str::to_string),
            counters: Arc::clone(&self.remote.counters),
            ahead: Mutex::new(Vec::new()),
        })
    }

    /// Where the table is.
    pub fn remote(&self) -> &Remote {
        &self.remote
    }
}

/// How a listed object's ETag is written in [`DataFile::version`].
const ETAG: &str = "etag ";

/// The data files of `remote`: the object itself when it is one, otherwise
/// every data object under it, in path order.
async fn list_data_files(remote: Remote) -> Result<Vec<DataFile>, SourceError> {
    let request_error = |operation, error: object_store::Error| {
        SourceError::Remote(match error {
            object_store::Error::NotFound { .. } => StoreError::NotFound {
                url: remote.url.clone(),
            },
            other => StoreError::Request {
                operation,
                url: remote.url.clone(),
                message: store::message_of(&other),
            },
        })
    };
    if !remote.path.as_ref().is_empty() {
        remote.counters.add(1, 0);
        match remote.store.head(&remote.path).await {
            Ok(meta) => {
                let name = remote.path.filename().unwrap_or(remote.path.as_ref());
                return Ok(vec![data_file(remote.url.clone(), PathBuf::from(name), &meta)]);
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(other) => return Err(request_error("HEAD", other)),
        }
    }
    let mut listing = remote.store.list(Some(&remote.path));
    let mut found = Vec::new();
    let mut any = false;
    let mut objects = 0u64;
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(|error| request_error("LIST", error))?;
        any = true;
        objects += 1;
        let Some(relative) = relative_key(&remote.path, &meta.location) else {
            continue;
        };
        if relative
            .split('/')
            .any(|part| part.starts_with('_') || part.starts_with('.'))
        {
            continue;
        }
        found.push(data_file(remote.join(&relative).url, PathBuf::from(relative), &meta));
    }
    // A listing request returns up to a thousand keys.
    remote.counters.add(objects.div_ceil(1000).max(1), 0);
    if found.is_empty() {
        return Err(match any {
            false => SourceError::InputNotFound {
                path: PathBuf::from(&remote.url),
            },
            true => SourceError::NoDataFiles {
                path: PathBuf::from(&remote.url),
            },
        });
    }
    found.sort_by(|a, b| a.relative_path.cmp(&b.relative_path));
    Ok(found)
}

fn data_file(location: String, relative_path: PathBuf, meta: &ObjectMeta) -> DataFile {
    DataFile {
        partition_values: partition_values(&relative_path),
        location: PathBuf::from(location),
        relative_path,
        size: meta.size,
        version: Some(match &meta.e_tag {
            Some(tag) => format!("{ETAG}{tag}"),
            None => format!("modified {}", meta.last_modified.to_rfc3339()),
        }),
        deleted_rows: None,
        column_names: None,
    }
}

/// One object, read with ranged GETs pinned to its listed ETag.
pub struct ObjectFile {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    url: String,
    size: u64,
    e_tag: Option<String>,
    counters: Arc<IoCounters>,
    /// Row groups asked for ahead: their ranges, and the requests under way.
    ahead: Mutex<Vec<(Vec<Range<u64>>, RangesFetch)>>,
}

impl std::fmt::Debug for ObjectFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectFile")
            .field("url", &self.url)
            .field("size", &self.size)
            .finish()
    }
}

/// Ranges of an object on their way.
type RangesFetch = Fetch<std::io::Result<Vec<Bytes>>>;

/// What one object's requests need, owned, to run on the I/O runtime.
#[derive(Clone)]
struct Getter {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    url: String,
    e_tag: Option<String>,
    counters: Arc<IoCounters>,
}

impl Getter {
    async fn get(&self, range: Range<u64>) -> std::io::Result<Bytes> {
        let options = GetOptions::default()
            .with_range(Some(GetRange::Bounded(range.clone())))
            .with_if_match(self.e_tag.clone());
        let failed = |error: object_store::Error| {
            let message = match &error {
                object_store::Error::Precondition { .. } => format!(
                    "`{}` changed since it was listed (it is no longer ETag {})",
                    self.url,
                    self.e_tag.as_deref().unwrap_or("?")
                ),
                object_store::Error::NotFound { .. } => format!("`{}` was deleted during the run", self.url),
                other => format!(
                    "GET bytes {}..{} of `{}` failed: {}",
                    range.start,
                    range.end,
                    self.url,
                    store::message_of(other)
                ),
            };
            std::io::Error::other(message)
        };
        let result = self.store.get_opts(&self.path, options).await.map_err(failed)?;
        let bytes = result.bytes().await.map_err(failed)?;
        self.counters.add(1, bytes.len() as u64);
        if bytes.len() as u64 != range.end - range.start {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "GET bytes {}..{} of `{}` returned {} bytes",
                    range.start,
                    range.end,
                    self.url,
                    bytes.len()
                ),
            ));
        }
        Ok(bytes)
    }

    /// The bytes of each range, in order: the planned requests sent
    /// together, each range sliced out of its request.
    async fn ranges(self, ranges: Vec<Range<u64>>) -> std::io::Result<Vec<Bytes>> {
        let (reads, read_of) = plan_requests(&ranges, WASTE);
        let buffers: Vec<Bytes> = futures_util::stream::iter(reads.iter().cloned())
            .map(|read| self.get(read))
            .buffered(8)
            .try_collect()
            .await?;
        Ok(super::slice_reads(&ranges, &reads, &read_of, &buffers))
    }
}

impl ObjectFile {
    fn getter(&self) -> Getter {
        Getter {
            store: Arc::clone(&self.store),
            path: self.path.clone(),
            url: self.url.clone(),
            e_tag: self.e_tag.clone(),
            counters: Arc::clone(&self.counters),
        }
    }

    fn check(&self, ranges: &[Range<u64>]) -> std::io::Result<()> {
        match ranges.iter().find(|r| r.start > r.end || r.end > self.size) {
            Some(r) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "bytes {}..{} are not in an object of {} bytes",
                    r.start, r.end, self.size
                ),
            )),
            None => Ok(()),
        }
    }
}

impl FileBytes for ObjectFile {
    fn len(&self) -> u64 {
        self.size
    }

    fn suffix(&self, n: u64) -> std::io::Result<Bytes> {
        // A bounded range, not a suffix one: the size is known, and Azure
        // takes no suffix ranges.
        let n = n.min(self.size);
        if n == 0 {
            return Ok(Bytes::new());
        }
        let getter = self.getter();
        let range = self.size - n..self.size;
        store::block_on(async move { getter.get(range).await })
    }

    fn ranges(&self, ranges: &[Range<u64>]) -> std::io::Result<Vec<Bytes>> {
        self.check(ranges)?;
        let started = {
            let mut ahead = self.ahead.lock().unwrap();
            ahead
                .iter()
                .position(|(asked, _)| asked == ranges)
                .map(|k| ahead.swap_remove(k).1)
        };
        match started {
            Some(fetch) => fetch.wait(),
            None => {
                let getter = self.getter();
                let ranges = ranges.to_vec();
                store::block_on(getter.ranges(ranges))
            }
        }
    }

    fn will_need(&self, ranges: &[Range<u64>]) {
        if self.check(ranges).is_err() {
            // `ranges` will say so.
            return;
        }
        let mut ahead = self.ahead.lock().unwrap();
        if ahead.len() >= MAX_AHEAD || ahead.iter().any(|(asked, _)| asked == ranges) {
            return;
        }
        let fetch = Fetch::start(self.getter().ranges(ranges.to_vec()));
        ahead.push((ranges.to_vec(), fetch));
    }

    fn pinned(&self) -> bool {
        self.e_tag.is_some()
    }
}

/// The requests that fetch `ranges`: near ranges merged, smallest gaps
/// first, as long as the bytes read through gaps stay within `waste` of the
/// bytes the ranges need; and for each range, which request holds it.
fn plan_requests(ranges: &[Range<u64>], waste: f64) -> (Vec<Range<u64>>, Vec<usize>) {
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_by_key(|&i| (ranges[i].start, ranges[i].end));
    // Overlapping or touching ranges make one span.
    let mut spans: Vec<Range<u64>> = Vec::new();
    for &i in &order {
        let range = &ranges[i];
        match spans.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => spans.push(range.clone()),
        }
    }
    let needed: u64 = spans.iter().map(|s| s.end - s.start).sum();
    let mut budget = (needed as f64 * waste) as u64;
    // Gaps between spans, smallest first, merged while the budget lasts.
    let mut gaps: Vec<(u64, usize)> = spans
        .windows(2)
        .enumerate()
        .map(|(k, w)| (w[1].start - w[0].end, k))
        .collect();
    gaps.sort();
    let mut merged = vec![false; spans.len().saturating_sub(1)];
    for (gap, k) in gaps {
        if gap > budget {
            break;
        }
        budget -= gap;
        merged[k] = true;
    }
    let mut reads: Vec<Range<u64>> = Vec::new();
    for (k, span) in spans.iter().enumerate() {
        match k > 0 && merged[k - 1] {
            true => reads.last_mut().expect("a read before").end = span.end,
            false => reads.push(span.clone()),
        }
    }
    let read_of = ranges
        .iter()
        .map(|range| {
            reads
                .iter()
                .position(|read| read.start <= range.start && range.end <= read.end)
                .expect("every range lies in a read")
        })
        .collect();
    (reads, read_of)
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::PutPayload;
    use object_store::memory::InMemory;

    #[test]
    fn requests_merge_small_gaps_within_the_waste_budget() {
        // Four chunks of 1000 bytes; gaps of 10, 50 and 5000.
        let ranges = [0..1000, 1010..2010, 2060..3060, 8060..9060];
        let (reads, read_of) = plan_requests(&ranges, 0.10);
        assert_eq!(reads, vec![0..3060, 8060..9060]);
        assert_eq!(read_of, vec![0, 0, 0, 1]);
        // With no budget, every span is its own request; overlapping and
        // touching ranges still share one.
        let (reads, _) = plan_requests(&[0..10, 5..20, 20..30, 40..50], 0.0);
        assert_eq!(reads, vec![0..30, 40..50]);
        // The order of the ranges is kept in `read_of`.
        let (reads, read_of) = plan_requests(&[8060..9060, 0..1000], 0.10);
        assert_eq!(reads, vec![0..1000, 8060..9060]);
        assert_eq!(read_of, vec![1, 0]);
        assert_eq!(plan_requests(&[], 0.1), (vec![], vec![]));
    }

    fn remote_over(store: Arc<InMemory>, url: &str) -> Remote {
        Remote::parse_with(url, vec![("AWS_REGION".into(), "us-east-1".into())])
            .unwrap()
            .over(store)
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // lists of one byte range
    fn lists_data_objects_in_path_order_and_reads_ranges_of_the_listed_version() {
        let store = Arc::new(InMemory::new());
        let put = |key: &str, bytes: &'static [u8]| {
            let store = Arc::clone(&store);
            let key = ObjectPath::from(key);
            store::block_on(async move { store.put(&key, PutPayload::from_static(bytes)).await.unwrap() });
        };
        put("lake/t/dt=2/a.parquet", b"0123456789");
        put("lake/t/dt=1/b.parquet", b"abcdefghij");
        put("lake/t/dt=1-x/c.parquet", b"c");
        put("lake/t/_SUCCESS", b"{}");
        put("lake/t/_lakescore/runs/1.json", b"{}");
        put("lake/t/dt=1/.b.parquet.crc", b"x");
        put("lake/tother/x.parquet", b"x");
        let table = ObjectTable::new(remote_over(Arc::clone(&store), "s3://bucket/lake/t/"));
        let files = table.list().unwrap();
        let relative: Vec<_> = files
            .iter()
            .map(|f| f.relative_path.to_string_lossy().into_owned())
            .collect();
        // Folder by folder, as a local walk orders them: `dt=1` before `dt=1-x`.
        assert_eq!(relative, ["dt=1/b.parquet", "dt=1-x/c.parquet", "dt=2/a.parquet"]);
        assert_eq!(files[0].location, PathBuf::from("s3://bucket/lake/t/dt=1/b.parquet"));
        assert_eq!(files[0].partition_values, vec![("dt".to_string(), "1".to_string())]);
        assert!(
            files[0].version.as_deref().unwrap().starts_with(ETAG),
            "{:?}",
            files[0].version
        );

        let file = table.open(&files[2]).unwrap();
        assert_eq!(&file.suffix(3).unwrap()[..], b"789");
        let got = file.ranges(&[5..7, 0..2]).unwrap();
        assert_eq!((&got[0][..], &got[1][..]), (&b"56"[..], &b"01"[..]));
        file.will_need(&[1..4]);
        assert_eq!(&file.ranges(&[1..4]).unwrap()[0][..], b"123");
        assert!(file.ranges(&[5..11]).is_err(), "past the end");
        let counters = table.counters();
        // The listing's HEAD and LIST; the suffix; two ranges four bytes
        // apart, too far to read through; the range fetched ahead.
        assert_eq!((counters.requests(), counters.bytes()), (2 + 1 + 2 + 1, 3 + 4 + 3));

        // Replaced after the listing: the read fails, naming the object.
        put("lake/t/dt=2/a.parquet", b"9876543210");
        let error = file.suffix(3).unwrap_err().to_string();
        assert!(
            error.contains("s3://bucket/lake/t/dt=2/a.parquet") && error.contains("changed"),
            "{error}"
        );

        // One object given directly is a table of one file.
        let single = ObjectTable::new(remote_over(Arc::clone(&store), "s3://bucket/lake/t/dt=1/b.parquet"));
        let files = single.list().unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].relative_path, PathBuf::from("b.parquet"));
        assert_eq!(&single.open(&files[0]).unwrap().suffix(2).unwrap()[..], b"ij");

        let missing = ObjectTable::new(remote_over(Arc::clone(&store), "s3://bucket/nothing/here"));
        assert!(matches!(missing.list(), Err(SourceError::InputNotFound { .. })));
        put("lake/hidden/_SUCCESS", b"{}");
        let not_data = ObjectTable::new(remote_over(store, "s3://bucket/lake/hidden"));
        assert!(matches!(not_data.list(), Err(SourceError::NoDataFiles { .. })));
    }
}
