//! A minimal HTTP/1.1 client for the two requests lakescore makes: pushing
//! metrics to a Prometheus Pushgateway and posting OpenLineage events. Plain
//! `http://` only (TLS would pull in a TLS stack for two small requests; put a
//! local proxy or sidecar in front of an `https://` endpoint), one request per
//! connection. A request has one deadline for all of it ([`DEADLINE`]), so a
//! server that trickles bytes cannot hold a run, and ends within
//! [`POLL`] of a stop request. URLs are printed without credentials or query
//! strings, and responses to at most [`BODY_SHOWN`] characters.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::cancel::CancelToken;

/// How long one request may take in all: connecting (to every address the
/// name resolves to, in turn), writing and reading the response.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// How often a request waiting on the network looks at the stop token.
const POLL: Duration = Duration::from_millis(100);
/// The most of a response body that goes into a log line.
pub const BODY_SHOWN: usize = 200;

/// An `http://host[:port]/path` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        // Messages show the URL without credentials or query string.
        let shown = redacted(url);
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!("`{shown}` is not an http:// URL (https is not supported: use a local proxy or sidecar)")
        })?;
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(format!(
                "`{shown}`: credentials in the URL are not supported (they would be sent in clear over http)"
            ));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse()
                    .map_err(|_| format!("`{shown}`: `{port}` is not a port number"))?,
            ),
            None => (authority, 80),
        };
        if host.is_empty() {
            return Err(format!("`{shown}` has no usable host"));
        }
        Ok(Endpoint {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

/// For messages and logs: the endpoint without its query string (which may
/// carry a token).
impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.path.split_once('?').map_or(self.path.as_str(), |(path, _)| path);
        write!(f, "http://{}:{}{path}", self.host, self.port)
    }
}

/// A URL as messages may show it: no `user:password@`, no query string.
fn redacted(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, ""),
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let credentials = if authority.contains('@') { "***@" } else { "" };
    let path = path.split_once('?').map_or(path, |(path, _)| path);
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

/// Sends one request and returns the status code and the response body,
/// within `limit` (at most [`DEADLINE`]), or sooner when `cancel` is
/// triggered.
pub fn send(
    method: &str,
    endpoint: &Endpoint,
    content_type: &str,
    body: &[u8],
    cancel: &CancelToken,
    limit: Duration,
) -> io::Result<(u16, String)> {
    let limit = limit.min(DEADLINE);
    let deadline = Instant::now() + limit;
    let addresses: Vec<SocketAddr> = (endpoint.host.as_str(), endpoint.port).to_socket_addrs()?.collect();
    if addresses.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("`{}` has no address", endpoint.host),
        ));
    }
    let mut stream = connect(&addresses, deadline, cancel)?;
    let head = format!(
        "{method} {} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: lakescore/{}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        endpoint.path,
        endpoint.host,
        endpoint.port,
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    let mut written = 0;
    while written < request.len() {
        stream.set_write_timeout(Some(slice(deadline, cancel)?))?;
        match stream.write(&request[written..]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the server closed the connection",
                ));
            }
            Ok(n) => written += n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let mut response = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        stream.set_read_timeout(Some(slice(deadline, cancel)?))?;
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buffer[..n]),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let response = String::from_utf8_lossy(&response);
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "the response has no HTTP status line"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .trim()
        .to_string();
    Ok((status, body))
}

/// Connects to the first address that answers, each tried for an equal
/// share of what is left of the deadline. The connection is made on a
/// thread of its own while this one watches the stop token (a handshake
/// cannot be split into slices and resumed); a connection given up on ends
/// by itself within its share.
fn connect(addresses: &[SocketAddr], deadline: Instant, cancel: &CancelToken) -> io::Result<TcpStream> {
    let mut last_error = None;
    for (i, &address) in addresses.iter().enumerate() {
        let share = deadline.saturating_duration_since(Instant::now()) / (addresses.len() - i) as u32;
        if share.is_zero() {
            break;
        }
        let (sender, outcome) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("lakescore-connect".into())
            .spawn(move || {
                let _ = sender.send(TcpStream::connect_timeout(&address, share));
            })?;
        loop {
            match outcome.recv_timeout(POLL) {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(error)) => {
                    last_error = Some(error);
                    break;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    slice(deadline, cancel)?;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "no address answered before the request's deadline",
        )
    }))
}

/// How long the next network wait may be: at most [`POLL`], and nothing
/// once the deadline has passed or a stop was asked for.
fn slice(deadline: Instant, cancel: &CancelToken) -> io::Result<Duration> {
    if let Some(reason) = cancel.reason() {
        return Err(io::Error::new(
            io::ErrorKind::Interrupted,
            format!("stopped by {reason}"),
        ));
    }
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no complete answer before the request's deadline",
        ));
    }
    Ok(left.min(POLL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        let endpoint: Endpoint = "http://pushgateway:9091/metrics/job/x".parse().unwrap();
        assert_eq!(
            (endpoint.host.as_str(), endpoint.port, endpoint.path.as_str()),
            ("pushgateway", 9091, "/metrics/job/x")
        );
        assert_eq!(
            "http://marquez".parse::<Endpoint>().unwrap().to_string(),
            "http://marquez:80/"
        );
        assert!(
            "https://x"
                .parse::<Endpoint>()
                .unwrap_err()
                .contains("https is not supported")
        );
        assert!("http://x:port/".parse::<Endpoint>().is_err());
        let secret = "http://user:hunter2@marquez:5000/api?token=abc"
            .parse::<Endpoint>()
            .unwrap_err();
        assert!(!secret.contains("hunter2") && !secret.contains("abc"), "{secret}");
        assert!(secret.contains("http://***@marquez:5000/api"), "{secret}");
        let with_token: Endpoint = "http://marquez/api/v1/lineage?api_key=s3cr3t".parse().unwrap();
        assert_eq!(with_token.to_string(), "http://marquez:80/api/v1/lineage");
        assert!(with_token.path.ends_with("?api_key=s3cr3t"), "sent as given");
        assert_eq!(shown(&"x".repeat(1000)).chars().count(), BODY_SHOWN + 1);
    }

    /// A server that accepts and then sends a byte every second, forever.
    fn trickling_server() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                std::thread::spawn(move || {
                    while stream.write_all(b"H").is_ok() {
                        std::thread::sleep(Duration::from_secs(1));
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
        let started = Instant::now();
        let error = send("POST", &endpoint, "text/plain", b"x", &CancelToken::new(), DEADLINE).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
        assert!(
            started.elapsed() < DEADLINE + Duration::from_secs(5),
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
    fn a_request_reaches_a_server_and_its_status_comes_back() {
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
        let endpoint: Endpoint = format!("http://127.0.0.1:{port}/api").parse().unwrap();
        let (status, body) = send("POST", &endpoint, "text/plain", b"hello", &CancelToken::new(), DEADLINE).unwrap();
        assert_eq!((status, body.as_str()), (202, "ok"));
        let request = server.join().unwrap();
        assert!(request.starts_with("POST /api HTTP/1.1\r\n") && request.contains("Content-Length: 5\r\n"));
    }
}
