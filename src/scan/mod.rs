//! Scan: read a Parquet file's footer once, and decode the projected columns
//! of one row group at a time, from the bytes its [`crate::source`] gives.
//!
//! A memory-mapped file is never copied: parquet's `ChunkReader` is given a
//! `Bytes` that borrows the mapping, so only the pages of the projected column
//! chunks are touched, and after a row group is decoded its pages are dropped
//! from this process's resident set (`MADV_DONTNEED`), which keeps peak memory
//! independent of the table size. Any other source has a row group's
//! projected column chunks fetched when a worker starts it (one coalesced
//! request) and dropped when the row group is done: memory is bounded the
//! same way.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::record_batch::RecordBatch;
use bytes::Buf;
use bytes::Bytes;
mod page_header;

use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};
use parquet::column::page::PageReader;
use parquet::column::reader::{ColumnReader, ColumnReaderImpl, get_column_reader};
use parquet::data_type::{BoolType, DoubleType, FloatType, Int32Type, Int64Type};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ColumnChunkMetaData, ParquetMetaDataReader};
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::serialized_reader::SerializedPageReader;
use parquet::schema::types::SchemaDescriptor;

use crate::source::{DataFile, FileBytes, LocalTable, MmapChoice, SourceError};
use crate::util::sha256_hex;

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("cannot open input file `{}`", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("input file `{}` is empty (0 bytes), not a Parquet file", path.display())]
    EmptyFile { path: PathBuf },
    #[error("input file `{}` is not a Parquet file: it does not end with the `PAR1` magic", path.display())]
    NotParquet { path: PathBuf },
    #[error("cannot read row group {row_group} of `{}`", path.display())]
    Read {
        path: PathBuf,
        row_group: usize,
        #[source]
        source: std::io::Error,
    },
    /// The file's source failed before its bytes were read.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Seen before publishing: the run's scores are of bytes the file no
    /// longer holds, so nothing is published.
    #[error(
        "input file `{}` changed while the run read it: {change}; nothing was published \
         (lake files must be replaced by new files, not rewritten in place)",
        path.display()
    )]
    Changed { path: PathBuf, change: String },
    #[error("cannot read the Parquet footer of `{}`", path.display())]
    Footer {
        path: PathBuf,
        #[source]
        source: ParquetError,
    },
    #[error("cannot decode column `{column}` of row group {row_group} of `{}`", path.display())]
    DecodeColumn {
        path: PathBuf,
        row_group: usize,
        column: String,
        #[source]
        source: DecodeError,
    },
    #[error("cannot decode row group {row_group} of `{}`{columns}", path.display())]
    Decode {
        path: PathBuf,
        row_group: usize,
        /// The columns that were being decoded, when more than one.
        columns: ColumnList,
        #[source]
        source: DecodeError,
    },
}

/// ` (one of columns `a`, `b`)`, or nothing when empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnList(pub Vec<String>);

impl std::fmt::Display for ColumnList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = self.0.iter().map(|c| format!("`{c}`")).collect();
        write!(f, " (one of columns {})", names.join(", "))
    }
}

/// Why a row group could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Parquet(#[from] ParquetError),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("the pages hold {found} rows where the footer promises {expected}")]
    RowCount { expected: usize, found: usize },
    /// The parquet crate asserts on some malformed pages (a dictionary-
    /// encoded page without a dictionary, for one) instead of erring.
    #[error("the page data is damaged (the parquet reader stopped on it: {0})")]
    Damaged(String),
}

thread_local! {
    /// Whether this thread is inside [`decoding`]: a panic there is a
    /// damaged file, reported as an error, so the binary's panic hook keeps
    /// quiet about it ([`decoding_now`]).
    static DECODING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the current thread is decoding pages through [`decoding`]: for
/// a program's panic hook, which should not print a panic that becomes a
/// decode error.
pub fn decoding_now() -> bool {
    DECODING.with(std::cell::Cell::get)
}

/// Runs a call into parquet's page decoders, turning a panic on damaged
/// data into [`DecodeError::Damaged`]: a damaged input file is an error
/// naming it, its row group and column, not an internal error.
fn decoding<T>(read: impl FnOnce() -> Result<T, DecodeError>) -> Result<T, DecodeError> {
    let outer = DECODING.with(|d| d.replace(true));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(read));
    DECODING.with(|d| d.set(outer));
    outcome.unwrap_or_else(|payload| Err(DecodeError::Damaged(crate::util::panic_message(&*payload))))
}

/// One input file with its footer parsed, read through its source.
pub struct ParquetFile {
    pub path: PathBuf,
    pub size_bytes: u64,
    /// SHA-256 of the footer (metadata plus length and magic): changes whenever
    /// the file's content does, for the price of hashing a few kilobytes.
    pub footer_fingerprint: String,
    pub metadata: ArrowReaderMetadata,
    /// The file's columns as the table names them: the Arrow schema of
    /// `metadata`, with the table's names where the file stores columns
    /// under others (Delta column mapping). Columns are looked up by name
    /// here; parquet's readers, which go by position, keep the stored names.
    schema: arrow::datatypes::SchemaRef,
    data: Arc<dyn FileBytes>,
    /// The whole file, when the source holds it at no cost (a memory map).
    whole: Option<Bytes>,
    /// Each readied row group's fetched column chunks, until released
    /// (sources without `whole` only).
    fetched: Mutex<HashMap<usize, Arc<Fetched>>>,
}

impl std::fmt::Debug for ParquetFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetFile")
            .field("path", &self.path)
            .field("size_bytes", &self.size_bytes)
            .field("row_groups", &self.metadata.metadata().num_row_groups())
            .finish()
    }
}

const PARQUET_MAGIC: &[u8; 4] = b"PAR1";

/// The footer of the Parquet file `data` (at `path`, for messages) with its
/// length and magic: one suffix read of [`FOOTER_READ_HINT`] bytes, a second
/// only when the footer is larger; sliced from `whole` when the file is
/// mapped.
pub fn footer_bytes(path: &Path, data: &dyn FileBytes, whole: Option<&Bytes>) -> Result<Bytes, ScanError> {
    let read_error = |source| ScanError::Open {
        path: path.to_path_buf(),
        source,
    };
    let size_bytes = data.len();
    if size_bytes == 0 {
        // (A mapping of an empty file fails with a confusing EINVAL.)
        return Err(ScanError::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    let tail = match whole {
        Some(bytes) => bytes.clone(),
        None => data.suffix(FOOTER_READ_HINT.min(size_bytes)).map_err(read_error)?,
    };
    if tail.len() < 8 || &tail[tail.len() - 4..] != PARQUET_MAGIC {
        return Err(ScanError::NotParquet {
            path: path.to_path_buf(),
        });
    }
    let footer_len = u32::from_le_bytes(tail[tail.len() - 8..tail.len() - 4].try_into().unwrap()) as u64;
    if footer_len + 8 > size_bytes {
        return Err(ScanError::Footer {
            path: path.to_path_buf(),
            source: ParquetError::General(format!(
                "the footer says it is {footer_len} bytes long, in a file of {size_bytes} bytes"
            )),
        });
    }
    Ok(match footer_len as usize + 8 <= tail.len() {
        true => tail.slice(tail.len() - footer_len as usize - 8..),
        false => data.suffix(footer_len + 8).map_err(read_error)?,
    })
}

/// Every column chunk's offsets and size lie inside the file: the footer
/// comes from the file, and parquet's readers assert (panic) on a negative
/// one rather than err.
fn check_chunk_offsets(metadata: &parquet::file::metadata::ParquetMetaData, file_len: u64) -> Result<(), String> {
    for (r, row_group) in metadata.row_groups().iter().enumerate() {
        for column in row_group.columns() {
            let start = column.dictionary_page_offset().unwrap_or(column.data_page_offset());
            let (data, size) = (column.data_page_offset(), column.compressed_size());
            let inside = start >= 0
                && data >= 0
                && (data as u64) < file_len
                && size >= 0
                && (start as u64)
                    .checked_add(size as u64)
                    .is_some_and(|end| end <= file_len);
            if !inside {
                return Err(format!(
                    "row group {r} column `{}` claims bytes {start}..{start}+{size} (data from {data}), \
                     outside the file of {file_len} bytes",
                    column.column_path().string()
                ));
            }
        }
    }
    Ok(())
}

/// The footer is read with one suffix read of this many bytes, and a second
/// only when it is larger (a few kilobytes is usual; wide tables with many
/// row groups reach hundreds).
pub const FOOTER_READ_HINT: u64 = 64 * 1024;

impl ParquetFile {
    /// Opens the local file `path` and reads its footer (with positioned
    /// reads, no mapping). For the side tables a command reads (outcomes,
    /// assignments, labels); a run's input table is read through its
    /// [`crate::source::TableSource`].
    pub fn open(path: &Path) -> Result<Self, ScanError> {
        let data = LocalTable::open_file(path, MmapChoice::never()).map_err(|error| match error {
            SourceError::Open { path, source } => ScanError::Open { path, source },
            other => ScanError::Source(other),
        })?;
        ParquetFile::read(path, data)
    }

    /// Reads the footer of the file at `path` (for messages) from `data`.
    pub fn read(path: &Path, data: Arc<dyn FileBytes>) -> Result<Self, ScanError> {
        let size_bytes = data.len();
        let whole = data.whole();
        let footer = footer_bytes(path, data.as_ref(), whole.as_ref())?;
        let footer_error = |source| ScanError::Footer {
            path: path.to_path_buf(),
            source,
        };
        let footer_fingerprint = sha256_hex(&footer);
        let metadata = ParquetMetaDataReader::decode_metadata(&footer[..footer.len() - 8]).map_err(footer_error)?;
        check_chunk_offsets(&metadata, size_bytes).map_err(|problem| footer_error(ParquetError::General(problem)))?;
        let metadata =
            ArrowReaderMetadata::try_new(Arc::new(metadata), ArrowReaderOptions::new()).map_err(footer_error)?;
        let schema = Arc::clone(metadata.schema());
        Ok(ParquetFile {
            path: path.to_path_buf(),
            size_bytes,
            footer_fingerprint,
            metadata,
            schema,
            data,
            whole,
            fetched: Mutex::new(HashMap::new()),
        })
    }

    /// The file's columns under the table's names (see the field).
    pub fn schema(&self) -> &arrow::datatypes::SchemaRef {
        &self.schema
    }

    /// Reads the listed file `listed` from `data`: as [`ParquetFile::read`],
    /// its columns under the names the table gives them
    /// ([`DataFile::column_names`]; only the names differ).
    pub fn read_listed(listed: &DataFile, data: Arc<dyn FileBytes>) -> Result<Self, ScanError> {
        let mut file = Self::read(&listed.location, data)?;
        if let Some(names) = &listed.column_names {
            let renamed: Vec<arrow::datatypes::FieldRef> = file
                .schema
                .fields()
                .iter()
                .map(|field| match names.get(field.name()) {
                    Some(name) => Arc::new(field.as_ref().clone().with_name(name)),
                    None => Arc::clone(field),
                })
                .collect();
            file.schema = Arc::new(arrow::datatypes::Schema::new_with_metadata(
                renamed,
                file.schema.metadata().clone(),
            ));
        }
        Ok(file)
    }

    /// What parquet's readers read row group `row_group` from: the whole
    /// file, or its fetched column chunks.
    fn chunks(&self, row_group: usize) -> Chunks {
        match &self.whole {
            Some(bytes) => Chunks::Whole(bytes.clone()),
            None => Chunks::Fetched {
                file_len: self.size_bytes,
                fetched: self
                    .fetched
                    .lock()
                    .unwrap()
                    .get(&row_group)
                    .cloned()
                    .unwrap_or_default(),
            },
        }
    }

    /// The SHA-256 of the whole file's bytes.
    pub fn content_sha256(&self) -> Result<String, ScanError> {
        if let Some(bytes) = &self.whole {
            return Ok(sha256_hex(bytes));
        }
        // Read in windows, so that hashing a large file needs no large buffer.
        const WINDOW: u64 = 8 << 20;
        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
        let mut start = 0;
        while start < self.size_bytes {
            let window = start..(start + WINDOW).min(self.size_bytes);
            let bytes = self
                .data
                .ranges(std::slice::from_ref(&window))
                .map_err(|source| ScanError::Open {
                    path: self.path.clone(),
                    source,
                })?;
            sha2::Digest::update(&mut hasher, &bytes[0]);
            start = window.end;
        }
        Ok(crate::util::hex(&sha2::Digest::finalize(hasher)))
    }

    pub fn num_row_groups(&self) -> usize {
        self.metadata.metadata().num_row_groups()
    }

    pub fn row_group_rows(&self, row_group: usize) -> usize {
        self.metadata.metadata().row_group(row_group).num_rows() as usize
    }

    /// Decodes the columns in `projection` of one row group, `batch_rows` rows
    /// at a time. Small batches keep each thread's working set in the CPU cache
    /// and let the allocator reuse the same buffers batch after batch.
    pub fn read_row_group(
        &self,
        row_group: usize,
        projection: &ProjectionMask,
        batch_rows: usize,
    ) -> Result<RowGroupBatches<'_>, ScanError> {
        let reader = decoding(|| {
            Ok(
                ParquetRecordBatchReaderBuilder::new_with_metadata(self.chunks(row_group), self.metadata.clone())
                    .with_row_groups(vec![row_group])
                    .with_projection(projection.clone())
                    .with_batch_size(batch_rows.max(1))
                    .build()?,
            )
        })
        .map_err(|source| self.arrow_decode_error(row_group, projection, source))?;
        Ok(RowGroupBatches {
            projection: projection.clone(),
            file: self,
            row_group,
            reader,
            rows_read: 0,
        })
    }

    /// Every row of the columns in `projection` of one row group (which has
    /// rows), as one batch: for reads outside the pass (a freshness column,
    /// example rows' ids).
    pub fn read_columns(&self, row_group: usize, projection: &ProjectionMask) -> Result<RecordBatch, ScanError> {
        let rows = self.row_group_rows(row_group);
        self.readied(row_group, projection, || {
            self.read_row_group(row_group, projection, rows.max(1))?.read(rows)
        })
    }

    /// `read`, between readying the chunks of `projection` in a row group and
    /// letting them go, whatever it returns.
    fn readied<T, E: From<ScanError>>(
        &self,
        row_group: usize,
        projection: &ProjectionMask,
        read: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let leaves: Vec<usize> = (0..self.metadata.parquet_schema().num_columns())
            .filter(|&leaf| projection.leaf_included(leaf))
            .collect();
        self.prefetch_row_group(row_group, &leaves)?;
        let result = read();
        self.release_row_group(row_group, &leaves);
        // Whatever was read, zeros where the file was are not its rows.
        self.check_intact()?;
        result
    }

    /// Errors out when the file this reads changed since it was opened from
    /// `listed`: its bytes vanished, its size or version (modification
    /// time, ETag) is not the listed one, or its footer is not the one read.
    /// It is the opened file that counts: one that a rename replaced, or
    /// that was deleted, is still the file the run read.
    pub fn check_unchanged(&self, listed: &DataFile) -> Result<(), ScanError> {
        self.check_intact()?;
        let changed = |change: String| ScanError::Changed {
            path: self.path.clone(),
            change,
        };
        if listed.size != self.size_bytes {
            return Err(changed(format!(
                "it was listed at {} bytes and opened at {}",
                listed.size, self.size_bytes
            )));
        }
        if self.data.pinned() {
            // Every read was of the listed version, or failed.
            return Ok(());
        }
        if let Some((size, version)) = self.data.stat_now() {
            if size != self.size_bytes {
                return Err(changed(format!(
                    "its size went from {} to {size} bytes",
                    self.size_bytes
                )));
            }
            if version != listed.version {
                let describe = |v: Option<&str>| v.unwrap_or("no version").to_string();
                return Err(changed(format!(
                    "{} became {}",
                    describe(listed.version.as_deref()),
                    describe(version.as_deref())
                )));
            }
        }
        let footer = footer_bytes(&self.path, self.data.as_ref(), self.whole.as_ref())?;
        if sha256_hex(&footer) != self.footer_fingerprint {
            return Err(changed("its footer is not the one the run read".into()));
        }
        Ok(())
    }

    /// Errors out when the file changed since it was opened, as far as its
    /// source can tell cheaply (a truncation, a mapping's vanished pages).
    pub fn check_intact(&self) -> Result<(), ScanError> {
        match self.data.changed() {
            Some(change) => Err(ScanError::Changed {
                path: self.path.clone(),
                change,
            }),
            None => Ok(()),
        }
    }

    /// Decodes the columns in `projection` of one row group, `batch_rows`
    /// rows at a time, calling `each` with the row each batch starts at and
    /// the batch; then checks the pages hold no rows beyond those read.
    pub fn for_each_batch<E: From<ScanError>>(
        &self,
        row_group: usize,
        projection: &ProjectionMask,
        batch_rows: usize,
        mut each: impl FnMut(usize, RecordBatch) -> Result<(), E>,
    ) -> Result<(), E> {
        self.readied(row_group, projection, || {
            let rows = self.row_group_rows(row_group);
            let mut batches = self.read_row_group(row_group, projection, batch_rows)?;
            let mut done = 0;
            while done < rows {
                let n = batch_rows.min(rows - done);
                each(done, batches.read(n)?)?;
                done += n;
            }
            Ok(batches.finish()?)
        })
    }

    /// The error for a failure of the Arrow reader, naming the column when it
    /// was reading only one (as it usually does: the id column).
    fn arrow_decode_error(&self, row_group: usize, projection: &ProjectionMask, source: DecodeError) -> ScanError {
        let descriptor = self.metadata.parquet_schema();
        let mut columns: Vec<String> = Vec::new();
        for leaf in (0..descriptor.num_columns()).filter(|&leaf| projection.leaf_included(leaf)) {
            let root = descriptor.get_column_root(leaf).name().to_string();
            if !columns.contains(&root) {
                columns.push(root);
            }
        }
        match <[String; 1]>::try_from(columns) {
            Ok([column]) => ScanError::DecodeColumn {
                path: self.path.clone(),
                row_group,
                column,
                source,
            },
            Err(columns) => ScanError::Decode {
                path: self.path.clone(),
                row_group,
                columns: ColumnList(columns),
                source,
            },
        }
    }

    /// A reader of one leaf column of one row group that decodes its values
    /// without building Arrow arrays: the fast path for numeric features.
    pub fn leaf_reader(&self, row_group: usize, leaf: usize) -> Result<LeafReader, ScanError> {
        let metadata = self.metadata.metadata();
        let descriptor = metadata.file_metadata().schema_descr().column(leaf);
        let chunk = metadata.row_group(row_group).column(leaf);
        let column = descriptor.path().string();
        let decode_error = |source: ParquetError| ScanError::DecodeColumn {
            path: self.path.clone(),
            row_group,
            column: column.clone(),
            source: source.into(),
        };
        let pages = SerializedPageReader::new(
            Arc::new(self.chunks(row_group)),
            chunk,
            self.row_group_rows(row_group),
            None,
        )
        .map_err(decode_error)?;
        let nullable = descriptor.max_def_level() > 0;
        let values = match get_column_reader(descriptor, Box::new(pages)) {
            ColumnReader::BoolColumnReader(r) => LeafValues::Bool(r, Vec::new()),
            ColumnReader::Int32ColumnReader(r) => LeafValues::Int32(r, Vec::new()),
            ColumnReader::Int64ColumnReader(r) => LeafValues::Int64(r, Vec::new()),
            ColumnReader::FloatColumnReader(r) => LeafValues::Float(r, Vec::new()),
            ColumnReader::DoubleColumnReader(r) => LeafValues::Double(r, Vec::new()),
            _ => {
                return Err(decode_error(ParquetError::General(format!(
                    "column `{column}` has no fast numeric reader; it should be read through Arrow"
                ))));
            }
        };
        Ok(LeafReader {
            path: self.path.clone(),
            row_group,
            column,
            nullable,
            definition_levels: Vec::new(),
            values,
        })
    }

    /// Reads every page header of a column chunk and decompresses every page,
    /// checking that the pages hold the rows the footer promises: the check a
    /// column chunk gets when it is copied to the output without decoding.
    pub fn check_column_chunk(&self, row_group: usize, leaf: usize) -> Result<(), ScanError> {
        let metadata = self.metadata.metadata();
        let chunk = metadata.row_group(row_group).column(leaf);
        let expected = self.row_group_rows(row_group);
        let check_error = |source: DecodeError| ScanError::DecodeColumn {
            path: self.path.clone(),
            row_group,
            column: chunk.column_path().string(),
            source,
        };
        let found = decoding(|| {
            let mut pages = SerializedPageReader::new(Arc::new(self.chunks(row_group)), chunk, expected, None)?;
            let mut found = 0;
            while let Some(page) = pages.get_next_page()? {
                if page.page_type() != parquet::basic::PageType::DICTIONARY_PAGE {
                    found += page.num_values() as usize;
                }
            }
            Ok(found)
        })
        .map_err(check_error)?;
        // Values, not rows, for a repeated column; copies are of flat ones.
        if found != expected {
            return Err(check_error(DecodeError::RowCount { expected, found }));
        }
        Ok(())
    }

    /// The bytes of the file and the footer's metadata of one column chunk,
    /// for copying it to the output unchanged.
    pub fn column_chunk(&self, row_group: usize, leaf: usize) -> (Chunks, ColumnChunkMetaData) {
        (
            self.chunks(row_group),
            self.metadata.metadata().row_group(row_group).column(leaf).clone(),
        )
    }

    /// The byte ranges of these leaf columns' chunks in a row group.
    fn chunk_ranges(&self, row_group: usize, leaves: &[usize]) -> Vec<Range<u64>> {
        let row_group = self.metadata.metadata().row_group(row_group);
        leaves
            .iter()
            .map(|&leaf| {
                let (start, len) = row_group.column(leaf).byte_range();
                // Offsets come from the file: saturate rather than trust them.
                start.min(self.size_bytes)..start.saturating_add(len).min(self.size_bytes)
            })
            .collect()
    }

    /// Starts fetching the chunks of these leaf columns of a row group, which
    /// a worker will ready soon, when the source fetches rather than maps:
    /// the next row groups are on their way while this one decodes.
    pub fn fetch_ahead(&self, row_group: usize, leaves: &[usize]) {
        if self.whole.is_none() && row_group < self.num_row_groups() {
            self.data.will_need(&self.chunk_ranges(row_group, leaves));
        }
    }

    /// Readies the chunks of these leaf columns of a row group: a mapped
    /// file faults their pages in; any other source fetches them, in one
    /// coalesced request, and keeps them until [`Self::release_row_group`].
    pub fn prefetch_row_group(&self, row_group: usize, leaves: &[usize]) -> Result<(), ScanError> {
        let ranges = self.chunk_ranges(row_group, leaves);
        if let Some(whole) = &self.whole {
            self.data.will_need(&ranges);
            let chunks: Vec<&[u8]> = ranges
                .iter()
                .map(|r| &whole[r.start as usize..r.end as usize])
                .collect();
            return self.check_dictionaries(row_group, leaves, &chunks);
        }
        let bytes = self.data.ranges(&ranges).map_err(|source| ScanError::Read {
            path: self.path.clone(),
            row_group,
            source,
        })?;
        let chunks: Vec<&[u8]> = bytes.iter().map(|b| &b[..]).collect();
        self.check_dictionaries(row_group, leaves, &chunks)?;
        let mut fetched = self.fetched.lock().unwrap();
        let entry = fetched.entry(row_group).or_default();
        let mut chunks = entry.chunks.clone();
        chunks.extend(ranges.into_iter().zip(bytes));
        chunks.sort_by_key(|(range, _)| range.start);
        *entry = Arc::new(Fetched { chunks });
        Ok(())
    }

    /// Refuses a column chunk with a page that claims more than a gigabyte or
    /// a dictionary page that claims more values than its bytes can hold,
    /// before parquet's decoders allocate by those claims (see
    /// `page_header`). `chunks` are the leaves' chunk bytes.
    fn check_dictionaries(&self, row_group: usize, leaves: &[usize], chunks: &[&[u8]]) -> Result<(), ScanError> {
        let metadata = self.metadata.metadata();
        for (&leaf, chunk) in leaves.iter().zip(chunks) {
            let column = metadata.row_group(row_group).column(leaf);
            let descriptor = column.column_descr();
            for claims in page_header::page_claims(chunk) {
                page_header::check_page(claims, descriptor.physical_type(), descriptor.type_length()).map_err(
                    |problem| ScanError::DecodeColumn {
                        path: self.path.clone(),
                        row_group,
                        column: column.column_path().string(),
                        source: DecodeError::Damaged(problem),
                    },
                )?;
            }
        }
        Ok(())
    }

    /// Lets the chunks of a decoded row group go: a mapped file drops their
    /// pages from this process's memory (they stay in the page cache); any
    /// other source drops the fetched bytes.
    pub fn release_row_group(&self, row_group: usize, leaves: &[usize]) {
        let ranges = self.chunk_ranges(row_group, leaves);
        if self.whole.is_some() {
            self.data.done_with(&ranges);
            return;
        }
        let mut fetched = self.fetched.lock().unwrap();
        if let Some(entry) = fetched.get_mut(&row_group) {
            let kept: Vec<(Range<u64>, Bytes)> = entry
                .chunks
                .iter()
                .filter(|(range, _)| !ranges.contains(range))
                .cloned()
                .collect();
            match kept.is_empty() {
                true => {
                    fetched.remove(&row_group);
                }
                false => *entry = Arc::new(Fetched { chunks: kept }),
            }
        }
    }
}

/// Column chunks of one row group, fetched, by their place in the file.
#[derive(Debug, Default)]
pub struct Fetched {
    chunks: Vec<(Range<u64>, Bytes)>,
}

impl Fetched {
    /// `len` bytes at `start`, when a fetched chunk holds them.
    fn get(&self, start: u64, len: u64) -> Option<Bytes> {
        let at = self.chunks.partition_point(|(range, _)| range.start <= start);
        let (range, bytes) = self.chunks.get(at.checked_sub(1)?)?;
        (start + len <= range.end)
            .then(|| bytes.slice((start - range.start) as usize..(start - range.start + len) as usize))
    }

    /// From `start` to the end of the fetched chunk that holds it.
    fn from(&self, start: u64) -> Option<Bytes> {
        let at = self.chunks.partition_point(|(range, _)| range.start <= start);
        let (range, bytes) = self.chunks.get(at.checked_sub(1)?)?;
        (start < range.end).then(|| bytes.slice((start - range.start) as usize..))
    }
}

/// What parquet's readers read a row group from: the whole file (mapped), or
/// the row group's fetched chunks, by file offset. Every reader runs between
/// [`ParquetFile::prefetch_row_group`] and [`ParquetFile::release_row_group`]
/// of the chunks it reads; a read outside them is a bug of ours, an error.
#[derive(Clone)]
pub enum Chunks {
    Whole(Bytes),
    Fetched { file_len: u64, fetched: Arc<Fetched> },
}

impl Length for Chunks {
    fn len(&self) -> u64 {
        match self {
            Chunks::Whole(bytes) => bytes.len() as u64,
            Chunks::Fetched { file_len, .. } => *file_len,
        }
    }
}

/// A read of bytes no one readied.
fn not_readied(start: u64, length: Option<usize>) -> ParquetError {
    let what = length.map_or(String::new(), |n| format!("{n} bytes "));
    ParquetError::General(format!(
        "internal error: {what}at offset {start} were read before their row group was readied; this is a bug in \
         lakescore, please report it with the command you ran"
    ))
}

impl ChunkReader for Chunks {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        match self {
            Chunks::Whole(bytes) => bytes.get_read(start),
            Chunks::Fetched { fetched, .. } => fetched
                .from(start)
                .map(Buf::reader)
                .ok_or_else(|| not_readied(start, None)),
        }
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        match self {
            Chunks::Whole(bytes) => bytes.get_bytes(start, length),
            Chunks::Fetched { fetched, .. } => fetched
                .get(start, length as u64)
                .ok_or_else(|| not_readied(start, Some(length))),
        }
    }
}

/// The Arrow batches of one row group, read in the same steps as the leaf
/// readers, so that a file whose pages hold more or fewer rows than its footer
/// says is an error, never a misaligned row.
pub struct RowGroupBatches<'a> {
    file: &'a ParquetFile,
    projection: ProjectionMask,
    row_group: usize,
    reader: ParquetRecordBatchReader,
    rows_read: usize,
}

impl RowGroupBatches<'_> {
    /// The next `n_rows` rows, as one batch (at most the reader's batch size).
    pub fn read(&mut self, n_rows: usize) -> Result<RecordBatch, ScanError> {
        let expected = self.rows_read + n_rows;
        let next = decoding(|| Ok(self.reader.next()));
        let found = match next.map_err(|e| self.error(e))? {
            Some(Ok(batch)) if batch.num_rows() == n_rows => {
                self.rows_read = expected;
                return Ok(batch);
            }
            Some(Ok(batch)) => self.rows_read + batch.num_rows(),
            Some(Err(error)) => return Err(self.error(error.into())),
            None => self.rows_read,
        };
        Err(self.error(DecodeError::RowCount { expected, found }))
    }

    /// Checks that the pages hold no rows beyond those read.
    pub fn finish(mut self) -> Result<(), ScanError> {
        let next = decoding(|| Ok(self.reader.next()));
        match next.map_err(|e| self.error(e))? {
            None => Ok(()),
            Some(Ok(batch)) => Err(self.error(DecodeError::RowCount {
                expected: self.rows_read,
                found: self.rows_read + batch.num_rows(),
            })),
            Some(Err(error)) => Err(self.error(error.into())),
        }
    }

    fn error(&self, source: DecodeError) -> ScanError {
        self.file.arrow_decode_error(self.row_group, &self.projection, source)
    }
}

/// The leaf columns (in order) of top-level column `root`.
pub fn leaves_of_root(schema: &SchemaDescriptor, root: usize) -> Vec<usize> {
    (0..schema.num_columns())
        .filter(|&leaf| schema.get_column_root_idx(leaf) == root)
        .collect()
}

/// The leaf columns (in order) of every top-level column, in one pass: what
/// [`leaves_of_root`] gives for each, without its cost per column (a schema
/// of many columns made that quadratic).
pub fn leaves_by_root(schema: &SchemaDescriptor) -> Vec<Vec<usize>> {
    let mut by_root = vec![Vec::new(); schema.root_schema().get_fields().len()];
    for leaf in 0..schema.num_columns() {
        by_root[schema.get_column_root_idx(leaf)].push(leaf);
    }
    by_root
}

/// The decoded values of one leaf column, a batch at a time: dense non-null
/// values plus definition levels (1 = present, 0 = null) when the column is
/// nullable.
pub struct LeafReader {
    path: PathBuf,
    row_group: usize,
    column: String,
    nullable: bool,
    definition_levels: Vec<i16>,
    values: LeafValues,
}

/// A typed reader and its batch of dense values.
pub enum LeafValues {
    Bool(ColumnReaderImpl<BoolType>, Vec<bool>),
    Int32(ColumnReaderImpl<Int32Type>, Vec<i32>),
    Int64(ColumnReaderImpl<Int64Type>, Vec<i64>),
    Float(ColumnReaderImpl<FloatType>, Vec<f32>),
    Double(ColumnReaderImpl<DoubleType>, Vec<f64>),
}

impl LeafReader {
    /// Decodes the next `n_rows` rows, replacing the previous batch.
    pub fn read(&mut self, n_rows: usize) -> Result<(), ScanError> {
        self.definition_levels.clear();
        let levels = self.nullable.then_some(&mut self.definition_levels);
        let read = decoding(|| match &mut self.values {
            LeafValues::Bool(reader, values) => read_exactly(reader, values, levels, n_rows),
            LeafValues::Int32(reader, values) => read_exactly(reader, values, levels, n_rows),
            LeafValues::Int64(reader, values) => read_exactly(reader, values, levels, n_rows),
            LeafValues::Float(reader, values) => read_exactly(reader, values, levels, n_rows),
            LeafValues::Double(reader, values) => read_exactly(reader, values, levels, n_rows),
        });
        read.map_err(|source| ScanError::DecodeColumn {
            path: self.path.clone(),
            row_group: self.row_group,
            column: self.column.clone(),
            source,
        })
    }

    pub fn values(&self) -> &LeafValues {
        &self.values
    }

    /// Definition levels of the batch, `None` when the column cannot be null.
    pub fn definition_levels(&self) -> Option<&[i16]> {
        self.nullable.then_some(self.definition_levels.as_slice())
    }
}

fn read_exactly<T: parquet::data_type::DataType>(
    reader: &mut ColumnReaderImpl<T>,
    values: &mut Vec<T::T>,
    mut levels: Option<&mut Vec<i16>>,
    n_rows: usize,
) -> Result<(), DecodeError> {
    values.clear();
    let mut rows = 0;
    while rows < n_rows {
        let (records, _, _) = reader.read_records(n_rows - rows, levels.as_deref_mut(), None, values)?;
        if records == 0 {
            return Err(DecodeError::RowCount {
                expected: n_rows,
                found: rows,
            });
        }
        rows += records;
    }
    Ok(())
}
