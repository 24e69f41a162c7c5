//! Starting a server under test, the same way for every benchmark: a separate
//! process, its own temporary directory with an empty data directory inside, a free
//! port on 127.0.0.1, its output in a log file, killed by pid when dropped. What
//! differs from server to server is passed in: the command line and how to tell the
//! server is ready ([`Ready`]). `mini bench log`'s brokers (log/brokers.rs) start
//! through [`ServerProcess`] too.
//!
//! `mini bench kv`'s two servers get the same durability settings:
//!
//! | durability     | redis-server                                         | minikv                                     |
//! |----------------|------------------------------------------------------|--------------------------------------------|
//! | persistence off| `--save '' --appendonly no`                          | `--appendonly no`                          |
//! | AOF everysec   | `--save '' --appendonly yes --appendfsync everysec`  | `--appendonly yes --appendfsync everysec`  |
//!
//! minikv has no RDB snapshots, so it takes no `--save`. Everything else is left at
//! each server's defaults. One default differs by design and is stated in the report:
//! Redis executes commands on one thread, minikv on as many worker threads as there
//! are cores.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::process::{self, Guarded};
use crate::{interrupt, BenchError};

/// The binaries of the systems a benchmark runs, found once: (system, binary, its
/// version line), in the order the benchmark lists its systems.
pub(crate) struct Binaries<S> {
    pub(crate) servers: Vec<(S, PathBuf, String)>,
}

impl<S: PartialEq + Copy> Binaries<S> {
    /// The binary of `system`, which must be one of those found.
    pub(crate) fn of(&self, system: S) -> &Path {
        let found = self.servers.iter().find(|(s, _, _)| *s == system);
        &found.expect("only the systems found are run").1
    }

    /// The version line of `system`, or "not run".
    pub(crate) fn version(&self, system: S) -> String {
        self.servers.iter().find(|(s, _, _)| *s == system).map_or_else(|| "not run".to_string(), |s| s.2.clone())
    }
}

/// How long a server may take to become [`Ready`]. Every one of them starts in
/// milliseconds on an empty directory; the slack is for a loaded CI machine.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Tries before giving up when another process grabs the chosen port first: between
/// [`free_port`] closing its listener and the server binding, the port is up for grabs.
const START_ATTEMPTS: usize = 3;

/// The deadline for one admin command (FLUSHALL, INFO, DBSIZE). FLUSHALL of a million
/// keys is the slowest of them and takes well under a second.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The deadline for PING, which a healthy server answers in microseconds even under
/// load; a server that takes longer is treated as hung.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Which server a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Redis,
    Minikv,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Redis => "redis",
            Kind::Minikv => "minikv",
        }
    }
}

/// What a write's acknowledgement promises, configured identically on both servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Nothing reaches disk: the pure in-memory speed.
    Off,
    /// Every write is appended to the AOF, which is fsynced once a second: a crash loses
    /// at most about a second of acknowledged writes.
    AofEverysec,
}

impl Durability {
    pub fn describe(self) -> &'static str {
        match self {
            Durability::Off => "persistence off",
            Durability::AofEverysec => "AOF, appendfsync everysec",
        }
    }
}

/// The command-line arguments that start `kind` on `port` with data in `dir`.
pub fn server_args(kind: Kind, port: u16, durability: Durability, dir: &Path) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--port".into(),
        port.to_string(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--dir".into(),
        dir.display().to_string(),
    ];
    if kind == Kind::Redis {
        // Logs go to stdout, which we send to a file; no RDB snapshots.
        args.extend(["--daemonize", "no", "--logfile", "", "--save", ""].map(String::from));
    } else {
        // No admin HTTP endpoint: nothing of it is measured, and it would need a port.
        args.extend(["--admin-port", "0"].map(String::from));
    }
    match durability {
        Durability::Off => args.extend(["--appendonly", "no"].map(String::from)),
        Durability::AofEverysec => args.extend(["--appendonly", "yes", "--appendfsync", "everysec"].map(String::from)),
    }
    args
}

/// How the harness tells that a server it started is ready to be measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// It answers PING with PONG: the Redis-protocol servers of `mini bench kv`, to
    /// which the harness itself then sends FLUSHALL, DBSIZE and INFO.
    Pong,
    /// Its port accepts a TCP connection: `mini bench log`'s brokers, each speaking its
    /// own protocol; the client's first request then has a deadline of its own.
    Listening,
}

impl Ready {
    fn check(self, server: &ServerProcess) -> bool {
        match self {
            Ready::Pong => server.ping().is_ok(),
            Ready::Listening => {
                let address = std::net::SocketAddr::from(([127, 0, 0, 1], server.port));
                std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
            }
        }
    }

    /// How long to wait between checks: a PING opens a connection and waits for a
    /// reply, a refused connect costs next to nothing.
    fn poll(self) -> Duration {
        match self {
            Ready::Pong => Duration::from_millis(50),
            Ready::Listening => Duration::from_millis(20),
        }
    }

    /// Why the server is not ready after [`START_TIMEOUT`], for the start error.
    fn missed(self, port: u16) -> String {
        match self {
            Ready::Pong => format!("no PONG within {} s", START_TIMEOUT.as_secs()),
            Ready::Listening => format!("port {port} not open within {} s", START_TIMEOUT.as_secs()),
        }
    }
}

/// A running server, killed (SIGKILL, by pid) and its directory removed when dropped.
pub struct ServerProcess {
    /// What the server is ("redis", "minikv", "jetstream"), for messages and the name
    /// of its temporary directory.
    pub name: &'static str,
    pub port: u16,
    process: Guarded,
    log: PathBuf,
    /// Holds the server's data and log; deleted on drop, after the process is gone
    /// (fields drop in declaration order, and `process` comes first).
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    /// Starts `binary` with the command line `args` gives for a port and an empty data
    /// directory, and waits until it is `ready`. Retries on another port if the chosen
    /// one was taken in the meantime.
    pub fn start(
        name: &'static str,
        binary: &Path,
        args: impl Fn(u16, &Path) -> Vec<String>,
        ready: Ready,
    ) -> Result<ServerProcess, BenchError> {
        let mut attempt = 1;
        loop {
            match Self::start_once(name, binary, &args, ready) {
                Err(BenchError::ServerStart { log, .. }) if attempt < START_ATTEMPTS && port_was_taken(&log) => {
                    attempt += 1
                }
                result => return result,
            }
        }
    }

    fn start_once(
        name: &'static str,
        binary: &Path,
        args: &impl Fn(u16, &Path) -> Vec<String>,
        ready: Ready,
    ) -> Result<ServerProcess, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("minibench-{name}-"))
            .tempdir()
            .map_err(BenchError::io("can't create a temporary directory"))?;
        // Its own directory, so that the server starts on an empty one: the log sits
        // next to it, not in it.
        let data = dir.path().join("data");
        std::fs::create_dir(&data).map_err(BenchError::io("can't create the data directory"))?;
        let port = free_port()?;
        let log = dir.path().join("server.log");
        let log_file = std::fs::File::create(&log).map_err(BenchError::io("can't create the server log"))?;
        let log_err = log_file.try_clone().map_err(BenchError::io("can't create the server log"))?;
        let mut command = Command::new(binary);
        command.args(args(port, &data)).current_dir(dir.path()).stdin(Stdio::null()).stdout(log_file).stderr(log_err);
        let process = Guarded::spawn(name, command)?;
        let mut server = ServerProcess { name, port, process, log, _dir: dir };
        server.wait_ready(ready)?;
        Ok(server)
    }

    fn wait_ready(&mut self, ready: Ready) -> Result<(), BenchError> {
        let start = Instant::now();
        loop {
            interrupt::check()?;
            if let Some(status) = self.process.exited() {
                return Err(self.start_error(format!("it exited with {status}")));
            }
            if ready.check(self) {
                return Ok(());
            }
            if start.elapsed() > START_TIMEOUT {
                return Err(self.start_error(ready.missed(self.port)));
            }
            process::sleep(ready.poll())?;
        }
    }

    fn start_error(&self, reason: String) -> BenchError {
        BenchError::ServerStart { server: self.name.into(), reason, log: self.log_tail(20) }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The last `n` lines of the server's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Sends one command on a fresh connection and waits at most `timeout` for the reply.
    /// A fresh connection each time keeps the harness from holding a client open on
    /// the server during the measured runs.
    fn command<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd, timeout: Duration) -> Result<T, String> {
        let explain = |e: redis::RedisError| {
            if e.is_timeout() {
                format!("no reply within {} s (is the server hung?)", timeout.as_secs())
            } else {
                e.to_string()
            }
        };
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).map_err(explain)?;
        let mut con = client.get_connection_with_timeout(timeout).map_err(explain)?;
        con.set_read_timeout(Some(timeout)).map_err(explain)?;
        con.set_write_timeout(Some(timeout)).map_err(explain)?;
        cmd.query(&mut con).map_err(explain)
    }

    pub fn ping(&self) -> Result<(), String> {
        let pong: String = self.command(&redis::cmd("PING"), PING_TIMEOUT)?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(format!("PING answered {pong:?}"))
        }
    }

    pub fn flushall(&self) -> Result<(), String> {
        self.command::<()>(&redis::cmd("FLUSHALL"), COMMAND_TIMEOUT)
    }

    pub fn dbsize(&self) -> Result<u64, String> {
        self.command(&redis::cmd("DBSIZE"), COMMAND_TIMEOUT)
    }

    /// `used_memory` from INFO memory: the bytes the server's allocator handed out.
    pub fn used_memory(&self) -> Result<u64, String> {
        let info: String = self.command(redis::cmd("INFO").arg("memory"), COMMAND_TIMEOUT)?;
        info_field(&info, "used_memory")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| "INFO memory has no used_memory".to_string())
    }

    /// The resident set size of the server process, from /proc.
    pub fn rss_bytes(&self) -> Result<u64, String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).map_err(|e| e.to_string())?;
        vm_rss_bytes(&status).ok_or_else(|| "no VmRSS in /proc/<pid>/status".to_string())
    }

    /// The exit status if the server has exited, without waiting.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.process.exited()
    }

    /// `Err` with the reason when a Redis-protocol server has died or stopped
    /// answering; the harness then skips its remaining runs instead of waiting on it.
    pub fn health(&mut self) -> Result<(), String> {
        if let Some(status) = self.exited() {
            return Err(format!("{} exited with {status}; last log lines:\n{}", self.name, self.log_tail(10)));
        }
        self.ping().map_err(|e| format!("{} does not answer PING: {e}", self.name))
    }
}

/// Whether a server's log says it could not bind its port (redis: "Address already in
/// use"; nats: "address already in use"; minikv: "can't bind ...: Address in use";
/// minilog: the OS error, "Address in use").
fn port_was_taken(log: &str) -> bool {
    log.contains("ddress already in use") || log.contains("ddress in use")
}

/// A port that was free a moment ago on 127.0.0.1 (the kernel picks it).
pub fn free_port() -> Result<u16, BenchError> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(BenchError::io("can't find a free port"))?;
    let port = listener.local_addr().map_err(BenchError::io("can't find a free port"))?.port();
    Ok(port)
}

/// The value of `name` in INFO output (`name:value` lines).
pub fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| line.trim_end().strip_prefix(name)?.strip_prefix(':'))
}

/// VmRSS from the text of /proc/<pid>/status, in bytes.
pub fn vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => Some(value * 1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_servers_get_the_same_durability_flags() {
        let dir = Path::new("/tmp/x");
        let redis = server_args(Kind::Redis, 1, Durability::AofEverysec, dir).join(" ");
        let minikv = server_args(Kind::Minikv, 1, Durability::AofEverysec, dir).join(" ");
        assert!(redis.contains("--save  ") && redis.ends_with("--appendonly yes --appendfsync everysec"), "{redis}");
        assert!(minikv.ends_with("--appendonly yes --appendfsync everysec") && !minikv.contains("--save"), "{minikv}");
        let redis_off = server_args(Kind::Redis, 1, Durability::Off, dir).join(" ");
        let minikv_off = server_args(Kind::Minikv, 1, Durability::Off, dir).join(" ");
        assert!(redis_off.ends_with("--appendonly no") && minikv_off.ends_with("--appendonly no"));
        for args in [&redis, &minikv] {
            assert!(args.starts_with("--port 1 --bind 127.0.0.1 --dir /tmp/x"));
        }
    }

    #[test]
    fn a_server_that_exits_at_once_is_reported_with_its_log() {
        // It lists its data directory (empty: the log sits beside it) and exits.
        let args = |port: u16, dir: &Path| {
            let script = "echo \"port $1\"; ls -A \"$2\"; echo bye >&2; exit 3";
            vec!["-c".to_string(), script.to_string(), "sh".to_string(), port.to_string(), dir.display().to_string()]
        };
        let err = match ServerProcess::start("sh", Path::new("/bin/sh"), args, Ready::Listening) {
            Err(e) => e,
            Ok(_) => panic!("sh exited, yet it counted as started"),
        };
        let BenchError::ServerStart { server, reason, log } = err else { panic!("not a start error: {err}") };
        assert_eq!(server, "sh");
        assert!(reason.contains("exit status: 3"), "{reason}");
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 2, "port line, nothing in the data directory, stderr: {log}");
        assert!(lines[0].starts_with("port ") && lines[1] == "bye", "{log}");
    }

    #[test]
    fn reads_vm_rss_from_proc_status() {
        let status = "Name:\tredis-server\nVmPeak:\t  100 kB\nVmRSS:\t    7936 kB\nRssAnon:\t 2000 kB\n";
        assert_eq!(vm_rss_bytes(status), Some(7936 * 1024));
        assert_eq!(vm_rss_bytes("Name:\tx\n"), None);
        assert_eq!(vm_rss_bytes("VmRSS:\t12 MB\n"), None);
        // Our own process has one.
        let own = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        assert!(vm_rss_bytes(&own).is_some_and(|b| b > 0));
    }

    #[test]
    fn reads_info_fields_exactly() {
        let info = "# Memory\r\nused_memory:1045632\r\nused_memory_human:1021.12K\r\nused_memory_rss:7000\r\n";
        assert_eq!(info_field(info, "used_memory"), Some("1045632"));
        assert_eq!(info_field(info, "used_memory_rss"), Some("7000"));
        assert_eq!(info_field(info, "used"), None);
    }
}
