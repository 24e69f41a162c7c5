//! The servers a scenario runs against when no endpoint is given, and the real ones the
//! tests compare with.
//!
//! - [`MiniKv`] and [`MiniQueue`] serve minikv and miniqueue in this process, on a free
//!   loopback port, in memory (minikv without an AOF, miniqueue without a WAL): a demo
//!   is about the pattern, not the server's durability. Dropping one stops it.
//! - [`RealRedis`] and [`RealBeanstalkd`] start `redis-server` and `beanstalkd` (the
//!   Debian packages `./test.sh` installs) as child processes, also in memory
//!   (`--save '' --appendonly no`; beanstalkd without `-b`). `start` answers `None` when
//!   the binary is not on `PATH`, so an exercise's tests run against the real server
//!   where it is installed and say so where it is not. The child is killed, by its pid,
//!   when the value is dropped, and also when this process dies
//!   ([`minibench::process::Guarded`]).
//!
//! Start a real server from the thread that will outlive it (a test's own thread, not
//! a `spawn_blocking` one): `PR_SET_PDEATHSIG` fires when the spawning *thread* exits.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use minibench::process::{find_on_path, Guarded};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::endpoints::{Endpoint, Served};
use super::DemoError;

/// How long a child server gets to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// minikv, served in-process on a free loopback port, in memory.
pub struct MiniKv {
    running: Option<minikv::Running>,
}

impl MiniKv {
    pub async fn start() -> Result<MiniKv, DemoError> {
        let config = minikv::config::Config::new();
        for (name, value) in [("port", "0"), ("bind", "127.0.0.1"), ("appendonly", "no")] {
            config
                .set(name, value, false)
                .map_err(|e| DemoError::Backend { what: "minikv", why: format!("{name} {value}: {e}") })?;
        }
        let running = minikv::start(config).await.map_err(|why| DemoError::Backend { what: "minikv", why })?;
        Ok(MiniKv { running: Some(running) })
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint::in_process("redis", self.running().addr, "minikv")
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.endpoint().url
    }

    fn running(&self) -> &minikv::Running {
        self.running.as_ref().expect("running until dropped")
    }
}

impl Drop for MiniKv {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.server.shutdown.trigger();
        }
    }
}

/// miniqueue, served in-process on a free loopback port, without a write-ahead log.
pub struct MiniQueue {
    running: Option<miniqueue::Running>,
}

impl MiniQueue {
    pub async fn start() -> Result<MiniQueue, DemoError> {
        let config = miniqueue::config::Config::in_memory(([127, 0, 0, 1], 0).into());
        let running = miniqueue::start(config).await.map_err(|why| DemoError::Backend { what: "miniqueue", why })?;
        Ok(MiniQueue { running: Some(running) })
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint::in_process("beanstalk", self.running().addr, "miniqueue")
    }

    /// `127.0.0.1:PORT`, for `Client::connect`.
    pub fn addr(&self) -> String {
        self.endpoint().addr
    }

    fn running(&self) -> &miniqueue::Running {
        self.running.as_ref().expect("running until dropped")
    }
}

impl Drop for MiniQueue {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown.trigger();
        }
    }
}

/// A real `redis-server` child process, in memory, on a free loopback port.
pub struct RealRedis {
    endpoint: Endpoint,
    _child: Guarded,
}

impl RealRedis {
    /// `Ok(None)` when `redis-server` is not installed (the caller prints that it
    /// skipped the comparison).
    pub async fn start() -> Result<Option<RealRedis>, DemoError> {
        let Some(binary) = find_on_path("redis-server") else {
            return Ok(None);
        };
        let port = free_port("redis-server")?;
        let mut command = Command::new(binary);
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = Guarded::spawn("redis-server", command)
            .map_err(|e| DemoError::Backend { what: "redis-server", why: e.to_string() })?;
        let addr = format!("127.0.0.1:{port}");
        wait_until_answering("redis-server", &addr, Some((b"PING\r\n", b"+PONG"))).await?;
        let endpoint = Endpoint { url: format!("redis://{addr}"), addr, served: Served::Given };
        Ok(Some(RealRedis { endpoint, _child: child }))
    }

    pub fn endpoint(&self) -> Endpoint {
        self.endpoint.clone()
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.endpoint.url.clone()
    }
}

/// A real `beanstalkd` child process, in memory, on a free loopback port.
pub struct RealBeanstalkd {
    endpoint: Endpoint,
    _child: Guarded,
}

impl RealBeanstalkd {
    /// `Ok(None)` when `beanstalkd` is not installed.
    pub async fn start() -> Result<Option<RealBeanstalkd>, DemoError> {
        let Some(binary) = find_on_path("beanstalkd") else {
            return Ok(None);
        };
        let port = free_port("beanstalkd")?;
        let mut command = Command::new(binary);
        command.args(["-l", "127.0.0.1", "-p", &port.to_string()]).stdout(Stdio::null()).stderr(Stdio::null());
        let child = Guarded::spawn("beanstalkd", command)
            .map_err(|e| DemoError::Backend { what: "beanstalkd", why: e.to_string() })?;
        let addr = format!("127.0.0.1:{port}");
        wait_until_answering("beanstalkd", &addr, None).await?;
        let endpoint = Endpoint { url: format!("beanstalk://{addr}"), addr, served: Served::Given };
        Ok(Some(RealBeanstalkd { endpoint, _child: child }))
    }

    pub fn endpoint(&self) -> Endpoint {
        self.endpoint.clone()
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.endpoint.addr.clone()
    }
}

fn free_port(what: &'static str) -> Result<u16, DemoError> {
    minibench::server::free_port().map_err(|e| DemoError::Backend { what, why: e.to_string() })
}

/// Polls until `addr` accepts a connection (and, with `probe`, answers the request with
/// a reply that starts as expected).
async fn wait_until_answering(what: &'static str, addr: &str, probe: Option<(&[u8], &[u8])>) -> Result<(), DemoError> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let attempt = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            if let Some((request, expected)) = probe {
                stream.write_all(request).await?;
                let mut reply = vec![0u8; expected.len()];
                stream.read_exact(&mut reply).await?;
                if reply != expected {
                    return Err(std::io::Error::other("unexpected reply"));
                }
            }
            Ok::<(), std::io::Error>(())
        };
        match tokio::time::timeout(Duration::from_secs(1), attempt).await {
            Ok(Ok(())) => return Ok(()),
            _ if Instant::now() >= deadline => {
                return Err(DemoError::Backend {
                    what,
                    why: format!("not answering on {addr} after {START_TIMEOUT:?}"),
                })
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}
