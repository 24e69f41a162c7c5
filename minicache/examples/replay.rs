//! Replays cache traces and prints the hit ratio of each minicache policy next to moka's
//! and quick_cache's: the quick check behind the hit-ratio bar (the official, fuller report
//! is `mini bench cache`).
//!
//! ```text
//! cargo run --release -p minicache --example replay -- [--runs N] [TRACE@CAP,CAP...]...
//! ```
//!
//! With no trace arguments it replays the LIRS traces in `/work/shared/data/traces/` (or
//! `$MINICACHE_TRACES`) at the capacities the bar is checked at, plus a synthetic Zipf trace.
//! A trace is a gzip file with one integer key per line. The replay is single-threaded and
//! read-through: `get` each key, and on a miss insert it. Every cache is exact where it can
//! be: minicache with `shards(1)`, moka with `run_pending_tasks()` after each request,
//! quick_cache with its defaults. Hashers are randomly seeded, so each figure is the median
//! of `--runs` replays (default 5).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use minicache::{Cache, Policy};

/// One column of the report.
#[derive(Debug, Clone, Copy)]
enum Contender {
    Minicache(Policy),
    Moka,
    QuickCache,
}

impl Contender {
    const ALL: [Contender; 5] = [
        Contender::Minicache(Policy::WTinyLfu),
        Contender::Minicache(Policy::S3Fifo),
        Contender::Minicache(Policy::Lru),
        Contender::Moka,
        Contender::QuickCache,
    ];

    fn name(self) -> &'static str {
        match self {
            Contender::Minicache(Policy::WTinyLfu) => "wtinylfu",
            Contender::Minicache(Policy::S3Fifo) => "s3fifo",
            Contender::Minicache(Policy::Lru) => "lru",
            Contender::Moka => "moka",
            Contender::QuickCache => "quick_cache",
        }
    }

    /// Hits replaying `keys` read-through with `capacity` entries.
    fn hits(self, keys: &[u64], capacity: u64) -> u64 {
        let mut hits = 0;
        match self {
            Contender::Minicache(policy) => {
                let cache: Cache<u64, u64> = Cache::builder().max_capacity(capacity).policy(policy).shards(1).build();
                for &key in keys {
                    match cache.get(&key) {
                        Some(value) => {
                            assert_eq!(value, key);
                            hits += 1;
                        }
                        None => cache.insert(key, key),
                    }
                }
                assert!(cache.weighted_size() <= capacity);
            }
            Contender::Moka => {
                let cache: moka::sync::Cache<u64, u64> = moka::sync::Cache::new(capacity);
                for &key in keys {
                    match cache.get(&key) {
                        Some(_) => hits += 1,
                        None => cache.insert(key, key),
                    }
                    cache.run_pending_tasks();
                }
            }
            Contender::QuickCache => {
                let cache: quick_cache::sync::Cache<u64, u64> =
                    quick_cache::sync::Cache::new(usize::try_from(capacity).unwrap_or(usize::MAX));
                for &key in keys {
                    match cache.get(&key) {
                        Some(_) => hits += 1,
                        None => cache.insert(key, key),
                    }
                }
            }
        }
        hits
    }
}

fn read_trace(path: &Path) -> Result<Vec<u64>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let reader = BufReader::new(flate2::read::GzDecoder::new(file));
    let mut keys = Vec::new();
    for (number, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| format!("{}: reading line {}: {e}", path.display(), number + 1))?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let key = line
            .parse::<u64>()
            .map_err(|e| format!("{}:{}: {line:?} is not an integer key ({e})", path.display(), number + 1))?;
        keys.push(key);
    }
    Ok(keys)
}

/// `requests` draws from a Zipf(`exponent`) distribution over `distinct` keys, seeded.
fn zipf_trace(distinct: u64, exponent: f64, requests: usize, seed: u64) -> Vec<u64> {
    let weights: Vec<f64> = (1..=distinct).map(|rank| 1.0 / (rank as f64).powf(exponent)).collect();
    let total: f64 = weights.iter().sum();
    let mut cumulative = Vec::with_capacity(weights.len());
    let mut sum = 0.0;
    for weight in weights {
        sum += weight / total;
        cumulative.push(sum);
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..requests)
        .map(|_| {
            let draw = rng.f64();
            // Scramble rank -> key so that key order says nothing about popularity.
            let rank = cumulative.partition_point(|c| *c < draw) as u64;
            rank.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17)
        })
        .collect()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1).peekable();
    let mut runs = 5usize;
    let mut jobs: Vec<(String, Vec<u64>)> = Vec::new();
    while let Some(arg) = args.next() {
        if arg == "--runs" {
            let value = args.next().ok_or("--runs needs a number")?;
            runs = value.parse().map_err(|e| format!("--runs {value:?}: {e}"))?;
            continue;
        }
        let (trace, capacities) =
            arg.split_once('@').ok_or_else(|| format!("{arg:?}: expected TRACE@CAP[,CAP...], e.g. loop@512,1024"))?;
        let capacities = capacities
            .split(',')
            .map(|c| c.parse::<u64>().map_err(|e| format!("{arg:?}: capacity {c:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        jobs.push((trace.to_string(), capacities));
    }
    if jobs.is_empty() {
        jobs = vec![
            ("loop".into(), vec![256, 512, 1024]),
            ("gli".into(), vec![500, 1000, 2000]),
            ("multi1".into(), vec![500, 1000, 2000]),
            ("zipf".into(), vec![500, 1000, 2000]),
        ];
    }
    let dir =
        std::env::var_os("MINICACHE_TRACES").map_or_else(|| PathBuf::from("/work/shared/data/traces"), PathBuf::from);

    print!("{:<16}", "trace@capacity");
    for contender in Contender::ALL {
        print!("{:>12}", contender.name());
    }
    println!();
    for (trace, capacities) in jobs {
        let keys = if trace == "zipf" {
            zipf_trace(100_000, 0.9, 1_000_000, 42)
        } else {
            let path =
                if Path::new(&trace).exists() { PathBuf::from(&trace) } else { dir.join(format!("{trace}.trace.gz")) };
            read_trace(&path)?
        };
        for capacity in capacities {
            print!("{:<16}", format!("{trace}@{capacity}"));
            for contender in Contender::ALL {
                let ratios = (0..runs.max(1))
                    .map(|_| 100.0 * contender.hits(&keys, capacity) as f64 / keys.len() as f64)
                    .collect();
                print!("{:>12.2}", median(ratios));
            }
            println!();
        }
    }
    Ok(())
}
