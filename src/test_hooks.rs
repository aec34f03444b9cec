//! Fault injection for the tests, through environment variables that no user
//! sets: they make a run die or panic at a chosen point, so that the tests can
//! prove what a crash or a bug leaves behind. Read once per process.
//!
//! Live only with the `test-hooks` cargo feature, which the test build turns
//! on (the crate's dev-dependency on itself) and no other build does: a
//! release binary, or the library inside another program, ignores these
//! variables, so no environment can make it exit or panic on purpose.

/// Exit like a killed process before publishing partition k (0-based).
pub const CRASH_BEFORE_PARTITION: &str = "LAKESCORE_TEST_CRASH_BEFORE_PARTITION";
/// Exit like a killed process after publishing partition k's files, before
/// its commit record is written.
pub const CRASH_BEFORE_RECORD: &str = "LAKESCORE_TEST_CRASH_BEFORE_RECORD";
/// Panic in the worker that scores row group k of any file.
pub const PANIC_IN_ROW_GROUP: &str = "LAKESCORE_TEST_PANIC_IN_ROW_GROUP";
/// Sleep this many milliseconds in every row group: a slow run, for tests
/// that must catch a run in the middle (signals, the lock).
pub const ROW_GROUP_DELAY_MS: &str = "LAKESCORE_TEST_ROW_GROUP_DELAY_MS";

/// Sleep this many milliseconds before reading each footer while planning:
/// a slow phase that a stop must still cut short.
pub const PLAN_DELAY_MS: &str = "LAKESCORE_TEST_PLAN_DELAY_MS";
/// Sleep this many milliseconds before loading each model.
pub const LOAD_DELAY_MS: &str = "LAKESCORE_TEST_LOAD_DELAY_MS";

/// Sleep this many milliseconds before publishing each partition: a long
/// publishing phase, for tests that kill runs at random moments in it.
pub const PUBLISH_DELAY_MS: &str = "LAKESCORE_TEST_PUBLISH_DELAY_MS";

/// A lease on an object-storage output lives this many seconds (not
/// `commit::object::LEASE_SECONDS`): for tests of a dead run's lease.
pub const LEASE_SECONDS: &str = "LAKESCORE_TEST_LEASE_SECONDS";

/// A Delta output: exit like a killed process just before writing the
/// commit (`before`) or just after it (`after`), before the ledger knows.
pub const CRASH_AT_DELTA_COMMIT: &str = "LAKESCORE_TEST_CRASH_AT_DELTA_COMMIT";
/// A Delta output: sleep this many milliseconds before each attempt to
/// write the commit, so that a test can commit as another writer meanwhile.
pub const DELTA_COMMIT_DELAY_MS: &str = "LAKESCORE_TEST_DELTA_COMMIT_DELAY_MS";
/// A Delta output: before each attempt to write the commit, wait until the
/// file this names exists (a test's go-ahead, once another run is where the
/// test wants it).
pub const DELTA_COMMIT_WHEN_FILE: &str = "LAKESCORE_TEST_DELTA_COMMIT_WHEN_FILE";

struct Hooks {
    crash_at_delta_commit: Option<String>,
    delta_commit_delay_ms: Option<u64>,
    delta_commit_when_file: Option<std::path::PathBuf>,
    lease_seconds: Option<u64>,
    crash_before_partition: Option<usize>,
    crash_before_record: Option<usize>,
    panic_in_row_group: Option<usize>,
    row_group_delay_ms: Option<u64>,
    publish_delay_ms: Option<u64>,
    plan_delay_ms: Option<u64>,
    load_delay_ms: Option<u64>,
}

#[cfg(feature = "test-hooks")]
fn hooks() -> &'static Hooks {
    static HOOKS: std::sync::OnceLock<Hooks> = std::sync::OnceLock::new();
    HOOKS.get_or_init(|| {
        let read = |name| std::env::var(name).ok().and_then(|v| v.parse().ok());
        Hooks {
            crash_at_delta_commit: std::env::var(CRASH_AT_DELTA_COMMIT).ok(),
            delta_commit_delay_ms: std::env::var(DELTA_COMMIT_DELAY_MS).ok().and_then(|v| v.parse().ok()),
            delta_commit_when_file: std::env::var_os(DELTA_COMMIT_WHEN_FILE).map(Into::into),
            lease_seconds: std::env::var(LEASE_SECONDS).ok().and_then(|v| v.parse().ok()),
            crash_before_partition: read(CRASH_BEFORE_PARTITION),
            crash_before_record: read(CRASH_BEFORE_RECORD),
            panic_in_row_group: read(PANIC_IN_ROW_GROUP),
            row_group_delay_ms: std::env::var(ROW_GROUP_DELAY_MS).ok().and_then(|v| v.parse().ok()),
            publish_delay_ms: std::env::var(PUBLISH_DELAY_MS).ok().and_then(|v| v.parse().ok()),
            plan_delay_ms: std::env::var(PLAN_DELAY_MS).ok().and_then(|v| v.parse().ok()),
            load_delay_ms: std::env::var(LOAD_DELAY_MS).ok().and_then(|v| v.parse().ok()),
        }
    })
}

#[cfg(not(feature = "test-hooks"))]
fn hooks() -> &'static Hooks {
    static NONE: Hooks = Hooks {
        crash_at_delta_commit: None,
        delta_commit_delay_ms: None,
        delta_commit_when_file: None,
        lease_seconds: None,
        crash_before_partition: None,
        crash_before_record: None,
        panic_in_row_group: None,
        row_group_delay_ms: None,
        publish_delay_ms: None,
        plan_delay_ms: None,
        load_delay_ms: None,
    };
    &NONE
}

fn die() -> ! {
    // Like SIGKILL: no destructors, no cleanup, no ledger update.
    // SAFETY: _exit ends the process at once, which is the point.
    unsafe { libc::_exit(137) }
}

pub(crate) fn before_partition(partition_idx: usize) {
    if hooks().crash_before_partition == Some(partition_idx) {
        die();
    }
    if let Some(delay) = hooks().publish_delay_ms {
        std::thread::sleep(std::time::Duration::from_millis(delay));
    }
}

pub(crate) fn before_record(partition_idx: usize) {
    if hooks().crash_before_record == Some(partition_idx) {
        die();
    }
}

/// Before an attempt to write a Delta commit.
#[cfg_attr(not(feature = "delta"), allow(dead_code))]
pub(crate) fn before_delta_commit() {
    if hooks().crash_at_delta_commit.as_deref() == Some("before") {
        die();
    }
    if let Some(delay) = hooks().delta_commit_delay_ms {
        std::thread::sleep(std::time::Duration::from_millis(delay));
    }
    if let Some(file) = &hooks().delta_commit_when_file {
        while !file.exists() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// After a Delta commit is written, before the run's ledger entry closes.
#[cfg_attr(not(feature = "delta"), allow(dead_code))]
pub(crate) fn after_delta_commit() {
    if hooks().crash_at_delta_commit.as_deref() == Some("after") {
        die();
    }
}

pub(crate) fn lease_seconds() -> Option<u64> {
    hooks().lease_seconds
}

pub(crate) fn in_plan() {
    if let Some(delay) = hooks().plan_delay_ms {
        std::thread::sleep(std::time::Duration::from_millis(delay));
    }
}

/// Before a model is loaded (public: the binary loads them).
pub fn before_load() {
    if let Some(delay) = hooks().load_delay_ms {
        std::thread::sleep(std::time::Duration::from_millis(delay));
    }
}

pub(crate) fn in_row_group(row_group: usize) {
    if hooks().panic_in_row_group == Some(row_group) {
        panic!("test hook {PANIC_IN_ROW_GROUP}={row_group}");
    }
    if let Some(delay) = hooks().row_group_delay_ms {
        std::thread::sleep(std::time::Duration::from_millis(delay));
    }
}
