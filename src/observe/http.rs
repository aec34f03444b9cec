//! A minimal HTTP/1.1 client for the two requests lakescore makes: pushing
//! metrics to a Prometheus Pushgateway and posting OpenLineage events. Plain
//! `http://` only (TLS would pull in a TLS stack for two small requests; put a
//! local proxy or sidecar in front of an `https://` endpoint), one request per
//! connection, bounded by a timeout.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long a connection, a write or a read may take.
const TIMEOUT: Duration = Duration::from_secs(10);

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
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!("`{url}` is not an http:// URL (https is not supported: use a local proxy or sidecar)")
        })?;
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse()
                    .map_err(|_| format!("`{url}`: `{port}` is not a port number"))?,
            ),
            None => (authority, 80),
        };
        if host.is_empty() || authority.contains('@') {
            return Err(format!("`{url}` has no usable host"));
        }
        Ok(Endpoint {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}:{}{}", self.host, self.port, self.path)
    }
}

/// Sends one request and returns the status code and the response body.
pub fn send(method: &str, endpoint: &Endpoint, content_type: &str, body: &[u8]) -> io::Result<(u16, String)> {
    let address = (endpoint.host.as_str(), endpoint.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("`{}` has no address", endpoint.host)))?;
    let mut stream = TcpStream::connect_timeout(&address, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let head = format!(
        "{method} {} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: lakescore/{}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        endpoint.path,
        endpoint.host,
        endpoint.port,
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
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
        let (status, body) = send("POST", &endpoint, "text/plain", b"hello").unwrap();
        assert_eq!((status, body.as_str()), (202, "ok"));
        let request = server.join().unwrap();
        assert!(request.starts_with("POST /api HTTP/1.1\r\n") && request.contains("Content-Length: 5\r\n"));
    }
}
