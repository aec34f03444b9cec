//! Metrics pushed to a real Prometheus Pushgateway (Debian's
//! `prometheus-pushgateway`, started here on a free port) and read back from
//! it. Without the binary the test says it is skipped, except under CI, which
//! installs it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lakescore::observe::{Endpoint, http};

use crate::common::*;

const BINARY: &str = "prometheus-pushgateway";

struct Pushgateway {
    child: Child,
    base: String,
}

impl Drop for Pushgateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_pushgateway() -> Option<Pushgateway> {
    let found = Command::new(BINARY).arg("--version").output().is_ok();
    if !found {
        assert!(
            !crate::common::in_ci(),
            "no `{BINARY}` on PATH; CI installs it (apt-get install prometheus-pushgateway), so it must run there"
        );
        eprintln!("skipped: no `{BINARY}` on PATH (apt-get install prometheus-pushgateway)");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(BINARY)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let gateway = Pushgateway {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let ready: Endpoint = format!("{}/-/ready", gateway.base).parse().unwrap();
    let started = Instant::now();
    while !matches!(get(&ready), Ok((200, _))) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the Pushgateway did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(gateway)
}

#[test]
fn metrics_reach_a_real_pushgateway() {
    let Some(gateway) = start_pushgateway() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lake = customer_lake(&dir.path().join("lake"), 6_000, 2, 700, &["2026-11-25"]);
    let model = linear_model(dir.path(), "model.json", logistic_model_body(None));
    let run = score(
        &model,
        &lake,
        &dir.path().join("out"),
        &["--pushgateway", &gateway.base],
    );
    run.assert_ok();
    assert!(!run.stderr.contains("WARN"), "{}", run.stderr);
    let metrics: Endpoint = format!("{}/metrics", gateway.base).parse().unwrap();
    let (status, text) = get(&metrics).unwrap();
    assert_eq!(status, 200);
    let line = |series: &str| {
        text.lines()
            .find(|l| l.starts_with(series))
            .unwrap_or_else(|| panic!("no {series} in the Pushgateway's metrics:\n{text}"))
            .to_string()
    };
    assert_eq!(
        line("lakescore_rows_scored{"),
        "lakescore_rows_scored{instance=\"score.out\",job=\"lakescore\"} 6000"
    );
    assert!(line("lakescore_last_run_success{").ends_with(" 1"));
    assert!(line("lakescore_stage_thread_seconds{").contains("stage="));
    let success = line("lakescore_last_success_timestamp_seconds{");
    // The gateway's own record of the push: it accepted the whole group.
    assert!(line("push_failure_time_seconds{").ends_with(" 0"), "{text}");

    // A failed run of the same job keeps the last success in the group.
    let failed = score(
        &model,
        &lake,
        &dir.path().join("out"),
        &["--pushgateway", &gateway.base],
    );
    assert_eq!(failed.code, 1);
    let (_, text) = get(&metrics).unwrap();
    let line = |series: &str| text.lines().find(|l| l.starts_with(series)).unwrap_or("").to_string();
    assert!(line("lakescore_last_run_success{").ends_with(" 0"), "{text}");
    assert_eq!(line("lakescore_last_success_timestamp_seconds{"), success);
    assert!(line("push_failure_time_seconds{").ends_with(" 0"), "{text}");

    // A named group is used as given; an unreachable gateway is a warning, not a failure.
    let named = format!("{}/metrics/job/nightly/instance/churn", gateway.base);
    score(&model, &lake, &dir.path().join("out2"), &["--pushgateway", &named]).assert_ok();
    let (_, text) = get(&metrics).unwrap();
    assert!(
        text.contains("lakescore_rows_scored{instance=\"churn\",job=\"nightly\"} 6000"),
        "{text}"
    );
    drop(gateway);
    let run = score(
        &model,
        &lake,
        &dir.path().join("out3"),
        &["--pushgateway", "http://127.0.0.1:9"],
    );
    run.assert_ok();
    assert!(run.stderr.contains("cannot push metrics"), "{}", run.stderr);
}

/// A GET of `endpoint`: its status and body.
fn get(endpoint: &Endpoint) -> std::io::Result<(u16, String)> {
    http::send(
        "GET",
        endpoint,
        "text/plain",
        b"",
        &lakescore::cancel::CancelToken::new(),
        http::DEADLINE,
    )
}
