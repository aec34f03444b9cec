//! Outputs that cannot be written: a full disk (a small tmpfs) and a
//! read-only filesystem. Both give a clear error with a hint, publish nothing
//! and leave no staged files. Mounting needs root (CAP_SYS_ADMIN): without it
//! the tests say they are skipped, except under CI, where they must run.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs {
    mount_point: PathBuf,
}

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| Tmpfs {
            mount_point: at.to_path_buf(),
        })
    }

    fn make_read_only(&self) {
        let status = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.mount_point)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount_point).status();
    }
}

fn mount_or_skip(at: &Path, size: &str, test: &str) -> Option<Tmpfs> {
    let mounted = Tmpfs::mount(at, size);
    if mounted.is_none() {
        assert!(
            !crate::common::in_ci(),
            "{test}: cannot mount a tmpfs (needs root); CI runs as root, so this must be checked there"
        );
        eprintln!("skipped: {test} needs root to mount a tmpfs");
    }
    mounted
}

#[test]
fn a_full_disk_gives_a_clear_error_and_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(tmpfs) = mount_or_skip(&dir.path().join("small"), "300k", "the full-disk test") else {
        return;
    };
    let lake = customer_lake(
        &dir.path().join("lake"),
        60_000,
        2,
        5_000,
        &["2026-11-24", "2026-11-25"],
    );
    let model = linear_model(dir.path(), "model.json", logistic_model_body(None));
    let out = tmpfs.mount_point.join("out");
    let run = score(&model, &lake, &out, &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("No space left on device"), "{}", run.stderr);
    assert!(
        run.stderr.contains("hint: the output's filesystem is full"),
        "{}",
        run.stderr
    );
    assert_eq!(published(&out), Default::default());
    assert_eq!(
        snapshot(&out.join("_lakescore/staging")),
        Default::default(),
        "staged files removed"
    );
    assert!(!out.join("_lakescore/lock").exists());
}

#[test]
fn a_read_only_output_gives_a_clear_error_and_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(tmpfs) = mount_or_skip(&dir.path().join("ro"), "10m", "the read-only test") else {
        return;
    };
    let lake = customer_lake(&dir.path().join("lake"), 6_000, 2, 700, &["2026-11-25"]);
    let model = linear_model(dir.path(), "model.json", logistic_model_body(None));
    let out = tmpfs.mount_point.join("out");
    std::fs::create_dir(&out).unwrap();
    tmpfs.make_read_only();
    let metrics = dir.path().join("lakescore.prom");
    let run = score(&model, &lake, &out, &["--metrics-file", metrics.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("Read-only file system"), "{}", run.stderr);
    // Failing to take the lock is a failure like any other for monitoring.
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(text.contains("\nlakescore_exit_code 1\n"), "{text}");
    assert!(
        run.stderr.contains("hint: the output is on a read-only filesystem"),
        "{}",
        run.stderr
    );
    assert_eq!(snapshot(&out), Default::default());
}
