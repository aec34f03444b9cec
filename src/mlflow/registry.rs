//! `--model models:/NAME/VERSION`, `models:/NAME@ALIAS`, `models:/m-ID`
//! (MLflow 3's logged models) and `runs:/RUN_ID/PATH`: resolved through the REST API of the MLflow tracking
//! server `MLFLOW_TRACKING_URI` names (credentials from
//! `MLFLOW_TRACKING_TOKEN`, or `MLFLOW_TRACKING_USERNAME` and
//! `MLFLOW_TRACKING_PASSWORD`; never printed), and the model folder fetched:
//! through the server (`mlflow-artifacts:`), straight from object storage
//! (`s3://`, `gs://`, `wasbs://`…, through [`crate::store`]), or read where
//! it lies (`file:`).
//!
//! What is fetched is kept in a cache ([`cache_root`]) under a key of the
//! server, the artifact URI and every file's path and size (and ETag, on
//! object storage), with the digest of the files' bytes beside them; a later
//! run that lists the same files, and finds the same bytes there, downloads
//! nothing.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::model::RegistryModel;
use crate::observe::http::{Auth, agent, io_error};
use crate::util::sha256_hex;

/// How long one API call may take.
const API_DEADLINE: Duration = Duration::from_secs(30);
/// How long one artifact file may take to download.
const FILE_DEADLINE: Duration = Duration::from_secs(600);
/// The most of an API answer read.
const ANSWER_LIMIT: u64 = 4 << 20;
/// The path of the server's artifact API (`mlflow-artifacts:`).
const ARTIFACTS: [&str; 4] = ["api", "2.0", "mlflow-artifacts", "artifacts"];
/// The variable that moves the cache of fetched models.
pub const CACHE_VARIABLE: &str = "LAKESCORE_MODEL_CACHE";
/// The file in a cached folder that holds the digest of its files.
const DIGEST_FILE: &str = ".lakescore-digest";

/// Whether `text` is a model URI the registry resolves.
pub fn is_model_uri(text: &str) -> bool {
    text.starts_with("models:/") || text.starts_with("runs:/")
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("`{uri}` is not a model URI lakescore resolves: {problem}")]
    Uri { uri: String, problem: String },
    #[error("`{uri}` needs an MLflow tracking server: set `MLFLOW_TRACKING_URI` (http:// or https://)")]
    NoServer { uri: String },
    #[error("`{uri}`: {problem}")]
    Server { uri: String, problem: String },
    /// The server answered a request with an error.
    #[error("`{uri}`: the MLflow server `{server}` says {code}: {message}")]
    Api {
        uri: String,
        server: String,
        status: u16,
        /// MLflow's `error_code` (`RESOURCE_DOES_NOT_EXIST`), else `HTTP <status>`.
        code: String,
        message: String,
    },
    #[error(
        "`{uri}`: the MLflow server `{server}` refused the credentials (HTTP {status}); check `MLFLOW_TRACKING_TOKEN` or `MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD`"
    )]
    Unauthorized { uri: String, server: String, status: u16 },
    #[error("`{uri}`: cannot reach the MLflow server `{server}`")]
    Unreachable {
        uri: String,
        server: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{uri}`: cannot keep the model in `{}`", path.display())]
    Cache {
        uri: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{uri}`: cannot fetch `{artifacts}`: {problem}")]
    Fetch {
        uri: String,
        artifacts: String,
        problem: String,
    },
}

/// A model URI, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelUri {
    Version {
        name: String,
        version: String,
    },
    Alias {
        name: String,
        alias: String,
    },
    Run {
        run_id: String,
        path: String,
    },
    /// MLflow 3's logged model, by its id (`models:/m-…`).
    Logged {
        model_id: String,
    },
}

impl ModelUri {
    pub fn parse(uri: &str) -> Result<ModelUri, RegistryError> {
        let invalid = |problem: &str| RegistryError::Uri {
            uri: uri.to_string(),
            problem: problem.to_string(),
        };
        if let Some(rest) = uri.strip_prefix("models:/") {
            if rest.starts_with("m-") && !rest.contains(['/', '@']) {
                return Ok(ModelUri::Logged {
                    model_id: rest.to_string(),
                });
            }
            if let Some((name, alias)) = rest.split_once('@') {
                if name.is_empty() || alias.is_empty() || alias.contains('/') {
                    return Err(invalid("expected `models:/NAME@ALIAS`"));
                }
                return Ok(ModelUri::Alias {
                    name: name.into(),
                    alias: alias.into(),
                });
            }
            return match rest.rsplit_once('/') {
                Some((name, version)) if !name.is_empty() && version.parse::<u64>().is_ok() => Ok(ModelUri::Version {
                    name: name.into(),
                    version: version.into(),
                }),
                _ => Err(invalid(
                    "expected `models:/NAME/VERSION` (a version number), `models:/NAME@ALIAS` or `models:/m-ID`",
                )),
            };
        }
        if let Some(rest) = uri.strip_prefix("runs:/") {
            return match rest.split_once('/') {
                Some((run_id, path)) if !run_id.is_empty() && !path.is_empty() => Ok(ModelUri::Run {
                    run_id: run_id.into(),
                    path: path.trim_end_matches('/').into(),
                }),
                _ => Err(invalid("expected `runs:/RUN_ID/PATH`")),
            };
        }
        Err(invalid("it starts with neither `models:/` nor `runs:/`"))
    }
}

/// A model URI resolved and fetched: the local folder to open, and where it
/// came from.
#[derive(Debug)]
pub struct Fetched {
    pub folder: PathBuf,
    pub registry: RegistryModel,
    /// What the model is called: its registered name, a logged model's
    /// name, or the last part of a `runs:/` path.
    pub name: String,
}

/// The tracking server's client.
struct Server {
    base: String,
    shown: String,
    auth: Option<Auth>,
    bundle: Option<std::ffi::OsString>,
}

/// Resolves `uri` through the server `MLFLOW_TRACKING_URI` names and fetches
/// the model folder.
pub fn fetch(uri: &str) -> Result<Fetched, RegistryError> {
    let parsed = ModelUri::parse(uri)?;
    let server = Server::from_environment(uri)?;
    let mut registry = RegistryModel {
        uri: uri.to_string(),
        tracking_uri: server.shown.clone(),
        name: None,
        version: None,
        alias: None,
        run_id: None,
        artifacts: String::new(),
        digest: String::new(),
    };
    let mut name = String::new();
    let artifacts = match &parsed {
        ModelUri::Version { name, version } => {
            let found = server.model_version(uri, name, version)?;
            registry.run_id = string_at(&found, "run_id");
            registry.name = Some(name.clone());
            registry.version = Some(version.clone());
            server.download_uri(uri, name, version)?
        }
        ModelUri::Alias { name, alias } => {
            let found = server.get(
                uri,
                "registered-models/alias",
                &[("name", name.as_str()), ("alias", alias.as_str())],
            )?;
            let found = found.get("model_version").cloned().unwrap_or(Value::Null);
            let version = string_at(&found, "version").ok_or_else(|| RegistryError::Server {
                uri: uri.to_string(),
                problem: "the server's answer names no version".into(),
            })?;
            registry.run_id = string_at(&found, "run_id");
            registry.name = Some(name.clone());
            registry.alias = Some(alias.clone());
            let artifacts = server.download_uri(uri, name, &version)?;
            registry.version = Some(version);
            artifacts
        }
        ModelUri::Run { run_id, path } => {
            let run = server.get(uri, "runs/get", &[("run_id", run_id.as_str())])?;
            registry.run_id = Some(run_id.clone());
            name = path.rsplit('/').next().unwrap_or(path).to_string();
            // MLflow 3 keeps a model logged in a run (`log_model(name=…)`) as
            // a logged model of that run; MLflow 2 in the run's artifacts.
            match server.logged_model_of_run(uri, &run, run_id, path)? {
                Some(artifacts) => artifacts,
                None => {
                    let root = run
                        .pointer("/run/info/artifact_uri")
                        .and_then(Value::as_str)
                        .ok_or_else(|| RegistryError::Server {
                            uri: uri.to_string(),
                            problem: "the server's answer names no artifact location for the run".into(),
                        })?;
                    format!("{}/{path}", root.trim_end_matches('/'))
                }
            }
        }
        ModelUri::Logged { model_id } => {
            let url = server.url(&["api", "2.0", "mlflow", "logged-models", model_id], &[]);
            let found = server.call(uri, &url, None)?;
            let info = found.pointer("/model/info").cloned().unwrap_or(Value::Null);
            registry.run_id = string_at(&info, "source_run_id");
            name = string_at(&info, "name").unwrap_or_else(|| model_id.clone());
            string_at(&info, "artifact_uri").ok_or_else(|| RegistryError::Server {
                uri: uri.to_string(),
                problem: "the server's answer names no artifact location for the logged model".into(),
            })?
        }
    };
    if let Some(registered) = &registry.name {
        name = registered.clone();
    }
    // Reports, manifests and the ledger name the location without
    // credentials or a query string (a SAS token travels there).
    registry.artifacts = crate::store::shown_url(&artifacts);
    let Local { folder, digest } = server.fetch_artifacts(uri, &artifacts)?;
    registry.digest = match digest {
        Some(digest) => digest,
        None => folder_digest(&folder).map_err(|source| RegistryError::Cache {
            uri: uri.to_string(),
            path: folder.clone(),
            source,
        })?,
    };
    Ok(Fetched { folder, registry, name })
}

/// Logs `metrics` and `tags` to the MLflow run that logged `model` (its
/// registry run), through the server `MLFLOW_TRACKING_URI` names: what
/// `evaluate --log-to-mlflow` does, so that a promotion decision sits next
/// to the model. Returns the run's id.
pub fn log_to_run(
    model: &RegistryModel,
    metrics: &[(String, f64)],
    tags: &[(String, String)],
) -> Result<String, RegistryError> {
    let uri = model.uri.as_str();
    let run_id = model.run_id.clone().ok_or_else(|| RegistryError::Server {
        uri: uri.to_string(),
        problem: "the registry names no run that logged this model, so there is no run to log metrics to".into(),
    })?;
    let server = Server::from_environment(uri)?;
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let body = serde_json::json!({
        "run_id": run_id,
        "metrics": metrics
            .iter()
            .filter(|(_, value)| value.is_finite())
            .map(|(key, value)| serde_json::json!({"key": key, "value": value, "timestamp": timestamp, "step": 0}))
            .collect::<Vec<_>>(),
        "tags": tags.iter().map(|(key, value)| serde_json::json!({"key": key, "value": value})).collect::<Vec<_>>(),
    });
    server.post(uri, "runs/log-batch", &body)?;
    Ok(run_id)
}

fn string_at(value: &Value, key: &str) -> Option<String> {
    value
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

impl Server {
    fn from_environment(uri: &str) -> Result<Server, RegistryError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let base = var("MLFLOW_TRACKING_URI")
            .filter(|b| b.starts_with("http://") || b.starts_with("https://"))
            .filter(|b| url::Url::parse(b.trim()).is_ok_and(|url| url.has_host()))
            .ok_or_else(|| RegistryError::NoServer { uri: uri.to_string() })?;
        let base = base.trim().trim_end_matches('/').to_string();
        // As MLflow's own client: basic credentials when a user is given,
        // else the token.
        let auth = match (var("MLFLOW_TRACKING_USERNAME"), var("MLFLOW_TRACKING_TOKEN")) {
            (Some(user), _) => Some(Auth::Basic {
                user,
                password: var("MLFLOW_TRACKING_PASSWORD").unwrap_or_default(),
            }),
            (None, Some(token)) => Some(Auth::Bearer(token)),
            (None, None) => None,
        };
        let bundle = std::env::var_os("MLFLOW_TRACKING_SERVER_CERT_PATH")
            .or_else(|| std::env::var_os("SSL_CERT_FILE"))
            .filter(|_| base.starts_with("https://"));
        Ok(Server {
            shown: crate::observe::http::redacted(&base),
            base,
            auth,
            bundle,
        })
    }

    /// The URL of `segments` below the server's root (each encoded as one
    /// path segment), with `query` encoded.
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> String {
        let mut url = url::Url::parse(&self.base).expect("checked when the server was read");
        url.path_segments_mut()
            .expect("an http(s) URL has a path")
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url.into()
    }

    /// The URL of an API method (`model-versions/get`).
    fn api(&self, method: &str, query: &[(&str, &str)]) -> String {
        let segments: Vec<&str> = ["api", "2.0", "mlflow"].into_iter().chain(method.split('/')).collect();
        self.url(&segments, query)
    }

    /// One request: a POST of `body` as JSON, or a GET; the response, not
    /// read. A 401 or 403 is the credentials' error.
    fn send(
        &self,
        uri: &str,
        url: &str,
        body: Option<&Value>,
        limit: Duration,
    ) -> Result<ureq::http::Response<ureq::Body>, RegistryError> {
        let unreachable = |source: std::io::Error| RegistryError::Unreachable {
            uri: uri.to_string(),
            server: self.shown.clone(),
            source,
        };
        let request = ureq::http::Request::builder()
            .method(if body.is_some() { "POST" } else { "GET" })
            .uri(url)
            .header("Content-Type", "application/json");
        let request = match &self.auth {
            Some(auth) => request.header("Authorization", auth.header()),
            None => request,
        };
        let request = request
            .body(body.map(Value::to_string).unwrap_or_default().into_bytes())
            .map_err(|e| unreachable(std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())))?;
        let agent = agent(self.bundle.as_deref(), limit).map_err(unreachable)?;
        let response = agent.run(request).map_err(|e| unreachable(io_error(e)))?;
        match response.status().as_u16() {
            status @ (401 | 403) => Err(RegistryError::Unauthorized {
                uri: uri.to_string(),
                server: self.shown.clone(),
                status,
            }),
            _ => Ok(response),
        }
    }

    /// `GET` an API method as JSON.
    fn get(&self, uri: &str, method: &str, query: &[(&str, &str)]) -> Result<Value, RegistryError> {
        self.call(uri, &self.api(method, query), None)
    }

    /// `POST` a JSON body to an API method.
    fn post(&self, uri: &str, method: &str, body: &Value) -> Result<Value, RegistryError> {
        self.call(uri, &self.api(method, &[]), Some(body))
    }

    /// One API call's answer as JSON; an error answer as the server's own
    /// code and message.
    fn call(&self, uri: &str, url: &str, body: Option<&Value>) -> Result<Value, RegistryError> {
        let mut response = self.send(uri, url, body, API_DEADLINE)?;
        let status = response.status().as_u16();
        let mut text = String::new();
        response
            .body_mut()
            .as_reader()
            .take(ANSWER_LIMIT)
            .read_to_string(&mut text)
            .map_err(|source| RegistryError::Unreachable {
                uri: uri.to_string(),
                server: self.shown.clone(),
                source,
            })?;
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status == 200 {
            return Ok(answer);
        }
        Err(RegistryError::Api {
            uri: uri.to_string(),
            server: self.shown.clone(),
            status,
            code: string_at(&answer, "error_code").unwrap_or_else(|| format!("HTTP {status}")),
            message: string_at(&answer, "message").unwrap_or_else(|| crate::observe::http::shown(&text)),
        })
    }

    /// Where the model named `name` that `run` logged is, for MLflow 3's
    /// logged models (the newest, when the name was logged more than
    /// once); `None` when the server has none, or no such API (an MLflow 2
    /// server). Any other failure is the run's: falling back to the run's
    /// folder then could score another model.
    fn logged_model_of_run(
        &self,
        uri: &str,
        run: &Value,
        run_id: &str,
        name: &str,
    ) -> Result<Option<String>, RegistryError> {
        let Some(experiment) = run.pointer("/run/info/experiment_id").and_then(Value::as_str) else {
            return Ok(None);
        };
        let quoted = |text: &str| format!("'{}'", text.replace('\'', "\\'"));
        let body = serde_json::json!({
            "experiment_ids": [experiment],
            "filter": format!("source_run_id = {} AND name = {}", quoted(run_id), quoted(name)),
            "order_by": [{"field_name": "creation_timestamp", "ascending": false}],
            "max_results": 1,
        });
        match self.post(uri, "logged-models/search", &body) {
            Ok(found) => Ok(found
                .pointer("/models/0/info/artifact_uri")
                .and_then(Value::as_str)
                .map(str::to_string)),
            Err(RegistryError::Api { status: 404, .. }) => Ok(None),
            Err(RegistryError::Api { code, .. }) if code == "ENDPOINT_NOT_FOUND" => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn model_version(&self, uri: &str, name: &str, version: &str) -> Result<Value, RegistryError> {
        let found = self.get(uri, "model-versions/get", &[("name", name), ("version", version)])?;
        Ok(found.get("model_version").cloned().unwrap_or(Value::Null))
    }

    /// Where a version's files are: the server says (for MLflow 3's logged
    /// models too, whose `source` is a `models:/m-…` URI).
    fn download_uri(&self, uri: &str, name: &str, version: &str) -> Result<String, RegistryError> {
        let answer = self.get(
            uri,
            "model-versions/get-download-uri",
            &[("name", name), ("version", version)],
        )?;
        string_at(&answer, "artifact_uri").ok_or_else(|| RegistryError::Server {
            uri: uri.to_string(),
            problem: format!("the server gives no artifact location for version {version} of `{name}`"),
        })
    }

    /// The model folder at `artifacts`, on this machine: the cache's copy
    /// for the server's own artifacts and for object storage, the folder
    /// itself for a local path.
    fn fetch_artifacts(&self, uri: &str, artifacts: &str) -> Result<Local, RegistryError> {
        let failed = |problem: String| fetch_error(uri, artifacts, problem);
        if let Some(path) = artifacts.strip_prefix("mlflow-artifacts:") {
            // `mlflow-artifacts:/1/…` or `mlflow-artifacts://host/1/…`.
            let path = match path.strip_prefix("//") {
                Some(rest) => rest.split_once('/').map_or("", |(_, p)| p),
                None => path.trim_start_matches('/'),
            };
            return self.cached(uri, artifacts, path);
        }
        let uncached = |folder| Local { folder, digest: None };
        if artifacts.starts_with("file:") {
            return local_path(artifacts)
                .map(uncached)
                .ok_or_else(|| failed("not a local path".into()));
        }
        if artifacts.starts_with('/') {
            return Ok(uncached(PathBuf::from(artifacts)));
        }
        let remote = crate::store::Remote::parse(&artifacts.replacen("wasbs://", "az://", 1))
            .map_err(|e| failed(e.to_string()))?;
        let listing = crate::store::listing(&remote).map_err(|e| failed(crate::util::error_chain(&e)))?;
        cached_folder(uri, &self.base, artifacts, &listing, |staging| {
            let into = PathBuf::from(format!("{}.download", staging.display()));
            let downloaded =
                crate::store::download_model(&remote, &into).map_err(|e| failed(crate::util::error_chain(&e)))?;
            let renamed = std::fs::rename(&downloaded, staging);
            let _ = std::fs::remove_dir_all(&into);
            renamed.map_err(|source| RegistryError::Cache {
                uri: uri.to_string(),
                path: staging.to_path_buf(),
                source,
            })
        })
    }

    /// Every file below `path` in the server's artifact store, with sizes.
    /// Names are the server's: each must be a plain relative name (no `..`,
    /// `.` or empty part), as they become paths on this machine; the
    /// listing is bounded as object storage's is.
    fn list(&self, uri: &str, artifacts: &str, path: &str) -> Result<Vec<(String, u64)>, RegistryError> {
        let refused = |problem: String| fetch_error(uri, artifacts, problem);
        let mut files = Vec::new();
        let mut total = 0u64;
        let mut folders = vec![path.to_string()];
        while let Some(folder) = folders.pop() {
            let url = self.url(&ARTIFACTS, &[("path", folder.as_str())]);
            let answer = self.call(uri, &url, None)?;
            for entry in answer.get("files").and_then(Value::as_array).into_iter().flatten() {
                let Some(name) = entry.get("path").and_then(Value::as_str) else {
                    continue;
                };
                // Entries are named relative to the folder listed.
                let name = name.trim_start_matches('/');
                if name.split('/').any(|part| matches!(part, "" | "." | "..")) {
                    return Err(refused(format!(
                        "the server lists a file named `{name}`, which is not a plain relative name"
                    )));
                }
                let full = format!("{}/{name}", folder.trim_end_matches('/'));
                if entry.get("is_dir").and_then(Value::as_bool) == Some(true) {
                    folders.push(full);
                } else {
                    let size = entry.get("file_size").and_then(Value::as_u64).unwrap_or(0);
                    total += size;
                    files.push((full, size));
                }
                if files.len() + folders.len() > crate::store::MAX_MODEL_OBJECTS
                    || total > crate::store::MAX_MODEL_BYTES
                {
                    return Err(refused(format!(
                        "it holds more than {} files or {} bytes, more than a model",
                        crate::store::MAX_MODEL_OBJECTS,
                        crate::store::MAX_MODEL_BYTES
                    )));
                }
            }
        }
        files.sort();
        Ok(files)
    }

    /// The folder at `path` of the server's artifacts, from the cache when
    /// it holds the same files with the same bytes, else downloaded into it.
    fn cached(&self, uri: &str, artifacts: &str, path: &str) -> Result<Local, RegistryError> {
        let files = self.list(uri, artifacts, path)?;
        if files.is_empty() {
            return Err(fetch_error(uri, artifacts, "the server lists no files there".into()));
        }
        let listing: String = files.iter().map(|(p, size)| format!("{p} {size}\n")).collect();
        cached_folder(uri, &self.base, artifacts, &listing, |staging| {
            for (file, size) in &files {
                let relative = file.strip_prefix(path).unwrap_or(file).trim_start_matches('/');
                self.download(uri, artifacts, file, relative, *size, &staging.join(relative))?;
            }
            Ok(())
        })
    }

    /// One file of the server's artifacts, of `size` bytes, to `target`.
    fn download(
        &self,
        uri: &str,
        artifacts: &str,
        file: &str,
        relative: &str,
        size: u64,
        target: &Path,
    ) -> Result<(), RegistryError> {
        let cache_error = |path: &Path, source| RegistryError::Cache {
            uri: uri.to_string(),
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| cache_error(parent, e))?;
        }
        let segments: Vec<&str> = ARTIFACTS.into_iter().chain(file.split('/')).collect();
        let mut response = self.send(uri, &self.url(&segments, &[]), None, FILE_DEADLINE)?;
        if response.status().as_u16() != 200 {
            return Err(fetch_error(
                uri,
                artifacts,
                format!("GET `{relative}` answered HTTP {}", response.status().as_u16()),
            ));
        }
        let mut out = std::fs::File::create(target).map_err(|e| cache_error(target, e))?;
        let written =
            std::io::copy(&mut response.body_mut().as_reader().take(size + 1), &mut out).map_err(|source| {
                RegistryError::Unreachable {
                    uri: uri.to_string(),
                    server: self.shown.clone(),
                    source,
                }
            })?;
        // A body cut short (or longer than listed) is never cached.
        if written != size {
            return Err(fetch_error(
                uri,
                artifacts,
                format!("GET `{relative}` gave {written} bytes where the listing says {size}"),
            ));
        }
        Ok(())
    }
}

/// A model folder on this machine, and its digest where the cache already
/// computed it.
struct Local {
    folder: PathBuf,
    digest: Option<String>,
}

/// A failed fetch of the model at `artifacts`, named without credentials
/// or query (a SAS token travels there).
fn fetch_error(uri: &str, artifacts: &str, problem: String) -> RegistryError {
    RegistryError::Fetch {
        uri: uri.to_string(),
        artifacts: crate::store::shown_url(artifacts),
        problem,
    }
}

/// The cached copy of the model folder at `artifacts` whose files `listing`
/// describes: the cache's, when its files still have the digest recorded
/// beside them; else filled by `fill` into a staging folder, its digest
/// recorded, and moved into place.
fn cached_folder(
    uri: &str,
    server: &str,
    artifacts: &str,
    listing: &str,
    fill: impl FnOnce(&Path) -> Result<(), RegistryError>,
) -> Result<Local, RegistryError> {
    let key = sha256_hex(format!("{server}\n{artifacts}\n{listing}").as_bytes());
    let root = cache_root();
    let folder = root.join(&key);
    let cache_error = |path: &Path, source| RegistryError::Cache {
        uri: uri.to_string(),
        path: path.to_path_buf(),
        source,
    };
    // The root is checked before a hit is trusted: under the shared
    // temporary folder, another user could have planted one.
    ready_root(&root).map_err(|e| cache_error(&root, e))?;
    if let Ok(recorded) = std::fs::read_to_string(folder.join(DIGEST_FILE))
        && folder_digest(&folder).is_ok_and(|digest| digest == recorded.trim())
    {
        tracing::info!(model = uri, cache = %folder.display(), "the model's files are in the cache");
        let digest = recorded.trim().to_string();
        return Ok(Local {
            folder,
            digest: Some(digest),
        });
    }
    let staging = root.join(format!(".{key}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    if let Err(error) = fill(&staging) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(error);
    }
    let digest = folder_digest(&staging).map_err(|e| cache_error(&staging, e))?;
    std::fs::write(staging.join(DIGEST_FILE), &digest).map_err(|e| cache_error(&staging, e))?;
    // A folder another run may be loading is never removed in place: a
    // stale or broken one is renamed aside first.
    if folder.exists() {
        let aside = root.join(format!(".{key}.{}.old", std::process::id()));
        let _ = std::fs::rename(&folder, &aside);
        let _ = std::fs::remove_dir_all(&aside);
    }
    if let Err(error) = std::fs::rename(&staging, &folder) {
        // Another run put the same files there first.
        let _ = std::fs::remove_dir_all(&staging);
        if !folder.join(DIGEST_FILE).exists() {
            return Err(cache_error(&folder, error));
        }
    }
    tracing::info!(model = uri, cache = %folder.display(), "fetched the model");
    Ok(Local {
        folder,
        digest: Some(digest),
    })
}

/// The path a `file:` URI names; MLflow writes a local artifact path as a
/// URI (`%20` for a space).
fn local_path(artifacts: &str) -> Option<PathBuf> {
    url::Url::parse(artifacts).ok()?.to_file_path().ok()
}

/// Where fetched models are kept: `LAKESCORE_MODEL_CACHE`, else
/// `$XDG_CACHE_HOME/lakescore/models`, else `~/.cache/lakescore/models`;
/// without a home, a folder of this user's own under the temporary folder
/// (made private, and refused if another user owns it).
pub fn cache_root() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    var(CACHE_VARIABLE)
        .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("lakescore").join("models")))
        .or_else(|| var("HOME").map(|h| h.join(".cache").join("lakescore").join("models")))
        .unwrap_or_else(|| std::env::temp_dir().join(format!("lakescore-models-{}", this_user())))
}

/// This process's effective user id.
fn this_user() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// Creates the cache root; one under the shared temporary folder must be
/// this user's and private, or another user could plant a model in it.
fn ready_root(root: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(root)?;
    if root.starts_with(std::env::temp_dir()) {
        let metadata = std::fs::metadata(root)?;
        if metadata.uid() != this_user() || metadata.mode() & 0o077 != 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "the model cache under the temporary folder is not this user's own private folder; set LAKESCORE_MODEL_CACHE",
            ));
        }
    }
    Ok(())
}

/// SHA-256 over every file below `folder` (its path, then its bytes), in
/// path order; the cache's own digest file left out.
fn folder_digest(folder: &Path) -> std::io::Result<String> {
    let mut files = Vec::new();
    let mut folders = vec![folder.to_path_buf()];
    while let Some(dir) = folders.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                folders.push(entry.path());
            } else if entry.file_name() != DIGEST_FILE {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    let mut all = Vec::new();
    for file in files {
        let relative = file.strip_prefix(folder).unwrap_or(&file);
        all.extend_from_slice(relative.to_string_lossy().as_bytes());
        all.push(0);
        all.extend_from_slice(sha256_hex(&std::fs::read(&file)?).as_bytes());
        all.push(b'\n');
    }
    Ok(sha256_hex(&all))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_uris_parse() {
        assert_eq!(
            ModelUri::parse("models:/churn/7").unwrap(),
            ModelUri::Version {
                name: "churn".into(),
                version: "7".into()
            }
        );
        assert_eq!(
            ModelUri::parse("models:/churn@champion").unwrap(),
            ModelUri::Alias {
                name: "churn".into(),
                alias: "champion".into()
            }
        );
        assert_eq!(
            ModelUri::parse("runs:/abc123/model/").unwrap(),
            ModelUri::Run {
                run_id: "abc123".into(),
                path: "model".into()
            }
        );
        for bad in [
            "models:/churn",
            "models:/churn/latest",
            "models:/@x",
            "runs:/abc",
            "model:/x/1",
        ] {
            let error = ModelUri::parse(bad).unwrap_err().to_string();
            assert!(error.contains(bad), "{error}");
        }
    }

    #[test]
    fn file_uris_are_decoded() {
        assert_eq!(
            local_path("file:///tmp/my%20models/m%2Fx"),
            Some(PathBuf::from("/tmp/my models/m/x"))
        );
    }

    #[test]
    fn names_and_queries_are_encoded() {
        let server = Server {
            base: "http://mlflow:5000/".into(),
            shown: String::new(),
            auth: None,
            bundle: None,
        };
        assert_eq!(
            server.api("model-versions/get", &[("name", "churn model/v2"), ("alias", "a&b")]),
            "http://mlflow:5000/api/2.0/mlflow/model-versions/get?name=churn+model%2Fv2&alias=a%26b"
        );
        assert_eq!(
            server.url(&["api", "2.0", "mlflow", "logged-models", "m-1/../x"], &[]),
            "http://mlflow:5000/api/2.0/mlflow/logged-models/m-1%2F..%2Fx"
        );
    }
}
