//! The result of `mini bench log`, and how it is shown: markdown tables for people and
//! JSON for programs (`--json`, and the CI test, which checks the record counts).
//!
//! As in `mini bench kv`, a failed run is part of the result, never a reason to drop
//! the rest: its cells say "failed" and the error is listed under the table. The rules
//! for that, and the bars table, are `mini bench kv`'s own ([`crate::report`]); the
//! figures and tables here are a log's.

use serde::Serialize;

use super::brokers::System;
use super::cpu::Cores;
use super::phase::{Consumed, Produced, Workload};
use crate::report::{figure_cell, render_bars, render_failures, summarise, thousands, BarCheck};
use crate::stats::{median_of, ratio};

/// minilog's produce bar, for 100-byte records from one batching producer.
pub const MIN_PRODUCE_PER_S: f64 = 1_000_000.0;
/// minilog's consume bar, for 100-byte records.
pub const MIN_CONSUME_PER_S: f64 = 2_000_000.0;
/// The record size the two absolute bars are set for.
pub const BAR_RECORD_BYTES: usize = 100;

#[derive(Debug, Clone, Serialize)]
pub struct LogReport {
    pub environment: Environment,
    pub settings: Settings,
    /// What an acknowledgement promises on each system, as configured.
    pub durability: Vec<Promise>,
    /// One comparison per record size.
    pub sizes: Vec<SizeComparison>,
    /// The bars minilog is held to, checked against the figures above.
    pub bars: Vec<BarCheck>,
}

impl LogReport {
    pub fn new(environment: Environment, settings: Settings, sizes: Vec<SizeComparison>) -> LogReport {
        let durability = System::ALL.iter().map(|&system| Promise { system, promise: system.durability() }).collect();
        let bars = check_bars(&sizes);
        LogReport { environment, settings, durability, sizes, bars }
    }
}

/// What the numbers were measured on and with.
#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    /// `minilog --version`.
    pub minilog_version: String,
    /// From `redis-server --version`, e.g. "7.0.15 (jemalloc-5.3.0)".
    pub redis_version: String,
    /// From `nats-server --version`, e.g. "2.9.10".
    pub nats_version: String,
    /// The librdkafka that drives minilog, e.g. "2.12.1".
    pub librdkafka_version: String,
    pub cpu: String,
    pub cores: usize,
}

/// How the clients were set up, so that a reader can rerun or argue with them.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub rounds: usize,
    /// Records any producer may have unacknowledged at once.
    pub window: u64,
    pub kafka_producer: Vec<(String, String)>,
    pub kafka_consumer: Vec<(String, String)>,
    pub redis_pipeline: u64,
    pub redis_read_batch: u64,
    pub jetstream_pull_batch: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Promise {
    pub system: System,
    pub promise: &'static str,
}

/// Every system's runs for one record size.
#[derive(Debug, Clone, Serialize)]
pub struct SizeComparison {
    pub record_bytes: usize,
    /// Records per run, produced then consumed.
    pub records: u64,
    /// In [`System::ALL`] order.
    pub systems: Vec<SystemRuns>,
    /// minilog against each other system.
    pub ratios: Vec<Ratios>,
}

impl SizeComparison {
    pub fn new(workload: &Workload, systems: Vec<SystemRuns>) -> SizeComparison {
        let minilog = systems.iter().find(|s| s.system == System::Minilog).and_then(|s| s.median);
        let ratios = systems
            .iter()
            .filter(|s| s.system != System::Minilog)
            .map(|other| {
                let of = |f: fn(&Figures) -> f64| match (minilog, other.median) {
                    (Some(m), Some(o)) => ratio(f(&m), f(&o)),
                    _ => None,
                };
                Ratios {
                    other: other.system,
                    produce: of(|f| f.produce_per_s),
                    consume: of(|f| f.consume_per_s),
                    produce_p50: of(|f| f.p50_ms),
                    produce_p99: of(|f| f.p99_ms),
                }
            })
            .collect();
        SizeComparison { record_bytes: workload.record_bytes, records: workload.records, systems, ratios }
    }

    fn minilog(&self) -> Option<Figures> {
        self.systems.iter().find(|s| s.system == System::Minilog).and_then(|s| s.median)
    }
}

/// One system's rounds for one record size, and their medians.
#[derive(Debug, Clone, Serialize)]
pub struct SystemRuns {
    pub system: System,
    pub rounds: Vec<Run>,
    /// Medians over the rounds, column by column; `None` when any round failed.
    pub median: Option<Figures>,
    /// The first failure, when a round failed.
    pub error: Option<String>,
}

impl SystemRuns {
    /// Summarises the rounds with `summarise`: a system that failed in any round has
    /// no median.
    pub fn new(system: System, rounds: Vec<Run>) -> SystemRuns {
        let (median, error) = summarise(
            &rounds,
            |r| r.error.as_ref(),
            |r| Some((r.produce.as_ref()?, r.consume.as_ref()?)),
            |complete| {
                let of = |f: fn(&ProduceFigures, &ConsumeFigures) -> f64| {
                    median_of(complete, |(p, c)| f(p, c)).unwrap_or(f64::NAN)
                };
                Some(Figures {
                    produce_per_s: of(|p, _| p.records_per_s),
                    produce_mb_per_s: of(|p, _| p.mb_per_s),
                    p50_ms: of(|p, _| p.p50_ms),
                    p99_ms: of(|p, _| p.p99_ms),
                    consume_per_s: of(|_, c| c.records_per_s),
                    consume_mb_per_s: of(|_, c| c.mb_per_s),
                    produce_cpu: median_cores(complete.iter().map(|(p, _)| p.cpu)),
                    consume_cpu: median_cores(complete.iter().map(|(_, c)| c.cpu)),
                })
            },
        );
        SystemRuns { system, rounds, median, error }
    }
}

/// The median of each side's cores, if every round has them.
fn median_cores(rounds: impl Iterator<Item = Option<Cores>>) -> Option<Cores> {
    let all: Vec<Cores> = rounds.collect::<Option<_>>()?;
    let of = |f: fn(&Cores) -> f64| median_of(&all, f);
    Some(Cores { server: of(|c| c.server)?, client: of(|c| c.client)? })
}

/// One run: a fresh server, a produce phase, a consume phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Run {
    pub produce: Option<ProduceFigures>,
    pub consume: Option<ConsumeFigures>,
    pub error: Option<String>,
}

impl Run {
    pub fn failed(error: String) -> Run {
        Run { error: Some(error), ..Run::default() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProduceFigures {
    /// Records acknowledged.
    pub records: u64,
    pub seconds: f64,
    pub records_per_s: f64,
    /// Payload megabytes (10^6 bytes) per second.
    pub mb_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Cores busy during the phase, when both clocks could be read.
    pub cpu: Option<Cores>,
}

impl ProduceFigures {
    pub fn new(produced: &Produced, record_bytes: usize, cpu: Option<Cores>) -> ProduceFigures {
        let seconds = produced.elapsed.as_secs_f64();
        let ms = |nanos: Option<u64>| nanos.map_or(f64::NAN, |n| n as f64 / 1e6);
        ProduceFigures {
            records: produced.records,
            seconds,
            records_per_s: per_second(produced.records as f64, seconds),
            mb_per_s: per_second((produced.records * record_bytes as u64) as f64 / 1e6, seconds),
            p50_ms: ms(produced.latency.quantile(0.50)),
            p99_ms: ms(produced.latency.quantile(0.99)),
            max_ms: ms(produced.latency.max()),
            cpu,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConsumeFigures {
    /// Records read back and checked.
    pub records: u64,
    pub seconds: f64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
    pub cpu: Option<Cores>,
}

impl ConsumeFigures {
    pub fn new(consumed: &Consumed, record_bytes: usize, cpu: Option<Cores>) -> ConsumeFigures {
        let seconds = consumed.elapsed.as_secs_f64();
        ConsumeFigures {
            records: consumed.records,
            seconds,
            records_per_s: per_second(consumed.records as f64, seconds),
            mb_per_s: per_second((consumed.records * record_bytes as u64) as f64 / 1e6, seconds),
            cpu,
        }
    }
}

/// `amount / seconds`, 0 for a phase too short to time (it moved nothing).
fn per_second(amount: f64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        amount / seconds
    } else {
        0.0
    }
}

/// The medians of one system's rounds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Figures {
    pub produce_per_s: f64,
    pub produce_mb_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub consume_per_s: f64,
    pub consume_mb_per_s: f64,
    /// Median cores busy while producing; `None` if any round could not read them.
    pub produce_cpu: Option<Cores>,
    pub consume_cpu: Option<Cores>,
}

/// minilog's medians over another system's. Above 1 is better for throughput, below 1
/// for latency. MB/s ratios equal the records/s ratios (the same records), so they are
/// not repeated.
#[derive(Debug, Clone, Serialize)]
pub struct Ratios {
    pub other: System,
    pub produce: Option<f64>,
    pub consume: Option<f64>,
    pub produce_p50: Option<f64>,
    pub produce_p99: Option<f64>,
}

/// Checks every bar against the medians.
pub fn check_bars(sizes: &[SizeComparison]) -> Vec<BarCheck> {
    let mut bars = Vec::new();
    let bar_size = sizes.iter().find(|s| s.record_bytes == BAR_RECORD_BYTES);
    let absolute = [
        ("produce", MIN_PRODUCE_PER_S, (|f: &Figures| f.produce_per_s) as fn(&Figures) -> f64),
        ("consume", MIN_CONSUME_PER_S, |f: &Figures| f.consume_per_s),
    ];
    for (phase, min, figure) in absolute {
        let measured = bar_size.and_then(SizeComparison::minilog).map(|m| figure(&m));
        bars.push(BarCheck {
            what: format!("minilog {phase} records/s, {BAR_RECORD_BYTES} B records"),
            bar: format!(">= {}", thousands(min)),
            measured,
            met: measured.is_some_and(|m| m >= min),
        });
    }
    for size in sizes {
        for r in &size.ratios {
            for (phase, measured) in [("produce", r.produce), ("consume", r.consume)] {
                bars.push(BarCheck {
                    what: format!("minilog/{} {phase} records/s, {} B records", r.other.name(), size.record_bytes),
                    bar: "> 1.00x".to_string(),
                    measured,
                    met: measured.is_some_and(|m| m > 1.0),
                });
            }
        }
    }
    bars
}

/// The report as markdown: what was measured and how, a table per record size, the
/// durability settings, the client settings, the bars.
pub fn render_markdown(report: &LogReport) -> String {
    let env = &report.environment;
    let s = &report.settings;
    let mut out = format!(
        "{} vs Redis Streams on redis-server {} vs NATS JetStream on nats-server {}, on {} core(s) ({}). One \
         producer, then one consumer, per run; every run on a fresh server with an empty data directory; the \
         systems alternate within a round; median of {} round(s). Clients we did not write: librdkafka {} \
         (rdkafka crate) for minilog, redis-rs for Redis, async-nats for JetStream. Client and server share \
         the machine.\n\n",
        env.minilog_version, env.redis_version, env.nats_version, env.cores, env.cpu, s.rounds, env.librdkafka_version
    );
    out.push_str(&format!(
        "Produce latency is per record: from handing the record to the client library to its acknowledgement \
         (librdkafka's delivery callback, acks=1; the reply of the XADD pipeline holding the record; the \
         record's PubAck). Every producer keeps at most {} records unacknowledged, so under full load latency \
         is about that window divided by the throughput (Little's law). Consume runs from asking for the first \
         record to holding the last, every record checked in order. MB/s counts payload, 10^6 bytes per MB. The \
         cores-busy table under each size shows which side set the pace: a side near 1.0 core (or, for a \
         multi-threaded one, near what the other side leaves of the two) ran out; the client's cost is part of \
         every figure.\n",
        thousands(s.window as f64)
    ));
    for size in &report.sizes {
        out.push('\n');
        out.push_str(&render_size(size));
    }
    out.push_str("\n#### Durability\n\n");
    for p in &report.durability {
        out.push_str(&format!("- {}: {}\n", p.system.name(), p.promise));
    }
    out.push_str("\n#### Clients\n\n");
    let pairs = |settings: &[(String, String)]| {
        settings.iter().map(|(k, v)| format!("`{k}={v}`")).collect::<Vec<_>>().join(", ")
    };
    out.push_str(&format!(
        "- minilog: producer {}; consumer assigned partition 0 from offset 0, {}.\n",
        pairs(&s.kafka_producer),
        pairs(&s.kafka_consumer)
    ));
    out.push_str(&format!(
        "- redis-streams: pipelines of {} `XADD minibench * d <record>`, up to {} pipelines in flight on one \
         connection; consume with `XRANGE` `COUNT {}`, one batch after another.\n",
        s.redis_pipeline,
        (s.window / s.redis_pipeline).max(1),
        s.redis_read_batch
    ));
    out.push_str(&format!(
        "- jetstream: file-backed stream, 1 replica; async publishes with up to {} PubAcks outstanding; \
         ephemeral pull consumer, ack policy none, pulls of {} messages kept in flight.\n",
        thousands(s.window as f64),
        s.jetstream_pull_batch
    ));
    if !report.bars.is_empty() {
        out.push('\n');
        // A ratio bar ("> 1.00x") gets its figure as a ratio, an absolute one in records/s.
        out.push_str(&render_bars(&report.bars, "measured", |b, m| {
            if b.bar.ends_with('x') {
                format!("{m:.2}x")
            } else {
                thousands(m)
            }
        }));
    }
    out
}

fn render_size(size: &SizeComparison) -> String {
    let mut out = format!("#### {}-byte records, {} per run\n\n", size.record_bytes, thousands(size.records as f64));
    out.push_str(
        "| system | produce records/s | produce MB/s | produce p50 ms | produce p99 ms | consume records/s | consume MB/s |\n",
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    let mut failures = Vec::new();
    for s in &size.systems {
        let cell = |f: fn(&Figures) -> String| figure_cell(s.median.as_ref(), s.error.is_some(), f);
        if let Some(e) = &s.error {
            failures.push((s.system.name().to_string(), e.as_str()));
        }
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            s.system.name(),
            cell(|m| thousands(m.produce_per_s)),
            cell(|m| format!("{:.1}", m.produce_mb_per_s)),
            cell(|m| format!("{:.2}", m.p50_ms)),
            cell(|m| format!("{:.2}", m.p99_ms)),
            cell(|m| thousands(m.consume_per_s)),
            cell(|m| format!("{:.1}", m.consume_mb_per_s)),
        ));
    }
    let times = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.2}x"));
    for r in &size.ratios {
        out.push_str(&format!(
            "| minilog/{} | {} | | {} | {} | {} | |\n",
            r.other.name(),
            times(r.produce),
            times(r.produce_p50),
            times(r.produce_p99),
            times(r.consume)
        ));
    }
    out.push_str(&render_cpu(size));
    out.push_str(&render_failures(&failures));
    out
}

/// Cores busy per phase: which side ran out.
fn render_cpu(size: &SizeComparison) -> String {
    let mut out = String::from(
        "\n| cores busy (median) | produce: server | produce: client | consume: server | consume: client |\n\
         |---|---:|---:|---:|---:|\n",
    );
    for s in &size.systems {
        let cores = |c: Option<Cores>| match c {
            Some(c) => [format!("{:.2}", c.server), format!("{:.2}", c.client)],
            None => ["-".to_string(), "-".to_string()],
        };
        let [ps, pc] = cores(s.median.and_then(|m| m.produce_cpu));
        let [cs, cc] = cores(s.median.and_then(|m| m.consume_cpu));
        out.push_str(&format!("| {} | {ps} | {pc} | {cs} | {cc} |\n", s.system.name()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(produce_per_s: f64, p99_ms: f64, consume_per_s: f64) -> Run {
        Run {
            produce: Some(ProduceFigures {
                records: 1000,
                seconds: 1000.0 / produce_per_s,
                records_per_s: produce_per_s,
                mb_per_s: produce_per_s * 100.0 / 1e6,
                p50_ms: p99_ms / 2.0,
                p99_ms,
                max_ms: p99_ms * 2.0,
                cpu: Some(Cores { server: 0.9, client: 0.5 }),
            }),
            consume: Some(ConsumeFigures {
                records: 1000,
                seconds: 1000.0 / consume_per_s,
                records_per_s: consume_per_s,
                mb_per_s: consume_per_s * 100.0 / 1e6,
                cpu: None,
            }),
            error: None,
        }
    }

    fn sample() -> LogReport {
        let workload = Workload { records: 1000, record_bytes: 100, window: 100 };
        let small = SizeComparison::new(
            &workload,
            vec![
                SystemRuns::new(
                    System::Minilog,
                    vec![
                        run(1_500_000.0, 4.0, 3_000_000.0),
                        run(900_000.0, 9.0, 2_500_000.0),
                        run(1_200_000.0, 5.0, 2_000_000.0),
                    ],
                ),
                SystemRuns::new(System::RedisStreams, vec![run(400_000.0, 10.0, 1_000_000.0)]),
                SystemRuns::new(
                    System::Jetstream,
                    vec![run(200_000.0, 20.0, 500_000.0), Run::failed("timed | out".into())],
                ),
            ],
        );
        LogReport::new(
            Environment {
                minilog_version: "minilog 0.1.0".into(),
                redis_version: "7.0.15".into(),
                nats_version: "2.9.10".into(),
                librdkafka_version: "2.12.1".into(),
                cpu: "Test CPU".into(),
                cores: 2,
            },
            Settings {
                rounds: 3,
                window: 100,
                kafka_producer: vec![("acks".into(), "1".into())],
                kafka_consumer: vec![],
                redis_pipeline: 10,
                redis_read_batch: 100,
                jetstream_pull_batch: 100,
            },
            vec![small],
        )
    }

    #[test]
    fn medians_are_taken_column_by_column_and_a_failed_round_leaves_none() {
        let report = sample();
        let minilog = report.sizes[0].systems[0].median.expect("three good rounds");
        assert_eq!((minilog.produce_per_s, minilog.p99_ms, minilog.consume_per_s), (1_200_000.0, 5.0, 2_500_000.0));
        let jetstream = &report.sizes[0].systems[2];
        assert_eq!(jetstream.median, None);
        assert_eq!(jetstream.error.as_deref(), Some("round 2: timed | out"));
        let vs_redis = &report.sizes[0].ratios[0];
        assert_eq!((vs_redis.other, vs_redis.produce, vs_redis.consume), (System::RedisStreams, Some(3.0), Some(2.5)));
        assert_eq!(vs_redis.produce_p99, Some(0.5));
        assert_eq!(report.sizes[0].ratios[1].produce, None);
    }

    #[test]
    fn bars_check_the_absolute_floors_and_every_ratio() {
        let bars: Vec<(String, bool)> = sample().bars.into_iter().map(|b| (b.what, b.met)).collect();
        assert_eq!(
            bars,
            [
                ("minilog produce records/s, 100 B records".to_string(), true),
                ("minilog consume records/s, 100 B records".to_string(), true),
                ("minilog/redis-streams produce records/s, 100 B records".to_string(), true),
                ("minilog/redis-streams consume records/s, 100 B records".to_string(), true),
                ("minilog/jetstream produce records/s, 100 B records".to_string(), false),
                ("minilog/jetstream consume records/s, 100 B records".to_string(), false),
            ]
        );
        let slow = SizeComparison::new(
            &Workload { records: 1, record_bytes: 100, window: 1 },
            vec![SystemRuns::new(System::Minilog, vec![run(999_999.0, 1.0, 2_000_000.0)])],
        );
        let checked = check_bars(&[slow]);
        assert!(!checked[0].met, "999,999 misses a 1,000,000 bar");
        assert!(checked[1].met, "2,000,000 meets a 2,000,000 bar");
    }

    #[test]
    fn renders_a_table_per_size_with_ratios_and_failures() {
        let md = render_markdown(&sample());
        assert!(md.contains("#### 100-byte records, 1,000 per run"), "{md}");
        assert!(md.contains("| minilog | 1,200,000 | 120.0 | 2.50 | 5.00 | 2,500,000 | 250.0 |"), "{md}");
        assert!(md.contains("| jetstream | failed | failed | failed | failed | failed | failed |"), "{md}");
        assert!(md.contains("| minilog/redis-streams | 3.00x | | 0.50x | 0.50x | 2.50x | |"), "{md}");
        assert!(md.contains("| minilog/jetstream | - | | - | - | - | |"), "{md}");
        assert!(md.contains("- jetstream: round 2: timed \\| out"), "{md}");
        assert!(md.contains("| minilog | 0.90 | 0.50 | - | - |"), "{md}");
        assert!(md.contains("`appendfsync no`") && md.contains("`--flush os`") && md.contains("2-minute"), "{md}");
        assert!(md.contains("#### Bars: 4 of 6 met"), "{md}");
        assert!(md.contains("| minilog produce records/s, 100 B records | >= 1,000,000 | 1,200,000 | yes |"), "{md}");
        assert!(md.contains("| minilog/jetstream consume records/s, 100 B records | > 1.00x | - | **no** |"), "{md}");
        // Every row has its table's cell count: 7 (figures), 5 (cores), 4 (bars).
        for line in md.lines().filter(|l| l.starts_with('|')) {
            let cells = line.replace("\\|", "").matches('|').count() - 1;
            assert!([7, 5, 4].contains(&cells), "{cells} cells: {line}");
        }
    }

    #[test]
    fn json_carries_counts_and_errors() {
        let json = serde_json::to_value(sample()).expect("serializes");
        let minilog = &json["sizes"][0]["systems"][0];
        assert_eq!(minilog["system"], "minilog");
        assert_eq!(minilog["rounds"][0]["produce"]["records"], 1000);
        assert_eq!(minilog["rounds"][0]["consume"]["records"], 1000);
        assert_eq!(json["sizes"][0]["systems"][2]["rounds"][1]["error"], "timed | out");
        assert_eq!(json["durability"][1]["system"], "redis-streams");
    }
}
