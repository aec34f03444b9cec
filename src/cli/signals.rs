//! SIGINT and SIGTERM stop the binary's run cleanly: the handler triggers the
//! run's [`CancelToken`], workers see it before their next row group, the run
//! aborts its transaction like any failed run, and the process exits 128 +
//! the signal's number (130, 143), as shells do. A second signal while the
//! first is being handled ends the process at once; the staged files it
//! leaves are removed by the next run into the output.
//!
//! The one process-wide token lives here, in the binary: the library takes a
//! token per run and keeps none.

use std::sync::OnceLock;

use lakescore::cancel::CancelToken;

static TOKEN: OnceLock<CancelToken> = OnceLock::new();

extern "C" fn request_stop(signal: libc::c_int) {
    // OnceLock::get is an atomic load and cancel_by_signal an atomic swap:
    // both async-signal-safe.
    if let Some(token) = TOKEN.get()
        && token.cancel_by_signal(signal)
    {
        // SAFETY: _exit is async-signal-safe; this is the second request.
        unsafe { libc::_exit(128 + signal) }
    }
}

/// Routes SIGINT and SIGTERM to the returned token, which the command hands
/// to its run. Called once, before any run starts.
pub fn install_handlers() -> CancelToken {
    let token = TOKEN.get_or_init(CancelToken::new).clone();
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only touches atomics (async-signal-safe), and
        // the sigaction struct is fully initialised before the call.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = request_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
    token
}
