//! The two servers under test, started fresh for every run with the same flags,
//! beanstalkd's own, which miniqueue accepts unchanged:
//!
//! | durability | command line (both servers)                        |
//! |------------|----------------------------------------------------|
//! | memory     | `-l 127.0.0.1 -p <port>`                           |
//! | durable    | `-l 127.0.0.1 -p <port> -b <empty dir> -f 0`       |
//!
//! Each runs through [`ServerProcess`]: its own temporary directory, a free port on
//! 127.0.0.1, its output in a log file, killed by pid when the run ends. A server is
//! ready when its port accepts a connection ([`Ready::Listening`]); the workload's
//! first command then has a deadline of its own.

use std::path::Path;

use serde::Serialize;

use crate::server::{Ready, ServerProcess};
use crate::BenchError;

/// The systems compared, in the order the report lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    Beanstalkd,
    Miniqueue,
}

impl System {
    pub const ALL: [System; 2] = [System::Beanstalkd, System::Miniqueue];

    /// The system's name, which is also its binary's.
    pub fn name(self) -> &'static str {
        match self {
            System::Beanstalkd => "beanstalkd",
            System::Miniqueue => "miniqueue",
        }
    }
}

/// What an acknowledged put or delete promises, configured identically on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// No `-b`: jobs live in memory only; a restart loses every one.
    Memory,
    /// `-b DIR -f 0`: every change is in the write-ahead log, fsynced, before its reply.
    Durable,
}

impl Durability {
    pub const ALL: [Durability; 2] = [Durability::Memory, Durability::Durable];

    pub fn name(self) -> &'static str {
        match self {
            Durability::Memory => "memory",
            Durability::Durable => "durable",
        }
    }

    /// The heading of its table.
    pub fn describe(self) -> &'static str {
        match self {
            Durability::Memory => "in memory (no -b)",
            Durability::Durable => "durable (-b DIR -f 0: fsync before every reply)",
        }
    }

    /// What the acknowledgement means on each server, for the report.
    pub fn promise(self) -> &'static str {
        match self {
            Durability::Memory => {
                "no `-b` on either server: jobs are in memory only; a put is acknowledged once the job is queued, \
                 and a restart or a crash loses every job."
            }
            Durability::Durable => {
                "`-b DIR -f 0` on both: every put, delete or other change is written to the \
                 write-ahead log and fsynced before its reply, so an acknowledged job survives kill -9 and power \
                 loss. beanstalkd writes and fsyncs each record in turn on its one thread, so every client waits \
                 for every other client's fsync; miniqueue groups the records of concurrent clients into one \
                 fsync (group commit) and answers them all after it."
            }
        }
    }

    /// Flags beyond the listen address and port.
    fn flags(self, dir: &Path) -> Vec<String> {
        match self {
            Durability::Memory => Vec::new(),
            Durability::Durable => vec!["-b".into(), dir.display().to_string(), "-f".into(), "0".into()],
        }
    }
}

/// The command line that starts either system on `port`, with its log under `dir`.
pub fn args(port: u16, durability: Durability, dir: &Path) -> Vec<String> {
    let mut args: Vec<String> = vec!["-l".into(), "127.0.0.1".into(), "-p".into(), port.to_string()];
    args.extend(durability.flags(dir));
    args
}

/// Starts `binary` as `system` on a free port with an empty data directory, and waits
/// until its port accepts connections.
pub fn start(system: System, binary: &Path, durability: Durability) -> Result<ServerProcess, BenchError> {
    ServerProcess::start(system.name(), binary, |port, dir| args(port, durability, dir), Ready::Listening)
}

/// `Err` with the reason and the log's last lines when the server has died, so that a
/// failed run says why.
pub fn health(server: &mut ServerProcess) -> Result<(), String> {
    match server.exited() {
        Some(status) => Err(format!("{} exited with {status}; its log ends:\n{}", server.name, server.log_tail(10))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_systems_get_beanstalkds_flags() {
        let dir = Path::new("/tmp/x");
        assert_eq!(args(7, Durability::Memory, dir).join(" "), "-l 127.0.0.1 -p 7");
        assert_eq!(args(7, Durability::Durable, dir).join(" "), "-l 127.0.0.1 -p 7 -b /tmp/x -f 0");
    }

    #[test]
    fn names_are_stable_for_the_json() {
        let names: Vec<String> = System::ALL.iter().map(|s| serde_json::to_string(s).expect("serializes")).collect();
        assert_eq!(names, ["\"beanstalkd\"", "\"miniqueue\""]);
        assert_eq!(serde_json::to_string(&Durability::Durable).expect("serializes"), "\"durable\"");
    }
}
