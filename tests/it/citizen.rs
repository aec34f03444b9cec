//! A good citizen of nightly pipelines: settings from flags, environment and a
//! config file; JSON logs that name the run; exit codes; Prometheus metrics;
//! OpenLineage events checked against the spec's JSON Schemas; SLAs; one
//! writer per output; the ledger as `lakescore runs` lists it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

fn lake_and_model(root: &Path) -> (PathBuf, PathBuf) {
    let lake = customer_lake(&root.join("lake"), 6_000, 2, 700, &["2026-11-24", "2026-11-25"]);
    let model = linear_model(root, "model.json", logistic_model_body(None));
    (lake, model)
}

fn json_file(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The value of a sample line `name{labels} value` in Prometheus text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn settings_come_from_flags_then_environment_then_file_then_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, model) = lake_and_model(dir.path());
    let out = dir.path().join("out");
    let config = dir.path().join("nightly.toml");
    std::fs::write(
        &config,
        format!(
            "model = {model:?}\ninput = {lake:?}\noutput = {out:?}\nthreads = 3\nmode = \"overwrite\"\n\
             min-rows = 10\nlog-format = \"json\"\nas-of = \"2026-11-26\"\n",
        ),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();
    let env = [("LAKESCORE_THREADS", "2"), ("LAKESCORE_MODE", "resume")];
    let printed = lakescore_with_env(
        [
            "score",
            "--config",
            config_arg,
            "--mode",
            "error-if-exists",
            "--print-config",
        ],
        &env,
    );
    printed.assert_ok();
    let line = |key: &str| {
        printed
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")) || l.starts_with(&format!("# {key} ")))
            .unwrap_or_else(|| panic!("no `{key}` in\n{}", printed.stdout))
            .to_string()
    };
    assert!(line("mode").starts_with("mode = \"error-if-exists\"") && line("mode").ends_with("# flag"));
    assert!(
        line("threads").starts_with("threads = \"2\"") && line("threads").ends_with("# environment LAKESCORE_THREADS")
    );
    assert!(line("min-rows").starts_with("min-rows = \"10\"") && line("min-rows").contains("# config file"));
    assert!(line("log-format").starts_with("log-format = \"json\""));
    assert!(line("id-column").contains("(not set)") && line("id-column").ends_with("# or LAKESCORE_ID_COLUMN"));
    assert!(line("device").ends_with("# default"));
    assert!(!out.exists(), "--print-config runs nothing");

    // The same settings, applied: the report shows the environment's threads.
    let report = dir.path().join("report.json");
    let run = lakescore_with_env(
        ["score", "--config", config_arg, "--report", report.to_str().unwrap()],
        &env,
    );
    run.assert_ok();
    assert_eq!(json_file(&report)["threads"], 2);
    assert!(
        run.stderr.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "the file's log-format applies"
    );

    // LAKESCORE_CONFIG names the file too.
    let run = lakescore_with_env(
        ["score", "--print-config", "-vv"],
        &[
            ("LAKESCORE_CONFIG", config_arg),
            ("LAKESCORE_ID_COLUMN", "customer_id,dt"),
            ("LAKESCORE_QUIET", "1"),
        ],
    );
    run.assert_ok();
    assert!(run.stdout.contains("min-rows = \"10\""), "{}", run.stdout);
    assert!(run.stdout.contains("verbose = 2 "), "{}", run.stdout);
    assert!(
        run.stdout.contains("quiet = true "),
        "a boolish variable: {}",
        run.stdout
    );
    assert!(
        run.stdout.contains("id-column = [\"customer_id\", \"dt\"]"),
        "a list variable: {}",
        run.stdout
    );

    // -v on the command line beats LAKESCORE_QUIET; the variable alone silences.
    let loud = lakescore_with_env(
        ["score", "--config", config_arg, "-v", "--mode", "overwrite"],
        &[("LAKESCORE_QUIET", "1")],
    );
    loud.assert_ok();
    assert!(loud.stderr.contains("\"level\":\"DEBUG\""), "{}", loud.stderr);
    let quiet = lakescore_with_env(
        ["score", "--config", config_arg, "--mode", "overwrite"],
        &[("LAKESCORE_QUIET", "yes")],
    );
    assert_eq!((quiet.code, quiet.stderr.as_str()), (0, ""));

    // The file configures run commands; a profile does not take the job's `output`.
    let profile = dir.path().join("profile.json");
    lakescore_with_env(
        [
            "profile",
            "--input",
            lake.to_str().unwrap(),
            "--output",
            profile.to_str().unwrap(),
        ],
        &[("LAKESCORE_CONFIG", config_arg)],
    )
    .assert_ok();
    assert!(profile.is_file());
}

#[test]
fn config_files_with_unknown_keys_or_bad_values_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, model) = lake_and_model(dir.path());
    let out = dir.path().join("out");
    let cases = [
        ("modell = \"x\"\n", "unknown setting `modell`; did you mean `model`?"),
        ("output-margin = \"yes\"\n", "`output-margin` must be true or false"),
        (
            "mode = \"append\"\n",
            "`mode` cannot be used: invalid value 'append' for '--mode <MODE>'",
        ),
        ("[score]\nthreads = 2\n", "unknown setting `score`"),
        ("threads = \n", "is not valid TOML"),
    ];
    for (text, expected) in cases {
        let config = dir.path().join("bad.toml");
        std::fs::write(&config, text).unwrap();
        let run = score(&model, &lake, &out, &["--config", config.to_str().unwrap()]);
        assert_eq!(run.code, 2, "{text}: {}", run.stderr);
        assert!(
            run.stderr.contains(expected),
            "{text}: expected `{expected}` in\n{}",
            run.stderr
        );
        assert!(
            run.stderr.contains(config.to_str().unwrap()),
            "names the file: {}",
            run.stderr
        );
        assert!(!out.exists());
    }
    // A setting of another command is not an error (one file for `score` and `check`).
    let config = dir.path().join("shared.toml");
    std::fs::write(&config, "json = true\nmodel = \"ignored-by-flag.json\"\n").unwrap();
    score(&model, &lake, &out, &["--config", config.to_str().unwrap()]).assert_ok();
}

#[test]
fn json_logs_name_the_run_and_the_model_on_every_line() {
    let dir = tempfile::tempdir().unwrap();
    let lake = customer_lake(&dir.path().join("lake"), 6_000, 2, 700, &["2026-11-25"]);
    let package = dir.path().join("package");
    let model = linear_model(dir.path(), "model.json", logistic_model_body(None));
    model_package(&model, &lake, &package, &["--version", "2.4.1", "--name", "churn"]);
    let out = dir.path().join("out");
    let report = dir.path().join("report.json");
    let run = score(
        &package,
        &lake,
        &out,
        &[
            "--log-format",
            "json",
            "-v",
            "--report",
            report.to_str().unwrap(),
            "--metrics-file",
            dir.path().join("m.prom").to_str().unwrap(),
        ],
    );
    run.assert_ok();
    let run_id = json_file(&report)["run_id"].as_str().unwrap().to_string();
    let lines: Vec<Value> = run
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 3, "{}", run.stderr);
    for line in &lines {
        assert_eq!(line["run_id"], run_id.as_str(), "{line}");
        assert_eq!(
            (&line["model"], &line["model_version"]),
            (&json!("churn"), &json!("2.4.1")),
            "{line}"
        );
        assert!(
            line["timestamp"].as_str().unwrap().ends_with('Z') && line["level"].is_string(),
            "{line}"
        );
    }
    assert!(lines.iter().any(|l| l["message"] == "published" && l["rows"] == 6000));
    assert!(lines.iter().any(|l| l["level"] == "DEBUG"), "-v shows debug lines");

    // Text lines carry the same identity; errors in JSON mode are JSON too.
    let text = score(&package, &lake, &dir.path().join("out2"), &[]);
    assert!(
        text.stderr
            .lines()
            .all(|l| l.contains(" run=") && l.contains(" model=churn@2.4.1")),
        "{}",
        text.stderr
    );
    let failed = score(&package, &lake, &out, &["--log-format", "json"]);
    assert_eq!(failed.code, 1);
    let last: Value = serde_json::from_str(failed.stderr.lines().last().unwrap()).unwrap();
    assert_eq!((&last["level"], &last["exit_code"]), (&json!("ERROR"), &json!(1)));
    assert!(
        last["message"].as_str().unwrap().contains("already holds a table"),
        "{last}"
    );
    let quiet = score(&package, &lake, &dir.path().join("out3"), &["-q"]);
    assert_eq!((quiet.code, quiet.stderr.as_str()), (0, ""));
    // A filter that names one module still gets lines that name the run
    // (the run's span is enabled whatever LAKESCORE_LOG says).
    let filtered = lakescore_with_env(
        score_args(&package, &lake, &dir.path().join("out4"), &[]),
        &[("LAKESCORE_LOG", "lakescore::pipeline=info")],
    );
    filtered.assert_ok();
    assert!(
        !filtered.stderr.is_empty()
            && filtered
                .stderr
                .lines()
                .all(|l| l.contains(" run=") && l.contains(" model=churn@2.4.1")),
        "{}",
        filtered.stderr
    );
}

#[test]
fn the_metrics_file_tells_the_last_run_and_keeps_the_last_success() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, model) = lake_and_model(dir.path());
    let out = dir.path().join("out");
    let metrics = dir.path().join("lakescore.prom");
    let metrics_arg = metrics.to_str().unwrap();
    score(&model, &lake, &out, &["--metrics-file", metrics_arg]).assert_ok();
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert_textfile_format(&text);
    let success = sample(&text, "lakescore_last_success_timestamp_seconds").unwrap();
    assert_eq!(sample(&text, "lakescore_last_run_success"), Some(1.0));
    assert_eq!(sample(&text, "lakescore_rows_scored"), Some(6000.0));
    assert_eq!(sample(&text, "lakescore_rows_quarantined"), Some(0.0));
    assert!(sample(&text, "lakescore_read_bytes").unwrap() > 0.0);
    assert!(sample(&text, "lakescore_written_bytes").unwrap() > 0.0);
    assert!(sample(&text, "lakescore_rows_per_second").unwrap() > 0.0);
    assert!(sample(&text, "lakescore_stage_thread_seconds{stage=\"decode\"}").unwrap() > 0.0);
    assert!(sample(&text, "lakescore_phase_seconds{phase=\"commit\"}").is_some());
    assert!(
        sample(&text, "lakescore_guard_status{guard=\"scores.finite\"}") == Some(0.0),
        "{text}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - success).abs() < 300.0, "{success} is now");

    // A failed run replaces the file but keeps the last success.
    let failed = score(&model, &lake, &out, &["--metrics-file", metrics_arg]);
    assert_eq!(failed.code, 1);
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert_textfile_format(&text);
    assert_eq!(sample(&text, "lakescore_last_run_success"), Some(0.0));
    assert_eq!(sample(&text, "lakescore_exit_code"), Some(1.0));
    assert_eq!(sample(&text, "lakescore_last_success_timestamp_seconds"), Some(success));
    assert!(text.contains("status=\"failed\""), "{text}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("lakescore.prom") && n != "lakescore.prom")
        .collect();
    assert!(leftovers.is_empty(), "no temporary files: {leftovers:?}");

    // A missing folder is refused before anything runs.
    let run = score(
        &model,
        &lake,
        &dir.path().join("o2"),
        &["--metrics-file", "/nonexistent/x.prom"],
    );
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("the folder `/nonexistent` does not exist"),
        "{}",
        run.stderr
    );
}

/// What node_exporter's textfile collector and Prometheus's parser require:
/// every sample's family has HELP and TYPE first, names and labels are well
/// formed, every value is a number, no timestamps, no family twice.
fn assert_textfile_format(text: &str) {
    assert!(text.ends_with('\n'));
    let mut typed: Vec<String> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert_eq!(kind, "gauge");
            assert!(!typed.contains(&name.to_string()), "{name} twice");
            typed.push(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap();
        let name = &line[..name_end];
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && name.starts_with("lakescore_"),
            "{line}"
        );
        assert_eq!(
            typed.last().map(String::as_str),
            Some(name),
            "sample before its TYPE: {line}"
        );
        let value = line.rsplit(' ').next().unwrap();
        assert!(
            value.parse::<f64>().is_ok() || ["NaN", "+Inf", "-Inf"].contains(&value),
            "{line}"
        );
        if let Some(labels) = line[name_end..].strip_prefix('{') {
            let labels = &labels[..labels.rfind('}').unwrap()];
            assert!(labels.split("\",").all(|pair| pair.contains("=\"")), "{line}");
        }
    }
}

/// The OpenLineage spec (core 2-0-2 and the facets it uses), from
/// tests/fixtures/openlineage, offline: RunEvent, and each facet by the
/// `_schemaURL` a producer writes for it.
pub(crate) struct LineageSchemas {
    run_event: jsonschema::Validator,
    facets: std::collections::BTreeMap<String, jsonschema::Validator>,
}

impl LineageSchemas {
    pub(crate) fn load() -> LineageSchemas {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openlineage");
        let documents: Vec<(String, Value)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json") && !p.ends_with("sample_run_event_complete.json"))
            .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), json_file(&p)))
            .collect();
        assert_eq!(documents.len(), 10, "the vendored schemas");
        let registry = jsonschema::Registry::new()
            .extend(documents.iter().map(|(_, d)| (d["$id"].as_str().unwrap(), d)))
            .unwrap()
            .prepare()
            .unwrap();
        let build = |uri: &str| {
            jsonschema::options()
                .with_registry(&registry)
                .offline()
                .should_validate_formats(true)
                .build(&json!({ "$ref": uri }))
                .unwrap()
        };
        let facets = documents
            .iter()
            .filter(|(name, _)| name != "OpenLineage")
            .map(|(name, document)| {
                let uri = format!("{}#/$defs/{name}", document["$id"].as_str().unwrap());
                let validator = build(&uri);
                (uri, validator)
            })
            .collect();
        LineageSchemas {
            run_event: build("https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"),
            facets,
        }
    }

    /// Every error of the event against RunEvent, and of each facet against
    /// the schema its `_schemaURL` names (the core schema does not look
    /// inside facets; a facet whose schema is not vendored is an error).
    pub(crate) fn errors(&self, event: &Value) -> Vec<String> {
        let mut errors: Vec<String> = self
            .run_event
            .iter_errors(event)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        let mut facets = Vec::new();
        collect_facets(event, &mut facets);
        for facet in facets {
            let uri = facet["_schemaURL"].as_str().unwrap();
            match self.facets.get(uri) {
                Some(validator) => errors.extend(
                    validator
                        .iter_errors(facet)
                        .map(|e| format!("{uri}: {e} at {}", e.instance_path())),
                ),
                None => errors.push(format!("no vendored schema for facet `{uri}`")),
            }
        }
        errors
    }
}

/// A stand-in lineage endpoint: takes `count` POSTs, answers 201, and hands
/// back each one's path and body.
fn collect_posts(count: usize) -> (String, std::thread::JoinHandle<Vec<(String, String)>>) {
    use std::io::{BufRead, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/api/v1/lineage", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        (0..count)
            .map(|_| {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = std::io::BufReader::new(stream);
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                let mut length = 0;
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).unwrap();
                    if header == "\r\n" {
                        break;
                    }
                    if let Some(value) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                reader
                    .get_mut()
                    .write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
                    .unwrap();
                let path = request_line.split(' ').nth(1).unwrap().to_string();
                assert!(request_line.starts_with("POST "), "{request_line}");
                (path, String::from_utf8(body).unwrap())
            })
            .collect()
    });
    (url, server)
}

fn collect_facets<'a>(value: &'a Value, facets: &mut Vec<&'a Value>) {
    match value {
        Value::Object(map) => {
            if map.contains_key("_schemaURL") {
                facets.push(value);
            }
            map.values().for_each(|v| collect_facets(v, facets));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_facets(v, facets)),
        _ => {}
    }
}

#[test]
fn lineage_events_follow_the_openlineage_schema() {
    let schemas = LineageSchemas::load();
    // The validator itself: the hand-written sample passes, a broken copy fails.
    let sample_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openlineage/sample_run_event_complete.json");
    let mut sample_event = json_file(&sample_path);
    assert_eq!(schemas.errors(&sample_event), Vec::<String>::new());
    sample_event["run"]["runId"] = "20261126T045300Z-1a2b3c4d".into();
    assert!(
        !schemas.errors(&sample_event).is_empty(),
        "a run id that is not a UUID fails"
    );

    let dir = tempfile::tempdir().unwrap();
    let lake = customer_lake(&dir.path().join("lake"), 6_000, 2, 700, &["2026-11-25"]);
    let model = linear_model(dir.path(), "model.json", logistic_model_body(None));
    let package = dir.path().join("package");
    model_package(&model, &lake, &package, &[]);
    let lineage = dir.path().join("lineage.ndjson");
    let lineage_arg = lineage.to_str().unwrap();
    let out = dir.path().join("out");
    let report = dir.path().join("report.json");
    let (url, posted) = collect_posts(2);
    score(
        &package,
        &lake,
        &out,
        &[
            "--lineage-file",
            lineage_arg,
            "--lineage-url",
            &url,
            "--job-name",
            "nightly.churn",
            "--report",
            report.to_str().unwrap(),
        ],
    )
    .assert_ok();
    let posted = posted.join().unwrap();
    // The second run into the same OUT fails: START then FAIL.
    assert_eq!(score(&package, &lake, &out, &["--lineage-file", lineage_arg]).code, 1);

    let events: Vec<Value> = std::fs::read_to_string(&lineage)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["eventType"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["START", "COMPLETE", "START", "FAIL"]);
    for event in &events {
        assert_eq!(schemas.errors(event), Vec::<String>::new(), "{event:#}");
    }
    // The same events, posted.
    let posted: Vec<(String, Value)> = posted
        .into_iter()
        .map(|(path, body)| (path, serde_json::from_str(&body).unwrap()))
        .collect();
    assert_eq!(
        posted,
        [
            ("/api/v1/lineage".to_string(), events[0].clone()),
            ("/api/v1/lineage".to_string(), events[1].clone())
        ]
    );
    let (start, complete, fail) = (&events[0], &events[1], &events[3]);
    let report = json_file(&report);
    assert_eq!(start["run"]["runId"], complete["run"]["runId"]);
    assert_eq!(complete["run"]["runId"], report["run_uuid"]);
    assert_ne!(fail["run"]["runId"], complete["run"]["runId"]);
    assert_eq!(complete["job"]["name"], "nightly.churn");
    assert_eq!(fail["job"]["name"], "score.out", "the default job name");
    let input = &complete["inputs"][0];
    assert_eq!(input["namespace"], "file");
    assert_eq!(input["name"], std::path::absolute(&lake).unwrap().to_str().unwrap());
    let metrics = &input["inputFacets"]["dataQualityMetrics"];
    assert_eq!(metrics["rowCount"], 6000);
    let profile = json_file(Path::new(report["profile"].as_str().unwrap()));
    let age = profile["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "age" && c["role"] == "feature")
        .unwrap();
    assert_eq!(metrics["columnMetrics"]["age"]["nullCount"], age["nulls"]);
    assert_eq!(metrics["columnMetrics"]["age"]["max"], age["max"]);
    assert!(metrics["columnMetrics"]["age"]["quantiles"]["0.5"].is_number());
    let assertions = input["inputFacets"]["dataQualityAssertions"]["assertions"]
        .as_array()
        .unwrap();
    assert!(
        assertions
            .iter()
            .any(|a| a["assertion"] == "age.range" && a["column"] == "age" && a["success"] == true)
    );
    let output = &complete["outputs"][0];
    assert_eq!(output["outputFacets"]["outputStatistics"]["rowCount"], 6000);
    assert_eq!(
        output["outputFacets"]["outputStatistics"]["size"],
        report["bytes_written"]
    );
    assert!(
        fail["run"]["facets"]["errorMessage"]["message"]
            .as_str()
            .unwrap()
            .contains("already holds a table")
    );
}

#[test]
fn a_missed_sla_publishes_and_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, model) = lake_and_model(dir.path());
    let out = dir.path().join("out");
    let report = dir.path().join("report.json");
    let metrics = dir.path().join("m.prom");
    let run = score(
        &model,
        &lake,
        &out,
        &[
            "--min-rows",
            "6001",
            "--max-duration",
            "1h",
            "--deadline",
            &local_time_of_day(3 * 3600),
            "--report",
            report.to_str().unwrap(),
            "--metrics-file",
            metrics.to_str().unwrap(),
        ],
    );
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("missed SLA: min_rows: 6000 against a limit of 6001"),
        "{}",
        run.stderr
    );
    assert!(out.join("_SUCCESS").exists(), "the output is published all the same");
    let report = json_file(&report);
    assert_eq!(report["sla"]["breached"], true);
    let checks: Vec<(&str, bool)> = report["sla"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["breached"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        checks,
        [("max_duration", false), ("deadline", false), ("min_rows", true)]
    );
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(sample(&text, "lakescore_sla_breached{sla=\"min_rows\"}"), Some(1.0));
    assert_eq!(sample(&text, "lakescore_sla_breached{sla=\"max_duration\"}"), Some(0.0));
    assert_eq!(sample(&text, "lakescore_exit_code"), Some(4.0));
    assert_eq!(sample(&text, "lakescore_last_run_success"), Some(1.0));
    let runs = lakescore(["runs".as_ref(), "--json".as_ref(), out.as_os_str()]);
    let runs: Value = serde_json::from_str(&runs.assert_ok().stdout).unwrap();
    assert_eq!(runs[0]["status"], "sla_missed");
    assert_eq!(runs[0]["sla_missed"], json!(["min_rows"]));

    // A duration limit of zero is always missed; rows per second likewise.
    let run = score(&model, &lake, &dir.path().join("o2"), &["--max-duration", "0s"]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    let run = score(
        &model,
        &lake,
        &dir.path().join("o3"),
        &["--min-rows-per-second", "1e12"],
    );
    assert_eq!(run.code, 4, "{}", run.stderr);
    let run = score(
        &model,
        &lake,
        &dir.path().join("o4"),
        &["--deadline", &local_time_of_day(-3600)],
    );
    assert_eq!(run.code, 4, "a deadline an hour ago is missed: {}", run.stderr);
    assert!(run.stderr.contains("missed SLA: deadline"), "{}", run.stderr);
    let run = score(&model, &lake, &dir.path().join("o5"), &["--deadline", "25:00"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
}

/// `HH:MM`, local time, `offset` seconds from now.
fn local_time_of_day(offset: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // SAFETY: localtime_r only writes the struct we own.
    let local = unsafe {
        let mut local: libc::tm = std::mem::zeroed();
        libc::localtime_r(&((now + offset) as libc::time_t), &mut local);
        local
    };
    format!("{:02}:{:02}", local.tm_hour, local.tm_min)
}

#[test]
fn one_writer_at_a_time_and_a_dead_writers_lock_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, model) = lake_and_model(dir.path());
    let out = dir.path().join("out");
    let mut first = slow_run(&model, &lake, &out, &[]);
    wait_for(&out.join("_lakescore/staging"));
    let holder = json_file(&out.join("_lakescore/lock"));
    assert_eq!(holder["pid"], first.id());

    let (metrics, lineage) = (dir.path().join("second.prom"), dir.path().join("second.ndjson"));
    let second = score(
        &model,
        &lake,
        &out,
        &[
            "--mode",
            "overwrite",
            "--metrics-file",
            metrics.to_str().unwrap(),
            "--lineage-file",
            lineage.to_str().unwrap(),
        ],
    );
    assert_eq!(second.code, 5, "{}", second.stderr);
    assert!(
        !metrics.exists() && !lineage.exists(),
        "a refused run tells no one it ran"
    );
    let expected = format!(
        "error: output `{}` is being written by another run: run {} (pid {} on host `{}`, started {})",
        out.display(),
        holder["run_id"].as_str().unwrap(),
        first.id(),
        holder["host"].as_str().unwrap(),
        holder["started_at"].as_str().unwrap()
    );
    assert!(
        second.stderr.contains(&expected),
        "expected\n{expected}\nin\n{}",
        second.stderr
    );

    // The holder dies without a word; the next run takes over its lock.
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(
        out.join("_lakescore/lock").exists(),
        "a killed run leaves its lock file"
    );
    let third = score(&model, &lake, &out, &["--mode", "resume"]);
    third.assert_ok();
    let takeover = format!(
        "taking over the lock of `{}` left by run {}",
        out.display(),
        holder["run_id"].as_str().unwrap()
    );
    assert!(third.stderr.contains(&takeover), "{}", third.stderr);
    assert!(!out.join("_lakescore/lock").exists(), "released");

    let runs = lakescore(["runs".as_ref(), out.as_os_str()]);
    let table = runs.assert_ok().stdout.clone();
    let dead = table
        .lines()
        .find(|l| l.starts_with(holder["run_id"].as_str().unwrap()))
        .unwrap();
    assert!(dead.contains(" died "), "{table}");
    assert_eq!(
        table.lines().filter(|l| l.contains(" succeeded ")).count(),
        1,
        "{table}"
    );
}

/// Whether a folder another process is writing (and deleting from) holds a
/// Parquet file: a walk that shrugs at entries vanishing under it.
fn holds_a_parquet_file(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let path = entry.path();
        path.extension().is_some_and(|e| e == "parquet") || (path.is_dir() && holds_a_parquet_file(&path))
    })
}

#[test]
fn sigterm_and_sigint_stop_cleanly() {
    for (signal, name, code) in [(libc::SIGTERM, "SIGTERM", 143), (libc::SIGINT, "SIGINT", 130)] {
        let dir = tempfile::tempdir().unwrap();
        let (lake, model) = lake_and_model(dir.path());
        let out = dir.path().join("out");
        let metrics = dir.path().join("m.prom");
        let mut run = slow_run(&model, &lake, &out, &["--metrics-file", metrics.to_str().unwrap()]);
        // Wait until a row group is staged: the run is in the middle of its pass.
        let staging = out.join("_lakescore/staging");
        let started = Instant::now();
        while !holds_a_parquet_file(&staging) {
            assert!(started.elapsed() < Duration::from_secs(60));
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(run.id() as libc::pid_t, signal) }, 0);
        let status = run.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(run.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        assert_eq!(status.code(), Some(code), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "error: stopped by {name}: the run published nothing (its staged files are removed)"
            )),
            "{stderr}"
        );
        assert_eq!(published(&out), Default::default(), "{name}: nothing published");
        assert_eq!(snapshot(&staging), Default::default(), "{name}: staging is empty");
        assert!(!out.join("_lakescore/lock").exists());
        let ledger: Vec<Value> = snapshot(&out.join("_lakescore/runs"))
            .into_values()
            .map(|b| serde_json::from_slice(&b).unwrap())
            .collect();
        assert_eq!(ledger[0]["status"], "interrupted");
        let text = std::fs::read_to_string(&metrics).unwrap();
        assert_eq!(sample(&text, "lakescore_exit_code"), Some(code as f64));
        assert!(text.contains("status=\"interrupted\""));
    }
}

#[test]
fn runs_lists_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, model) = lake_and_model(dir.path());
    let out = dir.path().join("out");
    score(&model, &lake, &out, &[]).assert_ok();
    let panicking = lakescore_with_env(
        score_args(&model, &lake, &out, &["--mode", "overwrite"]),
        &[(lakescore::test_hooks::PANIC_IN_ROW_GROUP, "0")],
    );
    assert_eq!(panicking.code, 1);
    // Refused before it began: not in the ledger.
    assert_eq!(score(&model, &lake, &out, &[]).code, 1);
    score(&model, &lake, &out, &["--mode", "overwrite"]).assert_ok();
    let table = lakescore(["runs".as_ref(), out.as_os_str()]);
    let lines: Vec<&str> = table.assert_ok().stdout.lines().collect();
    assert!(lines[0].starts_with("run ") && lines[0].contains("outcome") && lines[0].contains("fingerprint"));
    let outcomes: Vec<&str> = lines[1..4]
        .iter()
        .map(|l| l.split_whitespace().nth(3).unwrap())
        .collect();
    assert_eq!(outcomes, ["succeeded", "failed", "succeeded"]);
    assert!(lines[4].contains("panicked"), "the failure's reason: {}", lines[4]);

    let runs: Value =
        serde_json::from_str(&lakescore(["runs".as_ref(), "--json".as_ref(), out.as_os_str()]).stdout).unwrap();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 3);
    let first = format!(
        "{} {}  6000  0",
        runs[0]["model_name"].as_str().unwrap(),
        runs[0]["model_version"].as_str().unwrap()
    );
    assert!(lines[1].contains(&first), "`{first}` in {}", lines[1]);
    assert!(
        lines[1].contains(&format!("({} files)", runs[0]["input_files"])),
        "{}",
        lines[1]
    );
    assert!(lines[1].contains(&runs[0]["input_fingerprint"].as_str().unwrap()[..12]));
    assert_eq!(runs[0]["input_fingerprint"], runs[2]["input_fingerprint"]);
    assert_eq!(runs[0]["input_fingerprint"].as_str().unwrap().len(), 64);
    assert_eq!(runs[0]["rows"], 6000);

    let missing = lakescore(["runs".as_ref(), dir.path().join("nowhere").as_os_str()]);
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("has no run ledger"), "{}", missing.stderr);
}
