//! The error type of the whole library: one enum per stage, gathered here, and
//! the exit code each kind of failure maps to.
//!
//! Messages name what the user can act on (file, row group, column, model
//! field), have no trailing period, and quote values in backticks; the
//! underlying cause is kept as `source`, printed by the binary as `Caused by:`.

pub use crate::commit::CommitError;
pub use crate::device::DeviceError;
pub use crate::features::FeatureError;
pub use crate::model::ModelError;
pub use crate::package::PackageError;
pub use crate::plan::PlanError;
pub use crate::scan::ScanError;
pub use crate::sink::SinkError;

/// Every way a lakescore run can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Scan(#[from] ScanError),
    #[error(transparent)]
    Features(#[from] FeatureError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    Package(#[from] PackageError),
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

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Process exit codes, as documented in the README and `--help`.
pub mod exit_code {
    /// The run finished and its output is published.
    pub const DONE: i32 = 0;
    /// The run failed; nothing was half-published.
    pub const FAILED: i32 = 1;
    /// The command line cannot be used as given.
    pub const USAGE: i32 = 2;
    /// A data contract or guard said no; nothing was published.
    pub const REJECTED: i32 = 3;
}

impl Error {
    /// The exit code the binary ends with for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => exit_code::USAGE,
            Error::Device(error) => error.exit_code(),
            _ => exit_code::FAILED,
        }
    }
}
