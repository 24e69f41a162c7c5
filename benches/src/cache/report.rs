//! The result of `mini bench cache`, and how it is shown: a markdown table per trace (a
//! row per capacity, a column per cache) and the bars for people; one JSON object per
//! trace and capacity for programs.
//!
//! The figures kept are hit counts, integers, one per replay; hit ratios (percent) are
//! derived from them when shown. The ceiling is checked on the counts, so that rounding
//! can neither hide a cache above the optimum nor invent one.

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::contenders::Contender;
use super::LOOP;
use crate::report::{render_bars, thousands, BarCheck};
use crate::stats::median;

/// minicache's default policy may trail the better of moka and quick_cache by at most
/// this many points, on every trace and capacity.
pub const MAX_POINTS_BEHIND_BEST: f64 = 0.5;
/// On the loop trace at [`LOOP_BAR_CAPACITY`], minicache must beat the exact LRU by at
/// least this many points: a loop larger than the cache is what a frequency- or
/// scan-aware policy exists for.
pub const MIN_POINTS_OVER_LRU: f64 = 20.0;
pub const LOOP_BAR_CAPACITY: u64 = 512;

#[derive(Debug, Clone, Serialize)]
pub struct CacheReport {
    pub settings: Settings,
    pub traces: Vec<TraceReport>,
    /// The bars minicache is held to, checked against the figures above.
    pub bars: Vec<BarCheck>,
}

impl CacheReport {
    pub fn new(settings: Settings, traces: Vec<TraceReport>) -> CacheReport {
        let bars = check_bars(&traces);
        CacheReport { settings, traces, bars }
    }
}

/// How the run was set up; the machine is here for completeness only, since a hit
/// ratio does not depend on it.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Replays (seeds) per varying contender; each figure is their median.
    pub repeats: usize,
    pub moka_version: &'static str,
    pub quick_cache_version: &'static str,
    pub cpu: String,
    pub cores: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct TraceReport {
    pub name: String,
    /// The file, or the Zipf parameters.
    pub source: String,
    pub requests: u64,
    pub distinct_keys: u64,
    /// One per capacity, in the order given.
    pub runs: Vec<Run>,
}

/// Every contender on one trace at one capacity.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub capacity: u64,
    pub requests: u64,
    /// In [`Contender::ALL`] order.
    pub results: Vec<ContenderResult>,
}

impl Run {
    /// # Panics
    /// When the results are not one per contender, in [`Contender::ALL`] order: every
    /// lookup below relies on it.
    pub fn new(capacity: u64, requests: u64, results: Vec<ContenderResult>) -> Run {
        let order: Vec<Contender> = results.iter().map(|r| r.contender).collect();
        assert_eq!(order, Contender::ALL, "one result per contender, in order");
        assert!(results.iter().all(|r| r.hits.iter().all(|&h| h <= requests)), "no more hits than requests");
        Run { capacity, requests, results }
    }

    pub fn result(&self, contender: Contender) -> &ContenderResult {
        let at = Contender::ALL.iter().position(|&c| c == contender).unwrap_or(0);
        &self.results[at]
    }

    /// The median hit ratio of `contender`, in percent.
    pub fn hit_ratio(&self, contender: Contender) -> f64 {
        percent(self.result(contender).median_hits, self.requests)
    }

    pub fn optimal_hits(&self) -> u64 {
        self.result(Contender::Optimal).hits.first().copied().unwrap_or(0)
    }

    /// The first replay with more hits than the optimum, which no cache of this
    /// capacity can have: a bug.
    pub fn above_optimal(&self) -> Option<(Contender, u64)> {
        let optimal = self.optimal_hits();
        self.results.iter().find_map(|r| r.hits.iter().find(|&&h| h > optimal).map(|&h| (r.contender, h)))
    }
}

/// One contender's replays at one trace and capacity.
#[derive(Debug, Clone, Serialize)]
pub struct ContenderResult {
    pub contender: Contender,
    /// Hits of each replay, seed 1 first.
    pub hits: Vec<u64>,
    /// Their median: the figure reported.
    pub median_hits: f64,
}

impl ContenderResult {
    /// # Panics
    /// With no replay: there is nothing to report.
    pub fn new(contender: Contender, hits: Vec<u64>) -> ContenderResult {
        let counts: Vec<f64> = hits.iter().map(|&h| h as f64).collect();
        let median_hits = median(&counts).expect("at least one replay");
        ContenderResult { contender, hits, median_hits }
    }

    /// Highest minus lowest hit ratio over the replays, in points.
    pub fn spread(&self, requests: u64) -> f64 {
        let (lo, hi) = (self.hits.iter().min(), self.hits.iter().max());
        match (lo, hi) {
            (Some(&lo), Some(&hi)) => percent(hi as f64, requests) - percent(lo as f64, requests),
            _ => 0.0,
        }
    }
}

fn percent(hits: f64, requests: u64) -> f64 {
    if requests == 0 {
        0.0
    } else {
        100.0 * hits / requests as f64
    }
}

/// Rounded to two decimals, as the JSON carries it.
fn two_decimals(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The issue's bars. The ceiling is one bar over every replay of the run.
pub fn check_bars(traces: &[TraceReport]) -> Vec<BarCheck> {
    let mut bars = Vec::new();
    for t in traces {
        for run in &t.runs {
            let best = run.hit_ratio(Contender::Moka).max(run.hit_ratio(Contender::QuickCache));
            let behind = run.hit_ratio(Contender::Minicache) - best;
            bars.push(BarCheck {
                what: format!("{} at {}: minicache minus the better of moka and quick_cache", t.name, run.capacity),
                bar: format!(">= -{MAX_POINTS_BEHIND_BEST:.2} points"),
                measured: Some(behind),
                met: behind >= -MAX_POINTS_BEHIND_BEST,
            });
        }
    }
    if let Some(t) = traces.iter().find(|t| t.name == LOOP) {
        let measured = t
            .runs
            .iter()
            .find(|r| r.capacity == LOOP_BAR_CAPACITY)
            .map(|r| r.hit_ratio(Contender::Minicache) - r.hit_ratio(Contender::Lru));
        bars.push(BarCheck {
            what: format!("{LOOP} at {LOOP_BAR_CAPACITY}: minicache minus exact LRU"),
            bar: format!(">= +{MIN_POINTS_OVER_LRU:.2} points"),
            measured,
            met: measured.is_some_and(|m| m >= MIN_POINTS_OVER_LRU),
        });
    }
    let runs: Vec<&Run> = traces.iter().flat_map(|t| &t.runs).collect();
    // The largest excess of any replay over the optimum, in points: 0 or below is met.
    let excess = runs
        .iter()
        .flat_map(|r| {
            let optimal = r.optimal_hits();
            r.results
                .iter()
                .flat_map(move |c| c.hits.iter().map(move |&h| percent(h as f64 - optimal as f64, r.requests)))
        })
        .reduce(f64::max);
    bars.push(BarCheck {
        what: format!(
            "every replay of every cache, {} trace x capacity runs: its hit ratio minus the optimum's",
            runs.len()
        ),
        bar: "<= 0 (the ceiling)".into(),
        measured: excess,
        met: runs.iter().all(|r| r.above_optimal().is_none()),
    });
    bars
}

/// One JSON object per trace and capacity, a line each:
/// `{"trace": .., "capacity": N, "requests": R, "hit_ratio": {"minicache": .., ..}}`, hit
/// ratios in percent with two decimals, contenders in [`Contender::ALL`] order.
pub fn render_json_lines(report: &CacheReport) -> serde_json::Result<String> {
    let mut lines = Vec::new();
    for t in &report.traces {
        for run in &t.runs {
            let line =
                JsonRun { trace: &t.name, capacity: run.capacity, requests: run.requests, hit_ratio: HitRatios(run) };
            lines.push(serde_json::to_string(&line)?);
        }
    }
    Ok(lines.join("\n"))
}

#[derive(Serialize)]
struct JsonRun<'a> {
    trace: &'a str,
    capacity: u64,
    requests: u64,
    hit_ratio: HitRatios<'a>,
}

/// A run's median hit ratios as a map in [`Contender::ALL`] order (a derived map
/// would sort its keys).
struct HitRatios<'a>(&'a Run);

impl Serialize for HitRatios<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(Contender::ALL.len()))?;
        for contender in Contender::ALL {
            map.serialize_entry(contender.name(), &two_decimals(self.0.hit_ratio(contender)))?;
        }
        map.end()
    }
}

/// The report as markdown: how it was measured, a table per trace, the bars.
pub fn render_markdown(report: &CacheReport) -> String {
    let s = &report.settings;
    let mut out = format!(
        "Hit ratios, percent: each cache replays each trace single-threaded and read-through (get; on a miss, \
         count it and insert). minicache is built with `.max_capacity(N).shards(1)` (`minicache` = its default \
         policy), moka {} as `moka::sync::Cache` with `run_pending_tasks()` after every request (so its lazy \
         maintenance does not blur its policy; minicache gets the same call), quick_cache {} as \
         `quick_cache::sync::Cache` with its default sharding ({} cores here); `lru` is an exact LRU and \
         `optimal` Bélády's (offline, with bypass), the ceiling. moka and quick_cache hash with seeded hashers, \
         seeds 1..={}; every cache but lru and optimal shows the median of {} replays, and the spread table \
         how far apart they were.\n",
        s.moka_version, s.quick_cache_version, s.cores, s.repeats, s.repeats
    );
    for t in &report.traces {
        out.push('\n');
        out.push_str(&render_trace(t, s.repeats));
    }
    out.push('\n');
    out.push_str(&render_bars_table(report));
    out
}

/// The bars table alone (`--json` prints it on stderr, the JSON lines having no room
/// for it).
pub fn render_bars_table(report: &CacheReport) -> String {
    render_bars(&report.bars, "points", |_, m| format!("{m:+.2}"))
}

fn render_trace(t: &TraceReport, repeats: usize) -> String {
    let mut out = format!(
        "#### {}: {} requests, {} keys ({})\n\n",
        t.name,
        thousands(t.requests as f64),
        thousands(t.distinct_keys as f64),
        t.source
    );
    let header = |contenders: &[Contender]| {
        let names: Vec<&str> = contenders.iter().map(|c| c.name()).collect();
        format!("| capacity | {} |\n|---:|{}\n", names.join(" | "), "---:|".repeat(contenders.len()))
    };
    out.push_str(&header(&Contender::ALL));
    for run in &t.runs {
        let cells: Vec<String> = Contender::ALL.iter().map(|&c| format!("{:.2}", run.hit_ratio(c))).collect();
        out.push_str(&format!("| {} | {} |\n", thousands(run.capacity as f64), cells.join(" | ")));
    }
    if repeats > 1 {
        let varying: Vec<Contender> = Contender::ALL.into_iter().filter(|c| c.varies()).collect();
        out.push_str(&format!("\nSpread over the {repeats} replays (highest minus lowest), points:\n\n"));
        out.push_str(&header(&varying));
        for run in &t.runs {
            let cells: Vec<String> =
                varying.iter().map(|&c| format!("{:.2}", run.result(c).spread(run.requests))).collect();
            out.push_str(&format!("| {} | {} |\n", thousands(run.capacity as f64), cells.join(" | ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run where contender i scored `hits[i]` (one replay each).
    fn run(capacity: u64, requests: u64, hits: [u64; 8]) -> Run {
        let results = Contender::ALL.iter().zip(hits).map(|(&c, h)| ContenderResult::new(c, vec![h])).collect();
        Run::new(capacity, requests, results)
    }

    fn trace(name: &str, runs: Vec<Run>) -> TraceReport {
        TraceReport { name: name.into(), source: "t.gz".into(), requests: 1000, distinct_keys: 10, runs }
    }

    fn settings() -> Settings {
        Settings { repeats: 1, moka_version: "m", quick_cache_version: "q", cpu: "cpu".into(), cores: 2 }
    }

    #[test]
    fn the_median_is_of_the_replays_and_the_spread_their_range() {
        let r = ContenderResult::new(Contender::Moka, vec![30, 10, 20]);
        assert_eq!(r.median_hits, 20.0);
        assert!((r.spread(200) - 10.0).abs() < 1e-9, "20 hits of 200 = 10 points");
    }

    #[test]
    fn json_is_one_object_per_run_in_the_issues_shape() {
        let report = CacheReport::new(
            settings(),
            vec![trace("a", vec![run(2, 3, [1, 1, 1, 0, 2, 1, 0, 2]), run(4, 3, [2, 2, 2, 2, 2, 2, 2, 2])])],
        );
        let json = render_json_lines(&report).expect("encodes");
        let lines: Vec<&str> = json.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            r#"{"trace":"a","capacity":2,"requests":3,"hit_ratio":{"minicache":33.33,"minicache-wtinylfu":33.33,"minicache-s3fifo":33.33,"minicache-lru":0.0,"moka":66.67,"quick_cache":33.33,"lru":0.0,"optimal":66.67}}"#
        );
    }

    #[test]
    fn bars_hold_minicache_to_the_best_and_to_lru_on_loop() {
        // minicache 40.0, moka 40.4 (0.4 behind: met), quick_cache 39.
        let close = run(512, 1000, [400, 400, 0, 0, 404, 390, 100, 500]);
        // 0.6 behind quick_cache: not met; no loop@512 here.
        let behind = run(1024, 1000, [400, 400, 0, 0, 300, 406, 100, 500]);
        let report = CacheReport::new(settings(), vec![trace("loop", vec![close, behind])]);
        let bars: Vec<(&str, bool)> = report.bars.iter().map(|b| (b.what.as_str(), b.met)).collect();
        assert_eq!(
            bars,
            [
                ("loop at 512: minicache minus the better of moka and quick_cache", true),
                ("loop at 1024: minicache minus the better of moka and quick_cache", false),
                ("loop at 512: minicache minus exact LRU", true),
                ("every replay of every cache, 2 trace x capacity runs: its hit ratio minus the optimum's", true),
            ]
        );
        assert!((report.bars[1].measured.unwrap_or(0.0) + 0.6).abs() < 1e-9);
        assert!((report.bars[2].measured.unwrap_or(0.0) - 30.0).abs() < 1e-9);
        // 19.9 points over LRU misses the loop bar.
        let report =
            CacheReport::new(settings(), vec![trace("loop", vec![run(512, 1000, [300, 0, 0, 0, 0, 0, 101, 500])])]);
        assert!(!report.bars[1].met);
        // Other traces have no loop bar.
        let report = CacheReport::new(settings(), vec![trace("x", vec![run(512, 1000, [300, 0, 0, 0, 0, 0, 0, 500])])]);
        assert_eq!(report.bars.len(), 2);
    }

    #[test]
    fn a_replay_above_the_optimum_breaks_the_ceiling_bar_and_is_named() {
        let broken = run(10, 1000, [400, 400, 0, 0, 501, 0, 0, 500]);
        assert_eq!(broken.above_optimal(), Some((Contender::Moka, 501)));
        let report = CacheReport::new(settings(), vec![trace("t", vec![broken])]);
        let ceiling = report.bars.last().expect("a ceiling bar");
        assert!(!ceiling.met);
        assert!((ceiling.measured.unwrap_or(0.0) - 0.1).abs() < 1e-9);
        assert!(matches!(
            super::super::check_ceiling(&report),
            Err(super::super::CacheBenchError::AboveOptimal { .. })
        ));
        // One seed above the optimum is enough, even when the median is under it.
        let results = Contender::ALL
            .iter()
            .map(|&c| ContenderResult::new(c, if c == Contender::Optimal { vec![500] } else { vec![100, 501, 100] }))
            .collect();
        assert!(Run::new(10, 1000, results).above_optimal().is_some());
    }

    #[test]
    fn markdown_has_a_table_per_trace_and_the_bars() {
        let mut s = settings();
        s.repeats = 3;
        let results = Contender::ALL
            .iter()
            .map(|&c| match c {
                Contender::Moka => ContenderResult::new(c, vec![100, 130, 120]),
                c if c.varies() => ContenderResult::new(c, vec![100, 120, 110]),
                c => ContenderResult::new(c, vec![200]),
            })
            .collect();
        let report = CacheReport::new(s, vec![trace("glimpse", vec![Run::new(1000, 1000, results)])]);
        let md = render_markdown(&report);
        assert!(md.contains("#### glimpse: 1,000 requests, 10 keys (t.gz)"), "{md}");
        assert!(
            md.contains("| capacity | minicache | minicache-wtinylfu | minicache-s3fifo | minicache-lru | moka | quick_cache | lru | optimal |"),
            "{md}"
        );
        assert!(md.contains("| 1,000 | 11.00 | 11.00 | 11.00 | 11.00 | 12.00 | 11.00 | 20.00 | 20.00 |"), "{md}");
        assert!(md.contains("| 1,000 | 2.00 | 2.00 | 2.00 | 2.00 | 3.00 | 2.00 |"), "the spread: {md}");
        assert!(md.contains("#### Bars: 1 of 2 met"), "{md}");
        assert!(md.contains("| >= -0.50 points | -1.00 | **no** |"), "{md}");
        assert!(md.contains("| <= 0 (the ceiling) | +0.00 | yes |"), "{md}");
        for line in md.lines().filter(|l| l.starts_with('|')) {
            let cells = line.matches('|').count();
            assert!(cells == 10 || cells == 8 || cells == 5, "{line}");
        }
    }
}
