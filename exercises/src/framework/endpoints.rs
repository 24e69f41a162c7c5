//! Where a scenario's backends are: `--kv redis://host:port` and
//! `--queue beanstalk://host:port`, or the in-process servers [`super::backends`] starts.
//!
//! Only the scheme and `host:port` are checked here; the rest of a `redis://` URL (a
//! user and password, a `/db` path) is the `redis` crate's to read, so whatever
//! redis-py or redis-cli accepts as a URL works here too. Left out: `rediss://` (TLS)
//! and unix sockets, which neither mini system serves.

use std::fmt;
use std::time::Duration;

use super::DemoError;

/// How long [`Endpoint::check_reachable`] waits for the TCP handshake before saying the
/// server is not there.
const REACH_TIMEOUT: Duration = Duration::from_secs(3);

/// Who runs the server behind an endpoint, for the report's first lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Served {
    /// Started by this process for this run ("minikv", "miniqueue").
    InProcess(&'static str),
    /// Given on the command line: a real Redis, a `mini up`, anything speaking the
    /// protocol.
    Given,
}

/// One backend endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The URL as clients take it: `redis://127.0.0.1:6379`, `beanstalk://127.0.0.1:11300`.
    pub url: String,
    /// `host:port`, for plain TCP connects.
    pub addr: String,
    pub served: Served,
}

impl Endpoint {
    /// A KV endpoint from a `redis://` URL.
    pub fn parse_kv(url: &str) -> Result<Endpoint, DemoError> {
        let rest = url.strip_prefix("redis://").ok_or_else(|| {
            DemoError::Endpoint(format!("--kv {url:?}: expected a redis:// URL, for example redis://127.0.0.1:6379"))
        })?;
        // redis://[user:pass@]host[:port][/db]
        let authority = rest.split('/').next().unwrap_or_default();
        let host_port = authority.rsplit('@').next().unwrap_or_default();
        let addr = with_default_port(host_port, 6379)
            .ok_or_else(|| DemoError::Endpoint(format!("--kv {url:?}: expected host:port after redis://")))?;
        Ok(Endpoint { url: url.to_string(), addr, served: Served::Given })
    }

    /// A queue endpoint from a `beanstalk://host:port` URL (or a bare `host:port`).
    pub fn parse_queue(url: &str) -> Result<Endpoint, DemoError> {
        let rest = url.strip_prefix("beanstalk://").unwrap_or(url);
        if rest.contains("://") {
            return Err(DemoError::Endpoint(format!(
                "--queue {url:?}: expected a beanstalk:// URL, for example beanstalk://127.0.0.1:11300"
            )));
        }
        let host_port = rest.trim_end_matches('/');
        let addr = with_default_port(host_port, 11300)
            .ok_or_else(|| DemoError::Endpoint(format!("--queue {url:?}: expected host:port after beanstalk://")))?;
        Ok(Endpoint { url: format!("beanstalk://{addr}"), addr, served: Served::Given })
    }

    /// An endpoint this process serves.
    pub fn in_process(scheme: &str, addr: std::net::SocketAddr, system: &'static str) -> Endpoint {
        Endpoint { url: format!("{scheme}://{addr}"), addr: addr.to_string(), served: Served::InProcess(system) }
    }

    /// Fails with a message that says what to start when nothing listens there, so a
    /// mistyped port is one clear line instead of a scenario full of I/O errors.
    pub async fn check_reachable(&self) -> Result<(), DemoError> {
        match tokio::time::timeout(REACH_TIMEOUT, tokio::net::TcpStream::connect(&self.addr)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(DemoError::Endpoint(format!(
                "can't reach {}: {e}; is the server running? (`mini up` starts the mini systems)",
                self.url
            ))),
            Err(_) => Err(DemoError::Endpoint(format!("can't reach {}: no answer in {REACH_TIMEOUT:?}", self.url))),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.served {
            Served::InProcess(system) => write!(f, "{} ({system}, in-process)", self.url),
            Served::Given => write!(f, "{}", self.url),
        }
    }
}

/// `host:port`, or `host` with `port` added; `None` for an empty host or a port that is
/// not a number.
fn with_default_port(host_port: &str, port: u16) -> Option<String> {
    if host_port.is_empty() {
        return None;
    }
    // [::1]:6379 keeps its brackets; a bare IPv6 address without brackets is refused.
    let (host, explicit) = match host_port.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && (!host.contains(':') || host.ends_with(']')) => (host, Some(port)),
        Some(_) => return None,
        None => (host_port, None),
    };
    match explicit {
        Some(p) => p.parse::<u16>().ok().map(|p| format!("{host}:{p}")),
        None => Some(format!("{host}:{port}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_urls() {
        assert_eq!(Endpoint::parse_kv("redis://127.0.0.1:6379").unwrap().addr, "127.0.0.1:6379");
        assert_eq!(Endpoint::parse_kv("redis://localhost").unwrap().addr, "localhost:6379");
        assert_eq!(Endpoint::parse_kv("redis://u:p@10.0.0.1:7000/2").unwrap().addr, "10.0.0.1:7000");
        assert_eq!(Endpoint::parse_kv("redis://[::1]:7379").unwrap().addr, "[::1]:7379");
        assert!(Endpoint::parse_kv("http://127.0.0.1:6379").is_err());
        assert!(Endpoint::parse_kv("redis://").is_err());
        assert!(Endpoint::parse_kv("redis://host:notaport").is_err());
    }

    #[test]
    fn queue_urls() {
        let e = Endpoint::parse_queue("beanstalk://127.0.0.1:11300").unwrap();
        assert_eq!((e.addr.as_str(), e.url.as_str()), ("127.0.0.1:11300", "beanstalk://127.0.0.1:11300"));
        assert_eq!(Endpoint::parse_queue("127.0.0.1:11301").unwrap().addr, "127.0.0.1:11301");
        assert_eq!(Endpoint::parse_queue("beanstalk://localhost").unwrap().addr, "localhost:11300");
        assert!(Endpoint::parse_queue("redis://127.0.0.1:6379").is_err());
        assert!(Endpoint::parse_queue("beanstalk://:99999").is_err());
    }
}
