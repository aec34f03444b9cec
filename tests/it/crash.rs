//! Crash safety, proven by killing: SIGKILL at random (seeded) moments of a
//! multi-partition run, again and again into the same output, each time
//! followed by a look at what a reader would see; then `--mode resume` to the
//! end, whose output must be byte-identical to an uninterrupted run's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// SplitMix64: a tiny seeded generator, so that a failure names its seed and
/// replays exactly.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Paths a reader of the table sees: no component starting with `_` or `.`.
fn visible(out: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    snapshot(out)
        .into_iter()
        .filter(|(path, _)| {
            !out.join(path).is_dir()
                && path.components().all(|c| {
                    let name = c.as_os_str().to_string_lossy();
                    !name.starts_with('_') && !name.starts_with('.')
                })
        })
        .collect()
}

/// When to kill a run.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// This long after its start.
    Time(Duration),
    /// This long after it publishes its next partition (it records one more
    /// partition than the output had when it started), with publishing
    /// slowed down by a pause before each partition.
    AfterAPartition(Duration),
}

fn partition_records(out: &Path) -> usize {
    std::fs::read_dir(out.join("_lakescore/partitions")).map_or(0, |entries| entries.count())
}

/// Runs `score --mode resume` and SIGKILLs it at `kill`; returns whether it
/// finished first.
fn run_and_kill(model: &Path, lake: &Path, out: &Path, kill: KillAt, pause: Duration) -> bool {
    let records_before = partition_records(out);
    let mut child = Command::new(env!("CARGO_BIN_EXE_lakescore"))
        .args(score_args(model, lake, out, &["--mode", "resume", "-q"]))
        .env_remove("LAKESCORE_LOG")
        .env(lakescore::test_hooks::PUBLISH_DELAY_MS, pause.as_millis().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut deadline = match kill {
        KillAt::Time(delay) => Some(started + delay),
        KillAt::AfterAPartition(_) => None,
    };
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "an uninterrupted resume fails: {status}");
            return true;
        }
        if let (None, KillAt::AfterAPartition(delay)) = (deadline, kill)
            && partition_records(out) > records_before
        {
            deadline = Some(Instant::now() + delay);
        }
        if deadline.is_some_and(|at| Instant::now() >= at) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "a run never got to publish"
        );
        std::thread::sleep(Duration::from_micros(500));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    false
}

#[test]
fn sigkill_at_random_moments_then_resume_gives_the_uninterrupted_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let lake = customer_lake(
        &dir.path().join("lake"),
        40_000,
        2,
        2_000,
        &["2026-11-22", "2026-11-23", "2026-11-24", "2026-11-25"],
    );
    let model = linear_model(dir.path(), "model.json", logistic_model_body(None));
    let reference = dir.path().join("reference");
    // How long a run takes: the quickest of three (the first pays for cold
    // caches).
    let mut full_run = Duration::MAX;
    for _ in 0..3 {
        let _ = std::fs::remove_dir_all(&reference);
        let started = Instant::now();
        score(&model, &lake, &reference, &[]).assert_ok();
        full_run = full_run.min(started.elapsed());
    }
    let expected = data_files(&reference);
    assert_eq!(expected.len(), 8, "4 partitions of 2 files");

    let seed = 0x1A4E_5C02_u64;
    let mut random = SplitMix(seed);
    let out = dir.path().join("out");
    let (mut kills, mut finished, mut partly_published) = (0, 0, 0);
    let publish_delay = Duration::from_millis(60);
    for attempt in 0..30 {
        // Half of the kills land anywhere in a run. The other half land while
        // it publishes (renames, records, the manifest): a random moment
        // after its first partition is recorded, publishing being stretched
        // by a pause before each of the 4 partitions.
        let (kill, pause) = if attempt % 2 == 0 {
            (KillAt::Time(full_run.mul_f64(random.unit())), Duration::ZERO)
        } else {
            (
                KillAt::AfterAPartition(publish_delay.mul_f64(random.unit() * 1.2)),
                publish_delay,
            )
        };
        if run_and_kill(&model, &lake, &out, kill, pause) {
            finished += 1;
        } else {
            kills += 1;
        }
        // What a reader sees now: only complete files, each exactly the file
        // an uninterrupted run writes at that path; the manifest only when
        // every file is there.
        let now = visible(&out);
        for (path, bytes) in &now {
            assert!(
                expected.get(path) == Some(bytes),
                "seed {seed:#x}, attempt {attempt} (killed at {kill:?}): `{}` is visible but not the final file",
                path.display()
            );
        }
        // The manifest only with every file; once complete, start over, so
        // that kills keep hitting runs with work left to do.
        if out.join("_SUCCESS").exists() {
            assert_eq!(
                now, expected,
                "seed {seed:#x}, attempt {attempt}: _SUCCESS with files missing"
            );
            std::fs::remove_dir_all(&out).unwrap();
        } else if !now.is_empty() {
            partly_published += 1;
        }
    }
    eprintln!(
        "seed {seed:#x}: {kills} runs killed ({partly_published} left a partly published table), {finished} finished"
    );
    // A run resumed after a kill in its publishing has little left to do and
    // often finishes: so "most", not "all", attempts are kills.
    assert!(
        kills >= 15,
        "most attempts must be killed mid-run ({kills} of 30, {finished} finished)"
    );
    assert!(
        partly_published > 0,
        "some kills must land while partitions are being published"
    );

    // The last resume runs to the end.
    score(&model, &lake, &out, &["--mode", "resume"]).assert_ok();
    assert_eq!(
        data_files(&out),
        expected,
        "seed {seed:#x}: resume after kills gives other bytes"
    );
    assert_eq!(
        snapshot(&out.join("_lakescore/staging")),
        Default::default(),
        "no staged files left"
    );
    assert!(!out.join("_lakescore/lock").exists(), "the lock is released");
    let stray: Vec<_> = snapshot(&out)
        .into_keys()
        .filter(|p| p.to_string_lossy().contains(".tmp-"))
        .collect();
    assert_eq!(
        stray,
        Vec::<PathBuf>::new(),
        "temporary files of killed atomic writes are removed"
    );
}
