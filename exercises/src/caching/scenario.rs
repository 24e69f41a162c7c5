//! The `cache-aside` scenario: a stampede on a cold key without and with protection,
//! then refresh-ahead, negative caching and stale-while-revalidate, each measured at the
//! origin.
//!
//! Every phase gets a fresh [`Origin`] (so its load count is the phase's alone) and its
//! own key prefix under `cache-aside:<seed>:<nonce>:`, so a run against a shared Redis
//! neither collides with another run nor with leftovers (which expire by their TTLs
//! anyway). Several "processes" are several [`CacheAside`] instances, each with its own
//! connections and its own single-flight, sharing only the KV store and the origin, as
//! separate application servers would.
//!
//! The phase functions ([`stampede`], [`hot_key`], [`missing_key`],
//! [`stale_while_revalidate`]) are public so the tests drive them with their own
//! settings, against minikv and against a real Redis. Left out: a warm cache under a
//! realistic key distribution (minicache's hit-ratio replays do that).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::framework::histogram::format_duration;
use crate::framework::{Demo, DemoError, LatencyHistogram, Report, Scale};

use super::cache_aside::{CacheAside, Config, Protection, Read, Source, Stats};
use super::origin::Origin;

/// The TTL of phases that are not about expiry: longer than any phase.
const LONG_TTL: Duration = Duration::from_secs(30);

/// The value the stale-while-revalidate phase loads, and the one the origin changes it to.
pub const SWR_OLD_VALUE: &str = "price 42: 10 EUR";
pub const SWR_NEW_VALUE: &str = "price 42: 12 EUR";

/// The sizes of one run, full and quick side by side.
#[derive(Clone, Debug)]
pub struct Sizes {
    pub stampede_readers: usize,
    pub stampede_latency: Duration,
    /// The origin's connection pool in the stampede: the naive pattern's thousand
    /// queries queue for these.
    pub origin_connections: usize,
    /// How many processes share the KV store in the multi-process stampede.
    pub processes: usize,
    /// The origin's latency in the multi-process stampede: long, so that every
    /// process's leader has missed before the first load is stored.
    pub processes_latency: Duration,
    pub hot_ttl: Duration,
    pub hot_ahead: Duration,
    pub hot_duration: Duration,
    pub hot_readers: usize,
    pub hot_latency: Duration,
    pub negative_ttl: Duration,
    pub negative_duration: Duration,
    pub negative_readers: usize,
    pub negative_latency: Duration,
    pub swr_ttl: Duration,
    pub swr_grace: Duration,
    pub swr_readers: usize,
    pub swr_latency: Duration,
    /// How long each reader of a hot or missing key waits between its reads.
    pub read_every: Duration,
}

impl Sizes {
    pub fn for_scale(scale: Scale) -> Sizes {
        let ms = Duration::from_millis;
        Sizes {
            stampede_readers: scale.pick(1_000, 300),
            stampede_latency: ms(50),
            origin_connections: 20,
            processes: 4,
            processes_latency: scale.pick(ms(200), ms(150)),
            hot_ttl: scale.pick(ms(600), ms(300)),
            hot_ahead: scale.pick(ms(300), ms(150)),
            hot_duration: scale.pick(ms(2_000), ms(800)),
            hot_readers: 8,
            hot_latency: ms(40),
            negative_ttl: scale.pick(ms(300), ms(200)),
            negative_duration: scale.pick(ms(1_500), ms(700)),
            negative_readers: 16,
            negative_latency: ms(20),
            swr_ttl: scale.pick(ms(400), ms(200)),
            swr_grace: scale.pick(ms(1_500), ms(700)),
            swr_readers: scale.pick(200, 100),
            swr_latency: scale.pick(ms(400), ms(300)),
            read_every: ms(5),
        }
    }
}

/// What a stampede on one cold key did.
#[derive(Debug)]
pub struct StampedeOutcome {
    pub protection: Protection,
    pub readers: usize,
    pub processes: usize,
    /// Counted at the origin: the number every check is about.
    pub origin_loads: u64,
    pub peak_concurrent_loads: u64,
    /// Reads that returned something other than the row (must be zero).
    pub wrong_answers: u64,
    /// Reads that failed, and the first error's text.
    pub errors: u64,
    pub first_error: Option<String>,
    pub latency: LatencyHistogram,
    /// Every process's counters, added up.
    pub stats: Stats,
}

/// `readers` concurrent reads of one cold key, spread over `processes` cache instances
/// that share the KV store at `kv_url` and one origin whose queries take `latency`
/// (through a pool of `connections`, when given).
pub async fn stampede(
    kv_url: &str,
    config: &Config,
    processes: usize,
    readers: usize,
    latency: Duration,
    connections: Option<usize>,
) -> Result<StampedeOutcome, DemoError> {
    assert!(processes >= 1 && readers >= processes, "at least one reader per process");
    let key = "product:1";
    let row = "product 1: a kettle, 39 EUR";
    let origin = match connections {
        Some(connections) => Origin::with_connections(latency, connections),
        None => Origin::new(latency),
    };
    origin.put(key, row);
    let mut caches = Vec::with_capacity(processes);
    for _ in 0..processes {
        caches.push(CacheAside::connect(kv_url, origin.clone(), config.clone()).await?);
    }
    // Everyone leaves the barrier together: the stampede is a thousand misses at once.
    let barrier = Arc::new(tokio::sync::Barrier::new(readers));
    let mut tasks = tokio::task::JoinSet::new();
    for reader in 0..readers {
        let cache = caches[reader % processes].clone();
        let barrier = Arc::clone(&barrier);
        tasks.spawn(async move {
            barrier.wait().await;
            let started = Instant::now();
            let read = cache.get(key).await;
            (started.elapsed(), read)
        });
    }
    let mut outcome = StampedeOutcome {
        protection: config.protection,
        readers,
        processes,
        origin_loads: 0,
        peak_concurrent_loads: 0,
        wrong_answers: 0,
        errors: 0,
        first_error: None,
        latency: LatencyHistogram::new(),
        stats: Stats::default(),
    };
    while let Some(joined) = tasks.join_next().await {
        let (elapsed, read) = joined?;
        outcome.latency.record(elapsed);
        match read {
            Ok(read) if read.value.as_deref() == Some(row) => {}
            Ok(_) => outcome.wrong_answers += 1,
            Err(e) => {
                outcome.errors += 1;
                outcome.first_error.get_or_insert(e.to_string());
            }
        }
    }
    outcome.origin_loads = origin.loads();
    outcome.peak_concurrent_loads = origin.peak_concurrent_loads();
    outcome.stats = sum_stats(caches.iter().map(CacheAside::stats));
    Ok(outcome)
}

/// What readers of one hot key saw across several TTLs.
#[derive(Debug)]
pub struct HotKeyOutcome {
    pub reads: u64,
    /// Reads after the warm-up that had to wait for the origin.
    pub misses: u64,
    pub errors: u64,
    /// Origin loads after the warm-up (refreshes, or loads after expiries).
    pub origin_loads: u64,
    pub elapsed: Duration,
    pub latency: LatencyHistogram,
    pub stats: Stats,
}

/// `readers` tasks read one key every `read_every` for `duration`, after one warm-up
/// read that loads it.
pub async fn hot_key(
    kv_url: &str,
    config: &Config,
    latency: Duration,
    readers: usize,
    duration: Duration,
    read_every: Duration,
) -> Result<HotKeyOutcome, DemoError> {
    let key = "product:hot";
    let origin = Origin::new(latency);
    origin.put(key, "the best seller");
    let cache = CacheAside::connect(kv_url, origin.clone(), config.clone()).await?;
    cache.get(key).await?;
    origin.reset_counts();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..readers {
        let cache = cache.clone();
        tasks.spawn(async move {
            let mut latency = LatencyHistogram::new();
            let (mut reads, mut misses, mut errors) = (0u64, 0u64, 0u64);
            while started.elapsed() < duration {
                let sent = Instant::now();
                match cache.get(key).await {
                    Ok(read) if read.source.is_miss() => misses += 1,
                    Ok(_) => {}
                    Err(_) => errors += 1,
                }
                latency.record(sent.elapsed());
                reads += 1;
                tokio::time::sleep(read_every).await;
            }
            (reads, misses, errors, latency)
        });
    }
    let mut outcome = HotKeyOutcome {
        reads: 0,
        misses: 0,
        errors: 0,
        origin_loads: 0,
        elapsed: Duration::ZERO,
        latency: LatencyHistogram::new(),
        stats: Stats::default(),
    };
    while let Some(joined) = tasks.join_next().await {
        let (reads, misses, errors, latency) = joined?;
        outcome.reads += reads;
        outcome.misses += misses;
        outcome.errors += errors;
        outcome.latency.merge(&latency);
    }
    outcome.elapsed = started.elapsed();
    if !cache.wait_for_refreshes(Duration::from_secs(10)).await {
        return Err(DemoError::Scenario("a background refresh did not finish within 10 s".into()));
    }
    outcome.origin_loads = origin.loads();
    outcome.stats = cache.stats();
    Ok(outcome)
}

/// What readers of a key the origin does not have caused.
#[derive(Debug)]
pub struct MissingKeyOutcome {
    pub reads: u64,
    /// Answers of "not found" (every read should be one).
    pub not_found: u64,
    pub errors: u64,
    pub origin_loads: u64,
    pub elapsed: Duration,
    pub stats: Stats,
}

/// `readers` tasks read a key the origin does not have, every `read_every` for
/// `duration`.
pub async fn missing_key(
    kv_url: &str,
    config: &Config,
    latency: Duration,
    readers: usize,
    duration: Duration,
    read_every: Duration,
) -> Result<MissingKeyOutcome, DemoError> {
    let key = "user:does-not-exist";
    let origin = Origin::new(latency);
    let cache = CacheAside::connect(kv_url, origin.clone(), config.clone()).await?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..readers {
        let cache = cache.clone();
        tasks.spawn(async move {
            let (mut reads, mut not_found, mut errors) = (0u64, 0u64, 0u64);
            while started.elapsed() < duration {
                match cache.get(key).await {
                    Ok(Read { value: None, .. }) => not_found += 1,
                    Ok(_) => {}
                    Err(_) => errors += 1,
                }
                reads += 1;
                tokio::time::sleep(read_every).await;
            }
            (reads, not_found, errors)
        });
    }
    let (mut reads, mut not_found, mut errors) = (0, 0, 0);
    while let Some(joined) = tasks.join_next().await {
        let (r, n, e) = joined?;
        reads += r;
        not_found += n;
        errors += e;
    }
    let elapsed = started.elapsed();
    Ok(MissingKeyOutcome { reads, not_found, errors, origin_loads: origin.loads(), elapsed, stats: cache.stats() })
}

/// The most origin loads negative caching allows for a missing key read throughout
/// `elapsed`: one per negative TTL (each negative entry is written after a load and
/// lives that long), plus the first.
pub fn negative_load_bound(elapsed: Duration, negative_ttl: Duration) -> u64 {
    assert!(!negative_ttl.is_zero(), "a negative TTL is positive");
    let periods = elapsed.as_nanos().div_ceil(negative_ttl.as_nanos());
    u64::try_from(periods).unwrap_or(u64::MAX).saturating_add(1)
}

/// What readers of an entry past its soft expiry got, and what came after.
#[derive(Debug)]
pub struct SwrOutcome {
    pub readers: usize,
    /// Reads that got the old value, stale, without waiting.
    pub stale_reads: u64,
    /// Reads that waited for the origin (must be zero inside the grace).
    pub misses: u64,
    pub errors: u64,
    /// Origin loads caused by those reads (their refreshes).
    pub refresh_loads: u64,
    pub latency: LatencyHistogram,
    /// A read once the refresh was done: the new value, fresh.
    pub after_refresh: Read,
    /// A read once the refreshed entry's grace had also passed, unread: a miss. `None`
    /// when not asked for.
    pub after_grace: Option<Read>,
    pub stats: Stats,
}

/// Loads a key, changes it at the origin, lets the entry pass its soft expiry, then
/// sends `readers` concurrent reads while the (slow) refresh runs; then reads again once
/// the refresh is done, and, with `wait_out_grace`, once more after the whole grace.
pub async fn stale_while_revalidate(
    kv_url: &str,
    config: &Config,
    latency: Duration,
    readers: usize,
    wait_out_grace: bool,
) -> Result<SwrOutcome, DemoError> {
    let grace = config.stale_grace.ok_or_else(|| DemoError::Scenario("this phase needs a stale grace".into()))?;
    let key = "price:42";
    let (old, new) = (SWR_OLD_VALUE, SWR_NEW_VALUE);
    let origin = Origin::new(latency);
    origin.put(key, old);
    let cache = CacheAside::connect(kv_url, origin.clone(), config.clone()).await?;
    cache.get(key).await?;
    origin.put(key, new); // the database changes; the cache does not know
                          // Past the soft expiry, well inside the grace.
    tokio::time::sleep(config.ttl + grace.min(Duration::from_millis(100)) / 2).await;
    origin.reset_counts();

    let barrier = Arc::new(tokio::sync::Barrier::new(readers));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..readers {
        let cache = cache.clone();
        let barrier = Arc::clone(&barrier);
        tasks.spawn(async move {
            barrier.wait().await;
            let sent = Instant::now();
            let read = cache.get(key).await;
            (sent.elapsed(), read)
        });
    }
    let mut latency_histogram = LatencyHistogram::new();
    let (mut stale_reads, mut misses, mut errors) = (0, 0, 0);
    while let Some(joined) = tasks.join_next().await {
        let (elapsed, read) = joined?;
        latency_histogram.record(elapsed);
        match read {
            Ok(read) if read.source == Source::Stale && read.value.as_deref() == Some(old) => stale_reads += 1,
            Ok(read) if read.source.is_miss() => misses += 1,
            Ok(_) => {}
            Err(_) => errors += 1,
        }
    }
    let refreshes_done = cache.wait_for_refreshes(Duration::from_secs(10)).await;
    if !refreshes_done {
        return Err(DemoError::Scenario("the refresh did not finish within 10 s".into()));
    }
    let refresh_loads = origin.loads();
    let after_refresh = cache.get(key).await?;
    let after_grace = if wait_out_grace {
        // A read that found the entry aging would have started another refresh; let it
        // end, so that the wait below starts after the last write.
        cache.wait_for_refreshes(Duration::from_secs(10)).await;
        tokio::time::sleep(config.ttl + grace + Duration::from_millis(200)).await;
        Some(cache.get(key).await?)
    } else {
        None
    };
    Ok(SwrOutcome {
        readers,
        stale_reads,
        misses,
        errors,
        refresh_loads,
        latency: latency_histogram,
        after_refresh,
        after_grace,
        stats: cache.stats(),
    })
}

fn sum_stats(all: impl Iterator<Item = Stats>) -> Stats {
    let mut total = Stats::default();
    for stats in all {
        total = total.plus(&stats);
    }
    total
}

/// The scenario `mini demo cache-aside` runs.
pub async fn demo(demo: Demo) -> Result<Report, DemoError> {
    let kv_url = demo.kv_url()?.to_string();
    let sizes = Sizes::for_scale(demo.scale);
    // The seed names the run; the nonce (not seeded: it must differ between two runs with
    // one seed) keeps them apart on a shared server.
    let base = format!("cache-aside:{}:{:08x}:", demo.seed, fastrand::u32(..));
    let mut report = demo.report(
        "cache-aside",
        "a shared cache in front of a slow origin: stampede control, refresh-ahead, negative caching, \
         stale-while-revalidate",
    );
    stampede_phase(&mut report, &kv_url, &sizes, &base).await?;
    refresh_ahead_phase(&mut report, &kv_url, &sizes, &base).await?;
    negative_caching_phase(&mut report, &kv_url, &sizes, &base).await?;
    stale_while_revalidate_phase(&mut report, &kv_url, &sizes, &base).await?;
    report.verdict(if report.passed() {
        "one origin load per cold key (per fleet with the KV lock), no misses on a hot key, a missing key \
         loaded once per negative TTL, and stale reads served at once"
    } else {
        "a check failed: see above"
    });
    Ok(report)
}

/// Phase 1: a thousand cold reads, naive, single-flight, and across processes with and
/// without the KV lock.
async fn stampede_phase(report: &mut Report, kv_url: &str, sizes: &Sizes, base: &str) -> Result<(), DemoError> {
    let prefix = |phase: &str| format!("{base}{phase}:");
    report.section(format!(
        "stampede: {} concurrent reads of one cold key (origin: {} a query, {} connections)",
        sizes.stampede_readers,
        format_duration(sizes.stampede_latency),
        sizes.origin_connections
    ));
    let runs = [
        (Protection::None, 1, sizes.stampede_latency),
        (Protection::SingleFlight, 1, sizes.stampede_latency),
        (Protection::SingleFlight, sizes.processes, sizes.processes_latency),
        (Protection::SingleFlightAndKvLock, sizes.processes, sizes.processes_latency),
    ];
    let mut rows = Vec::new();
    let mut outcomes = Vec::new();
    for (i, (protection, processes, latency)) in runs.into_iter().enumerate() {
        let config = Config::new(prefix(&format!("stampede{i}")), LONG_TTL).with_protection(protection);
        let mut outcome =
            stampede(kv_url, &config, processes, sizes.stampede_readers, latency, Some(sizes.origin_connections))
                .await?;
        rows.push(vec![
            protection.name().to_string(),
            processes.to_string(),
            format_duration(latency),
            outcome.origin_loads.to_string(),
            outcome.peak_concurrent_loads.to_string(),
            outcome.stats.reads(Source::Waited).to_string(),
            outcome.stats.reads(Source::Polled).to_string(),
            format_duration(outcome.latency.quantile(0.5)),
            format_duration(outcome.latency.quantile(0.99)),
        ]);
        outcomes.push(outcome);
    }
    report.table(
        &[
            "protection",
            "processes",
            "origin latency",
            "origin loads",
            "peak concurrent",
            "waited",
            "polled",
            "p50",
            "p99",
        ],
        rows,
    );
    for outcome in &mut outcomes {
        let processes = match outcome.processes {
            1 => "1 process".to_string(),
            n => format!("{n} processes"),
        };
        let label = format!("latency, {}, {processes}", outcome.protection.name());
        report.histogram(label, &mut outcome.latency);
    }
    let Ok([naive, single, many, locked]) = <[StampedeOutcome; 4]>::try_from(outcomes) else {
        return Err(DemoError::Scenario("four stampede runs were made".into()));
    };
    report.line("origin loads, naive", naive.origin_loads);
    report.line("origin loads, single-flight", single.origin_loads);
    report.line("origin loads, single-flight, processes", many.origin_loads);
    report.line("origin loads, KV lock, processes", locked.origin_loads);
    for outcome in [&naive, &single, &many, &locked] {
        if let Some(error) = &outcome.first_error {
            report.text(format!("first error ({} in all): {error}", outcome.errors));
        }
    }
    report.check(
        naive.origin_loads > 1,
        format!(
            "naive cache-aside: {} cold reads made {} origin loads (> 1: the stampede; {} at once at the peak)",
            naive.readers, naive.origin_loads, naive.peak_concurrent_loads
        ),
    );
    report.check(
        single.origin_loads == 1 && all_right(&single),
        format!(
            "single-flight: {} cold reads made {} origin load (= 1), {} wrong answers, {} errors",
            single.readers, single.origin_loads, single.wrong_answers, single.errors
        ),
    );
    report.check(
        many.origin_loads > 1 && many.origin_loads <= many.processes as u64 && all_right(&many),
        format!(
            "single-flight alone across {} processes: {} origin loads (one per process at most, more than one: \
             it cannot see the other processes)",
            many.processes, many.origin_loads
        ),
    );
    report.check(
        locked.origin_loads == 1 && all_right(&locked),
        format!(
            "single-flight + KV lock across {} processes: {} origin load (= 1); {} reads polled the KV store",
            locked.processes,
            locked.origin_loads,
            locked.stats.reads(Source::Polled)
        ),
    );
    Ok(())
}

/// Phase 2: readers of a hot key across several TTLs, with and without refresh-ahead.
async fn refresh_ahead_phase(report: &mut Report, kv_url: &str, sizes: &Sizes, base: &str) -> Result<(), DemoError> {
    let prefix = |phase: &str| format!("{base}{phase}:");
    report.section(format!(
        "refresh-ahead: {} readers on a hot key for {} (ttl {}, refresh {} before expiry)",
        sizes.hot_readers,
        format_duration(sizes.hot_duration),
        format_duration(sizes.hot_ttl),
        format_duration(sizes.hot_ahead)
    ));
    let with_ahead = Config::new(prefix("hot-ahead"), sizes.hot_ttl).with_refresh_ahead(sizes.hot_ahead);
    let without_ahead = Config::new(prefix("hot-plain"), sizes.hot_ttl);
    let mut hot =
        hot_key(kv_url, &with_ahead, sizes.hot_latency, sizes.hot_readers, sizes.hot_duration, sizes.read_every)
            .await?;
    let mut cold =
        hot_key(kv_url, &without_ahead, sizes.hot_latency, sizes.hot_readers, sizes.hot_duration, sizes.read_every)
            .await?;
    report.table(
        &["refresh-ahead", "reads", "misses", "origin loads", "refreshes", "errors", "p99", "max"],
        [("on", &mut hot), ("off", &mut cold)]
            .into_iter()
            .map(|(mode, outcome)| {
                vec![
                    mode.to_string(),
                    outcome.reads.to_string(),
                    outcome.misses.to_string(),
                    outcome.origin_loads.to_string(),
                    outcome.stats.refreshes_started.to_string(),
                    outcome.errors.to_string(),
                    format_duration(outcome.latency.quantile(0.99)),
                    format_duration(outcome.latency.max()),
                ]
            })
            .collect(),
    );
    report.histogram("latency, refresh-ahead on", &mut hot.latency);
    report.histogram("latency, refresh-ahead off", &mut cold.latency);
    report.line("misses, refresh-ahead on", hot.misses);
    report.line("misses, refresh-ahead off", cold.misses);
    let ttl_periods = hot.elapsed.as_millis() / sizes.hot_ttl.as_millis().max(1);
    report.check(
        hot.misses == 0 && hot.errors == 0 && u128::from(hot.origin_loads) >= ttl_periods,
        format!(
            "refresh-ahead: {} reads across {} TTLs, {} misses (= 0), kept loaded by {} refreshes (≥ {ttl_periods})",
            hot.reads, ttl_periods, hot.misses, hot.origin_loads
        ),
    );
    report.check(
        cold.misses > 0,
        format!("without refresh-ahead the same readers saw {} misses (> 0: one wait per expiry)", cold.misses),
    );
    Ok(())
}

/// Phase 3: readers of a missing key, with and without negative caching.
async fn negative_caching_phase(report: &mut Report, kv_url: &str, sizes: &Sizes, base: &str) -> Result<(), DemoError> {
    let prefix = |phase: &str| format!("{base}{phase}:");
    report.section(format!(
        "negative caching: {} readers of a missing key for {} (negative ttl {})",
        sizes.negative_readers,
        format_duration(sizes.negative_duration),
        format_duration(sizes.negative_ttl)
    ));
    let with_negative = Config::new(prefix("neg-on"), LONG_TTL).with_negative_ttl(sizes.negative_ttl);
    let without_negative = Config::new(prefix("neg-off"), LONG_TTL);
    let negative = missing_key(
        kv_url,
        &with_negative,
        sizes.negative_latency,
        sizes.negative_readers,
        sizes.negative_duration,
        sizes.read_every,
    )
    .await?;
    let unprotected = missing_key(
        kv_url,
        &without_negative,
        sizes.negative_latency,
        sizes.negative_readers,
        sizes.negative_duration,
        sizes.read_every,
    )
    .await?;
    let bound = negative_load_bound(negative.elapsed, sizes.negative_ttl);
    report.table(
        &["negative caching", "reads", "not found", "errors", "origin loads"],
        [("on", &negative), ("off", &unprotected)]
            .into_iter()
            .map(|(mode, o)| {
                vec![
                    mode.to_string(),
                    o.reads.to_string(),
                    o.not_found.to_string(),
                    o.errors.to_string(),
                    o.origin_loads.to_string(),
                ]
            })
            .collect(),
    );
    report.line("origin loads, negative caching on", negative.origin_loads);
    report.line("origin loads, negative caching off", unprotected.origin_loads);
    report.check(
        negative.origin_loads <= bound && negative.not_found == negative.reads && negative.reads > 0,
        format!(
            "negative caching: {} reads of a missing key in {} made {} origin loads (≤ {bound}: one per negative ttl)",
            negative.reads,
            format_duration(negative.elapsed),
            negative.origin_loads
        ),
    );
    report.check(
        unprotected.origin_loads > bound,
        format!(
            "without it: {} origin loads for {} reads (> {bound}, even with single-flight)",
            unprotected.origin_loads, unprotected.reads
        ),
    );
    Ok(())
}

/// Phase 4: readers just past the soft expiry while a slow refresh runs, with
/// single-flight and naive; then past the grace.
async fn stale_while_revalidate_phase(
    report: &mut Report,
    kv_url: &str,
    sizes: &Sizes,
    base: &str,
) -> Result<(), DemoError> {
    let prefix = |phase: &str| format!("{base}{phase}:");
    report.section(format!(
        "stale-while-revalidate: {} readers just past the ttl {} (grace {}, refresh takes {})",
        sizes.swr_readers,
        format_duration(sizes.swr_ttl),
        format_duration(sizes.swr_grace),
        format_duration(sizes.swr_latency)
    ));
    let swr_config = Config::new(prefix("swr"), sizes.swr_ttl).with_stale_grace(sizes.swr_grace);
    let mut swr = stale_while_revalidate(kv_url, &swr_config, sizes.swr_latency, sizes.swr_readers, true).await?;
    let naive_swr_config = swr_config.clone().with_protection(Protection::None);
    let naive_swr_config = Config { prefix: prefix("swr-naive"), ..naive_swr_config };
    let naive_swr =
        stale_while_revalidate(kv_url, &naive_swr_config, sizes.swr_latency, sizes.swr_readers, false).await?;
    report.table(
        &["protection", "readers", "served stale", "misses", "refresh loads"],
        [(Protection::SingleFlight, &swr), (Protection::None, &naive_swr)]
            .into_iter()
            .map(|(protection, o)| {
                vec![
                    protection.name().to_string(),
                    o.readers.to_string(),
                    o.stale_reads.to_string(),
                    o.misses.to_string(),
                    o.refresh_loads.to_string(),
                ]
            })
            .collect(),
    );
    report.histogram("latency, stale reads", &mut swr.latency);
    report.line("refresh loads, single-flight", swr.refresh_loads);
    report.line("refresh loads, naive", naive_swr.refresh_loads);
    report.text(format!(
        "after the refresh: {:?} ({}); after the grace, unread: {}",
        swr.after_refresh.value.as_deref().unwrap_or("none"),
        swr.after_refresh.source.name(),
        swr.after_grace.as_ref().map_or("not checked", |read| read.source.name())
    ));
    report.check(
        swr.stale_reads == swr.readers as u64 && swr.misses == 0 && swr.refresh_loads == 1,
        format!(
            "stale-while-revalidate: {} of {} readers served stale at once (p99 {}, the refresh takes {}), {} miss, \
             {} refresh load (= 1)",
            swr.stale_reads,
            swr.readers,
            format_duration(swr.latency.quantile(0.99)),
            format_duration(sizes.swr_latency),
            swr.misses,
            swr.refresh_loads
        ),
    );
    report.check(
        swr.after_refresh.source == Source::Fresh && swr.after_refresh.value.as_deref() == Some(SWR_NEW_VALUE),
        format!("after the refresh the new value is served fresh ({})", swr.after_refresh.source.name()),
    );
    let past_grace = swr.after_grace.as_ref().map(|read| read.source);
    report.check(
        past_grace == Some(Source::Loaded),
        format!(
            "past ttl + grace nothing stale is served: the read was a miss ({})",
            past_grace.map_or("not checked", Source::name)
        ),
    );
    report.check(
        naive_swr.refresh_loads > 1,
        format!(
            "naive: the same {} stale readers started {} refreshes (> 1: one per reader)",
            naive_swr.readers, naive_swr.refresh_loads
        ),
    );
    Ok(())
}

fn all_right(outcome: &StampedeOutcome) -> bool {
    outcome.wrong_answers == 0 && outcome.errors == 0
}
