//! Sink: scored row groups -> Parquet files in the staging area.
//!
//! Encoding (and compression) of a row group's output columns happens on the
//! worker that scored it, in parallel; the single writer thread only appends
//! the encoded column chunks to the file, in input order. Output files hold
//! the id columns exactly as read, then the Float32 score columns.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::basic::Compression;
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;

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
    properties: Arc<WriterProperties>,
    column_writers: ArrowRowGroupWriterFactory,
}

impl OutputLayout {
    /// Output of `id_fields` (as the input has them) followed by the scores.
    pub fn new(for_input: &Path, id_fields: Vec<FieldRef>, score_names: &[String]) -> Result<Self, SinkError> {
        let mut fields = id_fields;
        fields.extend(
            score_names
                .iter()
                .map(|name| Arc::new(Field::new(name, DataType::Float32, false))),
        );
        let schema = Arc::new(Schema::new(fields));
        // Ids and scores are nearly all distinct: a dictionary would be built,
        // found too large, and thrown away (a fifth of the scoring time).
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
        let (_, column_writers) =
            ArrowWriter::try_new(std::io::sink(), Arc::clone(&schema), Some((*properties).clone()))
                .and_then(|writer| writer.into_serialized_writer())
                .map_err(schema_error)?;
        Ok(OutputLayout {
            schema,
            properties,
            column_writers,
        })
    }

    /// Starts encoding one output row group.
    pub fn start_row_group(&self) -> Result<RowGroupEncoder<'_>, ParquetError> {
        Ok(RowGroupEncoder {
            layout: self,
            writers: self.column_writers.create_column_writers(0)?,
            n_rows: 0,
        })
    }
}

/// Encodes the output columns of one row group, batch after batch.
pub struct RowGroupEncoder<'a> {
    layout: &'a OutputLayout,
    writers: Vec<ArrowColumnWriter>,
    n_rows: usize,
}

impl RowGroupEncoder<'_> {
    /// Encodes one batch of output columns, in schema order.
    pub fn write(&mut self, columns: &[ArrayRef]) -> Result<(), ParquetError> {
        let mut next_writer = self.writers.iter_mut();
        for (field, column) in self.layout.schema.fields().iter().zip(columns) {
            for leaf in compute_leaves(field, column)? {
                next_writer.next().expect("one writer per leaf column").write(&leaf)?;
            }
        }
        self.n_rows += columns.first().map_or(0, |c| c.len());
        Ok(())
    }

    /// The encoded row group, ready for [`StagedFile::append`].
    pub fn finish(self) -> Result<EncodedRowGroup, ParquetError> {
        let chunks = self
            .writers
            .into_iter()
            .map(|w| w.close())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EncodedRowGroup {
            n_rows: self.n_rows,
            chunks,
        })
    }
}

/// The encoded output of one row group.
pub struct EncodedRowGroup {
    pub n_rows: usize,
    chunks: Vec<ArrowColumnChunk>,
}

impl EncodedRowGroup {
    /// Bytes held by the encoded pages, for memory accounting.
    pub fn encoded_bytes(&self) -> usize {
        self.chunks
            .iter()
            .map(|c| c.close().metadata.compressed_size() as usize)
            .sum()
    }
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
            chunk.append_to_row_group(&mut group).map_err(write_error)?;
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
