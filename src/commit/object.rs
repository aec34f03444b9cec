//! An output table on object storage (`s3://bucket/scores/churn/`), committed
//! without renames, in the spirit of Hadoop's S3A "magic" committer:
//!
//! ```text
//! OUT/dt=2026-11-25/part-00000.parquet   published data: completed multipart uploads
//! OUT/_SUCCESS                           JSON manifest (every file, size, ETag), put last, if absent
//! OUT/_lakescore/lease                   the running run's lease (one writer per output)
//! OUT/_lakescore/runs/<run id>.json      the run ledger
//! OUT/_lakescore/partitions/<hash>.json  one record per committed partition (resume)
//! OUT/_lakescore/uploads/<run id>.json   the run's multipart uploads not yet completed
//! ```
//!
//! Files are written to a local staging folder while the run scores, as for
//! a local output. Publishing uploads each as a multipart upload and records
//! its id under `uploads/` before sending a byte, so that whatever a dead run
//! left is aborted by the next run; no part is visible to a reader until its
//! upload is completed. Only when every file of the run is uploaded do
//! completions begin, partition by partition: its old record goes, its
//! uploads complete (each object appears whole, replacing one of the same
//! name at once), objects of the old version that the new one lacks are
//! deleted, its new record is written. `_SUCCESS`, removed before the first
//! completion, is written last with a put that fails if another writer
//! wrote one meanwhile.
//!
//! A reader that lists a partition during the commit window may see some of
//! its new files beside old ones; a reader that waits for `_SUCCESS` (or a
//! table format's commit) sees the whole table or none of it. The README's
//! Guarantees say so.
//!
//! The lease is an object created only if absent (`If-None-Match: *`),
//! renewed every third of its life with a put conditional on its ETag
//! (`If-Match`), and taken over only once it has not been renewed for a
//! whole life. A run that cannot renew it in time stops publishing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime};

use futures_util::{StreamExt, TryStreamExt};
use object_store::multipart::PartId;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use super::{
    CommitError, Committer, LedgerRecord, OutputTable, PartitionRecord, Published, RunStatus, RunSummary, SUCCESS_FILE,
    WriteMode,
};
use crate::lock::{Holder, LockError, OutputLock};
use crate::store::{self, Remote};
use crate::test_hooks;
use crate::util::{rfc3339_utc, sha256_hex};

/// How long a lease lives without renewal: a run that dies is taken over
/// this long after its last renewal.
pub const LEASE_SECONDS: u64 = 60;
/// Parts of a multipart upload (S3 takes 5 MiB to 5 GiB, bar the last).
const PART_BYTES: usize = 16 << 20;
/// Files uploaded at once: at most this many parts are in memory.
const CONCURRENT_UPLOADS: usize = 8;

/// Sends the staged file `staged` as the parts of `upload`, a part at a time.
async fn send_parts(
    output: ObjectOutput,
    staged: PathBuf,
    upload: PendingUpload,
    part_bytes: usize,
) -> Result<Uploaded, CommitError> {
    use std::io::Read;
    let mut file = std::fs::File::open(&staged).map_err(super::io_error("read staged file", &staged))?;
    let path = output.at(&upload.path);
    let (mut parts, mut bytes) = (Vec::new(), 0u64);
    loop {
        // (A blocking read of a local file, between network waits.)
        let mut part = Vec::with_capacity(part_bytes);
        (&mut file)
            .take(part_bytes as u64)
            .read_to_end(&mut part)
            .map_err(super::io_error("read staged file", &staged))?;
        let last = part.len() < part_bytes;
        if part.is_empty() && !parts.is_empty() {
            break;
        }
        bytes += part.len() as u64;
        let id = output
            .remote
            .multipart
            .put_part(&path, &upload.upload_id, parts.len(), PutPayload::from(part))
            .await
            .map_err(|error| output.io_error("upload a part of", &upload.path, error))?;
        parts.push(id);
        if last {
            break;
        }
    }
    Ok(Uploaded { upload, parts, bytes })
}

/// An output table on object storage.
#[derive(Debug, Clone)]
pub struct ObjectOutput {
    remote: Remote,
    location: PathBuf,
}

impl ObjectOutput {
    pub fn new(remote: Remote) -> ObjectOutput {
        ObjectOutput {
            location: PathBuf::from(&remote.url),
            remote,
        }
    }

    fn at(&self, relative: &str) -> ObjectPath {
        self.remote.join(relative).path
    }

    fn io_error(&self, operation: &'static str, relative: &str, error: object_store::Error) -> CommitError {
        CommitError::Remote {
            operation,
            url: self.remote.join(relative).url,
            message: store::message_of(&error),
        }
    }

    /// Whether the output holds a published table: `_SUCCESS`, or any data
    /// object.
    fn published_objects_exist(&self) -> Result<bool, CommitError> {
        let remote = self.remote.clone();
        let objects: Vec<object_store::ObjectMeta> =
            store::block_on(async move { remote.store.list(Some(&remote.path)).try_collect().await })
                .map_err(|error| self.io_error("LIST", "", error))?;
        Ok(objects.iter().any(|meta| {
            let relative = store::relative_key(&self.remote.path, &meta.location).unwrap_or_default();
            relative == SUCCESS_FILE || !relative.split('/').any(|p| p.starts_with('_') || p.starts_with('.'))
        }))
    }

    /// Aborts the uploads and finishes the deletions dead runs recorded.
    fn clear_leftovers(&self) -> Result<(), CommitError> {
        let remote = self.remote.clone();
        let prefix = self.at(UPLOADS);
        let records: Vec<object_store::ObjectMeta> =
            store::block_on(async move { remote.store.list(Some(&prefix)).try_collect().await })
                .map_err(|error| self.io_error("LIST", UPLOADS, error))?;
        for meta in records {
            let remote = self.remote.clone();
            let location = meta.location.clone();
            let bytes = store::block_on(async move { remote.store.get(&location).await?.bytes().await });
            let Ok(bytes) = bytes else { continue };
            if let Ok(pending) = serde_json::from_slice::<PendingUploads>(&bytes) {
                tracing::info!(run = %pending.run_id, uploads = pending.uploads.len(), "aborting the uploads a dead run left");
                for upload in &pending.uploads {
                    self.abort_upload(upload);
                }
            }
            let remote = self.remote.clone();
            let location = meta.location.clone();
            store::block_on(async move { remote.store.delete(&location).await })
                .map_err(|error| self.io_error("DELETE", UPLOADS, error))?;
        }
        // A run killed between beginning an upload and recording it left one
        // no record names: on S3, the bucket lists them.
        self.abort_listed_uploads()?;
        Ok(())
    }

    /// On S3, aborts every incomplete upload below OUT that the bucket
    /// lists. Holding the lease, with none of its own under way, a run owns
    /// no incomplete upload there: each is a dead run's (one it began but
    /// had not recorded, or whose request the store served only after it
    /// died).
    fn abort_listed_uploads(&self) -> Result<(), CommitError> {
        let Some(lister) = self.remote.s3_uploads.clone() else {
            return Ok(());
        };
        let prefix = match self.remote.path.as_ref() {
            "" => String::new(),
            path => format!("{path}/"),
        };
        let found = store::block_on(async move { lister.list(&prefix).await })
            .map_err(|error| self.io_error("list the incomplete uploads below", "", error))?;
        for (key, upload_id) in found {
            if let Ok(path) = ObjectPath::parse(&key) {
                self.abort_at(path, upload_id);
            }
        }
        Ok(())
    }

    fn abort_upload(&self, upload: &PendingUpload) {
        self.abort_at(self.at(&upload.path), upload.upload_id.clone());
    }

    /// Aborts the upload `id` of the object at `path`; one already gone is
    /// no failure, and one that cannot be aborted is only a warning.
    fn abort_at(&self, path: ObjectPath, id: String) {
        let (remote, object) = (self.remote.clone(), path.to_string());
        match store::block_on(async move { remote.multipart.abort_multipart(&path, &id).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => tracing::warn!(
                object = %object,
                error = %store::message_of(&error),
                "cannot abort an incomplete upload; a lifecycle rule for incomplete multipart uploads removes it"
            ),
        }
    }

    fn try_put(
        &self,
        relative: &str,
        bytes: Vec<u8>,
        mode: PutMode,
    ) -> Result<object_store::PutResult, object_store::Error> {
        let remote = self.remote.clone();
        let path = self.at(relative);
        store::block_on(async move {
            remote
                .store
                .put_opts(&path, PutPayload::from(bytes), PutOptions::from(mode))
                .await
        })
    }

    fn put(&self, relative: &str, bytes: Vec<u8>, mode: PutMode) -> Result<object_store::PutResult, CommitError> {
        self.try_put(relative, bytes, mode)
            .map_err(|error| self.io_error("PUT", relative, error))
    }

    fn delete(&self, relative: &str) -> Result<(), CommitError> {
        let remote = self.remote.clone();
        let path = self.at(relative);
        match store::block_on(async move { remote.store.delete(&path).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(self.io_error("DELETE", relative, error)),
        }
    }

    fn get(&self, relative: &str) -> Result<Option<Vec<u8>>, CommitError> {
        let remote = self.remote.clone();
        let path = self.at(relative);
        match store::block_on(async move { remote.store.get(&path).await?.bytes().await }) {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(self.io_error("GET", relative, error)),
        }
    }
}

const LEASE: &str = "_lakescore/lease";
const RUNS: &str = "_lakescore/runs";
const PARTITIONS: &str = "_lakescore/partitions";
const UPLOADS: &str = "_lakescore/uploads";

fn slash(path: &Path) -> String {
    path.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

impl OutputTable for ObjectOutput {
    fn location(&self) -> &Path {
        &self.location
    }

    fn check_separate(&self, input: &Path, _files: &[&Path]) -> Result<(), CommitError> {
        let input_text = input.to_string_lossy();
        let input_url = input_text.trim_end_matches('/');
        let inside = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
        if store::is_remote(input_url) && (inside(input_url, &self.remote.url) || inside(&self.remote.url, input_url)) {
            return Err(CommitError::Overlap {
                input: input.to_path_buf(),
                output: self.location.clone(),
            });
        }
        Ok(())
    }

    fn lock_if_known(&self, holder: &Holder) -> Result<Option<OutputLock>, CommitError> {
        let known = store::any_object_below(&self.remote, RUNS).map_err(|error| self.io_error("LIST", RUNS, error))?;
        match known {
            true => Ok(Some(Lease::take(self, holder)?)),
            false => Ok(None),
        }
    }

    fn holds_published_output(&self) -> Result<bool, CommitError> {
        self.published_objects_exist()
    }

    fn begin(
        &self,
        mode: WriteMode,
        ledger: LedgerRecord,
        lock: Option<OutputLock>,
    ) -> Result<Box<dyn Committer>, CommitError> {
        let lock = match lock {
            Some(lock) => lock,
            None => Lease::take(self, &ledger.holder())?,
        };
        if mode == WriteMode::ErrorIfExists && self.published_objects_exist()? {
            return Err(CommitError::OutputExists {
                path: self.location.clone(),
            });
        }
        self.clear_leftovers()?;
        let run_id = ledger.run_id.clone();
        let staging = std::env::temp_dir()
            .join("lakescore-staging")
            .join(format!("{run_id}-{}", std::process::id()));
        let side = staging.join("side");
        std::fs::create_dir_all(&side).map_err(super::io_error("create folder", &side))?;
        let transaction = ObjectTransaction {
            output: self.clone(),
            mode,
            run_id,
            staging,
            ledger,
            pending: Vec::new(),
            completed: Vec::new(),
            closed: false,
            lock,
        };
        transaction.write_ledger()?;
        Ok(Box::new(transaction))
    }
}

/// A multipart upload begun and not yet completed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingUpload {
    /// The object's path below the output.
    path: String,
    upload_id: String,
}

/// `_lakescore/uploads/<run id>.json`.
#[derive(Debug, Serialize, Deserialize)]
struct PendingUploads {
    run_id: String,
    uploads: Vec<PendingUpload>,
}

/// An upload whose parts are all sent.
struct Uploaded {
    upload: PendingUpload,
    parts: Vec<PartId>,
    bytes: u64,
}

/// An object this run published.
#[derive(Debug, Serialize)]
struct PublishedObject {
    path: String,
    bytes: u64,
    e_tag: Option<String>,
}

/// One run's transaction on an output on object storage.
struct ObjectTransaction {
    output: ObjectOutput,
    mode: WriteMode,
    run_id: String,
    /// The local folder files are written to before they are uploaded.
    staging: PathBuf,
    ledger: LedgerRecord,
    /// Uploads begun and not completed, which an abort must abort.
    pending: Vec<PendingUpload>,
    completed: Vec<PublishedObject>,
    closed: bool,
    lock: OutputLock,
}

impl ObjectTransaction {
    fn write_ledger(&self) -> Result<(), CommitError> {
        let bytes = serde_json::to_vec_pretty(&self.ledger).expect("ledger records serialize");
        self.output
            .put(&format!("{RUNS}/{}.json", self.run_id), bytes, PutMode::Overwrite)
            .map(|_| ())
    }

    fn record_pending(&self) -> Result<(), CommitError> {
        let relative = format!("{UPLOADS}/{}.json", self.run_id);
        if self.pending.is_empty() {
            return self.output.delete(&relative);
        }
        let record = PendingUploads {
            run_id: self.run_id.clone(),
            uploads: self.pending.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&record).expect("records serialize");
        self.output.put(&relative, bytes, PutMode::Overwrite).map(|_| ())
    }

    fn partition_record_path(partition: &Path) -> String {
        let digest = sha256_hex(partition.as_os_str().as_encoded_bytes());
        format!("{PARTITIONS}/{}.json", &digest[..24])
    }

    fn check_held(&self) -> Result<(), CommitError> {
        self.lock.check_held().map_err(CommitError::Locked)
    }

    /// Uploads the staged files as multipart uploads, several at once, each
    /// read from staging part by part: `(staged, target)` pairs of paths
    /// relative to staging and to OUT. Every upload is begun and recorded
    /// (`_lakescore/uploads/`) before a byte is sent, and none is completed.
    fn upload_all(&mut self, files: &[(String, String)]) -> Result<Vec<Uploaded>, CommitError> {
        let output = self.output.clone();
        let staged_of: std::collections::HashMap<&str, &str> = files
            .iter()
            .map(|(staged, target)| (target.as_str(), staged.as_str()))
            .collect();
        let begun: Vec<Result<PendingUpload, CommitError>> = store::block_on(
            futures_util::stream::iter(files.iter().map(|(_, target)| target.clone()))
                .map(|relative| {
                    let output = output.clone();
                    async move {
                        let path = output.at(&relative);
                        match output.remote.multipart.create_multipart(&path).await {
                            Ok(upload_id) => Ok(PendingUpload {
                                path: relative,
                                upload_id,
                            }),
                            Err(error) => Err(output.io_error("begin the upload of", &relative, error)),
                        }
                    }
                })
                .buffered(CONCURRENT_UPLOADS)
                .collect(),
        );
        let mut first_error = None;
        let mut uploads = Vec::new();
        for upload in begun {
            match upload {
                Ok(upload) => uploads.push(upload),
                Err(error) => first_error = first_error.or(Some(error)),
            }
        }
        self.pending.extend(uploads.iter().cloned());
        // Recorded even when one failed to begin, so the others are aborted.
        self.record_pending()?;
        if let Some(error) = first_error {
            return Err(error);
        }
        let staging = self.staging.join("data");
        let sent: Vec<Result<Uploaded, CommitError>> = store::block_on(
            futures_util::stream::iter(uploads)
                .map(|upload| {
                    let staged = staging.join(staged_of[upload.path.as_str()]);
                    send_parts(output.clone(), staged, upload, PART_BYTES)
                })
                .buffered(CONCURRENT_UPLOADS)
                .collect(),
        );
        sent.into_iter().collect()
    }

    fn complete(&mut self, uploaded: Uploaded) -> Result<(), CommitError> {
        let output = self.output.clone();
        let remote = output.remote.clone();
        let path = output.at(&uploaded.upload.path);
        let id = uploaded.upload.upload_id.clone();
        let parts = uploaded.parts;
        let result = store::block_on(async move { remote.multipart.complete_multipart(&path, &id, parts).await })
            .map_err(|error| output.io_error("complete the upload of", &uploaded.upload.path, error))?;
        self.pending.retain(|p| p.upload_id != uploaded.upload.upload_id);
        self.completed.push(PublishedObject {
            path: uploaded.upload.path,
            bytes: uploaded.bytes,
            e_tag: result.e_tag,
        });
        Ok(())
    }

    /// Data objects directly below the partition folder `partition`.
    fn objects_in(&self, partition: &str) -> Result<Vec<String>, CommitError> {
        let remote = self.output.remote.clone();
        let prefix = self.output.at(partition);
        let objects: Vec<object_store::ObjectMeta> =
            store::block_on(async move { remote.store.list(Some(&prefix)).try_collect().await })
                .map_err(|error| self.output.io_error("LIST", partition, error))?;
        Ok(objects
            .iter()
            .map(|meta| store::relative_key(&self.output.remote.path, &meta.location).unwrap_or_default())
            .filter(|relative| {
                let below = relative
                    .strip_prefix(partition)
                    .unwrap_or(relative)
                    .trim_start_matches('/');
                !below.contains('/') && !below.starts_with('_') && !below.starts_with('.')
            })
            .collect())
    }

    /// Makes one partition's uploads visible and records it, in the order
    /// resume relies on: its old record goes, its uploads complete, the
    /// `stale` objects of a version it replaces go, its new record comes.
    fn complete_partition(
        &mut self,
        index: usize,
        partition: &PartitionRecord,
        files: Vec<Uploaded>,
        stale: &[String],
    ) -> Result<(), CommitError> {
        test_hooks::before_partition(index);
        self.check_held()?;
        let record_path = Self::partition_record_path(&partition.partition);
        self.output.delete(&record_path)?;
        for file in files {
            self.complete(file)?;
        }
        self.record_pending()?;
        for object in stale {
            if let Err(error) = self.output.delete(object) {
                tracing::warn!(
                    error = %crate::util::error_chain(&error),
                    "cannot delete an object of the replaced version of a partition"
                );
            }
        }
        test_hooks::before_record(index);
        let record = serde_json::to_vec_pretty(partition).expect("records serialize");
        self.output.put(&record_path, record, PutMode::Overwrite)?;
        Ok(())
    }

    fn abort_pending(&mut self) {
        for upload in std::mem::take(&mut self.pending) {
            self.output.abort_upload(&upload);
        }
        let _ = self.record_pending();
    }

    fn close(&mut self) -> Result<(), CommitError> {
        self.closed = true;
        self.ledger.finished_at = Some(rfc3339_utc(SystemTime::now()));
        let _ = std::fs::remove_dir_all(&self.staging);
        self.write_ledger()
    }
}

impl Committer for ObjectTransaction {
    fn run_id(&self) -> &str {
        &self.run_id
    }

    fn record_summary(&mut self, summary: RunSummary) {
        self.ledger.summary = Some(summary);
    }

    fn staged_path(&self, relative: &Path) -> PathBuf {
        self.staging.join("data").join(relative)
    }

    fn staged_side_path(&self, name: &str) -> PathBuf {
        self.staging.join("side").join(name)
    }

    fn reusable_partition(&self, partition: &Path, key: &str) -> Option<PartitionRecord> {
        if self.mode != WriteMode::Resume {
            return None;
        }
        let bytes = self.output.get(&Self::partition_record_path(partition)).ok()??;
        let record: PartitionRecord = serde_json::from_slice(&bytes).ok()?;
        if record.partition != partition || record.key != key {
            return None;
        }
        let intact = record.files.iter().all(|file| {
            let remote = self.output.remote.clone();
            let path = self.output.at(&slash(&file.path));
            store::block_on(async move { remote.store.head(&path).await }).is_ok_and(|meta| meta.size == file.bytes)
        });
        intact.then_some(record)
    }

    fn publish_side(&self, name: &str, folder: &str, target_name: &str) -> Result<PathBuf, CommitError> {
        let staged = self.staged_side_path(name);
        let bytes = std::fs::read(&staged).map_err(super::io_error("read staged file", &staged))?;
        let relative = format!("_lakescore/{folder}/{target_name}");
        self.output.put(&relative, bytes, PutMode::Overwrite)?;
        Ok(PathBuf::from(self.output.remote.join(&relative).url))
    }

    fn publish(&mut self, partitions: &[PartitionRecord], all_partitions: &[&Path]) -> Result<(), CommitError> {
        self.check_held()?;
        // Every file uploaded first, none of them visible yet.
        let files: Vec<(String, String)> = partitions
            .iter()
            .flat_map(|partition| {
                partition
                    .files
                    .iter()
                    .map(|file| (slash(&file.path), slash(&file.path)))
            })
            .collect();
        let mut sent = self.upload_all(&files)?.into_iter();
        let uploaded: Vec<Vec<Uploaded>> = partitions
            .iter()
            .map(|partition| sent.by_ref().take(partition.files.len()).collect())
            .collect();
        // Then the commit: completions, partition by partition.
        self.check_held()?;
        self.output.delete(SUCCESS_FILE)?;
        for (index, (partition, files)) in partitions.iter().zip(uploaded).enumerate() {
            // A leaf partition is replaced whole: objects of its old version
            // that the new one lacks go once the new ones are in place.
            let folder = slash(&partition.partition);
            let is_leaf = !folder.is_empty()
                && !all_partitions
                    .iter()
                    .any(|other| *other != partition.partition.as_path() && other.starts_with(&partition.partition));
            let old = match is_leaf {
                true => self.objects_in(&folder)?,
                false => Vec::new(),
            };
            let stale: Vec<String> = old
                .into_iter()
                .filter(|object| !files.iter().any(|f| f.upload.path == *object))
                .collect();
            self.complete_partition(index, partition, files, &stale)?;
        }
        Ok(())
    }

    /// Uploads every file under its placed name and completes each upload
    /// at once (the table format's commit, not the object, publishes it),
    /// then records each partition.
    fn place(&mut self, partitions: &[PartitionRecord], suffix: &str) -> Result<Vec<PartitionRecord>, CommitError> {
        self.check_held()?;
        let mut placed: Vec<PartitionRecord> = partitions.to_vec();
        let mut files = Vec::new();
        for partition in &mut placed {
            for file in &mut partition.files {
                let staged = slash(&file.path);
                file.path = super::placed_path(&file.path, suffix);
                files.push((staged, slash(&file.path)));
            }
        }
        let mut sent = self.upload_all(&files)?.into_iter();
        for (index, partition) in placed.iter().enumerate() {
            let files: Vec<Uploaded> = sent.by_ref().take(partition.files.len()).collect();
            self.complete_partition(index, partition, files, &[])?;
        }
        Ok(placed)
    }

    fn finish(
        mut self: Box<Self>,
        manifest: Option<&[u8]>,
        published: Published,
    ) -> Result<Option<String>, CommitError> {
        // Every upload of this run is complete: any other below OUT is a
        // dead run's that the store served late (after this run began).
        if let Err(error) = self.output.abort_listed_uploads() {
            tracing::warn!(error = %crate::util::error_chain(&error), "cannot list the incomplete uploads left below the output");
        }
        let write_success = || -> Result<(), CommitError> {
            self.check_held()?;
            let Some(manifest) = manifest else {
                return Ok(());
            };
            // The manifest, with what object storage says of each file.
            let mut manifest: serde_json::Value = serde_json::from_slice(manifest).expect("manifests are JSON");
            if let Some(object) = manifest.as_object_mut() {
                object.insert(
                    "objects".into(),
                    serde_json::to_value(&self.completed).expect("records serialize"),
                );
            }
            let bytes = serde_json::to_vec_pretty(&manifest).expect("manifests serialize");
            match self.output.try_put(SUCCESS_FILE, bytes, PutMode::Create) {
                Ok(_) => Ok(()),
                Err(object_store::Error::AlreadyExists { .. }) => Err(CommitError::Remote {
                    operation: "PUT",
                    url: self.output.remote.join(SUCCESS_FILE).url,
                    message: "another writer published this output meanwhile".into(),
                }),
                Err(error) => Err(self.output.io_error("PUT", SUCCESS_FILE, error)),
            }
        };
        if let Err(error) = write_success() {
            self.ledger.status = RunStatus::Failed;
            self.ledger.error = Some(crate::util::error_chain(&error));
            let _ = self.close();
            return Err(error);
        }
        self.ledger.record_published(published);
        if let Err(error) = self.close() {
            tracing::warn!(error = %crate::util::error_chain(&error), "the run succeeded but recording it failed");
        }
        Ok(None)
    }

    fn abort(mut self: Box<Self>, status: RunStatus, error: &str) -> Result<(), CommitError> {
        self.abort_pending();
        let _ = self.output.abort_listed_uploads();
        self.ledger.status = status;
        self.ledger.error = Some(error.to_string());
        self.close()
    }
}

impl Drop for ObjectTransaction {
    /// A run that ends by a panic leaves no upload behind.
    fn drop(&mut self) {
        if !self.closed {
            self.abort_pending();
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

/// The run ledger of an output on object storage, as stored.
#[derive(Debug)]
pub struct Ledger {
    /// Each record's URL and bytes.
    pub records: Vec<(PathBuf, Vec<u8>)>,
    /// The holder of a lease that is alive (renewed within its life).
    pub holder: Option<Holder>,
}

/// The run ledger of the output at `remote`.
pub fn ledger(remote: &Remote) -> Result<Ledger, CommitError> {
    let output = ObjectOutput::new(remote.clone());
    let listed = remote.clone();
    let runs = output.at(RUNS);
    let objects: Vec<object_store::ObjectMeta> =
        store::block_on(async move { listed.store.list(Some(&runs)).try_collect().await })
            .map_err(|error| output.io_error("LIST", RUNS, error))?;
    let mut records = Vec::new();
    for meta in objects {
        let relative = store::relative_key(&remote.path, &meta.location).unwrap_or_default();
        if !relative.ends_with(".json") {
            continue;
        }
        if let Some(bytes) = output.get(&relative)? {
            records.push((PathBuf::from(remote.join(&relative).url), bytes));
        }
    }
    let lease = remote.clone();
    let path = output.at(LEASE);
    let holder = match store::block_on(async move {
        let got = lease.store.get(&path).await?;
        let modified = got.meta.last_modified;
        Ok::<_, object_store::Error>((modified, got.bytes().await?))
    }) {
        Ok((modified, bytes)) => serde_json::from_slice::<LeaseRecord>(&bytes).ok().filter(|record| {
            SystemTime::now()
                .duration_since(SystemTime::from(modified))
                .is_ok_and(|age| age < Duration::from_secs(record.seconds))
                || SystemTime::from(modified) > SystemTime::now()
        }),
        Err(_) => None,
    }
    .map(|record| record.holder);
    Ok(Ledger { records, holder })
}

// ---------------------------------------------------------------------------
// The lease.

/// `_lakescore/lease`: who holds the output, and until when at least.
#[derive(Debug, Serialize, Deserialize)]
struct LeaseRecord {
    holder: Holder,
    renewed_at: String,
    seconds: u64,
}

/// A held lease on an output, renewed on a thread of its own until dropped,
/// then deleted.
#[derive(Debug)]
pub struct Lease {
    state: Arc<Mutex<LeaseState>>,
    stop: Option<mpsc::Sender<()>>,
    renewer: Option<std::thread::JoinHandle<()>>,
    output: ObjectOutput,
}

#[derive(Debug)]
struct LeaseState {
    e_tag: Option<String>,
    renewed: Instant,
    lost: Option<String>,
}

/// How long a lease lives: [`LEASE_SECONDS`], or less in tests.
fn lease_life() -> Duration {
    Duration::from_secs(test_hooks::lease_seconds().unwrap_or(LEASE_SECONDS))
}

impl Lease {
    /// Takes the lease of `output`, or says who holds it.
    fn take(output: &ObjectOutput, me: &Holder) -> Result<OutputLock, CommitError> {
        let life = lease_life();
        let record = |holder: &Holder| {
            serde_json::to_vec_pretty(&LeaseRecord {
                holder: holder.clone(),
                renewed_at: rfc3339_utc(SystemTime::now()),
                seconds: life.as_secs(),
            })
            .expect("leases serialize")
        };
        let (put, taken_over) = match output.try_put(LEASE, record(me), PutMode::Create) {
            Ok(put) => (put, None),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                let remote = output.remote.clone();
                let path = output.at(LEASE);
                let current = store::block_on(async move {
                    let got = remote.store.get(&path).await?;
                    let meta = got.meta.clone();
                    Ok::<_, object_store::Error>((meta, got.bytes().await?))
                });
                let (meta, bytes) = match current {
                    Ok(found) => found,
                    // Released meanwhile: try once more.
                    Err(object_store::Error::NotFound { .. }) => {
                        return output
                            .put(LEASE, record(me), PutMode::Create)
                            .map(|put| OutputLock::of_lease(Box::new(Lease::renewing(output, me, put.e_tag)), None));
                    }
                    Err(error) => return Err(output.io_error("GET", LEASE, error)),
                };
                let held: Option<LeaseRecord> = serde_json::from_slice(&bytes).ok();
                let seconds = held.as_ref().map_or(LEASE_SECONDS, |h| h.seconds);
                let age = SystemTime::now()
                    .duration_since(SystemTime::from(meta.last_modified))
                    .unwrap_or_default();
                if age < Duration::from_secs(seconds) {
                    return Err(CommitError::Locked(LockError::Held {
                        out: output.location.clone(),
                        holder: held.map(|h| h.holder),
                    }));
                }
                let update = PutMode::Update(UpdateVersion {
                    e_tag: meta.e_tag.clone(),
                    version: meta.version.clone(),
                });
                let put = output.try_put(LEASE, record(me), update).map_err(|error| match error {
                    // Another run took it over first.
                    object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. } => {
                        CommitError::Locked(LockError::Held {
                            out: output.location.clone(),
                            holder: None,
                        })
                    }
                    other => output.io_error("PUT", LEASE, other),
                })?;
                let dead = held.map(|h| h.holder);
                if let Some(dead) = &dead {
                    tracing::warn!(
                        holder_run = %dead.run_id,
                        "taking over the lease of `{}` left by {dead}, not renewed for {} s",
                        output.location.display(),
                        age.as_secs()
                    );
                }
                (put, dead)
            }
            Err(error) => return Err(output.io_error("PUT", LEASE, error)),
        };
        Ok(OutputLock::of_lease(
            Box::new(Lease::renewing(output, me, put.e_tag)),
            taken_over,
        ))
    }

    /// The lease just written (with `e_tag`), renewed from now on.
    fn renewing(output: &ObjectOutput, me: &Holder, e_tag: Option<String>) -> Lease {
        let state = Arc::new(Mutex::new(LeaseState {
            e_tag,
            renewed: Instant::now(),
            lost: None,
        }));
        let (stop, stopped) = mpsc::channel::<()>();
        let (output_copy, me, shared) = (output.clone(), me.clone(), Arc::clone(&state));
        let renewer = std::thread::Builder::new()
            .name("lakescore-lease".into())
            .spawn(move || renew_until_stopped(&output_copy, &me, &shared, &stopped))
            .ok();
        Lease {
            state,
            stop: Some(stop),
            renewer,
            output: output.clone(),
        }
    }
}

impl crate::lock::Lease for Lease {
    fn check_held(&self) -> Result<(), LockError> {
        let state = self.state.lock().unwrap();
        let reason = match &state.lost {
            Some(reason) => Some(reason.clone()),
            None if state.renewed.elapsed() >= lease_life() => Some(format!(
                "it was last renewed {} s ago, and lives {} s",
                state.renewed.elapsed().as_secs(),
                lease_life().as_secs()
            )),
            None => None,
        };
        match reason {
            Some(reason) => Err(LockError::Lost {
                out: self.output.location.clone(),
                reason,
            }),
            None => Ok(()),
        }
    }
}

fn renew_until_stopped(output: &ObjectOutput, me: &Holder, state: &Mutex<LeaseState>, stopped: &mpsc::Receiver<()>) {
    let every = lease_life() / 3;
    loop {
        match stopped.recv_timeout(every) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let e_tag = state.lock().unwrap().e_tag.clone();
        let record = serde_json::to_vec_pretty(&LeaseRecord {
            holder: me.clone(),
            renewed_at: rfc3339_utc(SystemTime::now()),
            seconds: lease_life().as_secs(),
        })
        .expect("leases serialize");
        let update = PutMode::Update(UpdateVersion { e_tag, version: None });
        match output.try_put(LEASE, record, update) {
            Ok(put) => {
                let mut state = state.lock().unwrap();
                state.e_tag = put.e_tag;
                state.renewed = Instant::now();
            }
            Err(object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. }) => {
                state.lock().unwrap().lost = Some("another run took it over".into());
                return;
            }
            // A network hiccup: try again at the next turn; the lease is
            // lost only when its life runs out (`check_held`).
            Err(error) => tracing::warn!(error = %store::message_of(&error), "cannot renew the output's lease"),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.join();
        }
        let state = self.state.lock().unwrap();
        if state.lost.is_none() {
            // Only our own lease: if another run took it over, its ETag differs.
            let remote = self.output.remote.clone();
            let path = self.output.at(LEASE);
            let ours = state.e_tag.clone();
            let _ = store::block_on(async move {
                let meta = remote.store.head(&path).await?;
                if meta.e_tag == ours {
                    remote.store.delete(&path).await?;
                }
                Ok::<_, object_store::Error>(())
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    #[test]
    fn an_output_inside_or_around_its_input_is_refused() {
        let remote = Remote::parse_with("s3://lake/scores", vec![("AWS_REGION".into(), "us-east-1".into())]).unwrap();
        let output = ObjectOutput::new(remote);
        let check = |input: &str| output.check_separate(Path::new(input), &[]);
        assert!(matches!(check("s3://lake/scores/"), Err(CommitError::Overlap { .. })));
        assert!(matches!(check("s3://lake"), Err(CommitError::Overlap { .. })));
        assert!(matches!(
            check("s3://lake/scores/dt=1"),
            Err(CommitError::Overlap { .. })
        ));
        assert!(check("s3://lake/scores-old").is_ok());
        assert!(check("s3://other/scores").is_ok());
        assert!(check("/data/lake/scores").is_ok(), "a local input");
    }

    #[test]
    fn a_file_is_sent_in_parts_and_stays_invisible_until_completed() {
        let temporary = tempfile::tempdir().unwrap();
        let dir = temporary.path();
        let remote = Remote::parse_with("s3://bucket/out", vec![("AWS_REGION".into(), "us-east-1".into())])
            .unwrap()
            .over(Arc::new(InMemory::new()));
        let output = ObjectOutput::new(remote.clone());
        let content: Vec<u8> = (0..20u8).collect();
        for (name, bytes) in [
            ("twenty.bin", &content[..]),
            ("empty.bin", &[][..]),
            ("seven.bin", &content[..7]),
        ] {
            let staged = dir.join(name);
            std::fs::write(&staged, bytes).unwrap();
            let path = output.at(name);
            let store = Arc::clone(&remote.multipart);
            let upload_id = store::block_on(async move { store.create_multipart(&path).await }).unwrap();
            let upload = PendingUpload {
                path: name.into(),
                upload_id: upload_id.clone(),
            };
            let sent = store::block_on(send_parts(output.clone(), staged, upload, 7)).unwrap();
            assert_eq!(sent.parts.len(), bytes.len().div_ceil(7).max(1), "{name}");
            assert_eq!(sent.bytes, bytes.len() as u64);
            assert!(
                output.get(name).unwrap().is_none(),
                "{name} is visible before completion"
            );
            let (store, path) = (Arc::clone(&remote.multipart), output.at(name));
            store::block_on(async move { store.complete_multipart(&path, &upload_id, sent.parts).await }).unwrap();
            assert_eq!(output.get(name).unwrap().as_deref(), Some(bytes), "{name}");
        }
    }
}
