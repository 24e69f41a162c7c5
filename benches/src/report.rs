//! The result of a side-by-side run, and how it is shown: markdown tables for people
//! (the terminal, `--out`, docs/minikv.md) and JSON for programs (`--json`).
//!
//! A failed test is part of the result, never a reason to drop the rest: its cell
//! says "failed" and the error is listed under the table, so a command minikv does
//! not implement yet shows up as exactly that.
//!
//! `mini bench log`'s report (log/report.rs) follows the same rules with its own
//! tables, through the helpers at the end of this file: `summarise` for the rounds,
//! `figure_cell` and `render_failures` for the tables, `render_bars`,
//! [`thousands`].

use serde::Serialize;

use crate::redis_benchmark::Row;
use crate::server::{Durability, Kind};
use crate::stats::{median_of, ratio};

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub environment: Environment,
    pub settings: Settings,
    /// One comparison per durability x pipeline combination.
    pub comparisons: Vec<Comparison>,
    pub memory: Option<MemoryComparison>,
    /// The bars minikv is held to, checked against the figures above.
    pub bars: Vec<BarCheck>,
}

impl Report {
    pub fn new(
        environment: Environment,
        settings: Settings,
        comparisons: Vec<Comparison>,
        memory: Option<MemoryComparison>,
    ) -> Report {
        let bars = check_bars(&comparisons, memory.as_ref());
        Report { environment, settings, comparisons, memory, bars }
    }
}

/// The tests whose throughput has a bar: the two commands every cache lives on.
pub const THROUGHPUT_BAR_TESTS: [&str; 2] = ["set", "get"];
/// minikv ops/s over Redis ops/s must be at least this, for each of
/// [`THROUGHPUT_BAR_TESTS`], at every pipeline depth and durability setting.
pub const MIN_OPS_RATIO: f64 = 1.0;
/// minikv RSS over Redis RSS with the memory test's keys loaded must be at most this.
pub const MAX_RSS_RATIO: f64 = 1.5;

/// One bar and whether the run met it. These are minimums, not targets: a run that
/// meets them says the design is sound, not that there is nothing left to win.
#[derive(Debug, Clone, Serialize)]
pub struct BarCheck {
    /// What is measured, e.g. "SET ops/s, persistence off, -P 16".
    pub what: String,
    /// The bar as people read it, e.g. ">= 1.00x redis".
    pub bar: String,
    /// The measured ratio, `None` when a side failed (which misses the bar).
    pub measured: Option<f64>,
    pub met: bool,
}

/// Checks every bar against the run's figures.
pub fn check_bars(comparisons: &[Comparison], memory: Option<&MemoryComparison>) -> Vec<BarCheck> {
    let mut bars = Vec::new();
    for c in comparisons {
        for t in c.tests.iter().filter(|t| THROUGHPUT_BAR_TESTS.contains(&t.test.as_str())) {
            bars.push(BarCheck {
                what: format!("{} ops/s, {}, -P {}", t.test.to_uppercase(), c.durability.describe(), c.pipeline),
                bar: format!(">= {MIN_OPS_RATIO:.2}x redis"),
                measured: t.ops_ratio,
                met: t.ops_ratio.is_some_and(|r| r >= MIN_OPS_RATIO),
            });
        }
    }
    if let Some(m) = memory {
        bars.push(BarCheck {
            what: format!("RSS with {} keys loaded", thousands(m.keys as f64)),
            bar: format!("<= {MAX_RSS_RATIO:.2}x redis"),
            measured: m.rss_ratio,
            met: m.rss_ratio.is_some_and(|r| r <= MAX_RSS_RATIO),
        });
    }
    bars
}

/// What the numbers were measured on, so a reader can tell whether they transfer.
#[derive(Debug, Clone, Serialize)]
pub struct Environment {
    /// `redis-server --version`, e.g. "7.0.15 (jemalloc-5.3.0)".
    pub redis_version: String,
    /// `minikv --version`.
    pub minikv_version: String,
    pub cpu: String,
    pub cores: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub clients: u32,
    pub threads: u32,
    pub rounds: usize,
    pub tests: Vec<String>,
    pub memory_keys: u64,
    pub value_bytes: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub durability: Durability,
    pub pipeline: u32,
    pub requests: u64,
    pub tests: Vec<TestComparison>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TestComparison {
    /// The `-t` name, e.g. "lpush".
    pub test: String,
    pub redis: Side,
    pub minikv: Side,
    /// minikv ops/s divided by redis ops/s (medians); above 1 means minikv is faster.
    pub ops_ratio: Option<f64>,
}

impl TestComparison {
    pub fn new(test: &str, redis: Side, minikv: Side) -> TestComparison {
        let ops_ratio = match (&minikv.median, &redis.median) {
            (Some(m), Some(r)) => ratio(m.rps, r.rps),
            _ => None,
        };
        TestComparison { test: test.to_string(), redis, minikv, ops_ratio }
    }
}

/// One server's results for one test: every round, and their median.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub rounds: Vec<Round>,
    /// Medians over the rounds; `None` when any round failed.
    pub median: Option<Summary>,
    /// The first failure, when a round failed.
    pub error: Option<String>,
}

/// One round: redis-benchmark's row, or why there is none.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub row: Option<Row>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Side {
    /// Summarises the rounds with `summarise`: a test that failed in any round has no
    /// median.
    pub fn from_rounds(rounds: Vec<Round>) -> Side {
        let (median, error) = summarise(
            &rounds,
            |r| r.error.as_ref(),
            |r| r.row.as_ref(),
            |rows| {
                let of = |f: fn(&Row) -> f64| median_of(rows, |r| f(r));
                Some(Summary { rps: of(|r| r.rps)?, p50_ms: of(|r| r.p50_ms)?, p99_ms: of(|r| r.p99_ms)? })
            },
        );
        Side { rounds, median, error }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MemoryComparison {
    pub keys: u64,
    pub value_bytes: usize,
    pub redis: MemorySide,
    pub minikv: MemorySide,
    /// minikv RSS / redis RSS with the keys loaded; below 1 means minikv uses less.
    pub rss_ratio: Option<f64>,
    pub used_memory_ratio: Option<f64>,
}

impl MemoryComparison {
    pub fn new(keys: u64, value_bytes: usize, redis: MemorySide, minikv: MemorySide) -> MemoryComparison {
        let both = |f: fn(&MemorySide) -> Option<u64>| match (f(&minikv), f(&redis)) {
            (Some(m), Some(r)) => ratio(m as f64, r as f64),
            _ => None,
        };
        let rss_ratio = both(|s| s.rss_loaded_bytes);
        let used_memory_ratio = both(|s| s.used_memory_loaded_bytes);
        MemoryComparison { keys, value_bytes, redis, minikv, rss_ratio, used_memory_ratio }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct MemorySide {
    pub rss_empty_bytes: Option<u64>,
    pub rss_loaded_bytes: Option<u64>,
    pub used_memory_loaded_bytes: Option<u64>,
    /// DBSIZE after the load: checks that every key arrived.
    pub keys_loaded: Option<u64>,
    pub error: Option<String>,
}

/// The report as markdown: a heading line, one table per comparison, the memory table.
pub fn render_markdown(report: &Report) -> String {
    let env = &report.environment;
    let s = &report.settings;
    let mut out = String::new();
    let client = if s.threads > 1 {
        format!("-c {} --threads {}", s.clients, s.threads)
    } else {
        format!("-c {} (its single-threaded client)", s.clients)
    };
    out.push_str(&format!(
        "redis-server {} vs {}, on {} core(s) ({}). redis-benchmark {client}, one run per test, \
         alternating servers; median of {} round(s). Redis runs commands on one thread, minikv on a worker \
         thread per core; client and servers share the machine.\n",
        env.redis_version, env.minikv_version, env.cores, env.cpu, s.rounds
    ));
    if s.threads > 1 {
        out.push_str(
            "With --threads, redis-benchmark 7.0 rounds each test's duration up to a multiple of 250 ms, \
             so ops/s are understated by up to 250 ms / duration (more for the faster server); latencies \
             are exact.\n",
        );
    }
    for c in &report.comparisons {
        out.push('\n');
        out.push_str(&render_comparison(c));
    }
    if let Some(m) = &report.memory {
        out.push('\n');
        out.push_str(&render_memory(m));
    }
    if !report.bars.is_empty() {
        out.push('\n');
        out.push_str(&render_kv_bars(&report.bars));
    }
    out
}

/// The bars table, each measured figure a ratio minikv/redis.
fn render_kv_bars(bars: &[BarCheck]) -> String {
    render_bars(bars, "minikv/redis", |_, r| format!("{r:.2}"))
}

fn render_comparison(c: &Comparison) -> String {
    let mut out = format!("#### {}, -P {} ({} requests per test)\n\n", c.durability.describe(), c.pipeline, c.requests);
    out.push_str("| test | redis ops/s | minikv ops/s | minikv/redis | redis p50 ms | minikv p50 ms | redis p99 ms | minikv p99 ms |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    let mut failures = Vec::new();
    for t in &c.tests {
        let cell = |side: &Side, f: fn(&Summary) -> String| figure_cell(side.median.as_ref(), side.error.is_some(), f);
        for (kind, side) in [(Kind::Redis, &t.redis), (Kind::Minikv, &t.minikv)] {
            if let Some(e) = &side.error {
                failures.push((format!("{} {}", kind.name(), t.test.to_uppercase()), e.as_str()));
            }
        }
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            t.test.to_uppercase(),
            cell(&t.redis, |m| thousands(m.rps)),
            cell(&t.minikv, |m| thousands(m.rps)),
            t.ops_ratio.map_or("-".to_string(), |r| format!("{r:.2}")),
            cell(&t.redis, |m| format!("{:.3}", m.p50_ms)),
            cell(&t.minikv, |m| format!("{:.3}", m.p50_ms)),
            cell(&t.redis, |m| format!("{:.3}", m.p99_ms)),
            cell(&t.minikv, |m| format!("{:.3}", m.p99_ms)),
        ));
    }
    out.push_str(&render_failures(&failures));
    out
}

/// One number of a [`MemorySide`], for the rows of the memory table.
type MemoryField = fn(&MemorySide) -> Option<u64>;

fn render_memory(m: &MemoryComparison) -> String {
    let mut out = format!(
        "#### Memory: {} keys with {}-byte values, persistence off\n\n",
        thousands(m.keys as f64),
        m.value_bytes
    );
    out.push_str("| | redis | minikv | minikv/redis |\n|---|---:|---:|---:|\n");
    let bytes = |v: Option<u64>| v.map_or("-".to_string(), mib);
    let ratio_of = |f: MemoryField| match (f(&m.minikv), f(&m.redis)) {
        (Some(a), Some(b)) => ratio(a as f64, b as f64).map_or("-".to_string(), |r| format!("{r:.2}")),
        _ => "-".to_string(),
    };
    let rows: [(&str, MemoryField); 3] = [
        ("RSS, empty", |s| s.rss_empty_bytes),
        ("RSS, loaded", |s| s.rss_loaded_bytes),
        ("used_memory, loaded", |s| s.used_memory_loaded_bytes),
    ];
    for (label, f) in rows {
        out.push_str(&format!("| {label} | {} | {} | {} |\n", bytes(f(&m.redis)), bytes(f(&m.minikv)), ratio_of(f)));
    }
    let keys = |v: Option<u64>| v.map_or("-".to_string(), |k| thousands(k as f64));
    out.push_str(&format!(
        "| keys loaded (DBSIZE) | {} | {} | |\n",
        keys(m.redis.keys_loaded),
        keys(m.minikv.keys_loaded)
    ));
    let failures: Vec<(String, &str)> = [(Kind::Redis, &m.redis), (Kind::Minikv, &m.minikv)]
        .into_iter()
        .filter_map(|(kind, side)| Some((kind.name().to_string(), side.error.as_deref()?)))
        .collect();
    out.push_str(&render_failures(&failures));
    out
}

// What every side-by-side report shares: how rounds are summed up, how a table cell
// and the failures under a table are written, the bars table, and number formats.

/// How every side of a report sums up its rounds: the first failure, named by its
/// round when there were several, and the medians (from `medians`, given every round
/// that `complete` finds whole) only when no round failed, because a number from the
/// rounds that happened to work would hide the failure.
pub(crate) fn summarise<'a, R, C, S>(
    rounds: &'a [R],
    error: impl Fn(&'a R) -> Option<&'a String>,
    complete: impl Fn(&'a R) -> Option<C>,
    medians: impl FnOnce(&[C]) -> Option<S>,
) -> (Option<S>, Option<String>) {
    let error = rounds.iter().enumerate().find_map(|(i, r)| {
        error(r).map(|e| if rounds.len() > 1 { format!("round {}: {e}", i + 1) } else { e.clone() })
    });
    let complete: Vec<C> = rounds.iter().filter_map(complete).collect();
    let median = if error.is_none() && !complete.is_empty() { medians(&complete) } else { None };
    (median, error)
}

/// One table cell of a side's medians: the figure, or "failed" when a round failed
/// (the error is listed under the table), or "-" when there is nothing to show.
pub(crate) fn figure_cell<M>(median: Option<&M>, failed: bool, figure: impl Fn(&M) -> String) -> String {
    match median {
        Some(m) => figure(m),
        None if failed => "failed".to_string(),
        None => "-".to_string(),
    }
}

/// The "Failed:" list under a table, one `- who: error` line each, or nothing when
/// every side worked.
pub(crate) fn render_failures(failures: &[(String, &str)]) -> String {
    if failures.is_empty() {
        return String::new();
    }
    let mut out = String::from("\nFailed:\n");
    for (who, error) in failures {
        out.push_str(&format!("- {who}: {}\n", escape(error)));
    }
    out
}

/// The bars table. `column` heads the measured figures and `measured` writes one,
/// because each benchmark states its bars in its own unit (a ratio, records/s).
pub(crate) fn render_bars(bars: &[BarCheck], column: &str, measured: impl Fn(&BarCheck, f64) -> String) -> String {
    let met = bars.iter().filter(|b| b.met).count();
    let mut out = format!("#### Bars: {met} of {} met\n\n", bars.len());
    out.push_str(&format!("| what | bar | {column} | met |\n|---|---|---:|---|\n"));
    for b in bars {
        let figure = b.measured.map_or("-".to_string(), |m| measured(b, m));
        out.push_str(&format!("| {} | {} | {figure} | {} |\n", b.what, b.bar, if b.met { "yes" } else { "**no**" }));
    }
    out
}

/// Whole number with thousands separators: 123456.7 -> "123,457".
pub fn thousands(v: f64) -> String {
    let n = v.round().max(0.0) as u64;
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Makes an error message safe to put on one markdown line.
fn escape(s: &str) -> String {
    s.replace('|', "\\|").replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(rps: f64, p50: f64, p99: f64) -> Round {
        Round {
            row: Some(Row {
                test: "SET".into(),
                rps,
                avg_ms: 0.0,
                min_ms: 0.0,
                p50_ms: p50,
                p95_ms: 0.0,
                p99_ms: p99,
                max_ms: 0.0,
            }),
            error: None,
        }
    }

    fn failed(msg: &str) -> Round {
        Round { row: None, error: Some(msg.into()) }
    }

    #[test]
    fn side_takes_the_median_of_each_column_separately() {
        let side = Side::from_rounds(vec![row(100.0, 0.5, 3.0), row(300.0, 0.1, 1.0), row(200.0, 0.3, 9.0)]);
        assert_eq!(side.median, Some(Summary { rps: 200.0, p50_ms: 0.3, p99_ms: 3.0 }));
        assert_eq!(side.error, None);
    }

    #[test]
    fn one_failed_round_means_no_median() {
        let side = Side::from_rounds(vec![row(100.0, 0.5, 3.0), failed("timed out")]);
        assert_eq!(side.median, None);
        assert_eq!(side.error.as_deref(), Some("round 2: timed out"));
    }

    #[test]
    fn ratio_is_minikv_over_redis_and_needs_both() {
        let redis = Side::from_rounds(vec![row(100.0, 0.5, 3.0)]);
        let minikv = Side::from_rounds(vec![row(150.0, 0.5, 3.0)]);
        assert_eq!(TestComparison::new("set", redis.clone(), minikv).ops_ratio, Some(1.5));
        let broken = Side::from_rounds(vec![failed("ERR unknown command")]);
        assert_eq!(TestComparison::new("set", redis, broken).ops_ratio, None);
    }

    #[test]
    fn formats_numbers_for_people() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(123456.7), "123,457");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
        assert_eq!(mib(3 * 1024 * 1024 / 2), "1.5 MiB");
    }

    fn sample_report() -> Report {
        let redis = Side::from_rounds(vec![row(100_000.0, 0.25, 0.5)]);
        let minikv = Side::from_rounds(vec![row(120_000.0, 0.2, 0.45)]);
        let unknown = Side::from_rounds(vec![failed("server replied with an error: ERR unknown command 'lpush' | x")]);
        Report::new(
            Environment {
                redis_version: "7.0.15".into(),
                minikv_version: "minikv 0.1.0".into(),
                cpu: "Test CPU".into(),
                cores: 2,
            },
            Settings {
                clients: 50,
                threads: 2,
                rounds: 1,
                tests: vec!["set".into(), "lpush".into()],
                memory_keys: 1_000_000,
                value_bytes: 100,
            },
            vec![Comparison {
                durability: Durability::Off,
                pipeline: 1,
                requests: 100_000,
                tests: vec![
                    TestComparison::new("set", redis.clone(), minikv),
                    TestComparison::new("lpush", redis, unknown),
                ],
            }],
            Some(MemoryComparison::new(
                1_000_000,
                100,
                MemorySide {
                    rss_empty_bytes: Some(8 << 20),
                    rss_loaded_bytes: Some(100 << 20),
                    used_memory_loaded_bytes: Some(90 << 20),
                    keys_loaded: Some(1_000_000),
                    error: None,
                },
                MemorySide { rss_empty_bytes: Some(4 << 20), error: Some("load failed".into()), ..Default::default() },
            )),
        )
    }

    #[test]
    fn bars_hold_set_and_get_to_redis_and_a_failed_side_misses() {
        let report = sample_report();
        let bars: Vec<(&str, Option<f64>, bool)> =
            report.bars.iter().map(|b| (b.what.as_str(), b.measured, b.met)).collect();
        assert_eq!(
            bars,
            [("SET ops/s, persistence off, -P 1", Some(1.2), true), ("RSS with 1,000,000 keys loaded", None, false),],
            "LPUSH has no bar; a memory test that failed misses its bar"
        );
        let slower = TestComparison::new(
            "get",
            Side::from_rounds(vec![row(100_000.0, 0.25, 0.5)]),
            Side::from_rounds(vec![row(99_000.0, 0.25, 0.5)]),
        );
        let c = Comparison { durability: Durability::AofEverysec, pipeline: 16, requests: 1, tests: vec![slower] };
        let checked = check_bars(&[c], None);
        assert!(!checked[0].met, "0.99x misses a 1.0x bar");
        let md = render_kv_bars(&checked);
        assert!(md.contains("#### Bars: 0 of 1 met"), "{md}");
        assert!(
            md.contains("| GET ops/s, AOF, appendfsync everysec, -P 16 | >= 1.00x redis | 0.99 | **no** |"),
            "{md}"
        );
    }

    #[test]
    fn renders_a_table_per_comparison_with_failures_listed() {
        let md = render_markdown(&sample_report());
        assert!(md.contains("#### persistence off, -P 1 (100000 requests per test)"), "{md}");
        assert!(md.contains("| SET | 100,000 | 120,000 | 1.20 | 0.250 | 0.200 | 0.500 | 0.450 |"), "{md}");
        assert!(md.contains("| LPUSH | 100,000 | failed | - | 0.250 | failed | 0.500 | failed |"), "{md}");
        // The pipe in the message would split the table cell; it is escaped.
        assert!(md.contains("- minikv LPUSH: server replied with an error: ERR unknown command 'lpush' \\| x"), "{md}");
        assert!(md.contains("| RSS, empty | 8.0 MiB | 4.0 MiB | 0.50 |"), "{md}");
        assert!(md.contains("| RSS, loaded | 100.0 MiB | - | - |"), "{md}");
        assert!(md.contains("| keys loaded (DBSIZE) | 1,000,000 | - | |"), "{md}");
        assert!(md.contains("- minikv: load failed"), "{md}");
        // Every table row has the same number of cells as its header.
        for table_line in md.lines().filter(|l| l.starts_with('|')) {
            let cells = table_line.replace("\\|", "").matches('|').count();
            assert!(cells == 9 || cells == 5, "{table_line}");
        }
    }

    #[test]
    fn json_has_the_medians_and_the_errors() {
        let json = serde_json::to_value(sample_report()).expect("serializes");
        let set = &json["comparisons"][0]["tests"][0];
        assert_eq!(set["test"], "set");
        assert_eq!(set["minikv"]["median"]["rps"], 120_000.0);
        assert_eq!(set["ops_ratio"], 1.2);
        assert_eq!(json["comparisons"][0]["durability"], "off");
        let lpush = &json["comparisons"][0]["tests"][1];
        assert!(lpush["minikv"]["median"].is_null());
        assert!(lpush["minikv"]["error"].as_str().is_some_and(|e| e.contains("unknown command")));
        assert_eq!(json["memory"]["rss_ratio"], serde_json::Value::Null);
    }
}
