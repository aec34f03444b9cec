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

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/sample")
}

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
    let mut remote = Remote::parse_with(url, vec![("AWS_REGION".into(), "us-east-1".into())]).unwrap();
    remote.store = Arc::new(InMemory::new());
    remote
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
    let lake = sample().join("customers");
    for model in ["package", "xgb.ubj"] {
        let model = sample().join(model);
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
        &sample().join("customers"),
    );
    upload(
        &s3(&endpoint, &format!("s3://{bucket}/models/churn")),
        &sample().join("package"),
    );
    put(
        &s3(&endpoint, &format!("s3://{bucket}/models")),
        "xgb.ubj",
        std::fs::read(sample().join("xgb.ubj")).unwrap(),
    );
    for (model, local_model) in [("models/churn/", "package"), ("models/xgb.ubj", "xgb.ubj")] {
        let local = dir.path().join(format!("local-{local_model}"));
        score(&sample().join(local_model), &sample().join("customers"), &local, &[]).assert_ok();
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
    }
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
    let model = sample().join("model.json");
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
            sample().join("customers").to_str().unwrap(),
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
    upload(
        &s3(&endpoint, &format!("s3://{bucket}/lake")),
        &sample().join("customers"),
    );
    let local = dir.path().join("local");
    let model = sample().join("package");
    score(&model, &sample().join("customers"), &local, &[]).assert_ok();

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
    upload(
        &s3(&endpoint, &format!("s3://{bucket}/lake")),
        &sample().join("customers"),
    );
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
            sample().join("model.json").to_str().unwrap(),
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
