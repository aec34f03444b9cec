//! Sink: scored row groups -> Parquet files in the staging area.
//!
//! Encoding (and compression) of a row group's output columns happens on the
//! worker that scored it, in parallel; the single writer thread only appends
//! the encoded column chunks to the file, in input order. Output files hold
//! the id columns exactly as read, then the Float32 score columns. An id
//! column whose Parquet type the output keeps as is (the usual case) is not
//! decoded at all: its column chunks are copied from the input byte for byte.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::basic::Compression;
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::ParquetError;
use parquet::file::metadata::ColumnChunkMetaData;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::{ColumnDescriptor, SchemaDescPtr};

use crate::scan::leaves_by_root;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot create output file `{}`", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write output file `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: ParquetError,
    },
    #[error("cannot write output file `{}`", path.display())]
    Flush {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make output file `{}` durable", path.display())]
    Sync {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode the output of row group {row_group} of `{}`", path.display())]
    Encode {
        path: PathBuf,
        row_group: usize,
        #[source]
        source: ParquetError,
    },
    #[error("cannot lay out the output columns for `{}`", path.display())]
    Schema {
        path: PathBuf,
        #[source]
        source: ParquetError,
    },
}

/// The output column that lists the flag rules a row broke (comma-separated
/// rule ids; null when none).
pub const FLAGS_COLUMN: &str = "lakescore_flags";

/// Names of the score columns: `score` for one output, `score_0 ..` for more.
pub fn score_column_names(n_outputs: usize) -> Vec<String> {
    match n_outputs {
        1 => vec!["score".to_string()],
        n => (0..n).map(|k| format!("score_{k}")).collect(),
    }
}

/// The schema and encoder of one output file.
pub struct OutputLayout {
    pub schema: SchemaRef,
    /// The Parquet form of `schema`, to check that a copied column chunk
    /// matches the column it is copied into.
    parquet_schema: SchemaDescPtr,
    /// The Parquet leaf columns of each field of `schema`.
    field_leaves: Vec<Vec<usize>>,
    properties: Arc<WriterProperties>,
    column_writers: ArrowRowGroupWriterFactory,
}

/// The schema of scored output: `id_fields` (as the input has them), the
/// float32 scores, and with `flags` the [`FLAGS_COLUMN`].
pub fn output_schema(id_fields: Vec<FieldRef>, score_names: &[String], flags: bool) -> SchemaRef {
    let mut fields = id_fields;
    fields.extend(
        score_names
            .iter()
            .map(|name| Arc::new(Field::new(name, DataType::Float32, false))),
    );
    if flags {
        fields.push(Arc::new(Field::new(FLAGS_COLUMN, DataType::Utf8, true)));
    }
    Arc::new(Schema::new(fields))
}

impl OutputLayout {
    /// Output of `id_fields` (as the input has them) followed by the scores,
    /// and, with `flags`, the [`FLAGS_COLUMN`] of the contract's flag rules.
    pub fn new(
        for_input: &Path,
        id_fields: Vec<FieldRef>,
        score_names: &[String],
        flags: bool,
    ) -> Result<Self, SinkError> {
        let schema = output_schema(id_fields, score_names, flags);
        // Scores are nearly all distinct: a dictionary would be built, found
        // too large, and thrown away (a fifth of the scoring time once).
        let properties = Arc::new(
            WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .set_dictionary_enabled(false)
                .build(),
        );
        let schema_error = |source| SinkError::Schema {
            path: for_input.to_path_buf(),
            source,
        };
        // The factory needs a file writer to copy its Parquet schema from; a
        // writer into the void serves, the real files are opened later.
        let (void_writer, column_writers) =
            ArrowWriter::try_new(std::io::sink(), Arc::clone(&schema), Some((*properties).clone()))
                .and_then(|writer| writer.into_serialized_writer())
                .map_err(schema_error)?;
        let parquet_schema = Arc::new(void_writer.schema_descr().clone());
        let field_leaves = leaves_by_root(&parquet_schema);
        Ok(OutputLayout {
            schema,
            parquet_schema,
            field_leaves,
            properties,
            column_writers,
        })
    }

    /// Whether output field `field_idx` is a single Parquet column exactly like
    /// `input` (name, physical and logical type, repetition), so that the
    /// input's encoded column chunks can be copied into it unchanged.
    pub fn can_copy_into(&self, field_idx: usize, input: &ColumnDescriptor) -> bool {
        matches!(self.field_leaves[field_idx][..], [leaf] if *self.parquet_schema.column(leaf) == *input)
    }

    /// Starts one output row group. `copied` has one entry per output field:
    /// the input chunk to copy for it, or `None` to encode it from arrays.
    pub fn start_row_group(&self, copied: Vec<Option<CopiedChunk>>) -> Result<RowGroupEncoder<'_>, ParquetError> {
        debug_assert_eq!(copied.len(), self.schema.fields().len());
        Ok(RowGroupEncoder {
            layout: self,
            writers: self.column_writers.create_column_writers(0)?,
            copied,
            n_rows: 0,
        })
    }
}

/// An input column chunk to be copied byte for byte into the output: how id
/// columns pass through untouched, without being decoded or encoded.
pub struct CopiedChunk {
    /// The input file's bytes: the mapping, or the row group's fetched
    /// chunks, read by file offset.
    pub source: crate::scan::Chunks,
    /// The chunk's metadata in the input footer.
    pub metadata: ColumnChunkMetaData,
}

/// One output column chunk, ready to be appended.
enum OutputChunk {
    Copied(Box<CopiedChunk>),
    Encoded(Box<ArrowColumnChunk>),
}

/// Encodes the output columns of one row group, batch after batch.
pub struct RowGroupEncoder<'a> {
    layout: &'a OutputLayout,
    /// One per output leaf column; those of copied fields stay unused.
    writers: Vec<ArrowColumnWriter>,
    copied: Vec<Option<CopiedChunk>>,
    n_rows: usize,
}

impl RowGroupEncoder<'_> {
    /// Encodes one batch: one array for each output field that is not copied,
    /// in schema order.
    pub fn write(&mut self, columns: &[ArrayRef]) -> Result<(), ParquetError> {
        let mut next_writer = self.writers.iter_mut();
        let mut next_column = columns.iter();
        for (field, copied) in self.layout.schema.fields().iter().zip(&self.copied) {
            if copied.is_some() {
                next_writer.next(); // a copied field is a single leaf
                continue;
            }
            let column = next_column.next().expect("one array per encoded field");
            for leaf in compute_leaves(field, column)? {
                next_writer.next().expect("one writer per leaf column").write(&leaf)?;
            }
        }
        self.n_rows += columns.last().map_or(0, |c| c.len());
        Ok(())
    }

    /// The encoded row group, ready for [`StagedFile::append`].
    pub fn finish(self) -> Result<EncodedRowGroup, ParquetError> {
        let mut writers = self.writers.into_iter();
        let mut chunks = Vec::new();
        for (leaves, copied) in self.layout.field_leaves.iter().zip(self.copied) {
            match copied {
                Some(copied) => {
                    writers.next(); // a copied field is a single leaf
                    chunks.push(OutputChunk::Copied(Box::new(copied)));
                }
                None => {
                    for writer in writers.by_ref().take(leaves.len()) {
                        chunks.push(OutputChunk::Encoded(Box::new(writer.close()?)));
                    }
                }
            }
        }
        Ok(EncodedRowGroup {
            n_rows: self.n_rows,
            chunks,
        })
    }
}

/// The output of one row group: encoded and copied column chunks.
pub struct EncodedRowGroup {
    pub n_rows: usize,
    chunks: Vec<OutputChunk>,
}

/// An output file being written in the staging area.
pub struct StagedFile {
    path: PathBuf,
    writer: SerializedFileWriter<BufWriter<File>>,
    rows: u64,
}

const WRITE_BUFFER_BYTES: usize = 1 << 20;

impl StagedFile {
    pub fn create(path: &Path, layout: &OutputLayout) -> Result<Self, SinkError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| SinkError::Create {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let file = File::create(path).map_err(|source| SinkError::Create {
            path: path.to_path_buf(),
            source,
        })?;
        let (writer, _) = ArrowWriter::try_new(
            BufWriter::with_capacity(WRITE_BUFFER_BYTES, file),
            Arc::clone(&layout.schema),
            Some((*layout.properties).clone()),
        )
        .and_then(|writer| writer.into_serialized_writer())
        .map_err(|source| SinkError::Write {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(StagedFile {
            path: path.to_path_buf(),
            writer,
            rows: 0,
        })
    }

    /// Appends one encoded row group; empty row groups are left out.
    pub fn append(&mut self, row_group: EncodedRowGroup) -> Result<(), SinkError> {
        if row_group.n_rows == 0 {
            return Ok(());
        }
        let write_error = |source| SinkError::Write {
            path: self.path.clone(),
            source,
        };
        let mut group = self.writer.next_row_group().map_err(write_error)?;
        for chunk in row_group.chunks {
            match chunk {
                OutputChunk::Encoded(chunk) => chunk.append_to_row_group(&mut group),
                OutputChunk::Copied(copied) => {
                    let CopiedChunk { source, metadata } = *copied;
                    let close = ColumnCloseResult {
                        bytes_written: metadata.compressed_size() as u64,
                        rows_written: row_group.n_rows as u64,
                        metadata,
                        bloom_filter: None,
                        column_index: None,
                        offset_index: None,
                    };
                    group.append_column(&source, close)
                }
            }
            .map_err(write_error)?;
        }
        group.close().map_err(write_error)?;
        self.rows += row_group.n_rows as u64;
        Ok(())
    }

    /// Writes the footer and fsyncs the file. Returns (rows, bytes).
    pub fn finish(self) -> Result<(u64, u64), SinkError> {
        // into_inner writes the footer.
        let buffered = self.writer.into_inner().map_err(|source| SinkError::Write {
            path: self.path.clone(),
            source,
        })?;
        // Flushing the last buffered bytes is a write (and where a full disk shows).
        let file = buffered.into_inner().map_err(|e| SinkError::Flush {
            path: self.path.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(|source| SinkError::Sync {
            path: self.path.clone(),
            source,
        })?;
        let bytes = file
            .metadata()
            .map_err(|source| SinkError::Sync {
                path: self.path.clone(),
                source,
            })?
            .len();
        Ok((self.rows, bytes))
    }
}
