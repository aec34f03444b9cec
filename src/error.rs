//! The error type of the whole library: one enum per stage, gathered here.
//! Which exit code each kind of failure ends the binary with is the binary's
//! business (`src/cli/exit_code.rs`).
//!
//! Messages name what the user can act on (file, row group, column, model
//! field), have no trailing period, and quote values in backticks; the
//! underlying cause is kept as `source`, printed by the binary as `Caused by:`.

pub use crate::commit::{CommitError, RunStatus};
pub use crate::device::DeviceError;
pub use crate::features::FeatureError;
pub use crate::lock::LockError;
pub use crate::model::ModelError;
pub use crate::package::PackageError;
pub use crate::plan::PlanError;
pub use crate::scan::ScanError;
pub use crate::sink::SinkError;

/// Every way a lakescore run can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Plan(PlanError),
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error(transparent)]
    Features(#[from] FeatureError),
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A model (or what watches its scores) failed on a row group's values.
    #[error("cannot score row group {row_group} of `{}`", path.display())]
    InRowGroup {
        path: std::path::PathBuf,
        row_group: usize,
        #[source]
        source: ModelError,
    },
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Commit(CommitError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Package(#[from] PackageError),
    /// An MLflow model lakescore cannot score as it is.
    #[error(transparent)]
    Mlflow(#[from] crate::mlflow::MlflowError),
    /// A `models:/` or `runs:/` URI that could not be resolved or fetched.
    #[error(transparent)]
    Registry(#[from] crate::mlflow::registry::RegistryError),
    /// Object storage could not be reached, or refused a request.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Locked(#[from] LockError),
    #[error(transparent)]
    Runs(#[from] crate::runs::RunsError),
    #[error(transparent)]
    Policy(#[from] crate::bandit::policy::PolicyError),
    /// The run's cancel token was triggered (by SIGINT or SIGTERM in the binary).
    #[error(transparent)]
    Stopped(#[from] crate::cancel::Stopped),
    /// A command-line value that is well-formed but cannot be used.
    #[error("{0}")]
    Usage(String),
    /// Writing a report or another side output failed.
    #[error("cannot write {what} `{}`", path.display())]
    Output {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Something lakescore itself got wrong, not the user.
    #[error("internal error: {0}; this is a bug in lakescore, please report it with the command you ran")]
    Internal(String),
}

impl Error {
    /// How a run that ended with this error is recorded (ledger, metrics).
    pub fn run_status(&self) -> RunStatus {
        match self {
            Error::Stopped(_) => RunStatus::Interrupted,
            Error::Locked(LockError::Held { .. }) => RunStatus::Locked,
            _ => RunStatus::Failed,
        }
    }

    /// What to do about an error the operating system raised while writing
    /// the output (a full disk, a read-only output), for the line after the
    /// error.
    pub fn hint(&self) -> Option<&'static str> {
        if !matches!(self, Error::Commit(_) | Error::Sink(_) | Error::Locked(_)) {
            return None;
        }
        let io = causes(self).find_map(|cause| cause.downcast_ref::<std::io::Error>())?;
        match io.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => Some(
                "the output's filesystem is full: the run stopped before its table was complete (no \
                 `_SUCCESS`) and removed its staged files; free space and run again with `--mode resume`",
            ),
            std::io::ErrorKind::ReadOnlyFilesystem => {
                Some("the output is on a read-only filesystem: nothing was written; write somewhere writable")
            }
            std::io::ErrorKind::PermissionDenied => {
                Some("permission denied while writing the output: check who owns the output folder")
            }
            _ => None,
        }
    }
}

impl From<crate::package::OpenError> for Error {
    fn from(error: crate::package::OpenError) -> Error {
        match error {
            crate::package::OpenError::Package(e) => Error::Package(e),
            crate::package::OpenError::Model(e) => Error::Model(e),
            crate::package::OpenError::Mlflow(e) => Error::Mlflow(e),
        }
    }
}

impl From<PlanError> for Error {
    fn from(error: PlanError) -> Error {
        match error {
            // A footer that cannot be read is a scan error wherever it is met.
            PlanError::Scan(scan) => Error::Scan(scan),
            PlanError::Stopped(stopped) => Error::Stopped(stopped),
            other => Error::Plan(other),
        }
    }
}

impl From<CommitError> for Error {
    fn from(error: CommitError) -> Error {
        match error {
            // One variant for a lock however it was met (exit code, status).
            CommitError::Locked(lock) => Error::Locked(lock),
            other => Error::Commit(other),
        }
    }
}

pub use crate::util::{causes, error_chain};

pub type Result<T, E = Error> = std::result::Result<T, E>;
