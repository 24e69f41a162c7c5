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
//! A server is ready when its port accepts a TCP connection ([`Ready::Listening`]);
//! the client's first request (CreateTopics, XADD, stream create) then has a deadline
//! of its own.

use std::path::Path;

use serde::Serialize;

use crate::server::{Ready, ServerProcess};
use crate::BenchError;

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

/// A running broker, killed (SIGKILL, by pid) and its directory removed when dropped.
pub struct Broker {
    /// Which system it is: its health message names it.
    pub system: System,
    /// The process, its port and its log, started the way `mini bench kv` starts its
    /// servers, so that both benchmarks clean up and retry a taken port alike.
    pub server: ServerProcess,
}

impl Broker {
    /// Starts `binary` as `system` and waits until its port accepts connections.
    pub fn start(system: System, binary: &Path) -> Result<Broker, BenchError> {
        let server = ServerProcess::start(system.name(), binary, |port, dir| system.args(port, dir), Ready::Listening)?;
        Ok(Broker { system, server })
    }

    /// `Err` with the reason and the log's last lines when the server has died: a
    /// failed phase then says why.
    pub fn health(&mut self) -> Result<(), String> {
        match self.server.exited() {
            Some(status) => {
                Err(format!("{} exited with {status}; its log ends:\n{}", self.system.name(), self.server.log_tail(10)))
            }
            None => Ok(()),
        }
    }
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
