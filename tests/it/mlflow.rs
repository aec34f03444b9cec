//! MLflow model folders, as `mlflow.<flavor>.log_model` wrote them
//! (tests/fixtures/mlflow, made by its make_fixtures.sh): the xgboost,
//! lightgbm (skops) and onnx flavors score exactly like the raw models, the
//! signature's columns become type rules, a `lakescore.toml` beside
//! `MLmodel` must agree with it, and a sklearn model is refused with the way
//! to an ONNX copy.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int32Array};

use crate::common::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mlflow")
        .join(name)
}

#[test]
fn xgboost_lightgbm_and_onnx_folders_score_exactly_like_their_raw_models() {
    let dir = tempfile::tempdir().unwrap();
    let lake = sample("customers");
    for (flavor, raw) in [
        ("xgboost", fixture("xgboost/model.ubj")),
        ("lightgbm", fixture("raw/lightgbm.txt")),
        ("onnx", sample("rf.onnx")),
    ] {
        let through_mlflow = dir.path().join(format!("{flavor}-mlflow"));
        let report = dir.path().join(format!("{flavor}.json"));
        score(
            &fixture(flavor),
            &lake,
            &through_mlflow,
            &["--report", report.to_str().unwrap()],
        )
        .assert_ok();
        let direct = dir.path().join(format!("{flavor}-raw"));
        score(&raw, &lake, &direct, &[]).assert_ok();
        let (a, b) = (parquet_rows(&through_mlflow), parquet_rows(&direct));
        assert_eq!(a.len(), 4, "{flavor}: both partitions, two files each");
        assert!(
            a.iter()
                .all(|(_, batch)| batch.num_rows() > 0 && batch.num_columns() >= 2)
        );
        assert!(
            a == b,
            "{flavor}: the MLflow folder scores differently from the raw model"
        );
        let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        assert_eq!(report["model"]["name"], flavor, "named after its folder");
        // Every signature column is a type rule, and the lake passes them.
        let types: Vec<&serde_json::Value> = report["checks"]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["kind"] == "type")
            .collect();
        assert!(
            types.len() >= 6 && types.iter().all(|r| r["status"] == "pass"),
            "{flavor}: {types:?}"
        );
    }
}

#[test]
fn a_sklearn_model_is_refused_with_the_way_to_an_onnx_copy() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let run = score(&fixture("sklearn"), &sample("customers"), &out, &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("sklearn/MLmodel"), "names the file: {}", run.stderr);
    assert!(
        run.stderr.contains("[python_function, sklearn]") && run.stderr.contains("skl2onnx"),
        "{}",
        run.stderr
    );
    assert!(!out.exists(), "nothing was written");
}

#[test]
fn the_signature_types_the_columns() {
    let dir = tempfile::tempdir().unwrap();
    // tenure_days as a float column: the signature says integer.
    let lake = dir.path().join("lake");
    copy_tree(&sample("customers"), &lake);
    crate::contract::plant(&lake, "tenure_days", |c| {
        let values = c.as_any().downcast_ref::<Int32Array>().unwrap();
        Arc::new(values.iter().map(|v| v.map(f64::from)).collect::<Float64Array>()) as ArrayRef
    });
    let out = dir.path().join("out");
    let run = score(&fixture("xgboost"), &lake, &out, &[]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("tenure_days"), "{}", run.stderr);
    assert!(!out.exists());
}

#[test]
fn a_lakescore_toml_beside_mlmodel_adds_rules_and_must_agree() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("churn");
    copy_tree(&fixture("xgboost"), &folder);
    let sha = lakescore::util::sha256_hex(&std::fs::read(folder.join("model.ubj")).unwrap());
    let manifest = |extra: &str| {
        format!("name = \"churn\"\nversion = \"7\"\nartifact = \"model.ubj\"\nsha256 = \"{sha}\"\n{extra}")
    };
    let toml = folder.join("lakescore.toml");
    std::fs::write(&toml, manifest("[output]\nrange = [0.0, 1.0]\n")).unwrap();
    let report = dir.path().join("report.json");
    let out = dir.path().join("out");
    score(
        &folder,
        &sample("customers"),
        &out,
        &["--report", report.to_str().unwrap()],
    )
    .assert_ok();
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(
        (report["model"]["name"].as_str(), report["model"]["version"].as_str()),
        (Some("churn"), Some("7"))
    );
    assert!(
        report["checks"]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == "tenure_days.type"),
        "the signature's type rules are added: {}",
        report["checks"]
    );

    // A type the signature contradicts: an error naming both files.
    std::fs::write(&toml, manifest("[features.tenure_days]\ntype = \"float\"\n")).unwrap();
    let run = score(&folder, &sample("customers"), &dir.path().join("out2"), &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("MLmodel") && run.stderr.contains("lakescore.toml") && run.stderr.contains("tenure_days"),
        "{}",
        run.stderr
    );
    // Another artifact than the flavor's file.
    std::fs::copy(folder.join("model.ubj"), folder.join("other.ubj")).unwrap();
    std::fs::write(&toml, manifest("").replace("model.ubj", "other.ubj")).unwrap();
    let run = score(&folder, &sample("customers"), &dir.path().join("out3"), &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("`model.ubj`") && run.stderr.contains("`other.ubj`"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_pickled_lightgbm_model_and_a_broken_mlmodel_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("pickled");
    copy_tree(&fixture("lightgbm"), &folder);
    let mlmodel = std::fs::read_to_string(folder.join("MLmodel")).unwrap();
    std::fs::write(
        folder.join("MLmodel"),
        mlmodel.replace("serialization_format: skops", "serialization_format: pickle"),
    )
    .unwrap();
    let run = score(&folder, &sample("customers"), &dir.path().join("out"), &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("pickle") && run.stderr.contains("never loads"),
        "{}",
        run.stderr
    );

    std::fs::write(folder.join("MLmodel"), "flavors: [not, a, map\n").unwrap();
    let run = score(&folder, &sample("customers"), &dir.path().join("out"), &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("is not an MLflow `MLmodel` file"), "{}", run.stderr);
}

// ---------------------------------------------------------------------------
// The registry, against a real `mlflow server` (.ci/run starts one; set
// LAKESCORE_TEST_MLFLOW_URI to run these elsewhere).

/// The tracking server's URL, or `None` (with a note) when none is set up;
/// under CI a missing server fails the test.
pub(crate) fn mlflow_server() -> Option<String> {
    match std::env::var("LAKESCORE_TEST_MLFLOW_URI") {
        Ok(uri) if !uri.is_empty() => Some(uri.trim_end_matches('/').to_string()),
        _ => {
            assert!(
                !in_ci(),
                "CI must run the MLflow registry tests: start `mlflow server` and set LAKESCORE_TEST_MLFLOW_URI (.ci/run does)"
            );
            eprintln!("skipped: no MLflow server (set LAKESCORE_TEST_MLFLOW_URI)");
            None
        }
    }
}

pub(crate) fn post(server: &str, method: &str, body: serde_json::Value) -> serde_json::Value {
    let mut response = ureq::post(&format!("{server}/api/2.0/mlflow/{method}"))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .unwrap_or_else(|e| panic!("{method}: {e}"));
    serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
}

/// Logs `folder` as a new run's `model` artifact and registers it as the
/// next version of `name`; returns the run id.
fn register(server: &str, experiment: &str, name: &str, folder: &Path) -> String {
    let run = post(server, "runs/create", serde_json::json!({"experiment_id": experiment}));
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_string();
    let artifacts = run["run"]["info"]["artifact_uri"].as_str().unwrap().to_string();
    upload_artifacts(server, &format!("{artifacts}/model"), folder);
    let version = post(
        server,
        "model-versions/create",
        serde_json::json!({"name": name, "source": format!("{artifacts}/model"), "run_id": run_id}),
    );
    assert_eq!(version["model_version"]["status"], "READY", "{version}");
    run_id
}

/// Puts every file of `folder` at `artifacts` (an `mlflow-artifacts:` URI)
/// through the server.
fn upload_artifacts(server: &str, artifacts: &str, folder: &Path) {
    let path = artifacts
        .trim_start_matches("mlflow-artifacts:")
        .trim_start_matches('/');
    for entry in std::fs::read_dir(folder).unwrap() {
        let entry = entry.unwrap();
        let file = entry.file_name().to_string_lossy().into_owned();
        ureq::put(&format!("{server}/api/2.0/mlflow-artifacts/artifacts/{path}/{file}"))
            .send(std::fs::read(entry.path()).unwrap())
            .unwrap();
    }
}

fn set_alias(server: &str, name: &str, alias: &str, version: &str) {
    post(
        server,
        "registered-models/alias",
        serde_json::json!({"name": name, "alias": alias, "version": version}),
    );
}

#[test]
fn the_champion_alias_is_scored_and_a_moved_alias_scores_the_new_version() {
    let Some(server) = mlflow_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("churn-{unique}");
    let experiment = post(server.as_str(), "experiments/create", serde_json::json!({"name": name}))["experiment_id"]
        .as_str()
        .unwrap()
        .to_string();
    post(&server, "registered-models/create", serde_json::json!({"name": name}));
    let first_run = register(&server, &experiment, &name, &fixture("xgboost"));
    let second_run = register(&server, &experiment, &name, &fixture("lightgbm"));
    set_alias(&server, &name, "champion", "1");
    let cache = dir.path().join("cache");
    let env = [
        ("MLFLOW_TRACKING_URI", server.as_str()),
        ("LAKESCORE_MODEL_CACHE", cache.to_str().unwrap()),
    ];
    let champion = format!("models:/{name}@champion");
    let night = |n: u32| {
        let out = dir.path().join(format!("out-{n}"));
        let report = dir.path().join(format!("report-{n}.json"));
        let metrics = dir.path().join(format!("metrics-{n}.prom"));
        let run = lakescore_with_env(
            score_args(
                champion.as_ref(),
                &sample("customers"),
                &out,
                &[
                    "--report",
                    report.to_str().unwrap(),
                    "--metrics-file",
                    metrics.to_str().unwrap(),
                    "--lineage-file",
                    dir.path().join(format!("lineage-{n}.jsonl")).to_str().unwrap(),
                ],
            ),
            &env,
        );
        run.assert_ok();
        let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        (out, report, run)
    };

    let (out, report, first) = night(1);
    let model = &report["model"];
    assert_eq!(
        (model["name"].as_str(), model["version"].as_str()),
        (Some(name.as_str()), Some("1"))
    );
    assert_eq!(model["registry"]["alias"], "champion");
    assert_eq!(model["registry"]["uri"], champion.as_str());
    assert_eq!(model["registry"]["run_id"], first_run.as_str());
    assert_eq!(model["registry"]["digest"].as_str().map(str::len), Some(64));
    assert!(first.stderr.contains("fetched the model"), "{}", first.stderr);
    // The lineage's COMPLETE event tags the run with the registry's names,
    // in the standard tags facet, valid against OpenLineage's schemas.
    let lineage = std::fs::read_to_string(dir.path().join("lineage-1.jsonl")).unwrap();
    let complete: serde_json::Value = serde_json::from_str(lineage.lines().last().unwrap()).unwrap();
    assert_eq!(complete["eventType"], "COMPLETE");
    let tags: Vec<(&str, &str)> = complete["run"]["facets"]["tags"]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["key"].as_str().unwrap(), t["value"].as_str().unwrap()))
        .collect();
    for expected in [
        ("mlflow.registered_model", name.as_str()),
        ("mlflow.model_version", "1"),
        ("mlflow.alias", "champion"),
        ("mlflow.run_id", first_run.as_str()),
    ] {
        assert!(tags.contains(&expected), "{expected:?} in {tags:?}");
    }
    let errors = crate::citizen::LineageSchemas::load().errors(&complete);
    assert!(errors.is_empty(), "{errors:?}");
    let metrics = std::fs::read_to_string(dir.path().join("metrics-1.prom")).unwrap();
    assert!(
        metrics.contains(&format!(
            "model=\"{name}\",model_version=\"1\",model_alias=\"champion\""
        )),
        "{metrics}"
    );
    // It scores what the folder scores.
    let local = dir.path().join("local");
    score(&fixture("xgboost"), &sample("customers"), &local, &[]).assert_ok();
    assert_eq!(data_files(&out), data_files(&local));
    // The manifest and the ledger name the registered version.
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("_SUCCESS")).unwrap()).unwrap();
    assert_eq!(manifest["model"]["registry"]["version"], "1");
    let ledger = lakescore(["runs", out.to_str().unwrap(), "--json"]);
    let ledger: Vec<serde_json::Value> = serde_json::from_str(&ledger.stdout).unwrap();
    assert_eq!(
        (ledger[0]["model_name"].as_str(), ledger[0]["model_version"].as_str()),
        (Some(name.as_str()), Some("1"))
    );
    let registry = &ledger[0]["model_registry"];
    assert_eq!(
        (registry["alias"].as_str(), registry["run_id"].as_str()),
        (Some("champion"), Some(first_run.as_str()))
    );
    assert_eq!(registry["digest"], model["registry"]["digest"]);

    // The same version again: from the cache, nothing downloaded.
    let (_, _, again) = night(2);
    assert!(again.stderr.contains("in the cache"), "{}", again.stderr);

    // The alias moves: the next run scores version 2.
    set_alias(&server, &name, "champion", "2");
    let (_, report, _) = night(3);
    assert_eq!(report["model"]["version"], "2");
    assert_eq!(report["model"]["format"], "lightgbm-text");
    assert_eq!(report["model"]["registry"]["run_id"], second_run.as_str());

    // Champion against challenger, by alias.
    set_alias(&server, &name, "challenger", "1");
    let both = dir.path().join("both.json");
    lakescore_with_env(
        score_args(
            champion.as_ref(),
            &sample("customers"),
            &dir.path().join("both"),
            &[
                "--model",
                &format!("models:/{name}@challenger"),
                "--report",
                both.to_str().unwrap(),
            ],
        ),
        &env,
    )
    .assert_ok();
    let both: serde_json::Value = serde_json::from_slice(&std::fs::read(&both).unwrap()).unwrap();
    let versions: Vec<(&str, &str)> = both["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["registry"]["alias"].as_str().unwrap(), m["version"].as_str().unwrap()))
        .collect();
    assert_eq!(versions, [("champion", "2"), ("challenger", "1")]);
    // Told apart by alias: the challenger's scores are its own column.
    assert_eq!(both["models"][1]["name"], format!("{name}_challenger"));

    // evaluate --log-to-mlflow: the metrics go to the run that logged the
    // champion (version 2 now), beside the model in the registry.
    let labelled = dir.path().join("labelled");
    lakescore::datagen::generate_lake(
        &labelled,
        &lakescore::datagen::LakeSpec {
            rows: 5_000,
            label: true,
            ..Default::default()
        },
    )
    .unwrap();
    let evaluate = |model: &str| {
        let args = ["evaluate", "--model", model, "--input", labelled.to_str().unwrap()];
        lakescore_with_env([&args[..], &["--label", "converted", "--log-to-mlflow"]].concat(), &env)
    };
    let evaluated = evaluate(&champion);
    evaluated.assert_ok();
    assert!(
        evaluated.stderr.contains(&format!("to MLflow run {second_run}")),
        "{}",
        evaluated.stderr
    );
    let mut answer = ureq::get(&format!("{server}/api/2.0/mlflow/runs/get?run_id={second_run}"))
        .call()
        .unwrap();
    let run: serde_json::Value = serde_json::from_str(&answer.body_mut().read_to_string().unwrap()).unwrap();
    let logged: Vec<&str> = run["run"]["data"]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["key"].as_str().unwrap())
        .collect();
    for key in [
        "lakescore.auc",
        "lakescore.log_loss",
        "lakescore.accuracy_0.5",
        "lakescore.rows",
    ] {
        assert!(logged.contains(&key), "{key} in {logged:?}");
    }
    // A model from a file has no run to log to: a usage error before the pass.
    let refused = evaluate(fixture("xgboost").to_str().unwrap());
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(refused.stderr.contains("models:/NAME/VERSION"), "{}", refused.stderr);

    // MLflow 3's logged models: by id (`models:/m-…`), and as the model a
    // run logged (`runs:/RUN/NAME`), with no registry version.
    let run = post(&server, "runs/create", serde_json::json!({"experiment_id": experiment}));
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_string();
    let logged = post(
        &server,
        "logged-models",
        serde_json::json!({"experiment_id": experiment, "name": "churn_model", "source_run_id": run_id}),
    );
    let model_id = logged["model"]["info"]["model_id"].as_str().unwrap().to_string();
    upload_artifacts(
        &server,
        logged["model"]["info"]["artifact_uri"].as_str().unwrap(),
        &fixture("xgboost"),
    );
    for uri in [format!("models:/{model_id}"), format!("runs:/{run_id}/churn_model")] {
        let report = dir.path().join("logged.json");
        let out = dir.path().join(format!("logged-{}", uri.len()));
        lakescore_with_env(
            score_args(
                uri.as_ref(),
                &sample("customers"),
                &out,
                &["--report", report.to_str().unwrap()],
            ),
            &env,
        )
        .assert_ok();
        assert_eq!(data_files(&out), data_files(&local), "{uri}");
        let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        assert_eq!(report["model"]["name"], "churn_model", "{uri}");
        assert!(report["model"]["version"].is_null(), "{uri}: no registry version");
        assert_eq!(report["model"]["registry"]["run_id"], run_id.as_str(), "{uri}");
    }

    // A version, an alias or a model that does not exist: exit 1, the URI named.
    for (uri, says) in [
        (format!("models:/{name}/9"), "not found"),
        (format!("models:/{name}@nobody"), "nobody"),
        (format!("models:/no-such-{unique}/1"), "not found"),
    ] {
        let run = lakescore_with_env(
            score_args(uri.as_ref(), &sample("customers"), &dir.path().join("never"), &[]),
            &env,
        );
        assert_eq!(run.code, 1, "{uri}: {}", run.stderr);
        assert!(
            run.stderr.contains(&uri) && run.stderr.contains(says),
            "{uri}: {}",
            run.stderr
        );
    }
    assert!(!dir.path().join("never").exists());
}

#[test]
fn a_server_that_is_down_or_refuses_the_token_fails_naming_the_uri_and_never_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let score_from = |uri: &str, env: &[(&str, &str)]| {
        let run = lakescore_with_env(score_args(uri.as_ref(), &sample("customers"), &out, &[]), env);
        assert_eq!(run.code, 1, "{uri}: {}", run.stderr);
        assert!(run.stderr.contains(uri), "names {uri}: {}", run.stderr);
        run
    };
    // Nothing listens on a port just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = format!("http://127.0.0.1:{port}");
    let run = score_from("models:/churn/1", &[("MLFLOW_TRACKING_URI", down.as_str())]);
    assert!(run.stderr.contains("cannot reach the MLflow server"), "{}", run.stderr);

    // A server that answers 401 to everything.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            use std::io::{Read, Write};
            let mut stream = stream;
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let body = r#"{"error_code": "UNAUTHENTICATED", "message": "bad token"}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let refusing = format!("http://{address}");
    let run = score_from(
        "models:/churn@champion",
        &[
            ("MLFLOW_TRACKING_URI", refusing.as_str()),
            ("MLFLOW_TRACKING_TOKEN", "s3cr3t-t0ken"),
        ],
    );
    assert!(run.stderr.contains("HTTP 401"), "{}", run.stderr);
    assert!(!run.stderr.contains("s3cr3t-t0ken") && !run.stdout.contains("s3cr3t-t0ken"));

    // Without a server at all: a usage error.
    let run = lakescore_with_env(
        score_args("models:/churn/1".as_ref(), &sample("customers"), &out, &[]),
        &[("MLFLOW_TRACKING_URI", "")],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("MLFLOW_TRACKING_URI"), "{}", run.stderr);
    // A URI that is not one: a usage error too.
    let run = lakescore_with_env(
        score_args("models:/churn/latest".as_ref(), &sample("customers"), &out, &[]),
        &[("MLFLOW_TRACKING_URI", refusing.as_str())],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(!out.exists(), "nothing was written");
}

/// A stand-in tracking server answering each request with the first answer
/// whose key its request line contains.
fn fake_server(answers: Vec<(&'static str, String)>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            use std::io::{Read, Write};
            let mut stream = stream;
            let mut request = [0u8; 8192];
            let n = stream.read(&mut request).unwrap_or(0);
            let line = String::from_utf8_lossy(&request[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            let body = answers
                .iter()
                .find(|(key, _)| line.contains(key))
                .map_or(r#"{"error_code": "ENDPOINT_NOT_FOUND"}"#.to_string(), |(_, body)| {
                    body.clone()
                });
            let status = if body.contains("ENDPOINT_NOT_FOUND") {
                "404 Not Found"
            } else {
                "200 OK"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{address}")
}

#[test]
fn a_listing_that_names_files_outside_the_model_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    for hostile in ["../../escaped.txt", "a/../../escaped.txt", ""] {
        let server = fake_server(vec![
            (
                "model-versions/get-download-uri",
                r#"{"artifact_uri": "mlflow-artifacts:/1/run/artifacts/model"}"#.into(),
            ),
            (
                "model-versions/get",
                r#"{"model_version": {"version": "1", "run_id": "run"}}"#.into(),
            ),
            (
                "mlflow-artifacts/artifacts?",
                format!(r#"{{"files": [{{"path": "{hostile}", "is_dir": false, "file_size": 3}}]}}"#),
            ),
            ("mlflow-artifacts/artifacts/", "{}".into()),
        ]);
        let run = lakescore_with_env(
            score_args(
                "models:/churn/1".as_ref(),
                &sample("customers"),
                &dir.path().join("out"),
                &[],
            ),
            &[
                ("MLFLOW_TRACKING_URI", server.as_str()),
                ("LAKESCORE_MODEL_CACHE", cache.to_str().unwrap()),
            ],
        );
        assert_eq!(run.code, 1, "{hostile}: {}", run.stderr);
        assert!(
            run.stderr.contains("not a plain relative name"),
            "{hostile}: {}",
            run.stderr
        );
        assert!(!dir.path().join("escaped.txt").exists() && !cache.join("escaped.txt").exists());
    }
}
