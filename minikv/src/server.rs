//! The server: state shared by every connection, and start-up.
//!
//! ```text
//!   Server
//!   ├── config      parameters (hot ones as atomics)
//!   ├── keyspace    SHARDS × Mutex<Shard>, each with a Table per database
//!   ├── clients     registry for CLIENT LIST/KILL and shutdown
//!   ├── pubsub      channel and pattern subscriptions
//!   ├── aof         the append-only file, when appendonly is yes
//!   └── stats       per-command counters and latency histograms
//! ```
//!
//! Connections hold an `Arc<Server>` and otherwise share nothing. Background work (the
//! active expiry cycle, AOF rewrites, the LRU clock) runs in [`crate::cron`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::aof::Aof;
use crate::clients::Clients;
use crate::config::Config;
use crate::keyspace::Keyspace;
use crate::metrics::CommandStats;
use crate::pubsub::PubSub;

/// Unix time in milliseconds.
#[inline]
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

pub fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Counters that are not per command.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub net_input_bytes: AtomicU64,
    pub net_output_bytes: AtomicU64,
    pub expire_cycles: AtomicU64,
    pub expire_cycle_time_us: AtomicU64,
    pub pubsub_messages: AtomicU64,
    pub output_limit_disconnections: AtomicU64,
}

pub struct Server {
    pub config: Config,
    pub keyspace: Keyspace,
    pub clients: Clients,
    pub pubsub: PubSub,
    /// The AOF, when `appendonly yes`. Set once at start-up, before any client
    /// connects, so the hot path reads it without a lock or a reference count.
    pub aof: OnceLock<Arc<Aof>>,
    pub commands: CommandStats,
    pub stats: ServerStats,
    pub started: Instant,
    pub started_unix_ms: u64,
    pub run_id: String,
    /// True while the AOF is being replayed.
    pub loading: AtomicBool,
    /// Shutdown has begun: connections finish the batch they are on and close.
    pub stopping: AtomicBool,
    pub shutdown: minicore::lifecycle::Shutdown,
    pub limit: Arc<minicore::lifecycle::ConnectionLimit>,
    /// The actual listening port (differs from the configured one with port 0).
    pub port: AtomicU64,
}

impl Server {
    pub fn new(config: Config) -> Arc<Server> {
        let databases = config.with_settings(|s| s.databases);
        let maxclients = config.live.maxclients.load(Ordering::Relaxed);
        let now = unix_ms();
        let run_id: String = (0..40).map(|_| char::from_digit(fastrand::u32(0..16), 16).unwrap_or('0')).collect();
        Arc::new(Server {
            keyspace: Keyspace::new(databases),
            clients: Clients::new(),
            pubsub: PubSub::default(),
            aof: OnceLock::new(),
            commands: CommandStats::new(crate::cmd::table().names()),
            stats: ServerStats::default(),
            started: Instant::now(),
            started_unix_ms: now,
            run_id,
            loading: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            shutdown: minicore::lifecycle::Shutdown::new(),
            limit: minicore::lifecycle::ConnectionLimit::new(maxclients),
            port: AtomicU64::new(config.with_settings(|s| s.port) as u64),
            config,
        })
    }

    /// The AOF, when enabled.
    pub fn aof(&self) -> Option<&Arc<Aof>> {
        self.aof.get()
    }

    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}
