//! What an unlucky operator meets: input files truncated or rewritten while
//! a run reads them (each ends as an error naming the file, exit 1, nothing
//! published, the ledger entry closed; never a signal, never a table that
//! mixes old and new bytes), and dead runs whose lock file names a live pid
//! or another host.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

fn lake_and_model(root: &Path) -> (PathBuf, PathBuf) {
    let lake = customer_lake(&root.join("lake"), 6_000, 2, 700, &["2026-11-24", "2026-11-25"]);
    let model = linear_model(root, "model.json", logistic_model_body(None));
    (lake, model)
}

/// Waits for the run; its exit code (a signal fails the test) and stderr.
fn finish(child: Child) -> (i32, String) {
    use std::os::unix::process::ExitStatusExt;
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.signal(), None, "the run died of a signal: {stderr}");
    (output.status.code().unwrap(), stderr)
}

/// What a failed run must leave: no data, no `_SUCCESS`, a ledger entry
/// closed as failed, no staged files.
fn assert_nothing_published(out: &Path) {
    assert!(!out.join("_SUCCESS").exists());
    assert!(parquet_files(out).is_empty(), "{:?}", parquet_files(out));
    let runs = ledger_entries(out);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["status"], "failed", "{:#}", runs[0]);
    assert_eq!(std::fs::read_dir(out.join("_lakescore/staging")).unwrap().count(), 0);
}

/// The ledger entries of `out`.
fn ledger_entries(out: &Path) -> Vec<Value> {
    std::fs::read_dir(out.join("_lakescore/runs"))
        .unwrap()
        .map(|e| serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
        .collect()
}

#[test]
fn an_input_truncated_during_the_run_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, model) = lake_and_model(dir.path());
    let out = dir.path().join("out");
    // The last file in path order: the run has planned it and not read it yet.
    let victim = lake.join("dt=2026-11-25/part-00001.parquet");
    let child = slow_run(&model, &lake, &out, &[]);
    wait_for(&out.join("_lakescore/staging"));
    let len = std::fs::metadata(&victim).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&victim)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let (code, stderr) = finish(child);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "input file `{}` changed while the run read it",
            victim.display()
        )),
        "{stderr}"
    );
    assert_nothing_published(&out);
}

#[test]
fn an_input_rewritten_during_the_run_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, model) = lake_and_model(dir.path());
    let out = dir.path().join("out");
    // The first file: read early. Its footer is rewritten in place, same
    // size, its modification time put back: only the footer tells.
    let victim = lake.join("dt=2026-11-24/part-00000.parquet");
    let mut bytes = std::fs::read(&victim).unwrap();
    let modified = std::fs::metadata(&victim).unwrap().modified().unwrap();
    let footer_len = u32::from_le_bytes(bytes[bytes.len() - 8..bytes.len() - 4].try_into().unwrap()) as usize;
    let footer_start = bytes.len() - 8 - footer_len;
    let at = bytes[footer_start..]
        .windows(b"parquet-rs".len())
        .position(|w| w == b"parquet-rs")
        .expect("the footer names its writer")
        + footer_start;
    bytes[at..at + b"parquet-rs".len()].copy_from_slice(b"PARQUET-RS");

    let child = slow_run(&model, &lake, &out, &[]);
    wait_for(&out.join("_lakescore/staging"));
    // In place: the same inode, as an editor or `dd conv=notrunc` would.
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().write(true).open(&victim).unwrap();
    file.write_all(&bytes).unwrap();
    file.set_times(std::fs::FileTimes::new().set_modified(modified))
        .unwrap();
    drop(file);
    assert_eq!(std::fs::metadata(&victim).unwrap().modified().unwrap(), modified);

    let (code, stderr) = finish(child);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "input file `{}` changed while the run read it",
            victim.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("its footer is not the one the run read"), "{stderr}");
    assert_nothing_published(&out);
}

#[test]
fn an_input_touched_during_the_run_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, model) = lake_and_model(dir.path());
    let out = dir.path().join("out");
    let victim = lake.join("dt=2026-11-24/part-00001.parquet");
    let child = slow_run(&model, &lake, &out, &[]);
    wait_for(&out.join("_lakescore/staging"));
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&victim)
        .unwrap()
        .set_times(std::fs::FileTimes::new().set_modified(later))
        .unwrap();
    let (code, stderr) = finish(child);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&victim.display().to_string()), "{stderr}");
    assert!(stderr.contains("mtime"), "{stderr}");
    assert_nothing_published(&out);
}

/// `lakescore runs OUT --json`: each run's id and outcome.
fn outcomes(out: &Path) -> Vec<(String, String)> {
    let run = lakescore(["runs".as_ref(), out.as_os_str(), "--json".as_ref()]);
    let runs: Vec<Value> = serde_json::from_str(&run.assert_ok().stdout).unwrap();
    runs.iter()
        .map(|r| {
            (
                r["run_id"].as_str().unwrap().to_string(),
                r["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn runs_asks_the_lock_whether_a_running_run_is_alive() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, model) = lake_and_model(dir.path());
    let out = dir.path().join("out");
    score(&model, &lake, &out, &[]).assert_ok();
    let ledger = out.join("_lakescore/runs");
    let finished = std::fs::read_dir(&ledger).unwrap().next().unwrap().unwrap().path();
    let mut record: Value = serde_json::from_slice(&std::fs::read(&finished).unwrap()).unwrap();

    // A run that died while running, whose lock file names a live process
    // (this test's, on this host) or a process on another host. Nobody holds
    // the lock: both are dead.
    let host = lakescore::commit::host_name();
    for (run_id, host) in [
        ("20261207T000000Z-deadbeef", host.as_str()),
        ("20261207T000001Z-deadbeef", "elsewhere"),
    ] {
        record["run_id"] = run_id.into();
        record["status"] = "running".into();
        record["finished_at"] = Value::Null;
        std::fs::write(
            ledger.join(format!("{run_id}.json")),
            serde_json::to_vec(&record).unwrap(),
        )
        .unwrap();
        let holder = serde_json::json!({
            "run_id": run_id, "pid": std::process::id(), "host": host, "started_at": "2026-12-07T00:00:00Z"
        });
        std::fs::write(out.join("_lakescore/lock"), serde_json::to_vec(&holder).unwrap()).unwrap();
        let listed = outcomes(&out);
        let outcome = &listed.iter().find(|(id, _)| id == run_id).unwrap().1;
        assert_eq!(outcome, "died", "{run_id} on {host}: {listed:?}");
    }

    // A run that holds the lock is running, and `runs` asking does not make
    // it or another writer fail.
    let child = slow_run(&model, &lake, &out.with_file_name("out2"), &[]);
    let out2 = out.with_file_name("out2");
    wait_for(&out2.join("_lakescore/staging"));
    let mut child = child;
    let mut seen_running = false;
    for _ in 0..20 {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        let listed = outcomes(&out2);
        assert_eq!(listed.len(), 1);
        // A live run is never `died` (it may have just finished).
        assert!(["running", "succeeded"].contains(&listed[0].1.as_str()), "{listed:?}");
        seen_running |= listed[0].1 == "running";
    }
    assert!(seen_running, "the run was listed while it ran");
    let (code, stderr) = finish(child);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(outcomes(&out2)[0].1, "succeeded");
}

#[test]
fn an_input_linking_into_the_output_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, model) = lake_and_model(dir.path());
    let out = dir.path().join("out");
    score(&model, &lake, &out, &[]).assert_ok();
    // A table that sits in the output (put there by hand), linked into the
    // input: an overwrite would replace the partition it reads.
    let inside = out.join("dt=2026-11-24/extra.parquet");
    std::fs::copy(lake.join("dt=2026-11-24/part-00000.parquet"), &inside).unwrap();
    let before = snapshot(&out);
    let link = lake.join("dt=2026-11-26/part-00000.parquet");
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&inside, &link).unwrap();
    let run = score(&model, &lake, &out, &["--mode", "overwrite"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("input file `{}` is a link to", link.display()))
            && run.stderr.contains("inside the output"),
        "{}",
        run.stderr
    );
    let unchanged: std::collections::BTreeMap<_, _> = before
        .into_iter()
        .filter(|(p, _)| !p.starts_with("_lakescore"))
        .collect();
    assert_eq!(published(&out), unchanged);
}

#[test]
fn a_package_reference_outside_the_package_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, _) = lake_and_model(dir.path());
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/sample/package");
    let package = dir.path().join("package");
    std::fs::create_dir_all(&package).unwrap();
    for name in ["model.json", "reference.json", "lakescore.toml"] {
        std::fs::copy(sample.join(name), package.join(name)).unwrap();
    }
    std::fs::copy(sample.join("reference.json"), dir.path().join("elsewhere.json")).unwrap();
    let manifest = std::fs::read_to_string(package.join("lakescore.toml")).unwrap();
    let out = dir.path().join("out");
    // By `..`, or by an absolute path.
    let outside = dir.path().join("elsewhere.json");
    for reference in ["../elsewhere.json", outside.to_str().unwrap()] {
        let edited = manifest.replace("reference = \"reference.json\"", &format!("reference = {reference:?}"));
        assert_ne!(edited, manifest);
        std::fs::write(package.join("lakescore.toml"), edited).unwrap();
        let run = score(&package, &lake, &out, &[]);
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert!(
            run.stderr.contains("reference") && run.stderr.contains("must be a path inside the package folder"),
            "{reference}: {}",
            run.stderr
        );
        assert!(!out.exists());
    }
}

#[test]
fn a_misspelled_variable_is_named_and_errors_carry_no_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, model) = lake_and_model(dir.path());
    let out = dir.path().join("out");
    let run = lakescore_with_env(
        score_args(&model, &lake, &out, &[]),
        &[("LAKESCORE_MODEE", "resume"), ("RUST_BACKTRACE", "1")],
    );
    run.assert_ok();
    assert!(
        run.stderr.contains(
            "environment variable `LAKESCORE_MODEE` is not a lakescore setting and is ignored; \
             did you mean `LAKESCORE_MODE`?"
        ),
        "{}",
        run.stderr
    );
    // A failing run, with backtraces asked for: the error is for people.
    let broken = linear_model(
        dir.path(),
        "broken.json",
        serde_json::json!({"format": "linear", "features": ["nope"], "weights": [1.0], "intercept": 0.0}),
    );
    let run = lakescore_with_env(
        score_args(&broken, &lake, &dir.path().join("out2"), &[]),
        &[("RUST_BACKTRACE", "full")],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("`nope`"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("   0: ") && !run.stderr.contains("backtrace"),
        "{}",
        run.stderr
    );
}

/// Sends SIGTERM to the run, waits for it, and returns its exit code,
/// stderr and how long it took to end after the signal.
fn terminate(child: Child) -> (i32, String, Duration) {
    // SAFETY: kill sends a signal to the child this test started.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let signalled = Instant::now();
    let (code, stderr) = finish(child);
    (code, stderr, signalled.elapsed())
}

/// A run with `env` set, in the background.
fn run_with(args: Vec<std::ffi::OsString>, env: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_lakescore"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("LAKESCORE_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_stop_while_planning_takes_effect_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let lake = customer_lake(&dir.path().join("lake"), 4_000, 4, 1_000, &["2026-11-24", "2026-11-25"]);
    let model = linear_model(dir.path(), "model.json", logistic_model_body(None));
    let out = dir.path().join("out");
    // Eight footers at a second each: planning alone takes eight seconds.
    let child = run_with(
        score_args(&model, &lake, &out, &["--threads", "1"]),
        &[(lakescore::test_hooks::PLAN_DELAY_MS, "1000")],
    );
    std::thread::sleep(Duration::from_millis(2000));
    let (code, stderr, took) = terminate(child);
    assert_eq!(code, 143, "{stderr}");
    assert!(stderr.contains("stopped by SIGTERM"), "{stderr}");
    assert!(took < Duration::from_secs(4), "ended {took:?} after the signal");
    assert!(!out.exists(), "planning touches no output");
}

#[test]
fn a_stop_while_loading_the_model_takes_effect_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, model) = lake_and_model(dir.path());
    let out = dir.path().join("out");
    let child = run_with(
        score_args(&model, &lake, &out, &[]),
        &[(lakescore::test_hooks::LOAD_DELAY_MS, "30000")],
    );
    std::thread::sleep(Duration::from_millis(2000));
    let (code, stderr, took) = terminate(child);
    assert_eq!(code, 143, "{stderr}");
    assert!(took < Duration::from_secs(4), "ended {took:?} after the signal");
    assert!(!out.exists());
}

#[test]
fn a_stop_while_a_collector_trickles_takes_effect_at_once() {
    use std::io::Write;
    // A lineage endpoint that accepts and sends a byte every two seconds.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                while stream.write_all(b"H").is_ok() {
                    std::thread::sleep(Duration::from_secs(2));
                }
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let (lake, model) = lake_and_model(dir.path());
    let out = dir.path().join("out");
    let url = format!("http://127.0.0.1:{port}/api/v1/lineage");
    let child = run_with(score_args(&model, &lake, &out, &["--lineage-url", &url]), &[]);
    // The transaction has begun: the START event is being posted.
    wait_for(&out.join("_lakescore/staging"));
    std::thread::sleep(Duration::from_millis(500));
    let (code, stderr, took) = terminate(child);
    assert_eq!(code, 143, "{stderr}");
    assert!(took < Duration::from_secs(4), "ended {took:?} after the signal");
    assert!(!out.join("_SUCCESS").exists() && parquet_files(&out).is_empty());
    let runs = ledger_entries(&out);
    assert_eq!(runs[0]["status"], "interrupted", "{:#}", runs[0]);
}
