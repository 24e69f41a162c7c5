//! The result of `mini bench queue`, and how it is shown: a markdown table per
//! durability setting (a row per client count) for people, JSON for programs.
//!
//! As in the other benchmarks, a failed run is part of the result: its cells say
//! "failed" and the error is listed under the table. Rounds are summed up, cells and
//! the bars table written, by the helpers every report shares ([`crate::report`]).

use serde::Serialize;

use super::cycle::{Measured, StoppedBy, Tubes};
use super::servers::{Durability, System};
use crate::log::cpu::Cores;
use crate::report::{figure_cell, render_bars, render_failures, summarise, thousands, BarCheck};
use crate::stats::{median_of, ratio};

/// miniqueue's jobs/s over beanstalkd's in memory must be at least this, at each of
/// [`MEMORY_BAR_CLIENTS`].
pub const MIN_MEMORY_RATIO: f64 = 1.0;
/// The client counts the in-memory bar is checked at.
pub const MEMORY_BAR_CLIENTS: [usize; 3] = [1, 16, 64];
/// miniqueue's jobs/s over beanstalkd's, durable, at [`DURABLE_BAR_CLIENTS`]: group
/// commit against an fsync per record.
pub const MIN_DURABLE_RATIO: f64 = 10.0;
pub const DURABLE_BAR_CLIENTS: usize = 64;

#[derive(Debug, Clone, Serialize)]
pub struct QueueReport {
    pub environment: Environment,
    pub settings: Settings,
    /// What an acknowledgement promises under each durability setting.
    pub durability: Vec<Promise>,
    /// One per durability setting and client count, in the order they ran.
    pub comparisons: Vec<Comparison>,
    /// The bars miniqueue is held to.
    pub bars: Vec<BarCheck>,
}

impl QueueReport {
    pub fn new(environment: Environment, settings: Settings, comparisons: Vec<Comparison>) -> QueueReport {
        let mut durabilities: Vec<Durability> = Vec::new();
        for c in &comparisons {
            if !durabilities.contains(&c.durability) {
                durabilities.push(c.durability);
            }
        }
        let durability = durabilities.into_iter().map(|d| Promise { durability: d, promise: d.promise() }).collect();
        let bars = check_bars(&comparisons);
        QueueReport { environment, settings, durability, comparisons, bars }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    /// `beanstalkd -v`, e.g. "beanstalkd 1.12".
    pub beanstalkd_version: String,
    /// `miniqueue -v`.
    pub miniqueue_version: String,
    pub cpu: String,
    pub cores: usize,
    /// Where the durable runs keep their logs and what filesystem that is: fsync costs
    /// what the disk under it costs (and nothing on tmpfs, which would make the
    /// durable comparison meaningless).
    pub data_dir: String,
}

/// How the workload was set up, so that a reader can rerun or argue with it.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub rounds: usize,
    /// Jobs per run (the count bound), split over the clients.
    pub jobs_per_run: u64,
    /// The time bound of a run.
    pub max_run_seconds: f64,
    pub job_bytes: usize,
    pub tubes: Tubes,
    /// Commands per write.
    pub pipeline: usize,
    /// Threads of the client runtime (1: one core at most for every client together).
    pub client_threads: usize,
    pub priority: u32,
    pub ttr: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Promise {
    pub durability: Durability,
    pub promise: &'static str,
}

/// Both systems at one durability setting and one client count.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub durability: Durability,
    pub clients: usize,
    /// In [`System::ALL`] order, the systems that ran.
    pub systems: Vec<SystemRuns>,
    /// miniqueue over beanstalkd; `None` when either is missing or failed.
    pub jobs_ratio: Option<f64>,
    pub p50_ratio: Option<f64>,
    pub p99_ratio: Option<f64>,
}

impl Comparison {
    pub fn new(durability: Durability, clients: usize, systems: Vec<SystemRuns>) -> Comparison {
        let median = |system| systems.iter().find(|s| s.system == system).and_then(|s| s.median);
        let of = |f: fn(&Figures) -> f64| match (median(System::Miniqueue), median(System::Beanstalkd)) {
            (Some(m), Some(b)) => ratio(f(&m), f(&b)),
            _ => None,
        };
        let (jobs_ratio, p50_ratio, p99_ratio) = (of(|f| f.jobs_per_s), of(|f| f.p50_ms), of(|f| f.p99_ms));
        Comparison { durability, clients, systems, jobs_ratio, p50_ratio, p99_ratio }
    }
}

/// One system's rounds at one setting, and their medians.
#[derive(Debug, Clone, Serialize)]
pub struct SystemRuns {
    pub system: System,
    pub rounds: Vec<Run>,
    /// Medians over the rounds, column by column; `None` when any round failed.
    pub median: Option<Figures>,
    pub error: Option<String>,
}

impl SystemRuns {
    pub fn new(system: System, rounds: Vec<Run>) -> SystemRuns {
        let (median, error) = summarise(
            &rounds,
            |r| r.error.as_ref(),
            |r| r.figures.as_ref(),
            |complete| {
                let of = |f: fn(&RunFigures) -> f64| median_of(complete, |r| f(r)).unwrap_or(f64::NAN);
                let cpu: Option<Vec<Cores>> = complete.iter().map(|r| r.cpu).collect();
                let cpu = cpu.and_then(|all| {
                    Some(Cores { server: median_of(&all, |c| c.server)?, client: median_of(&all, |c| c.client)? })
                });
                Some(Figures {
                    jobs_per_s: of(|r| r.jobs_per_s),
                    p50_ms: of(|r| r.p50_ms),
                    p99_ms: of(|r| r.p99_ms),
                    cpu,
                })
            },
        );
        SystemRuns { system, rounds, median, error }
    }
}

/// One run: its figures, or why there are none.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Run {
    pub figures: Option<RunFigures>,
    pub error: Option<String>,
}

impl Run {
    pub fn failed(error: String) -> Run {
        Run { figures: None, error: Some(error) }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunFigures {
    /// Jobs put, reserved and deleted.
    pub jobs: u64,
    pub seconds: f64,
    pub jobs_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Which bound ended the run.
    pub stopped_by: StoppedBy,
    /// Cores busy during the run, when both clocks could be read.
    pub cpu: Option<Cores>,
}

impl RunFigures {
    pub fn new(measured: &Measured, cpu: Option<Cores>) -> RunFigures {
        let seconds = measured.elapsed.as_secs_f64();
        let ms = |nanos: Option<u64>| nanos.map_or(f64::NAN, |n| n as f64 / 1e6);
        RunFigures {
            jobs: measured.jobs,
            seconds,
            jobs_per_s: if seconds > 0.0 { measured.jobs as f64 / seconds } else { 0.0 },
            p50_ms: ms(measured.latency.quantile(0.50)),
            p99_ms: ms(measured.latency.quantile(0.99)),
            max_ms: ms(measured.latency.max()),
            stopped_by: measured.stopped_by,
            cpu,
        }
    }
}

/// The medians of one system's rounds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Figures {
    pub jobs_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Median cores busy; `None` if any round could not read them.
    pub cpu: Option<Cores>,
}

/// Checks the issue's bars. A setting that was not run (fewer client counts, one
/// system only) misses its bar rather than vanishing from the list.
pub fn check_bars(comparisons: &[Comparison]) -> Vec<BarCheck> {
    let find = |durability, clients| {
        comparisons.iter().find(|c| c.durability == durability && c.clients == clients).and_then(|c| c.jobs_ratio)
    };
    let mut bars = Vec::new();
    for clients in MEMORY_BAR_CLIENTS {
        let measured = find(Durability::Memory, clients);
        bars.push(BarCheck {
            what: format!("jobs/s in memory, {clients} client(s)"),
            bar: format!(">= {MIN_MEMORY_RATIO:.1}x beanstalkd"),
            measured,
            met: measured.is_some_and(|r| r >= MIN_MEMORY_RATIO),
        });
    }
    let measured = find(Durability::Durable, DURABLE_BAR_CLIENTS);
    bars.push(BarCheck {
        what: format!("jobs/s durable (-b -f 0), {DURABLE_BAR_CLIENTS} clients"),
        bar: format!(">= {MIN_DURABLE_RATIO:.1}x beanstalkd"),
        measured,
        met: measured.is_some_and(|r| r >= MIN_DURABLE_RATIO),
    });
    bars
}

/// The report as markdown: what was measured and how, a table per durability setting,
/// the cores busy, the durability promises, the bars.
pub fn render_markdown(report: &QueueReport) -> String {
    let env = &report.environment;
    let s = &report.settings;
    let mut out = format!(
        "{} vs {}, on {} core(s) ({}). Each client is one connection doing put → reserve → delete in a loop \
         with {}-byte jobs (priority {}, TTR {} s) on {}; {} command(s) per write. One job = one put + reserve \
         + delete; its latency is that whole cycle. Every run on a fresh server with an empty directory ({}); \
         the servers alternate within a round; a run ends after {} jobs or {:.1} s, whichever comes first; \
         median of {} round(s). The client is this harness (minibench's beanstalk client, {} thread(s)); client \
         and servers share the machine.\n",
        env.miniqueue_version,
        env.beanstalkd_version,
        env.cores,
        env.cpu,
        s.job_bytes,
        s.priority,
        s.ttr,
        s.tubes.describe(),
        s.pipeline,
        env.data_dir,
        thousands(s.jobs_per_run as f64),
        s.max_run_seconds,
        s.rounds,
        s.client_threads,
    );
    let mut durabilities: Vec<Durability> = Vec::new();
    for c in &report.comparisons {
        if !durabilities.contains(&c.durability) {
            durabilities.push(c.durability);
        }
    }
    for durability in durabilities {
        let rows: Vec<&Comparison> = report.comparisons.iter().filter(|c| c.durability == durability).collect();
        out.push('\n');
        out.push_str(&render_durability(durability, &rows));
    }
    out.push_str("\n#### Durability\n\n");
    for p in &report.durability {
        out.push_str(&format!("- {}: {}\n", p.durability.name(), p.promise));
    }
    if !report.bars.is_empty() {
        out.push('\n');
        out.push_str(&render_bars(&report.bars, "miniqueue/beanstalkd", |_, r| format!("{r:.2}x")));
    }
    out
}

fn render_durability(durability: Durability, rows: &[&Comparison]) -> String {
    let mut out = format!("#### {}\n\n", durability.describe());
    out.push_str(
        "| clients | beanstalkd jobs/s | miniqueue jobs/s | miniqueue/beanstalkd | beanstalkd p50 ms | miniqueue p50 ms \
         | beanstalkd p99 ms | miniqueue p99 ms |\n",
    );
    out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let mut failures = Vec::new();
    for c in rows {
        let side = |system| c.systems.iter().find(|s| s.system == system);
        let cell = |system, f: fn(&Figures) -> String| match side(system) {
            Some(s) => figure_cell(s.median.as_ref(), s.error.is_some(), f),
            None => "not run".to_string(),
        };
        for s in &c.systems {
            if let Some(e) = &s.error {
                failures.push((format!("{} with {} client(s)", s.system.name(), c.clients), e.as_str()));
            }
        }
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            c.clients,
            cell(System::Beanstalkd, |m| thousands(m.jobs_per_s)),
            cell(System::Miniqueue, |m| thousands(m.jobs_per_s)),
            c.jobs_ratio.map_or("-".to_string(), |r| format!("{r:.2}x")),
            cell(System::Beanstalkd, |m| format!("{:.3}", m.p50_ms)),
            cell(System::Miniqueue, |m| format!("{:.3}", m.p50_ms)),
            cell(System::Beanstalkd, |m| format!("{:.3}", m.p99_ms)),
            cell(System::Miniqueue, |m| format!("{:.3}", m.p99_ms)),
        ));
    }
    out.push_str("\n| clients: cores busy (median) | beanstalkd: server | beanstalkd: client | miniqueue: server | miniqueue: client |\n");
    out.push_str("|---:|---:|---:|---:|---:|\n");
    for c in rows {
        let cores = |system| match c.systems.iter().find(|s| s.system == system).and_then(|s| s.median?.cpu) {
            Some(cores) => format!("{:.2} | {:.2}", cores.server, cores.client),
            None => "- | -".to_string(),
        };
        out.push_str(&format!("| {} | {} | {} |\n", c.clients, cores(System::Beanstalkd), cores(System::Miniqueue)));
    }
    out.push_str(&render_failures(&failures));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(jobs_per_s: f64, p99_ms: f64) -> Run {
        Run {
            figures: Some(RunFigures {
                jobs: 1000,
                seconds: 1000.0 / jobs_per_s,
                jobs_per_s,
                p50_ms: p99_ms / 4.0,
                p99_ms,
                max_ms: p99_ms * 2.0,
                stopped_by: StoppedBy::Count,
                cpu: Some(Cores { server: 0.9, client: 0.6 }),
            }),
            error: None,
        }
    }

    fn comparison(durability: Durability, clients: usize, beanstalkd: Vec<Run>, miniqueue: Vec<Run>) -> Comparison {
        Comparison::new(
            durability,
            clients,
            vec![SystemRuns::new(System::Beanstalkd, beanstalkd), SystemRuns::new(System::Miniqueue, miniqueue)],
        )
    }

    fn sample() -> QueueReport {
        QueueReport::new(
            Environment {
                beanstalkd_version: "beanstalkd 1.12".into(),
                miniqueue_version: "miniqueue 0.1.0".into(),
                cpu: "Test CPU".into(),
                cores: 2,
                data_dir: "/tmp (ext4)".into(),
            },
            Settings {
                rounds: 3,
                jobs_per_run: 1000,
                max_run_seconds: 5.0,
                job_bytes: 100,
                tubes: Tubes::PerClient,
                pipeline: 1,
                client_threads: 1,
                priority: 1024,
                ttr: 60,
            },
            vec![
                comparison(
                    Durability::Memory,
                    1,
                    vec![run(10_000.0, 1.0)],
                    vec![run(12_000.0, 0.5), run(8_000.0, 2.0), run(11_000.0, 0.8)],
                ),
                comparison(Durability::Memory, 16, vec![run(20_000.0, 1.0)], vec![run(19_000.0, 1.0)]),
                comparison(Durability::Memory, 64, vec![run(20_000.0, 1.0)], vec![Run::failed("lost | job".into())]),
                comparison(Durability::Durable, 64, vec![run(300.0, 200.0)], vec![run(6_000.0, 20.0)]),
            ],
        )
    }

    #[test]
    fn medians_ratios_and_a_failed_round() {
        let report = sample();
        let first = &report.comparisons[0];
        let miniqueue = first.systems[1].median.expect("three good rounds");
        assert_eq!((miniqueue.jobs_per_s, miniqueue.p99_ms), (11_000.0, 0.8), "column by column");
        assert_eq!(first.jobs_ratio, Some(1.1));
        assert_eq!(first.p99_ratio, Some(0.8));
        let failed = &report.comparisons[2];
        assert_eq!((failed.systems[1].median, failed.jobs_ratio), (None, None));
        assert_eq!(failed.systems[1].error.as_deref(), Some("lost | job"));
        assert_eq!(report.comparisons[3].jobs_ratio, Some(20.0));
    }

    #[test]
    fn bars_are_the_issues_four() {
        let bars: Vec<(String, Option<f64>, bool)> =
            sample().bars.into_iter().map(|b| (b.what, b.measured, b.met)).collect();
        assert_eq!(
            bars,
            [
                ("jobs/s in memory, 1 client(s)".to_string(), Some(1.1), true),
                ("jobs/s in memory, 16 client(s)".to_string(), Some(0.95), false),
                ("jobs/s in memory, 64 client(s)".to_string(), None, false),
                ("jobs/s durable (-b -f 0), 64 clients".to_string(), Some(20.0), true),
            ]
        );
        let just_under = comparison(Durability::Durable, 64, vec![run(1000.0, 1.0)], vec![run(9_999.0, 1.0)]);
        assert!(!check_bars(&[just_under])[3].met, "9.999x misses a 10x bar");
        assert!(!check_bars(&[])[0].met, "a setting not run misses its bar");
    }

    #[test]
    fn renders_a_table_per_durability() {
        let md = render_markdown(&sample());
        assert!(md.contains("#### in memory (no -b)"), "{md}");
        assert!(md.contains("| 1 | 10,000 | 11,000 | 1.10x | 0.250 | 0.200 | 1.000 | 0.800 |"), "{md}");
        assert!(md.contains("| 64 | 20,000 | failed | - | 0.250 | failed | 1.000 | failed |"), "{md}");
        assert!(md.contains("#### durable (-b DIR -f 0: fsync before every reply)"), "{md}");
        assert!(md.contains("| 64 | 300 | 6,000 | 20.00x |"), "{md}");
        assert!(md.contains("- miniqueue with 64 client(s): lost \\| job"), "{md}");
        assert!(md.contains("| 1 | 0.90 | 0.60 | 0.90 | 0.60 |"), "{md}");
        assert!(md.contains("#### Bars: 2 of 4 met"), "{md}");
        assert!(md.contains("| jobs/s durable (-b -f 0), 64 clients | >= 10.0x beanstalkd | 20.00x | yes |"), "{md}");
        assert!(md.contains("group commit"), "{md}");
        for line in md.lines().filter(|l| l.starts_with('|')) {
            let cells = line.replace("\\|", "").matches('|').count() - 1;
            assert!([8, 5, 4].contains(&cells), "{cells} cells: {line}");
        }
    }

    #[test]
    fn json_carries_every_round() {
        let json = serde_json::to_value(sample()).expect("serializes");
        let first = &json["comparisons"][0];
        assert_eq!(first["durability"], "memory");
        assert_eq!(first["systems"][1]["system"], "miniqueue");
        assert_eq!(first["systems"][1]["rounds"].as_array().map(Vec::len), Some(3));
        assert_eq!(first["systems"][0]["rounds"][0]["figures"]["stopped_by"], "count");
        assert_eq!(json["settings"]["tubes"], "per-client");
        assert_eq!(json["durability"][1]["durability"], "durable");
    }
}
