//! minilog: an append-only log broker that speaks Kafka's wire protocol.
//!
//! Topics are split into partitions; each partition is a log of record batches kept
//! in segment files with a sparse offset index and a time index ([`storage`]).
//! Producers append, consumers fetch by offset, and consumer groups share partitions
//! and commit their progress ([`group`]). Clients that speak Kafka (kcat, librdkafka,
//! kafka-python, the `rdkafka` crate) work unchanged ([`protocol`]).
//!
//! ```no_run
//! # async fn run() -> Result<(), String> {
//! let config = minilog::config::BrokerConfig::with_dir("/tmp/minilog", "127.0.0.1:9092".parse().unwrap());
//! let running = minilog::start(config).await?;
//! println!("kcat -b {} -L", running.addr);
//! running.server.shutdown.trigger();
//! running.wait().await;
//! # Ok(()) }
//! ```
//!
//! See `docs/minilog.md` for the internals, the durability promise of each flush
//! policy, and what differs from Kafka.

pub mod broker;
pub mod config;
pub mod group;
pub mod metrics;
pub mod producer_state;
pub mod protocol;
pub mod server;
pub mod storage;

pub use server::{start, Running};
