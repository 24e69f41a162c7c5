//! minibench: the mini systems measured side by side with the real ones.
//!
//! A number about minikv means little on its own; the same number for Redis, taken on
//! the same machine, with the same client and the same durability settings, in the
//! same run, does. So the harness starts both servers as separate processes, drives
//! them with the real system's own load generator (`redis-benchmark`), alternates
//! between them round by round so that a noisy neighbour or a warming CPU hurts both
//! alike, and reports medians, percentiles and the ratio minikv/redis.
//!
//! ```text
//!  kv::run ──> server.rs: redis-server + minikv, temp dirs, free loopback ports
//!          ──> redis_benchmark.rs: one redis-benchmark per test, CSV parsed
//!          ──> mass_insert.rs: 1M SETs through `redis-cli --pipe`, then RSS
//!          ──> report.rs: medians and ratios, markdown tables or JSON
//!  log::run ──> log/brokers.rs: minilog, redis-server, nats-server, each through server.rs
//!           ──> log/{kafka,redis_streams,jetstream}.rs: one producer, one consumer
//!           ──> log/report.rs: its own tables, report.rs's rounds, cells and bars
//!  queue::run ──> queue/servers.rs: beanstalkd and miniqueue, each through server.rs
//!             ──> queue/cycle.rs: N clients, put → reserve → delete, on queue/client.rs
//!             ──> queue/report.rs: jobs/s and cycle latency, report.rs's rounds and bars
//!  cache::run ──> cache/trace.rs: LIRS traces (plain or gzip) and cache/zipf.rs's Zipf trace
//!             ──> cache/contenders.rs: minicache's policies, moka, quick_cache, replayed
//!                 in process; cache/lru.rs (exact LRU), cache/optimal.rs (Bélády)
//!             ──> cache/report.rs: hit ratios per trace and capacity, bars, JSON lines
//!  raft::run ──> three `miniraft` processes through server.rs, the leader found by RAFT.STATUS
//!            ──> 1, 16 and 256 proposers (the `redis` crate), SETs acknowledged once committed
//!            ──> writes/s and latency percentiles per proposer count, a table or JSON
//! ```
//!
//! Both read the machine the same way ([`environment`]) and draw the same progress
//! bar ([`progress`]).
//!
//! Every process the harness starts is killed when the harness is done with it, on an
//! error, and on Ctrl-C ([`process`], [`interrupt`]); every wait has a deadline.
//!
//! The criterion micro-benchmarks (minikv's building blocks, and minicache against moka
//! and quick_cache) live next to this library, in `benches/benches/`
//! (`cargo bench -p minibench`).
//!
//! # Example
//!
//! ```no_run
//! # fn demo() -> Result<(), minibench::BenchError> {
//! let options = minibench::kv::Options::quick();
//! let report = minibench::kv::run(&options)?;
//! println!("{}", minibench::report::render_markdown(&report));
//! # Ok(()) }
//! ```
//!
//! Left out: other machines (client and server always share this one, which caps
//! both), and other clients than redis-benchmark and redis-cli.

pub mod cache;
pub mod environment;
pub mod error;
pub mod interrupt;
pub mod kv;
pub mod log;
pub mod mass_insert;
pub mod process;
pub mod progress;
pub mod queue;
pub mod raft;
pub mod redis_benchmark;
pub mod report;
pub mod server;
pub mod stats;

pub use error::BenchError;
