//! Command-line flags: beanstalkd's own, so miniqueue drops in where beanstalkd runs,
//! plus `--admin-port` for the HTTP admin endpoint beanstalkd does not have.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgAction, Parser};
use minicore::record_log::FsyncPolicy;

/// beanstalkd's default and largest job sizes.
pub const DEFAULT_MAX_JOB_SIZE: usize = 65535;
pub const LARGEST_MAX_JOB_SIZE: usize = 1_073_741_824;
/// beanstalkd's default WAL file size.
pub const DEFAULT_WAL_FILE_SIZE: u64 = 10_485_760;
/// How long a lone client's connection looks for its next command after a reply (see
/// `--busy-poll-us`).
pub const DEFAULT_BUSY_POLL_US: u64 = 100;
/// beanstalkd's `-f` default when `-b` is given.
pub const DEFAULT_FSYNC_MS: u64 = 50;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "miniqueue",
    version = concat!(env!("CARGO_PKG_VERSION"), " (beanstalkd 1.12 protocol)"),
    about = "A durable job queue that speaks beanstalkd 1.12's protocol.",
    disable_version_flag = true,
    after_help = "Durability of an acknowledged write (put, delete, release, bury, kick, ...):\n  \
    no -b      in memory only: lost when the process exits\n  \
    -b -f 0    fsynced before the reply; concurrent clients share fsyncs (group commit)\n  \
    -b -f MS   written to the OS before the reply (survives kill -9), fsynced within MS ms\n  \
    -b -F      written to the OS before the reply (survives kill -9), never fsynced by us\n\
    After a restart, reserved jobs are ready again and delayed jobs keep their deadline."
)]
pub struct Config {
    /// Listen on this address (beanstalkd's default is 0.0.0.0; ours is loopback).
    #[arg(short = 'l', value_name = "ADDR", default_value = "127.0.0.1")]
    pub listen: String,
    /// Listen on this port (0 picks a free one).
    #[arg(short = 'p', value_name = "PORT", default_value_t = 11300)]
    pub port: u16,
    /// Write-ahead log directory. Without it, jobs live in memory only.
    #[arg(short = 'b', value_name = "DIR")]
    pub wal_dir: Option<PathBuf>,
    /// fsync at most once every MS milliseconds (default 50ms); -f0 fsyncs before every reply.
    #[arg(short = 'f', value_name = "MS")]
    pub fsync_ms: Option<u64>,
    /// Never fsync.
    #[arg(short = 'F', action = ArgAction::SetTrue)]
    pub never_fsync: bool,
    /// Become this user and group (not supported: run miniqueue as that user instead).
    #[arg(short = 'u', value_name = "USER")]
    pub user: Option<String>,
    /// Maximum job size in bytes (max 1073741824).
    #[arg(short = 'z', value_name = "BYTES", default_value_t = DEFAULT_MAX_JOB_SIZE)]
    pub max_job_size: usize,
    /// Size of each write-ahead log file in bytes.
    #[arg(short = 's', value_name = "BYTES", default_value_t = DEFAULT_WAL_FILE_SIZE)]
    pub wal_file_size: u64,
    /// Increase verbosity (-V logs connections, -VV every command).
    #[arg(short = 'V', action = ArgAction::Count)]
    pub verbose: u8,
    /// Show version information.
    #[arg(short = 'v', action = ArgAction::Version)]
    pub version: Option<bool>,
    /// Serve /metrics, /healthz, /readyz and the dead-letter JSON endpoints on this port
    /// of the -l address (0 picks a free one).
    #[arg(long = "admin-port", value_name = "PORT")]
    pub admin_port: Option<u16>,
    /// Runtime worker threads. One by default, like beanstalkd's one thread: every
    /// command runs under the engine's one mutex anyway, and on a small machine the other
    /// cores are better left to the clients.
    #[arg(long = "threads", value_name = "N", default_value_t = 1)]
    pub threads: usize,
    /// While only one client is connected, look for its next command for up to this many
    /// microseconds after each reply before the event loop sleeps (as Linux's
    /// `net.core.busy_read`); 0 turns it off. Costs CPU only while that client is busy.
    /// Not used with -f 0, where each reply waits for an fsync anyway.
    #[arg(long = "busy-poll-us", value_name = "US", default_value_t = DEFAULT_BUSY_POLL_US)]
    pub busy_poll_us: u64,
}

impl Config {
    /// A configuration for embedding (`mini up`, tests): in memory on `listen`.
    pub fn in_memory(listen: SocketAddr) -> Self {
        Config {
            listen: listen.ip().to_string(),
            port: listen.port(),
            wal_dir: None,
            fsync_ms: None,
            never_fsync: false,
            user: None,
            max_job_size: DEFAULT_MAX_JOB_SIZE,
            wal_file_size: DEFAULT_WAL_FILE_SIZE,
            verbose: 0,
            version: None,
            admin_port: None,
            threads: 1,
            busy_poll_us: DEFAULT_BUSY_POLL_US,
        }
    }

    /// Rejects combinations beanstalkd would reject, with a message saying what to do.
    pub fn validate(&self) -> Result<(), String> {
        if self.user.is_some() {
            return Err("-u is not supported: start miniqueue as the user it should run as".into());
        }
        if self.max_job_size > LARGEST_MAX_JOB_SIZE {
            return Err(format!("-z {} is over the maximum of {LARGEST_MAX_JOB_SIZE} bytes", self.max_job_size));
        }
        if self.wal_file_size < 4096 {
            return Err(format!("-s {} is too small: use at least 4096 bytes", self.wal_file_size));
        }
        if self.never_fsync && self.fsync_ms.is_some() {
            return Err("-f and -F contradict each other: give one of them".into());
        }
        Ok(())
    }

    /// The record log's fsync policy for these flags.
    pub fn fsync_policy(&self) -> FsyncPolicy {
        if self.never_fsync {
            return FsyncPolicy::Never;
        }
        match self.fsync_ms.unwrap_or(DEFAULT_FSYNC_MS) {
            0 => FsyncPolicy::Always,
            ms => FsyncPolicy::EveryMillis(ms),
        }
    }

    /// What an acknowledgement promises under these flags, in one line.
    pub fn durability(&self) -> String {
        match (&self.wal_dir, self.fsync_policy()) {
            (None, _) => "in memory only (no -b): jobs are lost when the process exits".into(),
            (Some(_), FsyncPolicy::Always) => {
                "-f 0: every acknowledged change is fsynced before its reply (group commit)".into()
            }
            (Some(_), FsyncPolicy::EveryMillis(ms)) => {
                format!("-f {ms}: acknowledged changes survive kill -9; an fsync follows within {ms} ms")
            }
            (Some(_), FsyncPolicy::Never) => "-F: acknowledged changes survive kill -9, never fsynced".into(),
        }
    }
}
