//! Tables and models on object storage (`s3://…`): scored to the same bytes
//! as the same files on a local disk, within the request and byte budget of
//! ranged reads, through throttling and dropped connections, and failing
//! with the URL named (never a credential) when the store says no.
//!
//! The in-memory store of `object_store` runs everywhere; the S3 tests need a
//! `moto_server` (`.ci/run` starts one on loopback and sets
//! `LAKESCORE_TEST_S3_ENDPOINT`); without one they say so and pass, except
//! under CI, where they fail.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use object_store::memory::InMemory;
use object_store::{ObjectStoreExt, PutPayload};

use lakescore::commit::{LocalOutput, WriteMode};
use lakescore::model::LoadOptions;
use lakescore::pipeline::{self, RunOptions};
use lakescore::source::{ObjectTable, TableSource};
use lakescore::store::{self, Remote};

use crate::common::*;

/// Puts every file under `local` below `remote`, keeping the layout.
fn upload(remote: &Remote, local: &Path) {
    let mut files = Vec::new();
    collect_files(local, &mut files);
    for file in files {
        let relative = file.strip_prefix(local).unwrap().to_string_lossy().replace('\\', "/");
        put(remote, &relative, std::fs::read(&file).unwrap());
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        match path.is_dir() {
            true => collect_files(&path, out),
            false => out.push(path),
        }
    }
}

fn put(remote: &Remote, relative: &str, bytes: Vec<u8>) {
    let (store, path) = (Arc::clone(&remote.store), remote.join(relative).path);
    store::block_on(async move { store.put(&path, PutPayload::from(bytes)).await }).unwrap();
}

fn in_memory(url: &str) -> Remote {
    Remote::parse_with(url, vec![("AWS_REGION".into(), "us-east-1".into())])
        .unwrap()
        .over(Arc::new(InMemory::new()))
}

/// The bytes of every Parquet file of an output, by relative path.
fn outputs(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    parquet_files(dir)
        .into_iter()
        .map(|relative| {
            let bytes = std::fs::read(dir.join(&relative)).unwrap();
            (relative, bytes)
        })
        .collect()
}

/// The bytes a run must read of `lake` for `package`: the column chunks of
/// the model's features and the id column, and the footers.
fn needed_bytes(lake: &Path, columns: &[String]) -> u64 {
    let mut total = 0;
    for relative in parquet_files(lake) {
        let bytes = std::fs::read(lake.join(&relative)).unwrap();
        let footer = u32::from_le_bytes(bytes[bytes.len() - 8..bytes.len() - 4].try_into().unwrap()) as u64;
        total += footer + 8;
        let reader = parquet::file::serialized_reader::SerializedFileReader::new(bytes::Bytes::from(bytes)).unwrap();
        let metadata = parquet::file::reader::FileReader::metadata(&reader);
        for row_group in metadata.row_groups() {
            for column in row_group.columns() {
                if columns.iter().any(|c| *c == column.column_path().string()) {
                    total += column.byte_range().1;
                }
            }
        }
    }
    total
}

#[test]
fn a_lake_on_object_storage_scores_to_the_local_bytes_within_the_request_budget() {
    let dir = tempfile::tempdir().unwrap();
    let lake = sample("customers");
    for model in ["package", "xgb.ubj"] {
        let model = sample(model);
        let name = model.file_name().unwrap().to_string_lossy().into_owned();
        let local = dir.path().join(format!("local-{name}"));
        score(&model, &lake, &local, &[]).assert_ok();

        let remote = in_memory("s3://lake/customers/");
        upload(&remote, &lake);
        let table = ObjectTable::new(remote);
        let package = lakescore::package::open(&model, &candle_core::Device::Cpu, &LoadOptions::default()).unwrap();
        let out = dir.path().join(format!("remote-{name}"));
        let report = pipeline::score(
            &package,
            &table,
            &LocalOutput::new(&out),
            WriteMode::ErrorIfExists,
            &RunOptions::default(),
            &|| {},
        )
        .expect("scores");
        let (ours, theirs) = (outputs(&out), outputs(&local));
        assert_eq!(ours.len(), 4);
        assert!(ours == theirs, "{name}: the outputs differ");

        // Requests: the listing (a HEAD, then a LIST), one footer read per
        // file, at most two per row group per file.
        let (files, row_groups) = (report.files as u64, report.row_groups as u64);
        let requests = report.requests.expect("counted");
        assert!(
            requests <= 2 + files + 2 * row_groups,
            "{name}: {requests} requests for {files} files of {row_groups} row groups"
        );
        let mut columns: Vec<String> = package.model.features().iter().map(|f| f.name.clone()).collect();
        columns.push("customer_id".into());
        let needed = needed_bytes(&lake, &columns);
        // The footer's read-ahead hint (64 KiB) is a large share of these
        // small sample files: it is counted as needed here.
        let hint = files * lakescore::scan::FOOTER_READ_HINT;
        assert!(
            report.bytes_read as f64 <= 1.15 * (needed + hint) as f64,
            "{name}: {} bytes fetched for {needed} needed",
            report.bytes_read
        );
        assert!(report.bytes_read >= needed, "{name}: {} < {needed}", report.bytes_read);
        assert_eq!(report.input, PathBuf::from("s3://lake/customers"));
    }
}

// ---------------------------------------------------------------------------
// Against a real S3 API (moto).

/// moto's endpoint, or `None` (with a note) when no server is set up;
/// under CI a missing server fails the test.
fn s3_endpoint() -> Option<String> {
    match std::env::var("LAKESCORE_TEST_S3_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => Some(endpoint),
        _ => {
            assert!(
                !in_ci(),
                "CI must run the S3 tests: start moto_server and set LAKESCORE_TEST_S3_ENDPOINT (.ci/run does)"
            );
            eprintln!("skipped: no S3 server (set LAKESCORE_TEST_S3_ENDPOINT to a moto_server's URL)");
            None
        }
    }
}

/// A secret that must never appear in output.
const SECRET: &str = "wJalrXUtnFEMI-K7MDENG-sentinel-secret";

fn s3_settings(endpoint: &str) -> Vec<(String, String)> {
    vec![
        ("AWS_ENDPOINT_URL".into(), endpoint.into()),
        ("AWS_ALLOW_HTTP".into(), "true".into()),
        ("AWS_ACCESS_KEY_ID".into(), "AKIATESTKEY".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), SECRET.into()),
        ("AWS_REGION".into(), "us-east-1".into()),
    ]
}

/// A new bucket on the S3 server (named for the test, unique per run).
fn bucket(endpoint: &str, test: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!("{test}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
    let response = ureq::put(&format!("{endpoint}/{name}")).send_empty();
    assert!(response.is_ok(), "cannot create bucket {name}: {response:?}");
    name
}

fn s3(endpoint: &str, url: &str) -> Remote {
    Remote::parse_with(url, s3_settings(endpoint)).unwrap()
}

/// Runs the binary with the S3 settings of `endpoint` and `extra` variables.
fn lakescore_s3(endpoint: &str, args: &[&str], extra: &[(&str, &str)]) -> Run {
    let settings = s3_settings(endpoint);
    let mut env: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend_from_slice(extra);
    let run = lakescore_with_env(args, &env);
    assert!(
        !run.stderr.contains(SECRET) && !run.stdout.contains(SECRET),
        "the secret key was printed:\n{}",
        run.stderr
    );
    run
}

#[test]
fn a_lake_and_a_package_on_s3_score_to_the_local_bytes() {
    let Some(endpoint) = s3_endpoint() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bucket = bucket(&endpoint, "score");
    upload(
        &s3(&endpoint, &format!("s3://{bucket}/lake/customers")),
        &sample("customers"),
    );
    upload(
        &s3(&endpoint, &format!("s3://{bucket}/models/churn")),
        &sample("package"),
    );
    put(
        &s3(&endpoint, &format!("s3://{bucket}/models")),
        "xgb.ubj",
        std::fs::read(sample("xgb.ubj")).unwrap(),
    );
    for (model, local_model) in [("models/churn/", "package"), ("models/xgb.ubj", "xgb.ubj")] {
        let local = dir.path().join(format!("local-{local_model}"));
        score(&sample(local_model), &sample("customers"), &local, &[]).assert_ok();
        let out = dir.path().join(format!("s3-{local_model}"));
        let report = dir.path().join(format!("s3-{local_model}.json"));
        let run = lakescore_s3(
            &endpoint,
            &[
                "score",
                "--model",
                &format!("s3://{bucket}/{model}"),
                "--input",
                &format!("s3://{bucket}/lake/customers/"),
                "--output",
                out.to_str().unwrap(),
                "--report",
                report.to_str().unwrap(),
            ],
            &[],
        );
        run.assert_ok();
        assert!(outputs(&out) == outputs(&local), "{model}: the outputs differ");
        let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        assert_eq!(report["input"], format!("s3://{bucket}/lake/customers"));
        assert!(report["requests"].as_u64().unwrap() >= 4 + 8, "{report}");
        assert!(!report.to_string().contains(SECRET));
        // The model is named by its URL, not the folder it was fetched into.
        let named = match model.ends_with('/') {
            true => format!("s3://{bucket}/models/churn/model.json"),
            false => format!("s3://{bucket}/{model}"),
        };
        assert_eq!(report["model"]["path"], named.as_str(), "{model}");
    }
}

#[test]
fn an_mlflow_model_folder_on_s3_scores_like_the_same_folder_on_disk() {
    let Some(endpoint) = s3_endpoint() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bucket = bucket(&endpoint, "mlflow");
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mlflow/lightgbm");
    upload(&s3(&endpoint, &format!("s3://{bucket}/mlruns/m-1/artifacts")), &folder);
    let local = dir.path().join("local");
    score(&folder, &sample("customers"), &local, &[]).assert_ok();
    let remote = dir.path().join("remote");
    let report = dir.path().join("remote.json");
    lakescore_s3(
        &endpoint,
        &[
            "score",
            "--model",
            &format!("s3://{bucket}/mlruns/m-1/artifacts/"),
            "--input",
            sample("customers").to_str().unwrap(),
            "--output",
            remote.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ],
        &[],
    )
    .assert_ok();
    assert_eq!(data_files(&remote), data_files(&local));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(
        report["model"]["path"],
        format!("s3://{bucket}/mlruns/m-1/artifacts/model.skops"),
        "named by its URL"
    );
}

#[test]
fn a_registered_model_whose_files_are_on_s3_is_fetched_once_and_then_read_from_the_cache() {
    let Some(endpoint) = s3_endpoint() else { return };
    let Some(server) = crate::mlflow::mlflow_server() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bucket = bucket(&endpoint, "registry");
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mlflow/xgboost");
    let source = format!("s3://{bucket}/mlruns/churn/model");
    upload(&s3(&endpoint, &source), &folder);
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("s3-churn-{unique}");
    let post = |method: &str, body: serde_json::Value| crate::mlflow::post(&server, method, body);
    let experiment = post("experiments/create", serde_json::json!({"name": name}))["experiment_id"].clone();
    let run = post("runs/create", serde_json::json!({"experiment_id": experiment}));
    post("registered-models/create", serde_json::json!({"name": name}));
    let version = post(
        "model-versions/create",
        serde_json::json!({"name": name, "source": source, "run_id": run["run"]["info"]["run_id"]}),
    );
    assert_eq!(version["model_version"]["version"], "1", "{version}");
    let local = dir.path().join("local");
    score(&folder, &sample("customers"), &local, &[]).assert_ok();
    let cache = dir.path().join("cache");
    let uri = format!("models:/{name}/1");
    let customers = sample("customers");
    let night = |n: usize| {
        let (out, report) = (
            dir.path().join(format!("out-{n}")),
            dir.path().join(format!("report-{n}.json")),
        );
        let args = ["score", "--model", &uri, "--input", customers.to_str().unwrap()];
        let run = lakescore_s3(
            &endpoint,
            &[
                &args[..],
                &["--output", out.to_str().unwrap(), "--report", report.to_str().unwrap()],
            ]
            .concat(),
            &[
                ("MLFLOW_TRACKING_URI", server.as_str()),
                ("LAKESCORE_MODEL_CACHE", cache.to_str().unwrap()),
            ],
        );
        run.assert_ok();
        assert_eq!(data_files(&out), data_files(&local));
        let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        assert_eq!(report["model"]["registry"]["artifacts"], source.as_str());
        run
    };
    let first = night(0);
    assert!(first.stderr.contains("fetched the model"), "{}", first.stderr);
    let second = night(1);
    assert!(second.stderr.contains("in the cache"), "{}", second.stderr);
    // A changed object (another ETag) is fetched again.
    // (The same size: only the ETag tells.)
    let mut changed = std::fs::read(folder.join("conda.yaml")).unwrap();
    changed[0] ^= 0x20;
    put(&s3(&endpoint, &source), "conda.yaml", changed);
    let run = night(2);
    assert!(run.stderr.contains("fetched the model"), "{}", run.stderr);
}

#[test]
fn a_delta_table_on_s3_scores_like_the_same_table_on_disk() {
    let Some(endpoint) = s3_endpoint() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bucket = bucket(&endpoint, "delta");
    let table = crate::delta::fixtures().join("customers");
    upload(&s3(&endpoint, &format!("s3://{bucket}/lake/customers")), &table);
    let model = sample("model.json");
    let local = dir.path().join("local");
    score(&model, &table, &local, &["--input-version", "0"]).assert_ok();
    let from_s3 = dir.path().join("from-s3");
    let report = dir.path().join("report.json");
    lakescore_s3(
        &endpoint,
        &[
            "score",
            "--model",
            &model.to_string_lossy(),
            "--input",
            &format!("s3://{bucket}/lake/customers"),
            "--input-version",
            "0",
            "--output",
            &from_s3.to_string_lossy(),
            "--report",
            &report.to_string_lossy(),
        ],
        &[],
    )
    .assert_ok();
    assert!(outputs(&from_s3) == outputs(&local), "the outputs differ");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["input_snapshot"], "delta version 0", "{report}");
    assert_eq!(report["files"], 1, "{report}");
}

#[test]
#[allow(clippy::single_range_in_vec_init)] // a list of one byte range
fn an_object_replaced_during_the_run_fails_the_read_naming_it() {
    let Some(endpoint) = s3_endpoint() else { return };
    let bucket = bucket(&endpoint, "replaced");
    let remote = s3(&endpoint, &format!("s3://{bucket}/lake"));
    put(&remote, "dt=1/part-0.parquet", b"PAR1 the first version PAR1".to_vec());
    let table = ObjectTable::new(remote.clone());
    let files = table.list().unwrap();
    let file = table.open(&files[0]).unwrap();
    assert_eq!(&file.suffix(4).unwrap()[..], b"PAR1");
    put(
        &remote,
        "dt=1/part-0.parquet",
        b"PAR1 the second version, longer PAR1".to_vec(),
    );
    let error = file.ranges(&[0..4]).unwrap_err().to_string();
    assert!(
        error.contains(&format!("s3://{bucket}/lake/dt=1/part-0.parquet")) && error.contains("changed"),
        "{error}"
    );
}

#[test]
fn bad_locations_fail_naming_the_url_and_never_the_credentials() {
    let Some(endpoint) = s3_endpoint() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bucket = bucket(&endpoint, "bad");
    let lake = s3(&endpoint, &format!("s3://{bucket}/lake"));
    put(
        &lake,
        "dt=1/notes.parquet",
        b"these are not the bytes of a Parquet file".to_vec(),
    );
    let model = sample("model.json");
    let cases = [
        (
            format!("s3://no-such-bucket-{bucket}/lake"),
            format!("s3://no-such-bucket-{bucket}/lake"),
        ),
        (
            format!("s3://{bucket}/nothing/here"),
            format!("s3://{bucket}/nothing/here"),
        ),
        (
            format!("s3://{bucket}/lake"),
            format!("s3://{bucket}/lake/dt=1/notes.parquet"),
        ),
    ];
    for (k, (input, named)) in cases.iter().enumerate() {
        let out = dir.path().join(format!("out-{k}"));
        let run = lakescore_s3(
            &endpoint,
            &[
                "score",
                "--model",
                model.to_str().unwrap(),
                "--input",
                input,
                "--output",
                out.to_str().unwrap(),
            ],
            &[(store::RETRIES_VARIABLE, "1"), (store::RETRY_SECONDS_VARIABLE, "5")],
        );
        assert_eq!(run.code, 1, "{input}: {}", run.stderr);
        assert!(run.stderr.contains(named.as_str()), "{input}: {}", run.stderr);
        assert!(!out.join("_SUCCESS").exists());
    }
    // A model that is not there is named too.
    let out = dir.path().join("out-model");
    let run = lakescore_s3(
        &endpoint,
        &[
            "score",
            "--model",
            &format!("s3://{bucket}/models/missing.json"),
            "--input",
            sample("customers").to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("s3://{bucket}/models/missing.json")),
        "{}",
        run.stderr
    );
    // Credentials in the URL are refused as a usage error, unprinted.
    let run = lakescore_s3(
        &endpoint,
        &[
            "score",
            "--model",
            model.to_str().unwrap(),
            "--input",
            &format!("s3://AKIATESTKEY:{SECRET}@{bucket}/lake"),
            "--output",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
}

// ---------------------------------------------------------------------------
// A proxy between lakescore and the S3 server that misbehaves on purpose.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Forward the request.
    Pass,
    /// Answer `503 SlowDown`, as S3 does when throttling.
    SlowDown,
    /// Close the connection without an answer.
    Reset,
    /// Forward the request after a pause.
    Slow,
    /// Answer `403` with this S3 error code (`AccessDenied`,
    /// `InvalidAccessKeyId`), as S3 does for a denied prefix or a wrong key.
    Denied(&'static str),
}

/// A proxy on loopback that forwards each request to `upstream` on its own
/// connection, or applies the fault `plan` gives for the request's number
/// (from 0) and first line.
struct FaultProxy {
    endpoint: String,
    requests: Arc<AtomicUsize>,
}

impl FaultProxy {
    fn start(upstream: &str, plan: impl Fn(usize, &str) -> Fault + Send + Sync + 'static) -> FaultProxy {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("the S3 endpoint is http://IP:PORT");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let (counter, plan) = (Arc::clone(&requests), Arc::new(plan));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (counter, plan) = (Arc::clone(&counter), Arc::clone(&plan));
                std::thread::spawn(move || {
                    let _ = serve(client, upstream, &counter, plan.as_ref());
                });
            }
        });
        FaultProxy { endpoint, requests }
    }
}

/// Serves one request of `client` (every answer closes the connection).
fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    counter: &AtomicUsize,
    plan: &(dyn Fn(usize, &str) -> Fault + Send + Sync),
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            content_length = value.trim().parse().unwrap_or(0);
        }
        let is_end = line == "\r\n";
        if !line.to_ascii_lowercase().starts_with("connection:") && !is_end {
            head.push(line);
        }
        if is_end {
            break;
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body)?;
    let number = counter.fetch_add(1, Ordering::SeqCst);
    let mut client = client;
    match plan(number, head[0].trim_end()) {
        Fault::Reset => return Ok(()),
        Fault::SlowDown => {
            let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code>\
                       <Message>Please reduce your request rate.</Message></Error>";
            write!(
                client,
                "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{xml}",
                xml.len()
            )?;
            return Ok(());
        }
        Fault::Denied(code) => {
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>\
                 <Message>Access Denied</Message></Error>"
            );
            write!(
                client,
                "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{xml}",
                xml.len()
            )?;
            return Ok(());
        }
        Fault::Slow => std::thread::sleep(Duration::from_millis(300)),
        Fault::Pass => {}
    }
    let mut server = TcpStream::connect(upstream)?;
    let mut request = head.concat();
    request.push_str("Connection: close\r\n\r\n");
    server.write_all(request.as_bytes())?;
    server.write_all(&body)?;
    let mut response = Vec::new();
    server.read_to_end(&mut response)?;
    // Tell the client the connection ends here.
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").map_or(0, |p| p + 2);
    let (response_head, rest) = response.split_at(split);
    let kept: String = String::from_utf8_lossy(response_head)
        .lines()
        .filter(|line| !line.to_ascii_lowercase().starts_with("connection:"))
        .map(|line| format!("{line}\r\n"))
        .collect();
    client.write_all(kept.as_bytes())?;
    client.write_all(b"Connection: close\r\n")?;
    client.write_all(rest)?;
    client.flush()
}

#[test]
fn throttling_dropped_connections_and_slow_answers_are_retried_to_the_same_bytes() {
    let Some(endpoint) = s3_endpoint() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bucket = bucket(&endpoint, "faults");
    upload(&s3(&endpoint, &format!("s3://{bucket}/lake")), &sample("customers"));
    let local = dir.path().join("local");
    let model = sample("package");
    score(&model, &sample("customers"), &local, &[]).assert_ok();

    // Every third request throttled, every fifth dropped, every seventh slow.
    let proxy = FaultProxy::start(&endpoint, |n, _| match n {
        n if n % 3 == 1 => Fault::SlowDown,
        n if n % 5 == 2 => Fault::Reset,
        n if n % 7 == 3 => Fault::Slow,
        _ => Fault::Pass,
    });
    let out = dir.path().join("out");
    let report = dir.path().join("report.json");
    lakescore_s3(
        &proxy.endpoint,
        &[
            "score",
            "--model",
            model.to_str().unwrap(),
            "--input",
            &format!("s3://{bucket}/lake"),
            "--output",
            out.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ],
        &[],
    )
    .assert_ok();
    assert!(outputs(&out) == outputs(&local), "the outputs differ");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let succeeded = report["requests"].as_u64().unwrap() as usize;
    let sent = proxy.requests.load(Ordering::SeqCst);
    assert!(
        sent > succeeded,
        "{sent} requests reached the proxy, {succeeded} succeeded: no fault was hit"
    );
}

#[test]
fn a_store_that_keeps_failing_fails_the_run_naming_the_object_and_publishes_nothing() {
    let Some(endpoint) = s3_endpoint() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bucket = bucket(&endpoint, "failing");
    upload(&s3(&endpoint, &format!("s3://{bucket}/lake")), &sample("customers"));
    // The listing goes through; every read of data is throttled.
    let proxy = FaultProxy::start(&endpoint, |_, line| {
        match line.starts_with("GET") && line.contains(".parquet") {
            true => Fault::SlowDown,
            false => Fault::Pass,
        }
    });
    let out = dir.path().join("out");
    let run = lakescore_s3(
        &proxy.endpoint,
        &[
            "score",
            "--model",
            sample("model.json").to_str().unwrap(),
            "--input",
            &format!("s3://{bucket}/lake"),
            "--output",
            out.to_str().unwrap(),
        ],
        &[(store::RETRIES_VARIABLE, "2"), (store::RETRY_SECONDS_VARIABLE, "10")],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("s3://{bucket}/lake/dt=")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("503") || run.stderr.contains("SlowDown"),
        "{}",
        run.stderr
    );
    assert!(data_files(&out).is_empty(), "something was published");
}

// ---------------------------------------------------------------------------
// Outputs on object storage.

/// Every object under `remote`, by path relative to it, with its bytes.
fn objects(remote: &Remote) -> Vec<(String, Vec<u8>)> {
    use futures_util::TryStreamExt;
    let listed = remote.clone();
    let metas: Vec<object_store::ObjectMeta> =
        store::block_on(async move { listed.store.list(Some(&listed.path)).try_collect().await }).unwrap();
    let mut found: Vec<(String, Vec<u8>)> = metas
        .into_iter()
        .map(|meta| {
            let relative = meta
                .location
                .prefix_match(&remote.path)
                .unwrap()
                .map(|p| p.as_ref().to_string())
                .collect::<Vec<_>>()
                .join("/");
            let store = Arc::clone(&remote.store);
            let bytes = store::block_on(async move { store.get(&meta.location).await.unwrap().bytes().await.unwrap() });
            (relative, bytes.to_vec())
        })
        .collect();
    found.sort();
    found
}

/// The Parquet objects of an output, as `outputs` gives a local one's.
fn parquet_objects(remote: &Remote) -> Vec<(PathBuf, Vec<u8>)> {
    objects(remote)
        .into_iter()
        .filter(|(path, _)| path.ends_with(".parquet") && !path.starts_with("_lakescore"))
        .map(|(path, bytes)| (PathBuf::from(path), bytes))
        .collect()
}

#[test]
fn an_output_on_object_storage_is_published_whole_with_a_manifest_of_its_objects() {
    let dir = tempfile::tempdir().unwrap();
    let lake = sample("customers");
    let model = sample("package");
    let local = dir.path().join("local");
    score(&model, &lake, &local, &[]).assert_ok();
    let package = lakescore::package::open(&model, &candle_core::Device::Cpu, &LoadOptions::default()).unwrap();
    let out = in_memory("s3://scores/churn");
    let output = lakescore::commit::ObjectOutput::new(out.clone());
    let run = |mode| {
        pipeline::score(
            &package,
            &lakescore::source::LocalTable::new(&lake, lakescore::source::MmapChoice::never()),
            &output,
            mode,
            &RunOptions::default(),
            &|| {},
        )
    };
    run(WriteMode::ErrorIfExists).expect("scores");
    assert!(parquet_objects(&out) == outputs(&local), "the outputs differ");
    let all = objects(&out);
    let names: Vec<&str> = all.iter().map(|(p, _)| p.as_str()).collect();
    assert!(names.contains(&"_SUCCESS"), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("_lakescore/uploads") || *n == "_lakescore/lease"),
        "{names:?}"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&all.iter().find(|(p, _)| p == "_SUCCESS").unwrap().1).unwrap();
    let listed = manifest["objects"].as_array().expect("the manifest lists the objects");
    assert_eq!(listed.len(), 4);
    for object in listed {
        let (path, bytes) = all
            .iter()
            .find(|(p, _)| *p == object["path"])
            .expect("listed objects exist");
        assert_eq!(object["bytes"].as_u64().unwrap() as usize, bytes.len(), "{path}");
        assert!(object["e_tag"].is_string(), "{object}");
    }

    // A second run is refused, unless it overwrites.
    let error = run(WriteMode::ErrorIfExists).unwrap_err().to_string();
    assert!(
        error.contains("already holds a table") && error.contains("s3://scores/churn"),
        "{error}"
    );
    // Overwritten, a partition loses the files its new version lacks.
    put(&out, "dt=2026-11-25/part-00009.parquet", b"an old file".to_vec());
    run(WriteMode::Overwrite).expect("overwrites");
    assert!(
        parquet_objects(&out) == outputs(&local),
        "the overwritten output differs"
    );
    let runs = lakescore::commit::object::ledger(&out).unwrap().records;
    assert_eq!(runs.len(), 2, "two runs published");
}

/// `score` arguments: the sample lake scored with `model` to `url`, plus
/// `extra`.
fn sample_to_url(model: &Path, url: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "score".to_string(),
        "--model".into(),
        model.to_string_lossy().into_owned(),
        "--input".into(),
        sample("customers").to_string_lossy().into_owned(),
        "--output".into(),
        url.into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// Asserts that the Delta table at `remote`, downloaded under `scratch`,
/// holds the rows of the local Delta table `local`, as delta_kernel reads
/// them.
fn assert_same_delta_rows(remote: &Remote, local: &Path, scratch: &Path) {
    let downloaded = scratch.join("downloaded");
    for (path, bytes) in objects(remote) {
        let target = downloaded.join(&path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, bytes).unwrap();
    }
    let latest = lakescore::source::TableVersion::Latest;
    assert_eq!(
        crate::delta_output::delta_rows(&downloaded, latest),
        crate::delta_output::delta_rows(local, latest)
    );
}

/// The multipart uploads under way in `bucket` (S3's ListMultipartUploads).
fn incomplete_uploads(endpoint: &str, bucket: &str) -> Vec<String> {
    let xml = ureq::get(&format!("{endpoint}/{bucket}?uploads"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    xml.split("<Key>")
        .skip(1)
        .map(|rest| rest.split("</Key>").next().unwrap().to_string())
        .collect()
}

#[test]
fn a_run_killed_while_committing_to_s3_resumes_to_the_clean_bytes_and_leaves_no_upload() {
    let Some(endpoint) = s3_endpoint() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bucket = bucket(&endpoint, "resume");
    let model = sample("package");
    let clean = dir.path().join("clean");
    score(&model, &sample("customers"), &clean, &[]).assert_ok();
    // Killed before the first and the second partition's completion, and
    // after the first's, before its record.
    let crashes = [
        (lakescore::test_hooks::CRASH_BEFORE_PARTITION, 0),
        (lakescore::test_hooks::CRASH_BEFORE_PARTITION, 1),
        (lakescore::test_hooks::CRASH_BEFORE_RECORD, 0),
    ];
    for (case, (hook, partition)) in crashes.into_iter().enumerate() {
        let url = format!("s3://{bucket}/scores-{case}");
        let args = |mode: &str| sample_to_url(&model, &url, &["--mode", mode]);
        let crash_args = args("error-if-exists");
        let crash_refs: Vec<&str> = crash_args.iter().map(String::as_str).collect();
        let crashed = lakescore_s3(
            &endpoint,
            &crash_refs,
            &[
                (hook, &partition.to_string()),
                (lakescore::test_hooks::LEASE_SECONDS, "2"),
            ],
        );
        assert_eq!(crashed.code, 137, "{hook}={partition}: {}", crashed.stderr);
        let out = s3(&endpoint, &url);
        assert!(
            !objects(&out).iter().any(|(p, _)| p == "_SUCCESS"),
            "a crashed run wrote _SUCCESS"
        );
        assert!(
            !incomplete_uploads(&endpoint, &bucket).is_empty(),
            "the crashed run left uploads to abort"
        );
        // The dead run's lease lives two seconds.
        std::thread::sleep(Duration::from_millis(2500));
        let resume_args = args("resume");
        let resume_refs: Vec<&str> = resume_args.iter().map(String::as_str).collect();
        let resumed = lakescore_s3(&endpoint, &resume_refs, &[(lakescore::test_hooks::LEASE_SECONDS, "2")]);
        resumed.assert_ok();
        assert!(
            parquet_objects(&out) == outputs(&clean),
            "{hook}={partition}: the resumed output differs"
        );
        assert!(objects(&out).iter().any(|(p, _)| p == "_SUCCESS"));
        let left = incomplete_uploads(&endpoint, &bucket);
        assert!(left.is_empty(), "{hook}={partition}: uploads left: {left:?}");
        let runs = lakescore_s3(&endpoint, &["runs", &url], &[]);
        runs.assert_ok();
        assert!(
            runs.stdout.contains("died") && runs.stdout.contains("succeeded"),
            "{}",
            runs.stdout
        );
        // The trend page of an output on S3, from its ledger objects.
        let page = dir.path().join(format!("trend-{case}.html"));
        lakescore_s3(&endpoint, &["runs", &url, "--html", page.to_str().unwrap()], &[]).assert_ok();
        let page = std::fs::read_to_string(&page).unwrap();
        assert!(page.contains(">died<") && page.contains(">succeeded<"), "{page}");
        assert!(page.contains("propensity-sample 1.0.0"), "the model is named");
        let score_plot = &page[page.find("id=\"score\"").unwrap()..];
        assert!(
            score_plot.contains("data-points=\"1\"")
                && score_plot.find("data-points=\"1\"") < score_plot.find("</svg>"),
            "the resumed run's score is drawn from the summary in its ledger object"
        );
    }
}

#[test]
fn scores_published_as_a_delta_table_on_s3_commit_once_even_after_a_kill() {
    let Some(endpoint) = s3_endpoint() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bucket = bucket(&endpoint, "delta-out");
    let model = sample("model.json");
    let local = dir.path().join("local");
    score(&model, &sample("customers"), &local, &["--output-format", "delta"]).assert_ok();
    let url = format!("s3://{bucket}/scores");
    let args = |mode: &str| sample_to_url(&model, &url, &["--output-format", "delta", "--mode", mode]);
    let crash_args = args("error-if-exists");
    let crash_refs: Vec<&str> = crash_args.iter().map(String::as_str).collect();
    let crashed = lakescore_s3(
        &endpoint,
        &crash_refs,
        &[
            (lakescore::test_hooks::CRASH_AT_DELTA_COMMIT, "before"),
            (lakescore::test_hooks::LEASE_SECONDS, "2"),
        ],
    );
    assert_eq!(crashed.code, 137, "{}", crashed.stderr);
    let out = s3(&endpoint, &url);
    let commits = |out: &Remote| {
        objects(out)
            .into_iter()
            .filter(|(path, _)| path.starts_with("_delta_log/") && path.ends_with(".json"))
            .count()
    };
    assert_eq!(commits(&out), 0, "a run killed before its commit committed");
    std::thread::sleep(Duration::from_millis(2500));
    let resume_args = args("resume");
    let resume_refs: Vec<&str> = resume_args.iter().map(String::as_str).collect();
    lakescore_s3(&endpoint, &resume_refs, &[(lakescore::test_hooks::LEASE_SECONDS, "2")]).assert_ok();
    assert_eq!(commits(&out), 1);
    assert!(incomplete_uploads(&endpoint, &bucket).is_empty());

    // Read back through delta_kernel on S3, and downloaded: the local table's rows.
    let remote_table =
        lakescore::source::delta::DeltaTable::open_remote(out.clone(), lakescore::source::TableVersion::Latest)
            .unwrap();
    assert_eq!(remote_table.version(), 0);
    assert_eq!(remote_table.list().unwrap().len(), 4);
    assert_same_delta_rows(&out, &local, dir.path());

    // An overwrite: one more commit, the same rows.
    let overwrite_args = args("overwrite");
    let overwrite_refs: Vec<&str> = overwrite_args.iter().map(String::as_str).collect();
    lakescore_s3(&endpoint, &overwrite_refs, &[]).assert_ok();
    assert_eq!(commits(&out), 2);
    // Version 10 gets a checkpoint on S3 too, which the kernel then reads.
    for _ in 2..=10 {
        lakescore_s3(&endpoint, &overwrite_refs, &[]).assert_ok();
    }
    let log: Vec<String> = objects(&out)
        .into_iter()
        .map(|(path, _)| path)
        .filter(|path| path.starts_with("_delta_log/"))
        .collect();
    assert!(
        log.contains(&"_delta_log/00000000000000000010.checkpoint.parquet".to_string()),
        "{log:?}"
    );
    let remote_table =
        lakescore::source::delta::DeltaTable::open_remote(out.clone(), lakescore::source::TableVersion::Latest)
            .unwrap();
    assert_eq!(remote_table.version(), 10);
    assert_eq!(remote_table.list().unwrap().len(), 4);
}

#[test]
fn an_upload_a_dead_run_began_and_never_recorded_is_aborted_by_the_next_run() {
    let Some(endpoint) = s3_endpoint() else { return };
    let bucket = bucket(&endpoint, "unrecorded");
    let url = format!("s3://{bucket}/scores");
    // A run killed between beginning an upload and recording it: only the
    // bucket knows of the upload. Beside OUT, another table's upload is
    // under way, which is not this run's to abort.
    let begin = |remote: &Remote, key: &str| {
        let (multipart, path) = (Arc::clone(&remote.multipart), remote.join(key).path);
        store::block_on(async move { multipart.create_multipart(&path).await }).unwrap();
    };
    begin(&s3(&endpoint, &url), "dt=2026-11-22/part-00000.parquet");
    begin(&s3(&endpoint, &format!("{url}-other")), "part-00000.parquet");
    assert_eq!(incomplete_uploads(&endpoint, &bucket).len(), 2);
    let model = sample("model.json");
    let customers = sample("customers");
    lakescore_s3(
        &endpoint,
        &[
            "score",
            "--model",
            &model.to_string_lossy(),
            "--input",
            &customers.to_string_lossy(),
            "--output",
            &url,
            "-q",
        ],
        &[],
    )
    .assert_ok();
    assert_eq!(
        incomplete_uploads(&endpoint, &bucket),
        vec!["scores-other/part-00000.parquet".to_string()]
    );
}

#[test]
fn a_second_writer_on_s3_is_refused_naming_the_holder_until_its_lease_expires() {
    let Some(endpoint) = s3_endpoint() else { return };
    let bucket = bucket(&endpoint, "lease");
    let url = format!("s3://{bucket}/scores");
    let model = sample("model.json");
    let lake = sample("customers");
    let settings = s3_settings(&endpoint);
    // A slow run holds the lease.
    let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_lakescore"))
        .args(score_args(&model, &lake, Path::new(&url), &["--threads", "1"]))
        .envs(settings.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env(lakescore::test_hooks::ROW_GROUP_DELAY_MS, "400")
        .env(lakescore::test_hooks::LEASE_SECONDS, "3")
        .env_remove("LAKESCORE_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lease = s3(&endpoint, &url);
    let started = std::time::Instant::now();
    while !objects(&lease).iter().any(|(p, _)| p == "_lakescore/lease") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the first run never took the lease"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = lakescore_s3(
        &endpoint,
        &[
            "score",
            "--model",
            model.to_str().unwrap(),
            "--input",
            lake.to_str().unwrap(),
            "--output",
            &url,
            "--mode",
            "overwrite",
        ],
        &[(lakescore::test_hooks::LEASE_SECONDS, "3")],
    );
    assert_eq!(second.code, 5, "{}", second.stderr);
    assert!(
        second.stderr.contains(&url) && second.stderr.contains("pid"),
        "{}",
        second.stderr
    );
    // Killed, the first run's lease outlives it by its life, then is taken over.
    first.kill().unwrap();
    first.wait().unwrap();
    std::thread::sleep(Duration::from_millis(3500));
    let third = lakescore_s3(
        &endpoint,
        &[
            "score",
            "--model",
            model.to_str().unwrap(),
            "--input",
            lake.to_str().unwrap(),
            "--output",
            &url,
            "--mode",
            "overwrite",
        ],
        &[(lakescore::test_hooks::LEASE_SECONDS, "3")],
    );
    third.assert_ok();
    assert!(third.stderr.contains("taking over the lease"), "{}", third.stderr);
}

#[test]
fn a_commit_the_store_refuses_publishes_nothing_and_leaves_no_upload() {
    let Some(endpoint) = s3_endpoint() else { return };
    let bucket = bucket(&endpoint, "refused");
    // Every completion of a multipart upload is refused; the rest passes.
    let proxy = FaultProxy::start(&endpoint, |_, line| {
        match line.starts_with("POST") && line.contains("uploadId=") {
            true => Fault::SlowDown,
            false => Fault::Pass,
        }
    });
    let url = format!("s3://{bucket}/scores");
    let run = lakescore_s3(
        &proxy.endpoint,
        &[
            "score",
            "--model",
            sample("model.json").to_str().unwrap(),
            "--input",
            sample("customers").to_str().unwrap(),
            "--output",
            &url,
        ],
        &[(store::RETRIES_VARIABLE, "1"), (store::RETRY_SECONDS_VARIABLE, "5")],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("complete the upload of") && run.stderr.contains(&url),
        "{}",
        run.stderr
    );
    let out = s3(&endpoint, &url);
    let names: Vec<String> = objects(&out).into_iter().map(|(p, _)| p).collect();
    assert!(
        !names
            .iter()
            .any(|n| n == "_SUCCESS" || n.ends_with(".parquet") || n.starts_with("_lakescore/uploads")),
        "{names:?}"
    );
    assert!(incomplete_uploads(&endpoint, &bucket).is_empty());
    let runs = lakescore_s3(&endpoint, &["runs", &url], &[]);
    assert!(runs.stdout.contains("failed"), "{}", runs.stdout);
}

// ---------------------------------------------------------------------------
// Against Azure's API (Azurite).

/// Azurite's blob endpoint (`http://127.0.0.1:PORT`), or `None` (with a
/// note) when none is set up; under CI a missing server fails the test.
fn azurite_endpoint() -> Option<String> {
    match std::env::var("LAKESCORE_TEST_AZURITE_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => Some(endpoint.trim_end_matches('/').to_string()),
        _ => {
            assert!(
                !in_ci(),
                "CI must run the Azure tests: start Azurite and set LAKESCORE_TEST_AZURITE_ENDPOINT (.ci/run does)"
            );
            eprintln!("skipped: no Azurite (set LAKESCORE_TEST_AZURITE_ENDPOINT to its blob endpoint)");
            None
        }
    }
}

/// Azurite's well-known development account.
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The variables that point object_store's Azure client at Azurite.
fn azure_settings(endpoint: &str) -> Vec<(String, String)> {
    vec![
        ("AZURE_STORAGE_ACCOUNT_NAME".into(), AZURITE_ACCOUNT.into()),
        ("AZURE_STORAGE_ACCOUNT_KEY".into(), AZURITE_KEY.into()),
        ("AZURE_STORAGE_ENDPOINT".into(), format!("{endpoint}/{AZURITE_ACCOUNT}")),
        ("AZURE_ALLOW_HTTP".into(), "true".into()),
    ]
}

/// Creates a container in Azurite: the one request object_store has no call
/// for, signed here with the account's shared key.
fn azure_container(endpoint: &str, test: &str) -> String {
    use base64::Engine as _;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!("{test}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
    let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    let version = "2021-08-06";
    let to_sign = format!(
        "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{name}\nrestype:container"
    );
    let engine = base64::engine::general_purpose::STANDARD;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &engine.decode(AZURITE_KEY).unwrap());
    let signature = engine.encode(ring::hmac::sign(&key, to_sign.as_bytes()).as_ref());
    let response = ureq::put(&format!("{endpoint}/{AZURITE_ACCOUNT}/{name}?restype=container"))
        .header("x-ms-date", &date)
        .header("x-ms-version", version)
        .header("Authorization", &format!("SharedKey {AZURITE_ACCOUNT}:{signature}"))
        .send_empty();
    assert!(response.is_ok(), "cannot create container {name}: {response:?}");
    name
}

#[test]
fn a_lake_on_azure_scores_to_the_local_bytes_and_publishes_back_to_azure() {
    let Some(endpoint) = azurite_endpoint() else { return };
    let dir = tempfile::tempdir().unwrap();
    let container = azure_container(&endpoint, "score");
    let settings = azure_settings(&endpoint);
    let remote = |url: &str| Remote::parse_with(url, settings.clone()).unwrap();
    upload(
        &remote(&format!("az://{container}/lake/customers")),
        &sample("customers"),
    );
    upload(&remote(&format!("az://{container}/models/churn")), &sample("package"));
    let local = dir.path().join("local");
    score(&sample("package"), &sample("customers"), &local, &[]).assert_ok();
    let env: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let output = format!("az://{container}/scores/churn");
    let run = lakescore_with_env(
        [
            "score",
            "--model",
            &format!("az://{container}/models/churn"),
            "--input",
            &format!("az://{container}/lake/customers"),
            "--output",
            &output,
        ],
        &env,
    );
    run.assert_ok();
    assert!(!run.stderr.contains(AZURITE_KEY));
    let out = remote(&output);
    assert!(parquet_objects(&out) == outputs(&local), "the outputs differ");
    assert!(objects(&out).iter().any(|(p, _)| p == "_SUCCESS"));
    // A second writer while none runs: refused as an existing table.
    let again = lakescore_with_env(
        [
            "score",
            "--model",
            sample("model.json").to_str().unwrap(),
            "--input",
            sample("customers").to_str().unwrap(),
            "--output",
            &output,
        ],
        &env,
    );
    assert_eq!(again.code, 1, "{}", again.stderr);
    assert!(again.stderr.contains("already holds a table"), "{}", again.stderr);
}

#[test]
fn scores_published_as_a_delta_table_on_azure_read_back_through_the_log() {
    let Some(endpoint) = azurite_endpoint() else { return };
    let dir = tempfile::tempdir().unwrap();
    let container = azure_container(&endpoint, "delta");
    let settings = azure_settings(&endpoint);
    let env: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let model = sample("model.json");
    let local = dir.path().join("local");
    score(&model, &sample("customers"), &local, &["--output-format", "delta"]).assert_ok();
    let url = format!("az://{container}/scores");
    for mode in ["error-if-exists", "overwrite"] {
        let args = sample_to_url(&model, &url, &["--output-format", "delta", "--mode", mode]);
        let run = lakescore_with_env(&args, &env);
        run.assert_ok();
        assert!(!run.stderr.contains(AZURITE_KEY));
    }
    let out = Remote::parse_with(&url, settings.clone()).unwrap();
    let table = lakescore::source::delta::DeltaTable::open_remote(out.clone(), lakescore::source::TableVersion::Latest)
        .unwrap();
    assert_eq!(table.version(), 1);
    assert_same_delta_rows(&out, &local, dir.path());
}

#[test]
fn campaigns_reports_and_policies_live_on_s3_too() {
    let Some(endpoint) = s3_endpoint() else { return };
    let bucket = bucket(&endpoint, "campaign");
    let policy = std::fs::read(sample("policy.toml")).unwrap();
    let policies = s3(&endpoint, &format!("s3://{bucket}/policies"));
    put(&policies, "policy.toml", policy);
    // The arm's model, which the policy names relative to itself.
    put(&policies, "model.json", std::fs::read(sample("model.json")).unwrap());
    upload(&s3(&endpoint, &format!("s3://{bucket}/lake")), &sample("customers"));
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("assigned");
    lakescore([
        "allocate",
        "--policy",
        sample("policy.toml").to_str().unwrap(),
        "--input",
        sample("customers").to_str().unwrap(),
        "--output",
        local.to_str().unwrap(),
    ])
    .assert_ok();
    let report = format!("s3://{bucket}/reports/allocate.json");
    lakescore_s3(
        &endpoint,
        &[
            "allocate",
            "--policy",
            &format!("s3://{bucket}/policies/policy.toml"),
            "--input",
            &format!("s3://{bucket}/lake"),
            "--output",
            &format!("s3://{bucket}/assigned"),
            "--report",
            &report,
        ],
        &[],
    )
    .assert_ok();
    let assigned = s3(&endpoint, &format!("s3://{bucket}/assigned"));
    assert!(parquet_objects(&assigned) == outputs(&local), "the assignments differ");
    let reports = objects(&s3(&endpoint, &format!("s3://{bucket}/reports")));
    let (_, bytes) = reports
        .iter()
        .find(|(p, _)| p == "allocate.json")
        .expect("the report is on S3");
    let report: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    assert!(report["rows"].as_u64().unwrap() > 0, "{report}");
}

/// SplitMix64, as in `crash.rs`: a failure names its seed and replays.
struct SplitMix(u64);

impl SplitMix {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[test]
fn sigkill_at_random_moments_of_an_s3_run_then_resume_gives_the_clean_bytes() {
    let Some(endpoint) = s3_endpoint() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bucket = bucket(&endpoint, "kills");
    let lake = customer_lake(
        &dir.path().join("lake"),
        20_000,
        2,
        2_000,
        &["2026-11-22", "2026-11-23", "2026-11-24", "2026-11-25"],
    );
    let model = linear_model(dir.path(), "model.json", logistic_model_body(None));
    let clean = dir.path().join("clean");
    score(&model, &lake, &clean, &[]).assert_ok();
    let expected = outputs(&clean);
    assert_eq!(expected.len(), 8);
    let url = format!("s3://{bucket}/scores");
    let out = s3(&endpoint, &url);
    let settings = s3_settings(&endpoint);
    let run_args = score_args(&model, &lake, Path::new(&url), &["--mode", "resume", "-q"]);
    let spawn = |pause_ms: u64| {
        std::process::Command::new(env!("CARGO_BIN_EXE_lakescore"))
            .args(&run_args)
            .envs(settings.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(lakescore::test_hooks::LEASE_SECONDS, "3")
            .env(lakescore::test_hooks::PUBLISH_DELAY_MS, pause_ms.to_string())
            .env_remove("LAKESCORE_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    // The resume, its stderr kept for the failure messages.
    let resume = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_lakescore"))
            .args(&run_args)
            .envs(settings.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(lakescore::test_hooks::LEASE_SECONDS, "3")
            .env_remove("LAKESCORE_LOG")
            .output()
            .unwrap()
    };
    // How long a whole run takes here.
    let started = std::time::Instant::now();
    let status = spawn(0).wait().unwrap();
    assert!(status.success());
    let full_run = started.elapsed();
    let seed = 0x0B5E_C7ED_u64;
    let mut random = SplitMix(seed);
    let (mut kills, mut partly) = (0, 0);
    for attempt in 0..12 {
        // Start over from an empty output each time.
        for (path, _) in objects(&out) {
            let (store, key) = (Arc::clone(&out.store), out.join(&path).path);
            store::block_on(async move { store.delete(&key).await }).unwrap();
        }
        // Half anywhere in a run; half while it publishes, stretched by a
        // pause before each of its 4 partitions.
        let (pause, at) = match attempt % 2 {
            0 => (0, full_run.mul_f64(random.unit())),
            _ => (
                150,
                full_run.mul_f64(0.5) + Duration::from_millis(600).mul_f64(random.unit()),
            ),
        };
        let mut child = spawn(pause);
        std::thread::sleep(at);
        match child.try_wait().unwrap() {
            Some(status) => assert!(status.success(), "seed {seed:#x} attempt {attempt}: {status}"),
            None => {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
            }
        }
        let now = parquet_objects(&out);
        for (path, bytes) in &now {
            assert!(
                expected.iter().any(|(p, b)| p == path && b == bytes),
                "seed {seed:#x} attempt {attempt}: `{}` is visible but not the final file",
                path.display()
            );
        }
        if objects(&out).iter().any(|(p, _)| p == "_SUCCESS") {
            assert_eq!(
                now, expected,
                "seed {seed:#x} attempt {attempt}: _SUCCESS with files missing"
            );
        } else if !now.is_empty() {
            partly += 1;
        }
        // The dead run's lease lives 3 s (a minute outside the tests: long
        // after the last request it sent has been served, even by a busy
        // server); then resume to the end.
        std::thread::sleep(Duration::from_millis(3100));
        let resumed = resume();
        assert!(
            resumed.status.success(),
            "seed {seed:#x} attempt {attempt}: the resume failed: {}",
            String::from_utf8_lossy(&resumed.stderr)
        );
        assert!(
            parquet_objects(&out) == expected,
            "seed {seed:#x} attempt {attempt}: the resumed output differs"
        );
        let left = incomplete_uploads(&endpoint, &bucket);
        assert!(
            left.is_empty(),
            "seed {seed:#x} attempt {attempt}: uploads left: {left:?}; the resume said:\n{}",
            String::from_utf8_lossy(&resumed.stderr)
        );
    }
    eprintln!("seed {seed:#x}: {kills} of 12 runs killed, {partly} left a partly published table");
    assert!(kills >= 6, "most attempts must be killed mid-run ({kills} of 12)");
}

#[test]
fn a_wrong_key_and_a_denied_prefix_fail_at_once_naming_the_url_and_not_the_key() {
    let Some(endpoint) = s3_endpoint() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bucket = bucket(&endpoint, "denied");
    upload(&s3(&endpoint, &format!("s3://{bucket}/lake")), &sample("customers"));
    // S3 answers 403 to a key it does not know, and to a prefix a policy
    // denies; neither is retried.
    let wrong_key = FaultProxy::start(&endpoint, |_, _| Fault::Denied("InvalidAccessKeyId"));
    let denied = FaultProxy::start(&endpoint, |_, line| match line.contains("/scores") {
        true => Fault::Denied("AccessDenied"),
        false => Fault::Pass,
    });
    let model = sample("model.json");
    for (proxy, output, named) in [
        (
            &wrong_key,
            dir.path().join("out").to_string_lossy().into_owned(),
            format!("s3://{bucket}/lake"),
        ),
        (
            &denied,
            format!("s3://{bucket}/scores"),
            format!("s3://{bucket}/scores"),
        ),
    ] {
        let started = std::time::Instant::now();
        let run = lakescore_s3(
            &proxy.endpoint,
            &[
                "score",
                "--model",
                model.to_str().unwrap(),
                "--input",
                &format!("s3://{bucket}/lake"),
                "--output",
                &output,
            ],
            &[],
        );
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert!(
            run.stderr.contains(&named) && run.stderr.contains("403"),
            "{}",
            run.stderr
        );
        assert!(
            !run.stderr.contains("AKIATESTKEY"),
            "the key id is named: {}",
            run.stderr
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "a 403 must not be retried for minutes"
        );
    }
}
