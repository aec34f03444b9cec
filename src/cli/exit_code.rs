//! Process exit codes, as documented in the README and `--help`: how the
//! library's outcomes and errors end the process.

use lakescore::Error;
use lakescore::bandit::policy::PolicyError;
use lakescore::cancel::{StopReason, Stopped};
use lakescore::commit::RunStatus;
use lakescore::lock::LockError;

/// The run finished and its output is published.
pub const DONE: i32 = 0;
/// The run failed; nothing was half-published.
pub const FAILED: i32 = 1;
/// The command line cannot be used as given.
pub const USAGE: i32 = 2;
/// A data contract or guard said no; nothing was published.
pub const REJECTED: i32 = 3;
/// An SLA was missed; the output is published.
pub const SLA_MISSED: i32 = 4;
/// Another run holds the output's lock; nothing was touched.
pub const LOCKED: i32 = 5;
/// Stopped by a signal: 128 + its number (130 for SIGINT, 143 for SIGTERM).
pub const SIGNALLED: i32 = 128;

/// The code of a command that returned (rather than failed) with `status`.
pub fn of(status: RunStatus) -> i32 {
    use RunStatus::*;
    match status {
        Running | Succeeded => DONE,
        SlaMissed => SLA_MISSED,
        Rejected => REJECTED,
        Failed | Interrupted => FAILED,
        Locked => LOCKED,
    }
}

/// The code the binary ends with for `error`.
pub fn of_error(error: &Error) -> i32 {
    match error {
        Error::Usage(_) => USAGE,
        Error::Locked(LockError::Held { .. }) => LOCKED,
        Error::Stopped(Stopped {
            by: StopReason::Signal(signal),
        }) => SIGNALLED + signal,
        Error::Device(error) if error.is_usage() => USAGE,
        Error::Store(lakescore::store::StoreError::Url { .. }) => USAGE,
        Error::Registry(
            lakescore::mlflow::registry::RegistryError::Uri { .. }
            | lakescore::mlflow::registry::RegistryError::NoServer { .. },
        ) => USAGE,
        // A policy that says something impossible is a usage error; one
        // that cannot be read or written is a failure like any I/O error.
        Error::Policy(PolicyError::Parse { .. }) | Error::Policy(PolicyError::Invalid { .. }) => USAGE,
        _ => FAILED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lakescore::device::DeviceSpec;

    #[test]
    fn cuda_without_the_feature_is_a_usage_error() {
        if candle_core_has_cuda() {
            return;
        }
        let error = Error::from(DeviceSpec::Cuda(0).open().unwrap_err());
        assert_eq!(of_error(&error), USAGE);
    }

    #[test]
    fn a_signal_ends_the_process_with_128_plus_its_number() {
        let stopped = |by| Error::from(Stopped { by });
        assert_eq!(of_error(&stopped(StopReason::Signal(libc::SIGINT))), 130);
        assert_eq!(of_error(&stopped(StopReason::Signal(libc::SIGTERM))), 143);
        assert_eq!(of_error(&stopped(StopReason::Caller)), FAILED);
    }

    fn candle_core_has_cuda() -> bool {
        cfg!(feature = "cuda")
    }
}
