//! Clean stops: SIGINT and SIGTERM ask a run to stop. Workers look at the
//! request before each row group, the run then aborts its transaction like any
//! failed run (staged files removed, ledger says why, nothing published), and
//! the process exits 128 + the signal's number (130, 143), as shells do. A
//! second signal while the first is being handled ends the process at once;
//! the staged files it leaves are removed by the next run into the output.

use std::sync::atomic::{AtomicI32, Ordering};

static REQUESTED: AtomicI32 = AtomicI32::new(0);

extern "C" fn request_stop(signal: libc::c_int) {
    if REQUESTED.swap(signal, Ordering::SeqCst) != 0 {
        // SAFETY: _exit is async-signal-safe; this is the second request.
        unsafe { libc::_exit(128 + signal) }
    }
}

/// Routes SIGINT and SIGTERM to [`requested`]. Called once by the binary.
pub fn install_handlers() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only touches an atomic (async-signal-safe), and
        // the sigaction struct is fully initialised before the call.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = request_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// The signal that asked the run to stop, if one did.
pub fn requested() -> Option<i32> {
    match REQUESTED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// `Err(Error::Interrupted)` once a stop was asked for.
pub fn check() -> Result<(), crate::error::Error> {
    match requested() {
        Some(signal) => Err(crate::error::Error::Interrupted { signal }),
        None => Ok(()),
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
