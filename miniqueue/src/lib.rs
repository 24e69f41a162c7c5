//! miniqueue: a durable job queue that speaks beanstalkd 1.12's protocol, with retries,
//! backoff and a dead-letter state on top.
//!
//! ```text
//!  client ──TCP──> server.rs ──frames──> protocol.rs (Framer, parse_command)
//!                     │
//!                     ├──> engine.rs: jobs, tubes, reservations, timers (pure: `now` is an argument)
//!                     │       ├─ tube.rs, job.rs, retry.rs
//!                     │       └─ wal.rs records ──append──> minicore::record_log (group commit)
//!                     ├──> stats.rs: the YAML bodies
//!                     └──> admin.rs: /metrics, /healthz, dead-letter JSON endpoints
//! ```
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), String> {
//! let config = miniqueue::config::Config::in_memory("127.0.0.1:0".parse().unwrap());
//! let running = miniqueue::start(config).await?;
//! println!("beanstalk clients can connect to {}", running.addr);
//! running.shutdown.trigger();
//! running.wait().await;
//! # Ok(()) }
//! ```
//!
//! See `docs/miniqueue.md` for the state machine, the WAL and what differs from
//! beanstalkd.

pub mod admin;
pub mod commit;
pub mod config;
pub mod engine;
pub mod job;
pub mod protocol;
pub mod retry;
pub mod server;
pub mod stats;
pub mod tube;
pub mod wal;

pub use server::{start, Running};
