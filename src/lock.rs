//! One writer per output table. A run holds an exclusive `flock` on
//! `OUT/_lakescore/lock` from before it looks at OUT until after its ledger
//! entry is closed, and writes who it is into the file (run id, pid, host,
//! start time), so that a second run fails at once and can name the holder.
//!
//! A crashed run cannot keep the lock: the kernel releases a `flock` when its
//! holder dies, however it dies. The next run then finds the file unlocked but
//! not empty, says whose lock it takes over, and goes on. Releasing removes
//! the file while still holding the lock; a run that opened the old file in
//! that moment sees, after locking it, that the path now names another file
//! (or none) and tries again, so two runs never both hold "the" lock.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Who holds (or held) an output's lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub run_id: String,
    pub pid: u32,
    pub host: String,
    pub started_at: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "run {} (pid {} on host `{}`, started {})",
            self.run_id, self.pid, self.host, self.started_at
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "output `{}` is being written by another run: {}; wait for it to finish (or stop it) and run again",
        out.display(),
        holder.as_ref().map_or_else(|| "its lock file names no holder".to_string(), Holder::to_string)
    )]
    Held { out: PathBuf, holder: Option<Holder> },
    #[error("lost the lease on output `{}`: {reason}; nothing more is published", out.display())]
    Lost { out: PathBuf, reason: String },
    #[error("cannot {operation} the lock file `{}`", path.display())]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The lock on one output, released (and its file removed) on drop.
#[derive(Debug)]
pub struct OutputLock {
    held: Held,
    /// The holder of a lock a dead run left behind, taken over by this one.
    pub taken_over: Option<Holder>,
}

#[derive(Debug)]
enum Held {
    /// A local output's lock file, held open: closing it releases the lock.
    File { _file: File, path: PathBuf },
    /// An object-storage output's lease, renewed while held.
    Lease(Box<dyn Lease>),
}

/// A lock held as a lease on a store without locks (an object-storage
/// output's, in `commit::object`): renewed while held, released on drop,
/// and lost when it cannot be renewed in time.
pub trait Lease: Send + Sync + std::fmt::Debug {
    /// Errors out when the lease is no longer this run's.
    fn check_held(&self) -> Result<(), LockError>;
}

impl OutputLock {
    /// The lock of an output on object storage: its lease.
    pub fn of_lease(lease: Box<dyn Lease>, taken_over: Option<Holder>) -> OutputLock {
        OutputLock {
            held: Held::Lease(lease),
            taken_over,
        }
    }

    /// Errors out when the lock is no longer this run's: a lease that could
    /// not be renewed before it expired, which another run may have taken.
    /// (A local lock cannot be lost while its holder lives.)
    pub fn check_held(&self) -> Result<(), LockError> {
        match &self.held {
            Held::File { .. } => Ok(()),
            Held::Lease(lease) => lease.check_held(),
        }
    }

    /// Takes the lock of the output whose bookkeeping folder is `meta`
    /// (created if missing), or says who holds it.
    pub fn acquire(out: &Path, meta: &Path, me: &Holder) -> Result<OutputLock, LockError> {
        let path = meta.join("lock");
        let io_error = |operation: &'static str| {
            let path = path.clone();
            move |source| LockError::Io {
                operation,
                path,
                source,
            }
        };
        fs::create_dir_all(meta).map_err(io_error("create the folder of"))?;
        loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io_error("open"))?;
            if let Err(error) = lock_exclusive(&file, &path) {
                if error.kind() == io::ErrorKind::NotFound {
                    continue; // released while we looked: open the new one
                }
                if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    return Err(LockError::Held {
                        out: out.to_path_buf(),
                        holder: read_holder(&mut file),
                    });
                }
                return Err(io_error("lock")(error));
            }
            // The holder we waited on may have removed the file we opened.
            let ours = file.metadata().map_err(io_error("inspect"))?;
            match fs::metadata(&path) {
                Ok(now) if now.ino() == ours.ino() && now.dev() == ours.dev() => {}
                _ => continue,
            }
            let taken_over = read_holder(&mut file);
            if let Some(dead) = &taken_over {
                tracing::warn!(
                    holder_run = %dead.run_id,
                    holder_pid = dead.pid,
                    holder_host = %dead.host,
                    "taking over the lock of `{}` left by {dead}, which is no longer running",
                    out.display()
                );
            }
            let record = serde_json::to_vec_pretty(me).expect("holders serialize");
            file.set_len(0)
                .and_then(|()| file.rewind())
                .and_then(|()| file.write_all(&record))
                .and_then(|()| file.sync_all())
                .map_err(io_error("write"))?;
            return Ok(OutputLock {
                held: Held::File { _file: file, path },
                taken_over,
            });
        }
    }
}

/// Takes the exclusive lock without waiting for a writer that holds it,
/// but through a probe's blink: `lakescore runs` holds a shared lock for
/// microseconds to ask whether anyone holds it ([`holder_of`]), and a
/// writer must not be refused for that. When the lock is taken, a shared
/// lock on a second descriptor tells the two apart: it is granted only when
/// no writer holds the lock exclusively.
fn lock_exclusive(file: &File, path: &Path) -> io::Result<()> {
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        // SAFETY: flock on a descriptor the caller owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(error);
        }
        // (The path may be gone: the holder released it. The caller opens
        // it again.)
        let probe = File::open(path)?;
        // SAFETY: flock on a descriptor this function owns (closing it
        // releases the probe's lock).
        let only_probes = unsafe { libc::flock(probe.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0;
        drop(probe);
        if !only_probes || std::time::Instant::now() >= give_up {
            return Err(error);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Who holds the lock of the output whose bookkeeping folder is `meta`,
/// asked of the lock itself: `None` when nobody does (whatever the file
/// says: a dead run's file stays until the next run takes it over, and its
/// pid may belong to another process by now, or its host be unreachable).
/// On NFS, Linux carries `flock` as a byte-range lock, which the server
/// arbitrates between machines.
pub fn holder_of(meta: &Path) -> Option<Holder> {
    let mut file = File::open(meta.join("lock")).ok()?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0 {
        // Nobody holds it. Closing the file releases the probe at once.
        return None;
    }
    match io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK) {
        true => read_holder(&mut file),
        false => None,
    }
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Remove while locked; the lock goes when the file is closed, right
        // after (see the module notes). A lease releases itself.
        if let Held::File { path, .. } = &self.held {
            let _ = fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(run_id: &str) -> Holder {
        Holder {
            run_id: run_id.into(),
            pid: 4242,
            host: "batch-7".into(),
            started_at: "2026-11-26T02:00:00Z".into(),
        }
    }

    #[test]
    fn a_second_holder_is_refused_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let meta = dir.path().join("_lakescore");
        let first = OutputLock::acquire(dir.path(), &meta, &holder("a")).unwrap();
        assert_eq!(first.taken_over, None);
        let error = OutputLock::acquire(dir.path(), &meta, &holder("b")).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("run a (pid 4242 on host `batch-7`, started 2026-11-26T02:00:00Z)"),
            "{message}"
        );
        drop(first);
        assert!(!meta.join("lock").exists(), "released locks leave no file");
        OutputLock::acquire(dir.path(), &meta, &holder("b")).unwrap();
    }

    #[test]
    fn a_dead_holders_lock_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let meta = dir.path().join("_lakescore");
        fs::create_dir_all(&meta).unwrap();
        fs::write(meta.join("lock"), serde_json::to_vec(&holder("dead")).unwrap()).unwrap();
        let lock = OutputLock::acquire(dir.path(), &meta, &holder("alive")).unwrap();
        assert_eq!(lock.taken_over, Some(holder("dead")));
        let now: Holder = serde_json::from_slice(&fs::read(meta.join("lock")).unwrap()).unwrap();
        assert_eq!(now.run_id, "alive");
    }
}
