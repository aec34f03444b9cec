//! Cancellation: a token the caller hands to a run and may trigger from any
//! thread. Workers look at it before each row group; the run then aborts its
//! transaction like any failed run (staged files removed, ledger says why,
//! nothing published). Publishing, once begun, finishes.
//!
//! The library keeps no process-wide flag: two runs in one process each have
//! their own token. The binary's SIGINT/SIGTERM handler triggers the token of
//! the run it started (`src/cli/signals.rs`), recording the signal so that the
//! process can exit 128 + its number, as shells do.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

/// What asked a run to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A signal (its number), delivered to the process that runs the job.
    Signal(i32),
    /// The program that embeds the library called [`CancelToken::cancel`].
    Caller,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            StopReason::Signal(signal) => f.write_str(&signal_name(signal)),
            StopReason::Caller => f.write_str("the caller"),
        }
    }
}

/// A run was asked to stop before it published anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stopped by {by}: the run published nothing (its staged files are removed)")]
pub struct Stopped {
    pub by: StopReason,
}

/// The stored reason: 0 while nobody asked, a signal's number, or `CALLER`.
const NOT_ASKED: i32 = 0;
const CALLER: i32 = -1;

/// A cancellation flag shared by a run and whoever may stop it. Clones share
/// the flag. Triggering is one atomic store, safe from a signal handler.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicI32>);

impl CancelToken {
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Asks the run to stop at its next row group (or before publishing).
    pub fn cancel(&self) {
        let _ = self
            .0
            .compare_exchange(NOT_ASKED, CALLER, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Records that `signal` asked the run to stop, and whether one had
    /// already asked (a second signal: the binary then ends the process).
    /// Only an atomic swap: async-signal-safe.
    pub fn cancel_by_signal(&self, signal: i32) -> bool {
        self.0.swap(signal, Ordering::SeqCst) != NOT_ASKED
    }

    /// What asked the run to stop, if anything did.
    pub fn reason(&self) -> Option<StopReason> {
        match self.0.load(Ordering::SeqCst) {
            NOT_ASKED => None,
            CALLER => Some(StopReason::Caller),
            signal => Some(StopReason::Signal(signal)),
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.reason().is_some()
    }

    /// `Err(Stopped)` once a stop was asked for.
    pub fn check(&self) -> Result<(), Stopped> {
        match self.reason() {
            Some(by) => Err(Stopped { by }),
            None => Ok(()),
        }
    }
}

/// `SIGTERM` for 15: how the signal is named in messages.
pub fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        other => format!("signal {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_remembers_who_asked_first_and_clones_share_it() {
        let token = CancelToken::new();
        let clone = token.clone();
        assert_eq!(token.check(), Ok(()));
        clone.cancel();
        assert_eq!(token.reason(), Some(StopReason::Caller));
        // A later cancel by the caller does not hide an earlier signal, and
        // a signal after a cancel still says a stop was already asked for.
        let signalled = CancelToken::new();
        assert!(!signalled.cancel_by_signal(libc::SIGTERM));
        signalled.cancel();
        assert_eq!(signalled.reason(), Some(StopReason::Signal(libc::SIGTERM)));
        assert!(signalled.cancel_by_signal(libc::SIGINT));
        assert_eq!(
            CancelToken::new().check().map_err(|e| e.to_string()),
            Ok(()),
            "a fresh token is not cancelled"
        );
        assert_eq!(
            Stopped {
                by: StopReason::Signal(libc::SIGTERM)
            }
            .to_string(),
            "stopped by SIGTERM: the run published nothing (its staged files are removed)"
        );
    }
}
