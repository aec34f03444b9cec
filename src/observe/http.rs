//! The HTTP client for the two requests lakescore makes: pushing metrics to
//! a Prometheus Pushgateway and posting OpenLineage events, over `http://`
//! or `https://` (ureq with rustls; roots: Mozilla's, or the PEM bundle
//! `SSL_CERT_FILE` names), with a bearer token or basic credentials from the
//! environment ([`Auth`]). A request has one deadline for all of it
//! ([`DEADLINE`]), so a server that trickles bytes cannot hold a run, and
//! gives up within [`POLL`] of a stop request. URLs are printed without
//! credentials or query strings, responses to at most [`BODY_SHOWN`]
//! characters, and credentials never.

use std::io;
use std::time::Duration;

use crate::cancel::CancelToken;

/// How long one request may take in all: resolving, connecting, TLS,
/// writing and reading the response.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// How often a request waiting on the network looks at the stop token.
const POLL: Duration = Duration::from_millis(100);
/// The most of a response body that goes into a log line.
pub const BODY_SHOWN: usize = 200;
/// The most of a response body that is read at all.
const BODY_READ: u64 = 64 * 1024;

/// Credentials for an endpoint, from the environment (never from the URL,
/// never printed).
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// `Authorization: Basic …`.
    Basic { user: String, password: String },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Bearer(_) => f.write_str("Bearer(***)"),
            Auth::Basic { user, .. } => write!(f, "Basic({user}:***)"),
        }
    }
}

impl Auth {
    /// The credentials the variables `<PREFIX>_TOKEN`, or `<PREFIX>_USER`
    /// and `<PREFIX>_PASSWORD`, hold (then `fallback_token`'s variable, for
    /// a standard one such as `OPENLINEAGE_API_KEY`).
    pub fn from_environment(prefix: &str, fallback_token: Option<&str>) -> Option<Auth> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let Some(token) = var(&format!("{prefix}_TOKEN")) {
            return Some(Auth::Bearer(token));
        }
        if let Some(user) = var(&format!("{prefix}_USER")) {
            let password = var(&format!("{prefix}_PASSWORD")).unwrap_or_default();
            return Some(Auth::Basic { user, password });
        }
        fallback_token.and_then(var).map(Auth::Bearer)
    }

    /// The `Authorization` header's value.
    pub(crate) fn header(&self) -> String {
        match self {
            Auth::Bearer(token) => format!("Bearer {token}"),
            Auth::Basic { user, password } => {
                const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
                format!("Basic {}", base64(format!("{user}:{password}").as_bytes(), STANDARD))
            }
        }
    }
}

/// Base64 with `alphabet`, padded: the standard one for HTTP basic
/// credentials, the URL-safe one for the Pushgateway's `@base64` paths.
pub(crate) fn base64(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut text = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            text.push(match i <= chunk.len() {
                true => alphabet[(n >> (18 - 6 * i) & 63) as usize] as char,
                false => '=',
            });
        }
    }
    text
}

/// An `http(s)://host[:port]/path` endpoint, with its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// The path and query, as sent.
    pub path: String,
    pub auth: Option<Auth>,
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        // Messages show the URL without credentials or query string.
        let shown = redacted(url);
        let (https, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            (None, None) => return Err(format!("`{shown}` is not an http:// or https:// URL")),
        };
        // Credentials may hold `/` or `?`: any `@` before the query or
        // fragment means some are there.
        let before_query = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
        if before_query.contains('@') {
            return Err(format!(
                "`{shown}`: credentials in the URL are not supported; give them in the environment \
                 (`LAKESCORE_<PUSHGATEWAY|LINEAGE>_TOKEN`, or `_USER` and `_PASSWORD`)"
            ));
        }
        let (authority, path) = match rest.find(['/', '?']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let path = match path.starts_with('?') {
            true => format!("/{path}"),
            false => path.to_string(),
        };
        if authority.contains('@') {
            return Err(format!(
                "`{shown}`: credentials in the URL are not supported; give them in the environment \
                 (`LAKESCORE_<PUSHGATEWAY|LINEAGE>_TOKEN`, or `_USER` and `_PASSWORD`)"
            ));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !authority.starts_with('[') || host.ends_with(']') => (
                host,
                port.parse()
                    .map_err(|_| format!("`{shown}`: the port is not a number"))?,
            ),
            _ => (authority, if https { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(format!("`{shown}` has no usable host"));
        }
        Ok(Endpoint {
            https,
            host: host.to_string(),
            port,
            path,
            auth: None,
        })
    }
}

impl Endpoint {
    /// The endpoint with `auth`, refused over plain `http://` to anything
    /// but this machine (a local sidecar or proxy): credentials would cross
    /// the network in clear.
    pub fn with_auth(mut self, auth: Option<Auth>) -> Result<Endpoint, String> {
        if auth.is_some() && !self.https && !self.is_loopback() {
            return Err(format!(
                "`{self}`: credentials are only sent over https:// (or to a proxy on this machine)"
            ));
        }
        self.auth = auth;
        Ok(self)
    }

    fn is_loopback(&self) -> bool {
        matches!(self.host.as_str(), "localhost" | "127.0.0.1" | "[::1]")
    }

    fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}:{}{}", self.host, self.port, self.path)
    }
}

/// For messages and logs: the endpoint without its query string (which may
/// carry a token).
impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        let path = self.path.split_once('?').map_or(self.path.as_str(), |(path, _)| path);
        write!(f, "{scheme}://{}:{}{path}", self.host, self.port)
    }
}

/// A URL as messages may show it: no `user:password@`, no query string.
pub fn redacted(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
    // Everything up to the last `@` is credentials, `/` in a password too.
    let (credentials, rest) = match rest.rsplit_once('@') {
        Some((_, after)) => ("***@", after),
        None => ("", rest),
    };
    let (host, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, ""),
    };
    // A "port" that is not a number may be a password whose `@` came
    // after a `?`: shown as nothing.
    let host = match host.rsplit_once(':') {
        Some((_, port)) if !host.ends_with(']') && !port.chars().all(|c| c.is_ascii_digit()) => "***",
        _ => host,
    };
    match scheme {
        "" => format!("{credentials}{host}{path}"),
        scheme => format!("{scheme}://{credentials}{host}{path}"),
    }
}

/// At most [`BODY_SHOWN`] characters of a response, for a log line.
pub fn shown(body: &str) -> String {
    match body.char_indices().nth(BODY_SHOWN) {
        Some((end, _)) => format!("{}…", &body[..end]),
        None => body.to_string(),
    }
}

/// The TLS roots: the PEM bundle at `bundle` (`SSL_CERT_FILE`: an
/// organisation's own CA), else Mozilla's.
fn root_certs(bundle: Option<&std::ffi::OsStr>) -> io::Result<ureq::tls::RootCerts> {
    let Some(path) = bundle else {
        return Ok(ureq::tls::RootCerts::WebPki);
    };
    let pem = std::fs::read(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot read `SSL_CERT_FILE` ({}): {e}", path.to_string_lossy()),
        )
    })?;
    let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert.to_owned()),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("`SSL_CERT_FILE` ({}) holds no PEM certificate", path.to_string_lossy()),
        ));
    }
    Ok(ureq::tls::RootCerts::new_with_certs(&certs))
}

/// Sends one request and returns the status code and (the start of) the
/// response body, within `limit` (at most [`DEADLINE`]), or sooner when
/// `cancel` is triggered. The request runs on a thread of its own while
/// this one watches the token; one given up on ends by its own deadline.
pub fn send(
    method: &str,
    endpoint: &Endpoint,
    content_type: &str,
    body: &[u8],
    cancel: &CancelToken,
    limit: Duration,
) -> io::Result<(u16, String)> {
    let bundle = std::env::var_os("SSL_CERT_FILE").filter(|_| endpoint.https);
    send_trusting(bundle.as_deref(), method, endpoint, content_type, body, cancel, limit)
}

/// [`send`], with the TLS roots of the PEM bundle at `bundle`.
fn send_trusting(
    bundle: Option<&std::ffi::OsStr>,
    method: &str,
    endpoint: &Endpoint,
    content_type: &str,
    body: &[u8],
    cancel: &CancelToken,
    limit: Duration,
) -> io::Result<(u16, String)> {
    let limit = limit.min(DEADLINE);
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(endpoint.url())
        .header("Content-Type", content_type);
    let request = match &endpoint.auth {
        Some(auth) => request.header("Authorization", auth.header()),
        None => request,
    };
    let request = request
        .body(body.to_vec())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let agent = agent(bundle, limit)?;
    let (sender, outcome) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("lakescore-http".into())
        .spawn(move || {
            let answer = agent.run(request).map(|mut response| {
                let status = response.status().as_u16();
                // The start of the body, whatever its size or encoding.
                let mut start = Vec::new();
                let _ = std::io::Read::read_to_end(
                    &mut std::io::Read::take(response.body_mut().as_reader(), BODY_READ),
                    &mut start,
                );
                (status, String::from_utf8_lossy(&start).trim().to_string())
            });
            let _ = sender.send(answer);
        })?;
    loop {
        match outcome.recv_timeout(POLL) {
            Ok(answer) => return answer.map_err(io_error),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if let Some(reason) = cancel.reason() {
                    return Err(io::Error::new(
                        io::ErrorKind::Interrupted,
                        format!("stopped by {reason}"),
                    ));
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(io::Error::other("the request's thread ended without an answer"));
            }
        }
    }
}

/// lakescore's HTTP agent: every request within `limit`, statuses returned
/// (not errors), no redirects, no proxy, TLS roots from the PEM bundle at
/// `bundle` or Mozilla's.
pub(crate) fn agent(bundle: Option<&std::ffi::OsStr>, limit: Duration) -> io::Result<ureq::Agent> {
    Ok(ureq::Agent::config_builder()
        .timeout_global(Some(limit))
        .http_status_as_error(false)
        .max_redirects(0)
        // A proxy from the environment would carry credentials meant for
        // this machine, in clear, elsewhere; servers are reached directly.
        .proxy(None)
        .user_agent(format!("lakescore/{}", env!("CARGO_PKG_VERSION")))
        .tls_config(ureq::tls::TlsConfig::builder().root_certs(root_certs(bundle)?).build())
        .build()
        .into())
}

/// ureq's error as an I/O error of the right kind, its message free of the
/// URL's query (ureq's messages name the host, not the query or headers).
pub(crate) fn io_error(error: ureq::Error) -> io::Error {
    let kind = match &error {
        ureq::Error::Timeout(_) => io::ErrorKind::TimedOut,
        ureq::Error::Io(e) => e.kind(),
        ureq::Error::HostNotFound => io::ErrorKind::NotFound,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, error.to_string())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::Instant;

    use super::*;

    #[test]
    fn endpoints_parse() {
        let endpoint: Endpoint = "http://pushgateway:9091/metrics/job/x".parse().unwrap();
        assert_eq!(
            (
                endpoint.https,
                endpoint.host.as_str(),
                endpoint.port,
                endpoint.path.as_str()
            ),
            (false, "pushgateway", 9091, "/metrics/job/x")
        );
        assert_eq!(
            "http://marquez".parse::<Endpoint>().unwrap().to_string(),
            "http://marquez:80/"
        );
        assert_eq!(
            "https://marquez/api".parse::<Endpoint>().unwrap().to_string(),
            "https://marquez:443/api"
        );
        assert!(
            "ftp://x"
                .parse::<Endpoint>()
                .unwrap_err()
                .contains("not an http:// or https:// URL")
        );
        assert!("http://x:port/".parse::<Endpoint>().is_err());
        let v6: Endpoint = "http://[::1]/metrics".parse().unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("[::1]", 80));
        let v6: Endpoint = "http://[::1]:9091/".parse().unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("[::1]", 9091));
        for (url, shown) in [
            (
                "http://user:hunter2@marquez:5000/api?token=abc",
                "http://***@marquez:5000/api",
            ),
            ("http://user:hunter2@marquez/api", "http://***@marquez/api"),
            ("https://user:hunter2@marquez/api?token=abc", "https://***@marquez/api"),
            ("ftp://user:hunter2@marquez/api?token=abc", "ftp://***@marquez/api"),
            ("https://svc:hun/ter2@marquez/api", "https://***@marquez/api"),
            ("https://svc:hunter2?x@marquez/api", "https://***"),
        ] {
            let secret = url.parse::<Endpoint>().unwrap_err();
            assert!(!secret.contains("hunter2") && !secret.contains("abc"), "{secret}");
            assert!(secret.contains(shown), "{secret}");
        }
        let with_token: Endpoint = "http://marquez/api/v1/lineage?api_key=s3cr3t".parse().unwrap();
        assert_eq!(with_token.to_string(), "http://marquez:80/api/v1/lineage");
        assert!(with_token.path.ends_with("?api_key=s3cr3t"), "sent as given");
        assert_eq!(shown(&"x".repeat(1000)).chars().count(), BODY_SHOWN + 1);
    }

    #[test]
    fn credentials_go_over_tls_or_to_this_machine_and_are_never_printed() {
        let bearer = Some(Auth::Bearer("s3cr3t".into()));
        let remote: Endpoint = "http://marquez:5000/api".parse().unwrap();
        let refused = remote.clone().with_auth(bearer.clone()).unwrap_err();
        assert!(refused.contains("only sent over https://"), "{refused}");
        assert!(
            "https://marquez/api"
                .parse::<Endpoint>()
                .unwrap()
                .with_auth(bearer.clone())
                .is_ok()
        );
        let local = "http://127.0.0.1:9091/"
            .parse::<Endpoint>()
            .unwrap()
            .with_auth(bearer)
            .unwrap();
        assert!(!format!("{local:?} {local}").contains("s3cr3t"));
        let basic = Auth::Basic {
            user: "Aladdin".into(),
            password: "open sesame".into(),
        };
        // RFC 7617's example.
        assert_eq!(basic.header(), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert!(!format!("{basic:?}").contains("sesame"));
    }

    /// A server that accepts and then sends a byte every second, forever.
    fn trickling_server() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                std::thread::spawn(move || {
                    let mut head = b"HTTP/1.1 200 OK\r\nX-Slow: ".iter();
                    while let Some(byte) = head.next().or(Some(&b'a')) {
                        if stream.write_all(&[*byte]).is_err() {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(500));
                    }
                });
            }
        });
        port
    }

    #[test]
    fn a_trickling_server_meets_the_deadline_and_a_stop_ends_the_wait() {
        let port = trickling_server();
        let endpoint: Endpoint = format!("http://127.0.0.1:{port}/").parse().unwrap();
        let limit = Duration::from_secs(2);
        let started = Instant::now();
        let error = send("POST", &endpoint, "text/plain", b"x", &CancelToken::new(), limit).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
        assert!(
            started.elapsed() < limit + Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );

        let cancel = CancelToken::new();
        let stopper = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            stopper.cancel();
        });
        let started = Instant::now();
        let error = send("POST", &endpoint, "text/plain", b"x", &cancel, DEADLINE).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::Interrupted, "{error}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }

    #[test]
    fn a_request_reaches_a_server_with_its_credentials_and_its_status_comes_back() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = vec![0u8; 4096];
            let mut seen = 0;
            while !String::from_utf8_lossy(&request[..seen]).ends_with("hello") {
                seen += stream.read(&mut request[seen..]).unwrap();
            }
            stream
                .write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
            String::from_utf8_lossy(&request[..seen]).into_owned()
        });
        let endpoint = format!("http://127.0.0.1:{port}/api")
            .parse::<Endpoint>()
            .unwrap()
            .with_auth(Some(Auth::Bearer("t0ken".into())))
            .unwrap();
        let (status, body) = send("POST", &endpoint, "text/plain", b"hello", &CancelToken::new(), DEADLINE).unwrap();
        assert_eq!((status, body.as_str()), (202, "ok"));
        let request = server.join().unwrap().to_ascii_lowercase();
        assert!(request.starts_with("post /api http/1.1\r\n"), "{request}");
        assert!(request.contains("content-length: 5\r\n"), "{request}");
        assert!(request.contains("authorization: bearer t0ken\r\n"), "{request}");
    }

    /// `openssl s_server -www` with a certificate for 127.0.0.1 signed by a
    /// CA of the test's own: its port and the CA's path, or `None` without
    /// openssl (outside CI).
    fn tls_server(dir: &std::path::Path) -> Option<(u16, std::path::PathBuf, Server)> {
        let (ca, ca_key, cert, key) = (
            dir.join("ca.pem"),
            dir.join("ca.key"),
            dir.join("cert.pem"),
            dir.join("key.pem"),
        );
        let extensions = dir.join("leaf.ext");
        std::fs::write(&extensions, "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
        let openssl = |args: &[&std::ffi::OsStr]| {
            std::process::Command::new("openssl")
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let csr = dir.join("leaf.csr");
        let made = openssl(&[
            "req".as_ref(),
            "-x509".as_ref(),
            "-newkey".as_ref(),
            "rsa:2048".as_ref(),
            "-nodes".as_ref(),
            "-days".as_ref(),
            "1".as_ref(),
            "-subj".as_ref(),
            "/CN=lakescore test CA".as_ref(),
            "-keyout".as_ref(),
            ca_key.as_os_str(),
            "-out".as_ref(),
            ca.as_os_str(),
        ]) && openssl(&[
            "req".as_ref(),
            "-newkey".as_ref(),
            "rsa:2048".as_ref(),
            "-nodes".as_ref(),
            "-subj".as_ref(),
            "/CN=127.0.0.1".as_ref(),
            "-keyout".as_ref(),
            key.as_os_str(),
            "-out".as_ref(),
            csr.as_os_str(),
        ]) && openssl(&[
            "x509".as_ref(),
            "-req".as_ref(),
            "-in".as_ref(),
            csr.as_os_str(),
            "-CA".as_ref(),
            ca.as_os_str(),
            "-CAkey".as_ref(),
            ca_key.as_os_str(),
            "-CAcreateserial".as_ref(),
            "-days".as_ref(),
            "1".as_ref(),
            "-extfile".as_ref(),
            extensions.as_os_str(),
            "-out".as_ref(),
            cert.as_os_str(),
        ]);
        let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
        assert!(made || !in_ci, "CI has openssl");
        if !made {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = std::process::Command::new("openssl")
            .args(["s_server", "-www", "-quiet", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "openssl s_server never listened"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some((port, ca, Server(server)))
    }

    /// A server process, killed when the test ends however it ends.
    struct Server(std::process::Child);

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn https_verifies_the_server_against_the_roots() {
        let dir = tempfile::tempdir().unwrap();
        let Some((port, ca, server)) = tls_server(dir.path()) else {
            eprintln!("skipped: no openssl to make a TLS server");
            return;
        };
        let endpoint: Endpoint = format!("https://127.0.0.1:{port}/").parse().unwrap();
        let get = |bundle: Option<&std::ffi::OsStr>| {
            send_trusting(
                bundle,
                "GET",
                &endpoint,
                "text/plain",
                b"",
                &CancelToken::new(),
                DEADLINE,
            )
        };
        // Mozilla's roots do not know the test's CA.
        let refused = get(None).unwrap_err();
        assert!(refused.to_string().to_lowercase().contains("certificate"), "{refused}");
        // With it among the roots, as `SSL_CERT_FILE` would put it.
        let answer = get(Some(ca.as_os_str()));
        drop(server);
        assert_eq!(answer.unwrap().0, 200);
    }
}
