//! A guard for memory-mapped input files. Reading a page of a mapped file
//! that was truncated under it raises SIGBUS, which ends the process: no
//! error line, no report, no ledger entry. The guard catches a SIGBUS whose
//! address lies in a registered mapping (or an I/O error on its file: the
//! kernel raises the same signal), maps zeros over the rest of that
//! mapping so that the read goes on, and marks the mapping vanished; the
//! reader then fails with an error naming the file (and the run's check
//! before publishing finds its new size). A SIGBUS anywhere else goes to
//! the handler installed before ours, or ends the process as it would have.
//!
//! Positioned reads would need no guard, but cost about a tenth of the
//! logistic benchmark (the copy out of the page cache), which the mapping
//! does not pay.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

/// Mappings guarded at once; a file mapped when all are taken is read with
/// positioned reads instead (see `LocalTable::open_file`).
const SLOTS: usize = 16 * 1024;

const FREE: u8 = 0;
const CLAIMED: u8 = 1;
const ACTIVE: u8 = 2;

/// One guarded mapping. `start`, `len` and `state` change together under a
/// sequence number (odd while they change), so that the handler never acts
/// on the start of one mapping and the length of another.
struct Slot {
    sequence: AtomicUsize,
    state: AtomicU8,
    start: AtomicUsize,
    len: AtomicUsize,
    vanished: AtomicBool,
}

impl Slot {
    /// Changes the slot's fields as one, for the handler.
    fn write(&self, state: u8, start: usize, len: usize) {
        self.sequence.fetch_add(1, Ordering::Relaxed);
        // The odd sequence must be visible before any field changes.
        std::sync::atomic::fence(Ordering::Release);
        self.start.store(start, Ordering::Relaxed);
        self.len.store(len, Ordering::Relaxed);
        self.state.store(state, Ordering::Relaxed);
        self.sequence.fetch_add(1, Ordering::Release);
    }

    /// The active mapping's range, read whole, or `None`.
    fn active_range(&self) -> Option<(usize, usize)> {
        let before = self.sequence.load(Ordering::Acquire);
        if before % 2 == 1 {
            return None;
        }
        let (state, start, len) = (
            self.state.load(Ordering::Relaxed),
            self.start.load(Ordering::Relaxed),
            self.len.load(Ordering::Relaxed),
        );
        std::sync::atomic::fence(Ordering::Acquire);
        let consistent = self.sequence.load(Ordering::Relaxed) == before;
        (consistent && state == ACTIVE).then_some((start, start + len))
    }
}

static REGISTRY: [Slot; SLOTS] = [const {
    Slot {
        sequence: AtomicUsize::new(0),
        state: AtomicU8::new(FREE),
        start: AtomicUsize::new(0),
        len: AtomicUsize::new(0),
        vanished: AtomicBool::new(false),
    }
}; SLOTS];

/// One past the highest slot ever used: the handler looks no further.
static USED: AtomicUsize = AtomicUsize::new(0);
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(4096);

/// The SIGBUS action before ours, to hand other faults to.
struct Previous(libc::sigaction);
// SAFETY: written once before the handler is installed, then only read.
unsafe impl Sync for Previous {}
unsafe impl Send for Previous {}
static PREVIOUS: OnceLock<Previous> = OnceLock::new();

/// A mapping under the guard, until dropped (which must happen before the
/// mapping is unmapped).
#[derive(Debug)]
pub(crate) struct Guarded {
    slot: usize,
}

impl Guarded {
    /// Guards the `len` bytes mapped at `start`; `None` when every slot is
    /// taken.
    pub(crate) fn new(start: *const u8, len: usize) -> Option<Guarded> {
        install_handler();
        let slot = (0..SLOTS).find(|&i| {
            REGISTRY[i]
                .state
                .compare_exchange(FREE, CLAIMED, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })?;
        let entry = &REGISTRY[slot];
        entry.vanished.store(false, Ordering::Relaxed);
        USED.fetch_max(slot + 1, Ordering::AcqRel);
        entry.write(ACTIVE, start as usize, len);
        Some(Guarded { slot })
    }

    /// Whether part of the mapping vanished (the file was truncated) and
    /// reads of it saw zeros, not the file.
    pub(crate) fn vanished(&self) -> bool {
        REGISTRY[self.slot].vanished.load(Ordering::Acquire)
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        REGISTRY[self.slot].write(FREE, 0, 0);
    }
}

fn install_handler() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // SAFETY: sysconf has no preconditions; the sigaction structs are
        // fully initialised before use, and the handler only makes
        // async-signal-safe calls (atomics, mmap, sigaction, raise).
        unsafe {
            let size = libc::sysconf(libc::_SC_PAGESIZE);
            if size > 0 {
                PAGE_SIZE.store(size as usize, Ordering::Relaxed);
            }
            let mut previous: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut previous);
            let _ = PREVIOUS.set(Previous(previous));
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction =
                on_sigbus as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) as libc::sighandler_t;
            // On the alternate stack where one is set up, as std's own
            // handler (stack overflows) runs.
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
        }
    });
}

extern "C" fn on_sigbus(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel hands a valid siginfo to an SA_SIGINFO handler;
    // errno is this thread's, saved and put back around our calls.
    let (code, address, errno) = unsafe { ((*info).si_code, (*info).si_addr() as usize, *errno_location()) };
    // Only a fault the kernel raised has an address (a `kill -BUS` has
    // `si_code` 0 or below, and no address to speak of).
    if code > 0 && zero_vanished_pages(address) {
        // SAFETY: as above.
        unsafe { *errno_location() = errno };
        return;
    }
    forward(signal, info, context);
}

/// Maps zeros from `address`'s page to the end of the guarded mapping it
/// lies in, and marks that mapping; `false` when no guarded mapping holds
/// the address (or the remapping failed).
fn zero_vanished_pages(address: usize) -> bool {
    let used = USED.load(Ordering::Acquire).min(SLOTS);
    for entry in &REGISTRY[..used] {
        let Some((start, end)) = entry.active_range() else {
            continue;
        };
        if !(start..end).contains(&address) {
            continue;
        }
        // Everything from the faulting page to the mapping's end is past the
        // file's new end (a file only shrinks from the end): zeros there,
        // one fault for the whole truncation.
        let page = address & !(PAGE_SIZE.load(Ordering::Relaxed) - 1);
        // SAFETY: the range lies inside a live read-only mapping this
        // process made; replacing its pages with private zero pages changes
        // what reads of it return, nothing else.
        let mapped = unsafe {
            libc::mmap(
                page as *mut libc::c_void,
                end - page,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if mapped != libc::MAP_FAILED {
            entry.vanished.store(true, Ordering::Release);
            return true;
        }
        return false;
    }
    false
}

/// This thread's `errno`.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn errno_location() -> *mut libc::c_int {
    // SAFETY: returns this thread's errno; no preconditions.
    unsafe { libc::__errno_location() }
}

#[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
fn errno_location() -> *mut libc::c_int {
    // SAFETY: returns this thread's errno; no preconditions.
    unsafe { libc::__error() }
}

/// Not one of ours: the previous handler's, or the default action.
fn forward(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    if let Some(Previous(previous)) = PREVIOUS.get() {
        let handler = previous.sa_sigaction;
        if handler != libc::SIG_DFL && handler != libc::SIG_IGN {
            // SAFETY: the previous action's handler has the signature its
            // flags say.
            unsafe {
                if previous.sa_flags & libc::SA_SIGINFO != 0 {
                    let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                        std::mem::transmute(handler);
                    handler(signal, info, context);
                } else {
                    let handler: extern "C" fn(libc::c_int) = std::mem::transmute(handler);
                    handler(signal);
                }
            }
            return;
        }
    }
    // SAFETY: resetting to the default action and raising are
    // async-signal-safe; a fault then ends the process as it would have.
    unsafe {
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut default.sa_mask);
        libc::sigaction(libc::SIGBUS, &default, std::ptr::null_mut());
        libc::raise(signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapped_file_truncated_under_a_reader_reads_zeros_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        std::fs::write(&path, vec![7u8; 4 * page]).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: the test truncates the file on purpose; the guard is what
        // is tested.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        let guard = Guarded::new(mmap.as_ptr(), mmap.len()).unwrap();
        assert_eq!(mmap[3 * page], 7);
        assert!(!guard.vanished());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(page as u64)
            .unwrap();
        // Reads past the new end would have raised SIGBUS.
        let tail: u64 = mmap[2 * page..].iter().map(|&b| b as u64).sum();
        assert_eq!(tail, 0);
        assert_eq!(mmap[0], 7);
        assert!(guard.vanished());
        drop(guard);
        drop(mmap);
    }
}
