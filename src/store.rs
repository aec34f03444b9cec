//! Object storage: what `s3://`, `az://` (and `abfs[s]://`, `azure://`) and
//! `gs://` URLs name, reached through the `object_store` crate (the version
//! parquet 60 is built against) and configured as that crate configures
//! itself: credentials, regions and endpoints from the environment
//! (`AWS_*`, `AZURE_*`, `GOOGLE_*`; `AWS_ENDPOINT_URL` and `AWS_ALLOW_HTTP`
//! for a local server), its retries with backoff on throttling and 5xx, its
//! timeouts. Credentials are never logged or written anywhere: messages
//! carry the object's URL with any query string (a SAS token) cut off.
//!
//! `object_store` is asynchronous; lakescore's workers are rayon threads. One
//! small Tokio runtime per process runs the requests, and a worker blocks on
//! its own (or starts one to collect later, see [`Fetch`]).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use object_store::ObjectStore;
use object_store::multipart::MultipartStore;
use object_store::path::Path as ObjectPath;
use url::Url;

/// The schemes lakescore reads and writes.
const SCHEMES: &[&str] = &["s3", "s3a", "az", "adl", "azure", "abfs", "abfss", "gs"];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("`{text}` is not an object-storage URL: {problem}")]
    Url { text: String, problem: String },
    #[error("cannot reach `{url}`: {message}")]
    Configure { url: String, message: String },
    #[error("{operation} `{url}` failed: {message}")]
    Request {
        operation: &'static str,
        url: String,
        message: String,
    },
    #[error("`{url}` does not exist")]
    NotFound { url: String },
    #[error("`{url}` is larger than the {limit} bytes accepted for {what}")]
    TooLarge {
        url: String,
        what: &'static str,
        limit: u64,
    },
    #[error("cannot write `{}`", path.display())]
    Local {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Whether `text` names a location on object storage (rather than a local
/// path): `s3`, `s3a`, `az`, `adl`, `azure`, `abfs`, `abfss` or `gs`,
/// followed by `://`.
pub fn is_remote(text: &str) -> bool {
    text.split_once("://")
        .is_some_and(|(scheme, _)| SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()))
}

/// A location on object storage: the store that holds it and the path in it.
#[derive(Clone)]
pub struct Remote {
    /// The URL as given, less any query string or user info: what messages,
    /// reports and lineage name.
    pub url: String,
    pub store: Arc<dyn ObjectStore>,
    /// The same store, for multipart uploads with explicit ids (an output's
    /// files, completed only when the run commits).
    pub multipart: Arc<dyn MultipartStore>,
    /// The location's path in the store, without a trailing `/`.
    pub path: ObjectPath,
    /// Counts of what this location's reads cost.
    pub counters: Arc<IoCounters>,
    /// On S3, what lists incomplete multipart uploads.
    pub(crate) s3_uploads: Option<Arc<S3Uploads>>,
}

/// The URL only: a store's own `Debug` shows its configuration, secrets
/// included.
impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &self.url).finish_non_exhaustive()
    }
}

impl Remote {
    /// Parses `text` and builds its store from the environment. No request
    /// is made: a wrong credential or a missing bucket shows at the first
    /// read, naming the URL.
    pub fn parse(text: &str) -> Result<Remote, StoreError> {
        Remote::parse_with(text, std::env::vars())
    }

    /// [`Remote::parse`] with the settings in `environment` instead of the
    /// process's variables.
    pub fn parse_with(
        text: &str,
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Remote, StoreError> {
        let bad = |problem: String| StoreError::Url {
            text: shown_url(text),
            problem,
        };
        let url = Url::parse(text).map_err(|error| bad(error.to_string()))?;
        if !url.username().is_empty() && url.scheme() != "abfs" && url.scheme() != "abfss" || url.password().is_some() {
            return Err(bad(
                "credentials belong in the environment (AWS_*, AZURE_*, GOOGLE_*), not in the URL".into(),
            ));
        }
        if url.query().is_some() {
            return Err(bad(
                "a query string is not part of an object's name; give tokens in the environment".into(),
            ));
        }
        let scheme = url.scheme().to_ascii_lowercase();
        if !SCHEMES.contains(&scheme.as_str()) {
            return Err(bad(format!("the scheme `{scheme}` is none of {}", SCHEMES.join(", "))));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("it names no bucket or container".into()));
        }
        let shown = shown_url(text);
        let configure = |error: object_store::Error| StoreError::Configure {
            url: shown.clone(),
            message: message_of(&error),
        };
        // (Before the store: its HTTP client is made with it.)
        install_crypto_provider();
        let ((store, multipart, s3_uploads), path) = store_for(&url, environment).map_err(configure)?;
        Ok(Remote {
            url: shown.trim_end_matches('/').to_string(),
            store,
            multipart,
            path,
            counters: Arc::new(IoCounters::default()),
            s3_uploads,
        })
    }

    /// This location in another store (an in-memory one, in tests).
    pub fn over<S: ObjectStore + MultipartStore>(mut self, store: Arc<S>) -> Remote {
        self.store = Arc::clone(&store) as Arc<dyn ObjectStore>;
        self.multipart = store;
        self.s3_uploads = None;
        self
    }

    /// The URL of `path`, a path in this location's store.
    pub fn url_of(&self, path: &ObjectPath) -> String {
        let root = self.url_root();
        format!("{root}/{path}")
    }

    /// The URL up to the bucket or container (`s3://bucket`).
    pub fn url_root(&self) -> String {
        let prefix = self.path.as_ref();
        match prefix.is_empty() {
            true => self.url.clone(),
            false => self.url[..self.url.len() - prefix.len() - 1].to_string(),
        }
    }

    /// The location `relative` (a `/`-separated path) below this one.
    pub fn join(&self, relative: &str) -> Remote {
        let mut path = self.path.clone();
        for part in relative.split('/').filter(|p| !p.is_empty()) {
            path = path.clone().join(part);
        }
        Remote {
            url: format!("{}/{}", self.url, relative.trim_matches('/')),
            store: Arc::clone(&self.store),
            multipart: Arc::clone(&self.multipart),
            path,
            counters: Arc::clone(&self.counters),
            s3_uploads: self.s3_uploads.clone(),
        }
    }
}

/// How often a failed request is tried again (throttling, 5xx, a dropped
/// connection), at most; object_store's default when unset.
pub const RETRIES_VARIABLE: &str = "LAKESCORE_STORE_RETRIES";
/// For how many seconds a request is tried again, at most.
pub const RETRY_SECONDS_VARIABLE: &str = "LAKESCORE_STORE_RETRY_SECONDS";

/// object_store's retry policy, with lakescore's two settings applied.
fn retry_config(settings: &[(String, String)]) -> Result<object_store::RetryConfig, object_store::Error> {
    let mut retry = object_store::RetryConfig::default();
    for (key, value) in settings {
        let number = || {
            value.trim().parse::<u64>().map_err(|_| object_store::Error::Generic {
                store: "settings",
                source: format!("`{key}` must be a whole number, not `{value}`").into(),
            })
        };
        match key.as_str() {
            RETRIES_VARIABLE => retry.max_retries = number()? as usize,
            RETRY_SECONDS_VARIABLE => retry.retry_timeout = std::time::Duration::from_secs(number()?),
            _ => {}
        }
    }
    Ok(retry)
}

/// A store as `object_store` reads and writes it, as it uploads in parts,
/// and on S3, as lakescore lists its incomplete uploads.
type Stores = (Arc<dyn ObjectStore>, Arc<dyn MultipartStore>, Option<Arc<S3Uploads>>);

/// The store for `url`, from the settings of `environment` in its
/// provider's prefix, and the path it names.
fn store_for(
    url: &Url,
    environment: impl IntoIterator<Item = (String, String)>,
) -> Result<(Stores, ObjectPath), object_store::Error> {
    use object_store::ObjectStoreScheme;
    use object_store::aws::AmazonS3Builder;
    use object_store::azure::MicrosoftAzureBuilder;
    use object_store::gcp::GoogleCloudStorageBuilder;

    let (scheme, path) = ObjectStoreScheme::parse(url)?;
    let path = ObjectPath::parse(path.as_ref().trim_end_matches('/'))?;
    let settings: Vec<(String, String)> = environment.into_iter().collect();
    let retry = retry_config(&settings)?;
    // The settings in a provider's prefix that its builder knows, as its
    // configuration keys (`AWS_REGION` -> `aws_region`); others are ignored,
    // as the builders' own `from_env` ignores them.
    fn keys_of<K: std::str::FromStr>(settings: &[(String, String)], prefix: &str) -> Vec<(K, String)> {
        settings
            .iter()
            .filter(|(key, _)| key.starts_with(prefix))
            .filter_map(|(key, value)| Some((key.to_ascii_lowercase().parse().ok()?, value.clone())))
            .collect()
    }
    fn both<S: ObjectStore + MultipartStore>(store: S) -> Stores {
        let store = Arc::new(store);
        (Arc::clone(&store) as Arc<dyn ObjectStore>, store, None)
    }
    let stores = match scheme {
        ObjectStoreScheme::AmazonS3 => {
            let builder = keys_of(&settings, "AWS_")
                .into_iter()
                .fold(AmazonS3Builder::new().with_retry(retry.clone()), |b, (key, value)| {
                    b.with_config(key, value)
                });
            let builder = builder.with_url(url.as_str());
            let s3 = Arc::new(builder.clone().build()?);
            let uploads = Some(S3Uploads::new(Arc::clone(&s3), &builder));
            (
                Arc::clone(&s3) as Arc<dyn ObjectStore>,
                s3 as Arc<dyn MultipartStore>,
                uploads,
            )
        }
        ObjectStoreScheme::MicrosoftAzure => {
            let builder = keys_of(&settings, "AZURE_").into_iter().fold(
                MicrosoftAzureBuilder::new().with_retry(retry.clone()),
                |b, (key, value)| b.with_config(key, value),
            );
            both(builder.with_url(url.as_str()).build()?)
        }
        ObjectStoreScheme::GoogleCloudStorage => {
            let builder = keys_of(&settings, "GOOGLE_").into_iter().fold(
                GoogleCloudStorageBuilder::new().with_retry(retry.clone()),
                |b, (key, value)| b.with_config(key, value),
            );
            both(builder.with_url(url.as_str()).build()?)
        }
        other => {
            return Err(object_store::Error::NotSupported {
                source: format!("{other:?} URLs are not object storage lakescore reads").into(),
            });
        }
    };
    Ok((stores, path))
}

/// Lists the incomplete multipart uploads below a prefix of an S3 bucket
/// (`ListMultipartUploads`, which object_store does not make), so that a run
/// can abort those a dead run began but had not yet recorded.
pub(crate) struct S3Uploads {
    s3: Arc<object_store::aws::AmazonS3>,
    region: String,
}

impl S3Uploads {
    fn new(s3: Arc<object_store::aws::AmazonS3>, builder: &object_store::aws::AmazonS3Builder) -> Arc<S3Uploads> {
        use object_store::aws::AmazonS3ConfigKey as Key;
        let region = builder
            .get_config_value(&Key::Region)
            .unwrap_or_else(|| "us-east-1".into());
        Arc::new(S3Uploads { s3, region })
    }

    /// The bucket's URL as object_store's requests address it (endpoint,
    /// path or virtual-hosted style, bucket): taken from a URL it signs,
    /// since the builder knows the bucket only once it has parsed the URL
    /// it was given, in `build`.
    async fn bucket_url(&self) -> Result<String, object_store::Error> {
        use object_store::signer::Signer;
        const PROBE: &str = "lakescore-bucket-probe";
        let mut url = self
            .s3
            .signed_url(
                http::Method::GET,
                &ObjectPath::from(PROBE),
                std::time::Duration::from_secs(60),
            )
            .await?;
        url.set_query(None);
        let url = url.as_str();
        Ok(url.strip_suffix(PROBE).unwrap_or(url).trim_end_matches('/').to_string())
    }

    /// Every incomplete upload whose key starts with `prefix`: key and
    /// upload id.
    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<(String, String)>, object_store::Error> {
        let failed = |message: String| object_store::Error::Generic {
            store: "S3",
            source: message.into(),
        };
        let bucket_url = self.bucket_url().await?;
        let client = reqwest::Client::new();
        let mut found = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut query = format!("uploads=&prefix={}", encode_query(prefix));
            if let Some((key, id)) = &markers {
                query.push_str(&format!(
                    "&key-marker={}&upload-id-marker={}",
                    encode_query(key),
                    encode_query(id)
                ));
            }
            let credential = self.s3.credentials().get_credential().await?;
            let mut request = http::Request::builder()
                .method(http::Method::GET)
                .uri(format!("{bucket_url}/?{query}"))
                .body(object_store::client::HttpRequestBody::from(Vec::<u8>::new()))
                .map_err(|error| failed(error.to_string()))?;
            object_store::aws::AwsAuthorizer::new(&credential, "s3", &self.region).try_authorize(&mut request, None)?;
            let response = client
                .request(request.method().clone(), request.uri().to_string())
                .headers(request.headers().clone())
                .send()
                .await
                .map_err(|error| failed(error.to_string()))?;
            let status = response.status();
            let text = response.text().await.map_err(|error| failed(error.to_string()))?;
            if !status.is_success() {
                return Err(failed(format!("ListMultipartUploads answered {status}: {text}")));
            }
            for upload in text.split("<Upload>").skip(1) {
                if let (Some(key), Some(id)) = (xml_field(upload, "Key"), xml_field(upload, "UploadId")) {
                    found.push((key, id));
                }
            }
            match xml_field(&text, "IsTruncated").as_deref() {
                Some("true") => {
                    let next = (
                        xml_field(&text, "NextKeyMarker"),
                        xml_field(&text, "NextUploadIdMarker"),
                    );
                    match next {
                        (Some(key), Some(id)) => markers = Some((key, id)),
                        _ => break,
                    }
                }
                _ => break,
            }
        }
        Ok(found)
    }
}

/// The text of the first `<name>…</name>` in `xml`, unescaped.
fn xml_field(xml: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(
        xml[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

/// `text` as a query-string value (RFC 3986 unreserved characters kept).
fn encode_query(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(byte as char),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// `key` relative to `prefix` (`a/b` below `lake`), when it lies strictly
/// below it.
pub fn relative_key(prefix: &ObjectPath, key: &ObjectPath) -> Option<String> {
    let parts: Vec<String> = key
        .prefix_match(prefix)?
        .map(|part| part.as_ref().to_string())
        .collect();
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// `text` as messages show it: without user info or query string.
pub fn shown_url(text: &str) -> String {
    let without_query = text.split(['?', '#']).next().unwrap_or(text);
    let Some((scheme, rest)) = without_query.split_once("://") else {
        return without_query.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        // `abfss://container@account…` names a container, not a user.
        Some(_)
            if (scheme.starts_with("abfs") || scheme.starts_with("wasb")) && !rest[..authority_end].contains(':') =>
        {
            without_query.to_string()
        }
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => without_query.to_string(),
    }
}

/// An `object_store` error as a message: the error's chain, with every URL's
/// query string cut (a SAS token or signature travels there) and on one line.
pub fn message_of(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    let joined = parts.join(": ").replace('\n', " ");
    redact_urls(&joined)
}

/// `text` with the query string of every `http(s)://` URL in it replaced by
/// `?…`.
fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("http") {
        let (before, from) = rest.split_at(start);
        out.push_str(before);
        let is_url = from.starts_with("http://") || from.starts_with("https://");
        let end = from
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ')' | '>' | ','))
            .unwrap_or(from.len());
        let (url, after) = from.split_at(end);
        match (is_url, url.split_once('?')) {
            (true, Some((base, _))) => {
                out.push_str(base);
                out.push_str("?…");
            }
            _ => out.push_str(url),
        }
        rest = after;
        if end == 0 {
            // "http" at a word's end: move past it.
            out.push_str(&rest[..4.min(rest.len())]);
            rest = &rest[4.min(rest.len())..];
        }
    }
    out.push_str(rest);
    out
}

/// How many requests a location's reads made and how many bytes they
/// fetched: the report's and metrics' `requests` and `bytes_read`.
#[derive(Debug, Default)]
pub struct IoCounters {
    requests: AtomicU64,
    bytes: AtomicU64,
}

impl IoCounters {
    pub fn add(&self, requests: u64, bytes: u64) {
        self.requests.fetch_add(requests, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// Writes `bytes` as the object `url` names, whole: a put is atomic, so a
/// reader sees the old object or the new one. (Reports, pages, metrics and
/// policies given as URLs.)
pub fn write_object(url: &str, bytes: &[u8]) -> Result<(), StoreError> {
    use object_store::ObjectStoreExt;
    let remote = Remote::parse(url)?;
    let (store, path) = (Arc::clone(&remote.store), remote.path.clone());
    let payload = object_store::PutPayload::from(bytes.to_vec());
    block_on(async move { store.put(&path, payload).await })
        .map(|_| ())
        .map_err(|error| StoreError::Request {
            operation: "PUT",
            url: remote.url.clone(),
            message: message_of(&error),
        })
}

/// The bytes of the object `url` names, refused past `limit` bytes.
pub fn read_object(url: &str, limit: u64, what: &'static str) -> Result<Vec<u8>, StoreError> {
    use object_store::ObjectStoreExt;
    let remote = Remote::parse(url)?;
    let (store, path) = (Arc::clone(&remote.store), remote.path.clone());
    let got = block_on(async move {
        let got = store.get(&path).await?;
        match got.meta.size > limit {
            true => Ok(None),
            false => got.bytes().await.map(Some),
        }
    });
    match got {
        Ok(Some(bytes)) => Ok(bytes.to_vec()),
        Ok(None) => Err(StoreError::TooLarge {
            url: remote.url.clone(),
            what,
            limit,
        }),
        Err(object_store::Error::NotFound { .. }) => Err(StoreError::NotFound {
            url: remote.url.clone(),
        }),
        Err(error) => Err(StoreError::Request {
            operation: "GET",
            url: remote.url.clone(),
            message: message_of(&error),
        }),
    }
}

/// The most a model (one object, or a package's objects together) may
/// weigh when fetched from object storage.
pub const MAX_MODEL_BYTES: u64 = 4 << 30;
/// The most objects a package fetched from object storage may hold.
pub const MAX_MODEL_OBJECTS: usize = 1000;

/// The objects below `remote` (a model folder), one line each: key relative
/// to it, size and ETag, in key order; what a cache of models keys on, so
/// that changed objects are fetched again.
pub fn listing(remote: &Remote) -> Result<String, StoreError> {
    use futures_util::TryStreamExt;
    block_on(async {
        let mut listed: Vec<object_store::ObjectMeta> = remote
            .store
            .list(Some(&remote.path))
            .try_collect()
            .await
            .map_err(|error| match error {
                object_store::Error::NotFound { .. } => StoreError::NotFound {
                    url: remote.url.clone(),
                },
                other => StoreError::Request {
                    operation: "LIST",
                    url: remote.url.clone(),
                    message: message_of(&other),
                },
            })?;
        if listed.is_empty() {
            return Err(StoreError::NotFound {
                url: remote.url.clone(),
            });
        }
        listed.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(listed
            .iter()
            .map(|meta| {
                let key = relative_key(&remote.path, &meta.location).unwrap_or_default();
                format!("{key} {} {}\n", meta.size, meta.e_tag.as_deref().unwrap_or("-"))
            })
            .collect())
    })
}

/// Fetches the model or package at `remote` into a new folder under
/// `into`: one object keeps its file name; a prefix (a package folder) keeps
/// its layout. Returns the local path to load. Objects are fetched pinned to
/// the ETag listed, so a package replaced mid-fetch fails rather than mix
/// two versions.
pub fn download_model(remote: &Remote, into: &std::path::Path) -> Result<std::path::PathBuf, StoreError> {
    use futures_util::TryStreamExt;
    use object_store::{GetOptions, ObjectStoreExt};

    let failed = |operation, error: object_store::Error| match error {
        object_store::Error::NotFound { .. } => StoreError::NotFound {
            url: remote.url.clone(),
        },
        other => StoreError::Request {
            operation,
            url: remote.url.clone(),
            message: message_of(&other),
        },
    };
    let local = |path: &std::path::Path, source| StoreError::Local {
        path: path.to_path_buf(),
        source,
    };
    block_on(async {
        let (objects, single) = match remote.store.head(&remote.path).await {
            Ok(meta) => (vec![meta], true),
            Err(object_store::Error::NotFound { .. }) => {
                let listed: Vec<object_store::ObjectMeta> = remote
                    .store
                    .list(Some(&remote.path))
                    .try_collect()
                    .await
                    .map_err(|error| failed("LIST", error))?;
                if listed.is_empty() {
                    return Err(StoreError::NotFound {
                        url: remote.url.clone(),
                    });
                }
                (listed, false)
            }
            Err(other) => return Err(failed("HEAD", other)),
        };
        let total: u64 = objects.iter().map(|meta| meta.size).sum();
        if total > MAX_MODEL_BYTES || objects.len() > MAX_MODEL_OBJECTS {
            return Err(StoreError::TooLarge {
                url: remote.url.clone(),
                what: "a model",
                limit: MAX_MODEL_BYTES,
            });
        }
        std::fs::create_dir_all(into).map_err(|source| local(into, source))?;
        let folder = tempfile_folder(into).map_err(|source| local(into, source))?;
        for meta in &objects {
            let relative = match single {
                true => meta.location.filename().unwrap_or("model").to_string(),
                false => relative_key(&remote.path, &meta.location).unwrap_or_default(),
            };
            if relative.is_empty() || relative.split('/').any(|part| part == ".." || part == ".") {
                continue;
            }
            let target = folder.join(&relative);
            let options = GetOptions::default().with_if_match(meta.e_tag.clone());
            let bytes = async { remote.store.get_opts(&meta.location, options).await?.bytes().await }
                .await
                .map_err(|error| failed("GET", error))?;
            remote.counters.add(1, bytes.len() as u64);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|source| local(parent, source))?;
            }
            std::fs::write(&target, &bytes).map_err(|source| local(&target, source))?;
        }
        Ok(match single {
            true => folder.join(remote.path.filename().unwrap_or("model")),
            false => folder,
        })
    })
}

/// A new, empty folder under `parent` named for this process.
fn tempfile_folder(parent: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    for attempt in 0..1000u32 {
        let folder = parent.join(format!("model-{}-{attempt}", std::process::id()));
        match std::fs::create_dir(&folder) {
            Ok(()) => return Ok(folder),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(error),
        }
    }
    Err(std::io::Error::other("no free folder name"))
}

/// The runtime object storage requests run on: a few threads (requests wait
/// on the network, not the CPU), made on first use.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("lakescore-io")
            .enable_all()
            .build()
            .expect("the I/O runtime starts")
    })
}

/// Whether any object lies below `relative` in `remote` (one LIST request,
/// its first page: a folder's presence, on a store without folders).
pub fn any_object_below(remote: &Remote, relative: &str) -> Result<bool, object_store::Error> {
    use futures_util::StreamExt;
    let (store, prefix) = (Arc::clone(&remote.store), remote.join(relative).path);
    block_on(async move { store.list(Some(&prefix)).next().await })
        .transpose()
        .map(|first| first.is_some())
}

/// The I/O runtime's handle, for a library that runs its own tasks on a
/// multi-threaded runtime (delta_kernel's checkpoint writer).
#[cfg_attr(not(feature = "delta"), allow(dead_code))]
pub(crate) fn io_handle() -> tokio::runtime::Handle {
    runtime().handle().clone()
}

/// Runs `future` to completion on the I/O runtime, from a thread that is not
/// one of its own (a rayon worker, the main thread).
pub fn block_on<F: Future>(future: F) -> F::Output {
    runtime().block_on(future)
}

/// A request started now and collected later (a row group fetched ahead of
/// the worker that will decode it).
#[derive(Debug)]
pub struct Fetch<T>(tokio::task::JoinHandle<T>);

impl<T: Send + 'static> Fetch<T> {
    pub fn start(future: impl Future<Output = T> + Send + 'static) -> Fetch<T> {
        Fetch(runtime().spawn(future))
    }

    /// Waits for the request's result.
    pub fn wait(self) -> T {
        runtime().block_on(async move { self.0.await.expect("an I/O task does not panic") })
    }
}

/// rustls needs one crypto provider for the process; object storage's
/// client uses ring's, as the HTTP observers do.
fn install_crypto_provider() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        // An embedding program may have installed one already: keep it.
        // (ring has no post-quantum key exchange, hence the deprecation;
        // aws-lc-rs has, at the price of a C build lakescore avoids.)
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_environment() -> Vec<(String, String)> {
        vec![("AWS_REGION".into(), "us-east-1".into())]
    }

    #[test]
    fn incomplete_uploads_are_listed_at_the_bucket_object_store_addresses() {
        let bucket_url = |url: &str, extra: &[(&str, &str)]| {
            let mut settings = no_environment();
            settings.push(("AWS_ACCESS_KEY_ID".into(), "key".into()));
            settings.push(("AWS_SECRET_ACCESS_KEY".into(), "secret".into()));
            settings.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            let remote = Remote::parse_with(url, settings).unwrap();
            let uploads = remote.s3_uploads.clone().expect("S3 lists its uploads");
            block_on(async move { uploads.bucket_url().await }).unwrap()
        };
        assert_eq!(
            bucket_url("s3://lake/customers", &[]),
            "https://s3.us-east-1.amazonaws.com/lake"
        );
        assert_eq!(
            bucket_url("s3a://lake/customers", &[("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "true")]),
            "https://lake.s3.us-east-1.amazonaws.com"
        );
        assert_eq!(
            bucket_url(
                "s3://lake/customers",
                &[
                    ("AWS_ENDPOINT_URL", "http://127.0.0.1:5055/"),
                    ("AWS_ALLOW_HTTP", "true")
                ]
            ),
            "http://127.0.0.1:5055/lake"
        );
        let azure = Remote::parse_with(
            "az://container/lake",
            vec![("AZURE_STORAGE_ACCOUNT_NAME".into(), "account".into())],
        );
        assert!(azure.is_ok_and(|remote| remote.s3_uploads.is_none()));
    }

    #[test]
    fn urls_of_each_provider_parse_and_others_do_not() {
        assert!(is_remote("s3://bucket/lake/"));
        assert!(is_remote("gs://bucket/lake"));
        assert!(is_remote("az://container/lake"));
        assert!(is_remote("abfss://container@account.dfs.core.windows.net/lake"));
        assert!(!is_remote("/data/lake"));
        assert!(!is_remote("lake/s3://x"));
        assert!(!is_remote("http://host/lake"));

        let s3 = Remote::parse_with("s3://bucket/lake/customers/", no_environment()).unwrap();
        assert_eq!(s3.url, "s3://bucket/lake/customers");
        assert_eq!(s3.path.as_ref(), "lake/customers");
        assert_eq!(s3.url_root(), "s3://bucket");
        assert_eq!(
            s3.join("dt=1/part-0.parquet").url,
            "s3://bucket/lake/customers/dt=1/part-0.parquet"
        );
        assert_eq!(
            s3.join("dt=1/part-0.parquet").path.as_ref(),
            "lake/customers/dt=1/part-0.parquet"
        );
        let root = Remote::parse_with("s3://bucket", no_environment()).unwrap();
        assert_eq!(root.path.as_ref(), "");
        assert_eq!(root.url_root(), "s3://bucket");

        let gcs = Remote::parse_with("gs://bucket/lake", Vec::new()).unwrap();
        assert_eq!(gcs.path.as_ref(), "lake");
        let azure = Remote::parse_with(
            "az://container/lake",
            vec![("AZURE_STORAGE_ACCOUNT_NAME".into(), "account".into())],
        )
        .unwrap();
        assert_eq!(azure.path.as_ref(), "lake");
    }

    #[test]
    fn credentials_in_a_url_are_refused_without_being_shown() {
        let error = Remote::parse_with("s3://AKIA123:s3cr3t@bucket/lake", no_environment()).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("environment"), "{message}");
        assert!(!message.contains("s3cr3t") && !message.contains("AKIA123"), "{message}");
        let error = Remote::parse_with("az://container/lake?sig=s3cr3t", no_environment()).unwrap_err();
        assert!(!error.to_string().contains("s3cr3t"), "{error}");
        assert!(Remote::parse_with("s3:///lake", no_environment()).is_err());
    }

    #[test]
    fn a_location_debug_printed_shows_no_secret() {
        let environment = vec![
            ("AWS_REGION".to_string(), "us-east-1".to_string()),
            ("AWS_SECRET_ACCESS_KEY".to_string(), "s3cr3t-value".to_string()),
            ("AWS_ACCESS_KEY_ID".to_string(), "AKIAEXAMPLE".to_string()),
        ];
        let remote = Remote::parse_with("s3://bucket/lake", environment).unwrap();
        let shown = format!("{remote:?} {:?}", remote.join("x"));
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
    }

    #[test]
    fn a_missing_setting_is_named() {
        // Azure needs an account name.
        let error = Remote::parse_with("az://container/lake", Vec::new()).unwrap_err();
        assert!(matches!(error, StoreError::Configure { .. }), "{error}");
        assert!(error.to_string().contains("az://container/lake"), "{error}");
    }

    #[test]
    fn an_upload_listing_is_read_and_its_markers_escaped() {
        let xml = "<ListMultipartUploadsResult><IsTruncated>false</IsTruncated>\
                   <Upload><Key>out/a&amp;b.parquet</Key><UploadId>id-1</UploadId></Upload></ListMultipartUploadsResult>";
        assert_eq!(xml_field(xml, "IsTruncated").as_deref(), Some("false"));
        let upload = xml.split("<Upload>").nth(1).unwrap();
        assert_eq!(xml_field(upload, "Key").as_deref(), Some("out/a&b.parquet"));
        assert_eq!(xml_field(upload, "Missing"), None);
        assert_eq!(encode_query("scores/dt=1 x/"), "scores%2Fdt%3D1%20x%2F");
    }

    #[test]
    fn query_strings_are_cut_from_messages() {
        let text = "Error performing GET https://account.blob.core.windows.net/c/x?sv=2021&sig=s3cr3t in 1s: \
                    error sending request for url (https://host/y?X-Amz-Signature=abc)";
        let redacted = redact_urls(text);
        assert!(!redacted.contains("s3cr3t") && !redacted.contains("abc)"), "{redacted}");
        assert!(
            redacted.contains("https://account.blob.core.windows.net/c/x?…"),
            "{redacted}"
        );
        assert_eq!(redact_urls("no url here, httpd"), "no url here, httpd");
        assert_eq!(redact_urls("ends with http"), "ends with http");
    }
}
