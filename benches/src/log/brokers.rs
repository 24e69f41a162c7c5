//! The three servers under test, each started fresh for every run: its own process,
//! its own temporary directory, a free port on 127.0.0.1, comparable durability.
//!
//! | system        | command line (beyond port, address and directory)                                   |
//! |---------------|-------------------------------------------------------------------------------------|
//! | minilog       | `--flush os --admin-port 0 --num-partitions 1 --auto-create-topics false`           |
//! | redis-server  | `--appendonly yes --appendfsync no --auto-aof-rewrite-percentage 0 --save ''`       |
//! | nats-server   | `-js -sd <dir>` (file storage, the server's default sync)                           |
//!
//! What each promise means is [`System::durability`]. Redis's automatic AOF rewrite is
//! off: it forks and rewrites the whole AOF in the background, competing for the two
//! cores, and compacts nothing in an append-only stream; minilog and JetStream run no
//! such job during a run either.
//!
//! A server is ready when its port accepts a TCP connection; the client's first
//! request (CreateTopics, XADD, stream create) then has a deadline of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::process::{self, Guarded};
use crate::server::free_port;
use crate::{interrupt, BenchError};

/// How long a server may take to accept connections. All three do in milliseconds on
/// an empty directory; the slack is for a loaded CI machine.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Tries before giving up when another process grabs the chosen port first.
const START_ATTEMPTS: usize = 3;

/// The systems compared, in the order the report lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    Minilog,
    RedisStreams,
    Jetstream,
}

impl System {
    pub const ALL: [System; 3] = [System::Minilog, System::RedisStreams, System::Jetstream];

    pub fn name(self) -> &'static str {
        match self {
            System::Minilog => "minilog",
            System::RedisStreams => "redis-streams",
            System::Jetstream => "jetstream",
        }
    }

    /// The server binary's name.
    pub fn binary(self) -> &'static str {
        match self {
            System::Minilog => "minilog",
            System::RedisStreams => "redis-server",
            System::Jetstream => "nats-server",
        }
    }

    /// When an acknowledged record is on disk, for the report.
    pub fn durability(self) -> &'static str {
        match self {
            System::Minilog => {
                "`--flush os`: a produce is acknowledged once its batch is written to the segment file (the page \
                 cache); the kernel writes it back. Survives kill -9 of the broker, not a power loss."
            }
            System::RedisStreams => {
                "`appendonly yes`, `appendfsync no`: each XADD is written to the AOF (write(2), the page cache) \
                 before its reply is sent; fsync is left to the kernel. The same promise: survives kill -9, not \
                 a power loss. Automatic AOF rewrite off (`auto-aof-rewrite-percentage 0`), RDB snapshots off."
            }
            System::Jetstream => {
                "file storage with nats-server 2.9's default sync: a stream that is not replicated writes each \
                 message to its block file (write(2), the page cache) before the PubAck (flush in place), and \
                 fsyncs its files on a 2-minute timer (not configurable before 2.10's `sync_interval`). The same \
                 promise: survives kill -9, not a power loss."
            }
        }
    }

    /// The arguments that start this system on `port` with its data under `dir`.
    pub fn args(self, port: u16, dir: &Path) -> Vec<String> {
        let dir = dir.display().to_string();
        let args: Vec<&str> = match self {
            System::Minilog => vec![
                "--listen",
                "<addr>",
                "--dir",
                &dir,
                "--flush",
                "os",
                "--admin-port",
                "0",
                "--num-partitions",
                "1",
                "--auto-create-topics",
                "false",
            ],
            System::RedisStreams => vec![
                "--port",
                "<port>",
                "--bind",
                "127.0.0.1",
                "--dir",
                &dir,
                "--daemonize",
                "no",
                "--logfile",
                "",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "no",
                "--auto-aof-rewrite-percentage",
                "0",
            ],
            System::Jetstream => vec!["-a", "127.0.0.1", "-p", "<port>", "-js", "-sd", &dir],
        };
        args.into_iter()
            .map(|a| match a {
                "<addr>" => format!("127.0.0.1:{port}"),
                "<port>" => port.to_string(),
                other => other.to_string(),
            })
            .collect()
    }
}

/// A running server, killed (SIGKILL, by pid) and its directory removed when dropped.
pub struct Broker {
    pub system: System,
    pub port: u16,
    process: Guarded,
    log: PathBuf,
    /// Holds the server's data and log; deleted on drop, after the process is gone
    /// (fields drop in declaration order, and `process` comes first).
    _dir: tempfile::TempDir,
}

impl Broker {
    /// Starts `binary` as `system` and waits until it accepts connections. Retries on
    /// another port if the chosen one was taken in the meantime.
    pub fn start(system: System, binary: &Path) -> Result<Broker, BenchError> {
        let mut attempt = 1;
        loop {
            match Broker::start_once(system, binary) {
                Err(BenchError::ServerStart { log, .. }) if attempt < START_ATTEMPTS && port_was_taken(&log) => {
                    attempt += 1
                }
                result => return result,
            }
        }
    }

    fn start_once(system: System, binary: &Path) -> Result<Broker, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("minibench-{}-", system.name()))
            .tempdir()
            .map_err(BenchError::io("can't create a temporary directory"))?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data).map_err(BenchError::io("can't create the data directory"))?;
        let port = free_port()?;
        let log = dir.path().join("server.log");
        let log_file = std::fs::File::create(&log).map_err(BenchError::io("can't create the server log"))?;
        let log_err = log_file.try_clone().map_err(BenchError::io("can't create the server log"))?;
        let mut command = Command::new(binary);
        command
            .args(system.args(port, &data))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err);
        let process = Guarded::spawn(system.name(), command)?;
        let mut broker = Broker { system, port, process, log, _dir: dir };
        broker.wait_listening()?;
        Ok(broker)
    }

    fn wait_listening(&mut self) -> Result<(), BenchError> {
        let start = Instant::now();
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            interrupt::check()?;
            if let Some(status) = self.process.exited() {
                return Err(self.start_error(format!("it exited with {status}")));
            }
            if std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if start.elapsed() > START_TIMEOUT {
                return Err(self.start_error(format!(
                    "port {} not open within {} s",
                    self.port,
                    START_TIMEOUT.as_secs()
                )));
            }
            process::sleep(Duration::from_millis(20))?;
        }
    }

    fn start_error(&self, reason: String) -> BenchError {
        BenchError::ServerStart { server: self.system.name().into(), reason, log: self.log_tail(20) }
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

    /// `Err` with the reason and the log's last lines when the server has died: a
    /// failed phase then says why.
    pub fn health(&mut self) -> Result<(), String> {
        match self.process.exited() {
            Some(status) => {
                Err(format!("{} exited with {status}; its log ends:\n{}", self.system.name(), self.log_tail(10)))
            }
            None => Ok(()),
        }
    }
}

/// Whether a server's log says it could not bind its port (redis: "Address already in
/// use"; nats: "address already in use"; minilog: the OS error, "Address in use").
fn port_was_taken(log: &str) -> bool {
    log.contains("ddress already in use") || log.contains("ddress in use")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_system_gets_its_durability_flags() {
        let dir = Path::new("/tmp/x");
        let minilog = System::Minilog.args(9, dir).join(" ");
        assert!(minilog.starts_with("--listen 127.0.0.1:9 --dir /tmp/x --flush os --admin-port 0"), "{minilog}");
        let redis = System::RedisStreams.args(9, dir).join(" ");
        assert!(redis.starts_with("--port 9 --bind 127.0.0.1 --dir /tmp/x"), "{redis}");
        assert!(redis.ends_with("--appendonly yes --appendfsync no --auto-aof-rewrite-percentage 0"), "{redis}");
        assert!(redis.contains("--save  "), "no RDB snapshots: {redis}");
        assert_eq!(System::Jetstream.args(9, dir).join(" "), "-a 127.0.0.1 -p 9 -js -sd /tmp/x");
    }

    #[test]
    fn names_are_stable_for_the_json() {
        let names: Vec<String> = System::ALL.iter().map(|s| serde_json::to_string(s).expect("serializes")).collect();
        assert_eq!(names, ["\"minilog\"", "\"redis-streams\"", "\"jetstream\""]);
        assert_eq!(System::ALL.map(System::name), ["minilog", "redis-streams", "jetstream"]);
    }
}
