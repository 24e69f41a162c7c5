//! `mini bench cache`: hit ratios, minicache's three policies against moka, quick_cache,
//! an exact LRU and Bélády's optimum, on the same traces, in one run.
//!
//! A hit ratio is a property of a policy and a workload, not of a machine, so this
//! benchmark starts no server and times nothing: it replays traces of keys through each
//! cache, single-threaded and read-through (get; on a miss, count it and insert), and
//! counts hits. How each cache is set up for that, and why, is in [`contenders`].
//!
//! ```text
//!  trace.rs: a file (plain or gzip) ─┐
//!  zipf.rs:  a seeded Zipf trace ────┴─> keys ──> contenders.rs: each cache, R seeds
//!                                             ──> lru.rs: exact LRU
//!                                             ──> optimal.rs: Bélády, offline
//!                                             ──> report.rs: tables, bars, JSON lines
//! ```
//!
//! The default suite is the LIRS paper's traces, read from the shared directory (never
//! copied into the repository): loop (a 1,011-key loop, LRU's worst case), glimpse (a
//! text search tool's block trace) and multi1 (several programs interleaved), at three
//! capacities each, plus a synthetic Zipf trace (1M requests over 100k keys, s = 0.9,
//! seed 42) at 1% and 10% of its keys.
//!
//! Left out: time (TTL and TTI change what is cached, not how well a policy picks),
//! weighted entries, and throughput, which the criterion benchmark
//! `benches/benches/cache.rs` measures.

pub mod contenders;
pub mod lru;
pub mod optimal;
pub mod report;
pub mod trace;
pub mod zipf;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use self::contenders::Contender;
use self::report::{CacheReport, ContenderResult, Run, Settings, TraceReport};
use self::trace::TraceError;
use self::zipf::{Zipf, ZipfError};
use crate::environment::{cores, cpu_model};
use crate::{progress, BenchError};

/// The name of the loop trace in the suite: the LRU bar is checked on it.
pub const LOOP: &str = "loop";

/// The suite's LIRS traces: (name, file in the traces directory, capacities).
pub const LIRS_TRACES: [(&str, &str, [u64; 3]); 3] = [
    (LOOP, "loop.trace.gz", [256, 512, 1024]),
    ("glimpse", "gli.trace.gz", [500, 1000, 2000]),
    ("multi1", "multi1.trace.gz", [500, 1000, 2000]),
];

/// Seeds per varying contender in the full suite; each figure is the median. Odd, so
/// the median is one replay's figure.
pub const REPEATS: usize = 9;

/// Seeds per varying contender with `--quick`.
pub const QUICK_REPEATS: usize = 3;

/// Replays a run may ask for: each is a full pass over the trace per contender.
pub const MAX_REPEATS: usize = 101;

/// The seed of the suite's Zipf trace.
pub const ZIPF_SEED: u64 = 42;

/// Where a trace's keys come from.
#[derive(Debug, Clone, PartialEq)]
pub enum TraceSource {
    File(PathBuf),
    /// `requests` keys drawn from a Zipf distribution over `keys` keys.
    Zipf {
        keys: u64,
        requests: usize,
        exponent: f64,
        seed: u64,
    },
}

impl TraceSource {
    /// How the report names the source.
    pub fn describe(&self) -> String {
        match self {
            TraceSource::File(path) => path.display().to_string(),
            TraceSource::Zipf { keys, requests, exponent, seed } => {
                format!("Zipf s = {exponent}, {requests} requests over {keys} keys, seed {seed}")
            }
        }
    }
}

/// One trace and the capacities to replay it at.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSpec {
    /// The name in the report and in the JSON's `trace`.
    pub name: String,
    pub source: TraceSource,
    pub capacities: Vec<u64>,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub traces: Vec<TraceSpec>,
    /// Replays per varying contender (see [`Contender::varies`]), seeds 1..=repeats.
    pub repeats: usize,
    /// Draw a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
}

impl Options {
    /// The default suite: the LIRS traces in `traces_dir` and the Zipf trace, 9 seeds.
    pub fn suite(traces_dir: &Path) -> Options {
        let mut traces: Vec<TraceSpec> = LIRS_TRACES
            .iter()
            .map(|(name, file, capacities)| TraceSpec {
                name: name.to_string(),
                source: TraceSource::File(traces_dir.join(file)),
                capacities: capacities.to_vec(),
            })
            .collect();
        traces.push(TraceSpec {
            name: "zipf".into(),
            source: TraceSource::Zipf { keys: 100_000, requests: 1_000_000, exponent: 0.9, seed: ZIPF_SEED },
            capacities: vec![1_000, 10_000],
        });
        Options { traces, repeats: REPEATS, progress: true }
    }

    /// The suite in seconds: the same LIRS traces, a Zipf trace a tenth the size (at
    /// 1% and 10% of its keys, as the full one), three seeds.
    pub fn quick_suite(traces_dir: &Path) -> Options {
        let mut options = Options::suite(traces_dir);
        options.repeats = QUICK_REPEATS;
        for t in &mut options.traces {
            if let TraceSource::Zipf { keys, requests, .. } = &mut t.source {
                *keys /= 10;
                *requests /= 10;
                t.capacities = vec![*keys / 100, *keys / 10];
            }
        }
        options
    }

    /// Every file in `paths`, named as given, at every capacity.
    pub fn files(paths: &[PathBuf], capacities: &[u64]) -> Options {
        let traces = paths
            .iter()
            .map(|path| TraceSpec {
                name: path.display().to_string(),
                source: TraceSource::File(path.clone()),
                capacities: capacities.to_vec(),
            })
            .collect();
        Options { traces, repeats: REPEATS, progress: true }
    }
}

/// Why `mini bench cache` could not run, or found the replayer broken.
#[derive(Debug, thiserror::Error)]
pub enum CacheBenchError {
    #[error(transparent)]
    Trace(#[from] TraceError),

    #[error("{0}")]
    Zipf(#[from] ZipfError),

    #[error("the LIRS trace {} is not there; point --traces-dir at the directory holding loop.trace.gz, gli.trace.gz and multi1.trace.gz, or replay your own with --trace FILE --capacity N", .0.display())]
    SuiteTraceMissing(PathBuf),

    #[error("{0}")]
    BadOptions(String),

    #[error("{contender} hit {hits} times on {trace} at capacity {capacity}, above the optimum's {optimal}: no cache of {capacity} entries can, so the replayer is broken (or the cache held more than {capacity} entries); the figures are in the report above")]
    AboveOptimal { contender: &'static str, trace: String, capacity: u64, hits: u64, optimal: u64 },

    #[error(transparent)]
    Bench(#[from] BenchError),
}

/// The shared LIRS traces: `shared/data/traces` beside the repository (two levels up
/// from this crate's manifest, resolved when `mini` is built, so that any working
/// directory finds them).
pub fn default_traces_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/traces");
    // Shown in --help and errors: without the `..`s when the directory is there.
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

fn check_options(options: &Options) -> Result<(), CacheBenchError> {
    let bad = |why: String| Err(CacheBenchError::BadOptions(why));
    if options.traces.is_empty() {
        return bad("nothing to replay: give at least one --trace FILE".into());
    }
    if !(1..=MAX_REPEATS).contains(&options.repeats) {
        return bad(format!("--repeats is between 1 and {MAX_REPEATS}, not {}", options.repeats));
    }
    let mut names = HashSet::new();
    for t in &options.traces {
        if !names.insert(t.name.as_str()) {
            return bad(format!("the trace {} is given twice", t.name));
        }
        if t.capacities.is_empty() {
            return bad(format!("no capacity for {}: give at least one --capacity N", t.name));
        }
        if let Some(c) = t.capacities.iter().find(|&&c| !(1..=lru::MAX_CAPACITY).contains(&c)) {
            return bad(format!("a capacity is between 1 and {} entries, not {c}", lru::MAX_CAPACITY));
        }
    }
    Ok(())
}

/// The keys of one trace.
fn load(source: &TraceSource) -> Result<Vec<u64>, CacheBenchError> {
    match source {
        TraceSource::File(path) => Ok(trace::read(path)?),
        &TraceSource::Zipf { keys, requests, exponent, seed } => {
            if requests == 0 || requests > trace::MAX_TRACE_REQUESTS {
                return Err(CacheBenchError::BadOptions(format!(
                    "a Zipf trace has between 1 and {} requests, not {requests}",
                    trace::MAX_TRACE_REQUESTS
                )));
            }
            Ok(Zipf::new(keys, exponent)?.trace(requests, seed))
        }
    }
}

/// Checks that the suite's files are there before anything runs, so that a missing
/// directory is one clear error rather than the first of three.
pub fn check_suite_files(options: &Options) -> Result<(), CacheBenchError> {
    for t in &options.traces {
        if let TraceSource::File(path) = &t.source {
            if !path.is_file() {
                return Err(CacheBenchError::SuiteTraceMissing(path.clone()));
            }
        }
    }
    Ok(())
}

/// Replays every trace at every capacity through every contender. Every trace is read
/// before the first replay, so a bad line fails the run at once.
pub fn run(options: &Options) -> Result<CacheReport, CacheBenchError> {
    check_options(options)?;
    let traces: Vec<(&TraceSpec, Vec<u64>)> =
        options.traces.iter().map(|t| Ok((t, load(&t.source)?))).collect::<Result<_, CacheBenchError>>()?;
    let replays_per_run: usize = Contender::ALL.iter().map(|c| if c.varies() { options.repeats } else { 1 }).sum();
    let steps: usize = traces.iter().map(|(t, _)| t.capacities.len() * replays_per_run).sum();
    let bar = progress::bar(steps, options.progress);
    let mut reports = Vec::new();
    for (spec, keys) in &traces {
        let mut runs = Vec::new();
        for &capacity in &spec.capacities {
            let mut results = Vec::new();
            for contender in Contender::ALL {
                bar.set_message(format!("{} at {capacity}: {}", spec.name, contender.name()));
                let seeds = if contender.varies() { options.repeats as u64 } else { 1 };
                let hits: Vec<u64> = (1..=seeds)
                    .map(|seed| {
                        let hits = contender.hits(keys, capacity, seed);
                        bar.inc(1);
                        hits
                    })
                    .collect();
                results.push(ContenderResult::new(contender, hits));
            }
            runs.push(Run::new(capacity, keys.len() as u64, results));
        }
        let distinct_keys = keys.iter().collect::<HashSet<_>>().len() as u64;
        reports.push(TraceReport {
            name: spec.name.clone(),
            source: spec.source.describe(),
            requests: keys.len() as u64,
            distinct_keys,
            runs,
        });
    }
    bar.finish_and_clear();
    let settings = Settings {
        repeats: options.repeats,
        moka_version: MOKA_VERSION,
        quick_cache_version: QUICK_CACHE_VERSION,
        cpu: cpu_model(),
        cores: cores(),
    };
    Ok(CacheReport::new(settings, reports))
}

/// The versions the workspace pins (Cargo.toml), for the report.
pub const MOKA_VERSION: &str = "0.12.16";
pub const QUICK_CACHE_VERSION: &str = "0.7.0";

/// The ceiling, asserted: `Err` naming the first replay that beat the optimum.
pub fn check_ceiling(report: &CacheReport) -> Result<(), CacheBenchError> {
    for t in &report.traces {
        for run in &t.runs {
            if let Some((contender, hits)) = run.above_optimal() {
                return Err(CacheBenchError::AboveOptimal {
                    contender: contender.name(),
                    trace: t.name.clone(),
                    capacity: run.capacity,
                    hits,
                    optimal: run.optimal_hits(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_suite_is_the_issues_traces_and_capacities() {
        let o = Options::suite(Path::new("/t"));
        let names: Vec<&str> = o.traces.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["loop", "glimpse", "multi1", "zipf"]);
        assert_eq!(o.traces[0].source, TraceSource::File(PathBuf::from("/t/loop.trace.gz")));
        assert_eq!(o.traces[0].capacities, [256, 512, 1024]);
        assert_eq!(
            o.traces[3].source,
            TraceSource::Zipf { keys: 100_000, requests: 1_000_000, exponent: 0.9, seed: ZIPF_SEED }
        );
        assert_eq!(o.repeats, REPEATS);
        let quick = Options::quick_suite(Path::new("/t"));
        assert_eq!(quick.traces[3].capacities, [100, 1000]);
        assert!(check_options(&o).is_ok() && check_options(&quick).is_ok());
    }

    #[test]
    fn nonsense_options_are_refused() {
        let refused = |change: fn(&mut Options)| {
            let mut o = Options::files(&[PathBuf::from("a"), PathBuf::from("b")], &[10]);
            change(&mut o);
            check_options(&o).is_err()
        };
        assert!(!refused(|_| ()));
        assert!(refused(|o| o.repeats = 0));
        assert!(refused(|o| o.repeats = MAX_REPEATS + 1));
        assert!(refused(|o| o.traces.clear()));
        assert!(refused(|o| o.traces[0].capacities.clear()));
        assert!(refused(|o| o.traces[0].capacities = vec![0]));
        assert!(refused(|o| o.traces[1].name = "a".into()));
    }

    #[test]
    fn a_missing_suite_directory_is_one_clear_error() {
        let o = Options::suite(Path::new("/no/such/dir"));
        let err = check_suite_files(&o).expect_err("missing");
        assert!(err.to_string().contains("/no/such/dir/loop.trace.gz is not there; point --traces-dir"), "{err}");
    }

    #[test]
    fn a_small_zipf_run_reports_every_contender_under_the_ceiling() {
        let options = Options {
            traces: vec![TraceSpec {
                name: "z".into(),
                source: TraceSource::Zipf { keys: 500, requests: 5000, exponent: 1.0, seed: 1 },
                capacities: vec![20, 100],
            }],
            repeats: 3,
            progress: false,
        };
        let report = run(&options).expect("runs");
        assert!(check_ceiling(&report).is_ok());
        let t = &report.traces[0];
        assert_eq!((t.requests, t.runs.len()), (5000, 2));
        for r in &t.runs {
            assert_eq!(r.results.len(), Contender::ALL.len());
            assert!(r.results.iter().all(|c| c.hits.len() == if c.contender.varies() { 3 } else { 1 }));
        }
    }
}
