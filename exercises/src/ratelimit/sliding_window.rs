//! sliding-window: a sliding-window-log limiter on a sorted set (at most `limit`
//! admissions in any window of length `window`), measured side by side against the
//! token bucket and a fixed-window counter.
//!
//! The key is a sorted set with one member per admission still inside the window, its
//! score the server time of that admission in microseconds. One decision
//! ([`SlidingWindowLog::acquire`]):
//!
//! ```text
//!  round trip 1 (pipeline):  UNWATCH; WATCH key; TIME; ZRANGE key -limit -limit WITHSCORES
//!     the limit-th newest entry, if any, is still inside (now − window, now]?
//!         refused: retry when it leaves, at its score + window. No write.
//!  round trip 2 (atomic):    MULTI
//!                              ZREMRANGEBYSCORE key -inf (now − window)   trim what left
//!                              ZADD key now <client nonce>:<seq>          this admission
//!                              ZCARD key                                  must be ≤ limit
//!                              PEXPIRE key window                         idle key goes away
//!                            EXEC   (nil: someone wrote the key since WATCH; read again)
//! ```
//!
//! **Why WATCH, and not MULTI/EXEC alone.** The well-known MULTI-only recipe (trim, add,
//! count in one transaction, then remove the entry again if the count is over) has
//! three defects: (1) the time must be known before MULTI, so it is the caller's clock
//! or a separate `TIME` round trip, and two clients' times can then commit out of
//! order, so one client's trim can remove entries another client's still-running
//! decision should have counted (over-admission at the window's edge); (2) refused
//! requests are added and removed again, so a client that dies in between leaves a
//! phantom entry, and while it is there it refuses others (under-admission); (3) it
//! writes on every request, refused or not. With WATCH the time is read inside the
//! watched read, commits on a key are serialised, every committed score is later than
//! the previous commit's, and refusals write nothing. The price is a retry when two
//! clients race for the same key ([`Decision::aborted`]).
//!
//! **Why the limit-th newest entry and not ZCOUNT.** Counting the window needs `now`,
//! which the same pipeline is still fetching; the rank query needs no time. "Fewer than
//! `limit` entries are newer than `now − window`" is the same as "the `limit`-th newest
//! is not", so one entry answers it, whatever the set's size.
//!
//! The fixed-window counter ([`FixedWindowCounter`]) is here only as the third column
//! of the comparison: one `INCR` per request on a key per window, one round trip, one
//! integer per key, and up to twice the limit inside one window length straddling a
//! boundary.
//!
//! Left out: weighted requests (every admission costs one entry) and the
//! sliding-window *counter* approximation (two fixed windows, weighted), which trades
//! the log's memory for an estimate.

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::decision::{
    backoff, ceil_millis, connect, local_micros, micros_to_duration, server_micros, Decision, LimitError, Limiter,
    Variant,
};
use super::hammer::{hammer, HammerOutcome};
use super::ledger::Ledger;
use super::token_bucket::{self, Limit, TokenBucket, MAX_ATTEMPTS};
use crate::framework::histogram::format_duration;
use crate::framework::{Demo, DemoError, Report};

/// The largest `limit` a window accepts: the log keeps one entry per admission, so a
/// limit is also a memory bound per key, and the rank query and the trim cost grow
/// with it (log of the set size, plus what is trimmed).
pub const MAX_WINDOW_LIMIT: u64 = 1_000_000;

/// At most `limit` admissions in any window of `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowLimit {
    limit: u64,
    window_micros: u64,
}

impl WindowLimit {
    pub fn new(limit: u64, window: Duration) -> Result<WindowLimit, LimitError> {
        let window_micros = u64::try_from(window.as_micros()).unwrap_or(u64::MAX);
        if !(1..=MAX_WINDOW_LIMIT).contains(&limit) {
            return Err(LimitError::InvalidLimit(format!("a window limit of {limit}: use 1 to {MAX_WINDOW_LIMIT}")));
        }
        // At least a millisecond, because PEXPIRE is in milliseconds; at most a day,
        // because a longer window is a quota, better kept as a counter than as a log.
        if !(1_000..=86_400_000_000).contains(&window_micros) {
            return Err(LimitError::InvalidLimit(format!("a window of {window:?}: use 1ms to 1 day")));
        }
        Ok(WindowLimit { limit, window_micros })
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn window_micros(&self) -> u64 {
        self.window_micros
    }

    fn window_i64(&self) -> i64 {
        // Validated to at most a day in µs, which fits.
        self.window_micros as i64
    }

    /// "20 per 1.00s".
    pub fn describe(&self) -> String {
        format!("{} per {}", self.limit, format_duration(Duration::from_micros(self.window_micros)))
    }
}

/// The sliding log's decision, given the `limit`-th newest entry's score (`None`: fewer
/// entries than the limit). Pure: the edge cases are tested without a server.
///
/// Admit when that entry has left the window `(now − window, now]`; otherwise it is
/// the one whose departure frees a slot, at `score + window`.
pub fn decide_log(limit: &WindowLimit, limit_th_newest: Option<i64>, now: i64) -> Result<(), Duration> {
    match limit_th_newest {
        Some(score) if score > now - limit.window_i64() => {
            Err(micros_to_duration(score.saturating_add(limit.window_i64()) - now))
        }
        _ => Ok(()),
    }
}

/// One client of the sliding-window logs: a connection of its own.
pub struct SlidingWindowLog {
    /// Owned, never cloned: WATCH state is per connection.
    connection: MultiplexedConnection,
    limit: WindowLimit,
    variant: Variant,
    /// Makes this client's members unique without coordination: `<nonce>:<seq>`.
    nonce: u64,
    seq: u64,
    rng: fastrand::Rng,
}

impl SlidingWindowLog {
    pub async fn connect(url: &str, limit: WindowLimit) -> Result<SlidingWindowLog, LimitError> {
        let mut rng = fastrand::Rng::new();
        Ok(SlidingWindowLog {
            connection: connect(url).await?,
            limit,
            variant: Variant::Watched,
            nonce: rng.u64(..),
            seq: 0,
            rng,
        })
    }

    pub fn with_variant(mut self, variant: Variant) -> SlidingWindowLog {
        self.variant = variant;
        self
    }

    pub fn limit(&self) -> WindowLimit {
        self.limit
    }

    /// Admits one request on `key`, or refuses and says when the oldest blocking
    /// admission leaves the window.
    pub async fn acquire(&mut self, key: &str) -> Result<Decision, LimitError> {
        let rank = -i64::try_from(self.limit.limit).unwrap_or(i64::MAX);
        let mut round_trips = 0;
        for attempt in 1..=MAX_ATTEMPTS {
            let mut read = redis::pipe();
            read.cmd("UNWATCH").ignore();
            if self.variant == Variant::Watched {
                read.cmd("WATCH").arg(key).ignore();
            }
            read.cmd("TIME").cmd("ZRANGE").arg(key).arg(rank).arg(rank).arg("WITHSCORES");
            let (time, newest): ((i64, i64), Vec<(String, f64)>) =
                read.query_async(&mut self.connection).await.map_err(|e| token_bucket::wrong_type(key, e))?;
            round_trips += 1;
            let now = server_micros(time)?;
            // Scores are integers of at most 2^53 (µs until the year 2255), exact in an f64.
            let limit_th_newest = newest.first().map(|(_, score)| *score as i64);
            if let Err(retry_after) = decide_log(&self.limit, limit_th_newest, now) {
                return Ok(Decision {
                    admitted: false,
                    remaining: 0,
                    retry_after,
                    at_micros: now,
                    aborted: attempt - 1,
                    round_trips,
                });
            }
            self.seq += 1;
            let member = format!("{:x}:{}", self.nonce, self.seq);
            let committed: Option<(i64, i64, u64, i64)> = redis::pipe()
                .atomic()
                .cmd("ZREMRANGEBYSCORE")
                .arg(key)
                .arg("-inf")
                .arg(now - self.limit.window_i64())
                .cmd("ZADD")
                .arg(key)
                .arg(now)
                .arg(&member)
                .cmd("ZCARD")
                .arg(key)
                .cmd("PEXPIRE")
                .arg(key)
                .arg(ceil_millis(self.limit.window_micros))
                .query_async(&mut self.connection)
                .await?;
            round_trips += 1;
            let Some((_, _, entries, _)) = committed else {
                backoff(attempt, &mut self.rng).await;
                continue;
            };
            // The invariant, checked where it is made: after a watched admission the
            // log holds at most `limit` entries. More means someone else writes this
            // key (another limit, another tool); the broken variant is expected to.
            if self.variant == Variant::Watched && entries > self.limit.limit {
                return Err(LimitError::Corrupt {
                    key: key.to_string(),
                    what: format!("{entries} entries for a limit of {}", self.limit.limit),
                });
            }
            return Ok(Decision {
                admitted: true,
                remaining: self.limit.limit.saturating_sub(entries),
                retry_after: Duration::ZERO,
                at_micros: now,
                aborted: attempt - 1,
                round_trips,
            });
        }
        Err(LimitError::Contended { key: key.to_string(), attempts: MAX_ATTEMPTS })
    }
}

impl Limiter for SlidingWindowLog {
    async fn try_acquire(&mut self, key: &str) -> Result<Decision, LimitError> {
        self.acquire(key).await
    }
}

/// The fixed-window counter, the comparison's third column: `INCR <key>:<window
/// number>`, admitted while the count is at most the limit. Its windows are numbered by
/// the caller's clock, as most implementations do (one round trip instead of two).
pub struct FixedWindowCounter {
    connection: MultiplexedConnection,
    limit: WindowLimit,
}

impl FixedWindowCounter {
    pub async fn connect(url: &str, limit: WindowLimit) -> Result<FixedWindowCounter, LimitError> {
        Ok(FixedWindowCounter { connection: connect(url).await?, limit })
    }

    /// The key the counter for the window containing `at_micros` lives in.
    pub fn window_key(&self, key: &str, at_micros: i64) -> String {
        format!("{key}:{}", at_micros.div_euclid(self.limit.window_i64()))
    }

    pub async fn acquire(&mut self, key: &str) -> Result<Decision, LimitError> {
        let now = local_micros();
        let window = self.limit.window_i64();
        let window_end = (now.div_euclid(window) + 1) * window;
        let counter = self.window_key(key, now);
        // The counter outlives its window by one more, so a caller whose clock lags a
        // little still finds it; then it goes.
        let ttl_micros = u64::try_from(window_end - now + window).unwrap_or(0);
        let (count, _): (u64, i64) = redis::pipe()
            .atomic()
            .cmd("INCR")
            .arg(&counter)
            .cmd("PEXPIRE")
            .arg(&counter)
            .arg(ceil_millis(ttl_micros))
            .query_async(&mut self.connection)
            .await
            .map_err(|e| token_bucket::wrong_type(&counter, e))?;
        let admitted = count <= self.limit.limit;
        Ok(Decision {
            admitted,
            remaining: self.limit.limit.saturating_sub(count),
            retry_after: if admitted { Duration::ZERO } else { micros_to_duration(window_end - now) },
            at_micros: now,
            aborted: 0,
            round_trips: 1,
        })
    }
}

impl Limiter for FixedWindowCounter {
    async fn try_acquire(&mut self, key: &str) -> Result<Decision, LimitError> {
        self.acquire(key).await
    }
}

// ---------------------------------------------------------------------------------
// The scenario behind `mini demo sliding-window`.
// ---------------------------------------------------------------------------------

/// The three limiters of the comparison, as one type the scenario can hold in a list.
pub enum AnyLimiter {
    Log(SlidingWindowLog),
    Bucket(TokenBucket),
    Fixed(FixedWindowCounter),
}

impl Limiter for AnyLimiter {
    async fn try_acquire(&mut self, key: &str) -> Result<Decision, LimitError> {
        match self {
            AnyLimiter::Log(l) => l.acquire(key).await,
            AnyLimiter::Bucket(b) => b.acquire(key, 1).await,
            AnyLimiter::Fixed(f) => f.acquire(key).await,
        }
    }
}

/// Which limiter a row of the comparison is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Log,
    LogUnwatched,
    Bucket,
    Fixed,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Log => "sliding log",
            Kind::LogUnwatched => "sliding log, no WATCH (broken)",
            Kind::Bucket => "token bucket",
            Kind::Fixed => "fixed window",
        }
    }

    /// What the limiter promises within one window length: the log `limit`, the bucket
    /// `capacity + rate × window`, the fixed window nothing better than twice its limit.
    pub fn promise(self, window: &WindowLimit) -> u64 {
        match self {
            Kind::Log | Kind::LogUnwatched => window.limit,
            Kind::Bucket => bucket_for(window).map_or(0, |b| b.bound(window.window_micros)),
            Kind::Fixed => 2 * window.limit,
        }
    }

    pub async fn connect(self, url: &str, window: &WindowLimit) -> Result<AnyLimiter, LimitError> {
        Ok(match self {
            Kind::Log => AnyLimiter::Log(SlidingWindowLog::connect(url, *window).await?),
            Kind::LogUnwatched => {
                AnyLimiter::Log(SlidingWindowLog::connect(url, *window).await?.with_variant(Variant::Unwatched))
            }
            Kind::Bucket => AnyLimiter::Bucket(TokenBucket::connect(url, bucket_for(window)?).await?),
            Kind::Fixed => AnyLimiter::Fixed(FixedWindowCounter::connect(url, *window).await?),
        })
    }
}

/// The token bucket that matches a window limit on average: `limit` tokens, refilled
/// `limit` per window. Same long-run rate; a burst of `limit` at once; but up to
/// `2 × limit` in one window length (a full bucket, then a window's refill).
pub fn bucket_for(window: &WindowLimit) -> Result<Limit, LimitError> {
    Limit::new(window.limit, window.limit, Duration::from_micros(window.window_micros))
}

/// Sleeps until the caller's wall clock reads `at_micros`.
async fn sleep_until_local(at_micros: i64) {
    let wait = at_micros - local_micros();
    if wait > 0 {
        tokio::time::sleep(micros_to_duration(wait)).await;
    }
}

/// One limiter's part of the edge test.
struct EdgeRow {
    kind: Kind,
    ledger: Ledger,
    before_edge: usize,
    after_edge: usize,
}

/// `2 × limit` requests just before a fixed-window boundary and `2 × limit` just after,
/// for each limiter at once (each on its own connection and key).
async fn edge_bursts(url: &str, prefix: &str, window: &WindowLimit) -> Result<(i64, Vec<EdgeRow>), DemoError> {
    let kinds = [Kind::Log, Kind::Bucket, Kind::Fixed];
    let w = window.window_i64();
    let now = local_micros();
    // The next boundary at least half a window away, so the first burst fits before it.
    let mut edge = (now.div_euclid(w) + 1) * w;
    if edge - now < w / 2 {
        edge += w;
    }
    let first_at = edge - w / 4;
    let second_at = edge + w / 50;
    let burst = window.limit * 2;
    let mut tasks = Vec::new();
    for kind in kinds {
        let mut limiter = kind.connect(url, window).await?;
        let key = format!("{prefix}:edge:{}", kind.name().replace(' ', "-"));
        tasks.push(tokio::spawn(async move {
            let mut ledger = Ledger::new();
            let mut counts = [0usize; 2];
            for (phase, at) in [first_at, second_at].into_iter().enumerate() {
                sleep_until_local(at).await;
                for _ in 0..burst {
                    let decision = limiter.try_acquire(&key).await?;
                    if decision.admitted {
                        ledger.record(decision.at_micros);
                        counts[phase] += 1;
                    }
                }
            }
            Ok::<EdgeRow, LimitError>(EdgeRow { kind, ledger, before_edge: counts[0], after_edge: counts[1] })
        }));
    }
    let mut rows = Vec::new();
    for task in tasks {
        rows.push(task.await??);
    }
    Ok((edge, rows))
}

/// What one key of one limiter holds, as the server counts it.
pub struct MemoryRow {
    pub name: String,
    pub key: String,
    pub holds: String,
    /// `MEMORY USAGE`; `None` when the server does not answer it.
    pub bytes: Option<u64>,
    /// Admissions the key keeps an entry for (the log); zero for the fixed-size ones.
    pub admissions: u64,
}

async fn memory_usage(connection: &mut MultiplexedConnection, key: &str) -> Option<u64> {
    redis::cmd("MEMORY").arg("USAGE").arg(key).query_async::<Option<u64>>(connection).await.ok().flatten()
}

/// Fills a fresh key of each limiter with a window's admissions (one client, back to
/// back, so nothing expires in between) and asks the server what it holds. The log is
/// filled twice: with `window.limit` entries and with `large` (a limit of `large` per
/// minute), to show that it grows with the limit while the others do not.
pub async fn memory_per_key(
    url: &str,
    prefix: &str,
    window: &WindowLimit,
    large: u64,
) -> Result<Vec<MemoryRow>, DemoError> {
    let mut admin = connect(url).await?;
    let mut rows = Vec::new();
    for (name, limit) in
        [("sliding log", *window), ("sliding log, larger limit", WindowLimit::new(large, Duration::from_secs(60))?)]
    {
        let key = format!("{prefix}:memory:log-{}", limit.limit);
        let mut log = SlidingWindowLog::connect(url, limit).await?;
        for _ in 0..limit.limit {
            log.acquire(&key).await?;
        }
        let entries: u64 = redis::cmd("ZCARD").arg(&key).query_async(&mut admin).await?;
        let bytes = memory_usage(&mut admin, &key).await;
        rows.push(MemoryRow {
            name: name.to_string(),
            key,
            holds: format!("{entries} entries"),
            bytes,
            admissions: entries,
        });
    }
    let key = format!("{prefix}:memory:bucket");
    let mut bucket = TokenBucket::connect(url, bucket_for(window)?).await?;
    for _ in 0..window.limit {
        bucket.acquire(&key, 1).await?;
    }
    let bytes = memory_usage(&mut admin, &key).await;
    rows.push(MemoryRow { name: "token bucket".into(), key, holds: "2 fields".into(), bytes, admissions: 0 });
    let key = format!("{prefix}:memory:fixed");
    let mut fixed = FixedWindowCounter::connect(url, *window).await?;
    let counter = fixed.window_key(&key, local_micros());
    for _ in 0..window.limit {
        fixed.acquire(&key).await?;
    }
    // The counter of the window the last request fell in (normally the same one).
    let current = fixed.window_key(&key, local_micros());
    let bytes = memory_usage(&mut admin, &current).await.or(memory_usage(&mut admin, &counter).await);
    rows.push(MemoryRow { name: "fixed window".into(), key: current, holds: "1 counter".into(), bytes, admissions: 0 });
    let _: i64 = redis::cmd("DEL").arg(&counter).query_async(&mut admin).await?;
    Ok(rows)
}

/// What one limiter cost under the contended closed loop, and what it admitted.
struct CostRow {
    kind: Kind,
    outcome: HammerOutcome,
    max_in_window: usize,
    bucket_bound: Option<u64>,
}

/// `mini demo sliding-window`.
pub async fn demo(demo: Demo) -> Result<Report, DemoError> {
    let url = demo.kv_url()?.to_string();
    let mut report =
        demo.report("sliding-window", "a sliding-window log on sorted sets, against a token bucket and a fixed window");
    let prefix = format!("ex:sliding-window:{}:{:08x}", demo.seed, demo.rng(0).u32(..));
    let window = demo
        .scale
        .pick(WindowLimit::new(20, Duration::from_secs(1)), WindowLimit::new(10, Duration::from_millis(500)))?;
    let bucket = bucket_for(&window)?;
    let clients = demo.scale.pick(8, 4);
    let hammer_for = demo.scale.pick(Duration::from_secs(2), Duration::from_millis(600));
    let w = format_duration(Duration::from_micros(window.window_micros));
    report.line("limit", format!("{} (sliding log and fixed window)", window.describe()));
    report.line("token bucket", bucket.describe());

    // --- Accuracy at the window's edge ---
    report.section(format!(
        "accuracy: {} requests just before a fixed-window edge, {} just after",
        window.limit * 2,
        window.limit * 2
    ));
    let (edge, mut edge_rows) = edge_bursts(&url, &prefix, &window).await?;
    report.text(format!(
        "burst 1 at edge − {}, burst 2 at edge + {}; 'max in any {w}' slides a window of the limit's length over the admissions",
        format_duration(Duration::from_micros(window.window_micros / 4)),
        format_duration(Duration::from_micros(window.window_micros / 50)),
    ));
    let mut rows = Vec::new();
    for row in &mut edge_rows {
        let (max, _) = row.ledger.max_in_window(window.window_micros);
        rows.push(vec![
            row.kind.name().to_string(),
            row.before_edge.to_string(),
            row.after_edge.to_string(),
            max.to_string(),
            window.limit.to_string(),
            row.kind.promise(&window).to_string(),
        ]);
    }
    report.table(
        &["limiter", "before edge", "after edge", &format!("max in any {w}"), "limit", "promises at most"],
        rows,
    );

    // --- Cost per decision, contended ---
    report.section(format!(
        "cost: {clients} clients per limiter on one key, closed loop, {} each",
        format_duration(hammer_for)
    ));
    let mut admin = connect(&url).await?;
    let mut cost_rows = Vec::new();
    let mut used_keys = Vec::new();
    for kind in [Kind::Log, Kind::Bucket, Kind::Fixed, Kind::LogUnwatched] {
        let mut limiters = Vec::with_capacity(clients);
        for _ in 0..clients {
            limiters.push(kind.connect(&url, &window).await?);
        }
        let key = format!("{prefix}:cost:{}", kind.name().split(',').next().unwrap_or("x").replace(' ', "-"));
        let key = if kind == Kind::LogUnwatched { format!("{key}-unwatched") } else { key };
        let mut outcome = hammer(limiters, &key, hammer_for).await?;
        let (max_in_window, _) = outcome.admitted.max_in_window(window.window_micros);
        let bucket_bound = (kind == Kind::Bucket).then(|| bucket.bound(outcome.admitted.span_micros()));
        used_keys.push(key);
        cost_rows.push(CostRow { kind, outcome, max_in_window, bucket_bound });
    }
    let mut rows = Vec::new();
    for row in &mut cost_rows {
        let outcome = &mut row.outcome;
        rows.push(vec![
            row.kind.name().to_string(),
            outcome.decisions.to_string(),
            outcome.admitted.len().to_string(),
            row.max_in_window.to_string(),
            format!("{:.2} / {:.2}", outcome.round_trips_per_admission(), outcome.round_trips_per_refusal()),
            format!(
                "{} / {}",
                format_duration(outcome.latency.quantile(0.5)),
                format_duration(outcome.latency.quantile(0.99))
            ),
            format!(
                "{} / {}",
                format_duration(outcome.admitted_latency.quantile(0.5)),
                format_duration(outcome.admitted_latency.quantile(0.99))
            ),
            format!("{:.1}", outcome.aborted as f64 / outcome.admitted.len().max(1) as f64),
        ]);
    }
    report.table(
        &[
            "limiter",
            "decisions",
            "admitted",
            &format!("max in any {w}"),
            "round trips admit/refuse",
            "p50 / p99",
            "admitted p50 / p99",
            "aborted per admission",
        ],
        rows,
    );
    if let Some(log) = cost_rows.iter_mut().find(|r| r.kind == Kind::Log) {
        report.histogram("sliding log latency", &mut log.outcome.latency);
    }
    if let Some(b) = cost_rows.iter_mut().find(|r| r.kind == Kind::Bucket) {
        report.histogram("token bucket latency", &mut b.outcome.latency);
    }

    // --- Memory per key ---
    let large = demo.scale.pick(1_000, 200);
    report.section(format!(
        "memory per key (MEMORY USAGE, right after filling a window: {} and {large} admissions)",
        window.limit
    ));
    let memory = memory_per_key(&url, &prefix, &window, large).await?;
    let mut rows = Vec::new();
    for row in &memory {
        used_keys.push(row.key.clone());
        rows.push(vec![
            row.name.clone(),
            row.holds.clone(),
            row.bytes.map_or_else(|| "n/a".to_string(), |b| format!("{b} B")),
            match (row.bytes, row.admissions) {
                (Some(b), n) if n > 0 => format!("{:.0} B", b as f64 / n as f64),
                _ => "-".to_string(),
            },
        ]);
    }
    report.table(&["key", "holds", "memory", "per admission in the window"], rows);

    // Leave a shared server as we found it (the keys would expire within a window anyway).
    if !used_keys.is_empty() {
        let _: i64 = redis::cmd("DEL").arg(&used_keys).query_async(&mut admin).await?;
    }

    // --- Checks ---
    for row in &mut edge_rows {
        let (max, end) = row.ledger.max_in_window(window.window_micros);
        match row.kind {
            Kind::Log => {
                report.check(
                    max as u64 <= window.limit,
                    format!("at the edge, the sliding log admitted at most {} in any {w}: {max}", window.limit),
                );
                report.check(
                    row.before_edge as u64 == window.limit,
                    format!("the sliding log admits its whole limit at once: {} of {}", row.before_edge, window.limit),
                );
            }
            Kind::Bucket => {
                let span = row.ledger.span_micros();
                let bound = bucket.bound(span);
                let worst = bucket.worst_excess(row.ledger.sorted());
                report.check(
                    row.ledger.len() as u64 <= bound && worst <= 0,
                    format!(
                        "at the edge, the token bucket kept its own bound: {} <= {bound}, worst stretch {worst:+}",
                        row.ledger.len()
                    ),
                );
            }
            Kind::Fixed => {
                report.text(format!(
                    "fixed window: {max} admitted within one {w} (window ending {}), {} times its limit: the edge flaw",
                    end.map_or("-".to_string(), |e| (e - edge).to_string() + "µs after the edge"),
                    format_args!("{:.1}", max as f64 / window.limit as f64),
                ));
            }
            Kind::LogUnwatched => {}
        }
    }
    for row in &mut cost_rows {
        match row.kind {
            Kind::Log => {
                report.check(
                    row.max_in_window as u64 <= window.limit && row.outcome.admitted.len() as u64 >= window.limit,
                    format!(
                        "{clients} clients on one key: the sliding log admitted {} in all, at most {} in any {w}: {}",
                        row.outcome.admitted.len(),
                        window.limit,
                        row.max_in_window
                    ),
                );
            }
            Kind::Bucket => {
                let bound = row.bucket_bound.unwrap_or(0);
                let worst = bucket.worst_excess(row.outcome.admitted.sorted());
                report.check(
                    row.outcome.admitted.len() as u64 <= bound && worst <= 0,
                    format!(
                        "{clients} clients on one key: the token bucket admitted {} <= bound {bound}, worst stretch {worst:+}",
                        row.outcome.admitted.len()
                    ),
                );
            }
            Kind::LogUnwatched => {
                report.check(
                    row.max_in_window as u64 > window.limit,
                    format!(
                        "the check catches the log without WATCH: {} in one {w} > limit {}",
                        row.max_in_window, window.limit
                    ),
                );
            }
            Kind::Fixed => {}
        }
    }
    report.verdict(if report.failures().count() == 0 {
        "the sliding log never exceeds its limit in any window; the bucket allows a refill on top of a burst, the fixed window twice its limit at an edge"
    } else {
        "a check failed: see above"
    });
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_open_on_the_left() {
        let limit = WindowLimit::new(3, Duration::from_millis(10)).unwrap();
        // Fewer entries than the limit: admit.
        assert_eq!(decide_log(&limit, None, 50_000), Ok(()));
        // The limit-th newest is exactly one window old: it has left, admit.
        assert_eq!(decide_log(&limit, Some(40_000), 50_000), Ok(()));
        // One µs younger: still inside, retry when it leaves.
        assert_eq!(decide_log(&limit, Some(40_001), 50_000), Err(Duration::from_micros(1)));
        assert_eq!(decide_log(&limit, Some(50_000), 50_000), Err(Duration::from_millis(10)));
        // A future entry (the server's clock went back): refuse for longer, never admit early.
        assert_eq!(decide_log(&limit, Some(60_000), 50_000), Err(Duration::from_millis(20)));
    }

    #[test]
    fn limits_are_validated() {
        assert!(WindowLimit::new(0, Duration::from_secs(1)).is_err());
        assert!(WindowLimit::new(MAX_WINDOW_LIMIT + 1, Duration::from_secs(1)).is_err());
        assert!(WindowLimit::new(1, Duration::from_micros(999)).is_err());
        assert!(WindowLimit::new(1, Duration::from_secs(2 * 86_400)).is_err());
        let w = WindowLimit::new(20, Duration::from_secs(1)).unwrap();
        assert_eq!(Kind::Bucket.promise(&w), 40, "a full bucket plus one window of refill");
    }

    /// The log's rule, replayed on a ledger of random arrival times from one client,
    /// never lets more than `limit` into any window; a rule with the window closed on
    /// the left (`>=`, the classic fencepost slip) is caught by the same ledger check.
    #[test]
    fn the_rule_holds_and_a_fencepost_slip_is_caught() {
        let limit = WindowLimit::new(4, Duration::from_millis(1)).unwrap();
        let replay = |slip: bool, seed: u64| {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut admitted: Vec<i64> = Vec::new();
            let mut ledger = Ledger::new();
            let mut now = 0i64;
            for _ in 0..20_000 {
                now += rng.i64(0..4);
                let l = limit.limit as usize;
                let limit_th = (admitted.len() >= l).then(|| admitted[admitted.len() - l]);
                let admit = match (slip, limit_th) {
                    (true, Some(score)) => score + limit.window_i64() <= now + 1, // counts the edge as gone 1 µs early
                    _ => decide_log(&limit, limit_th, now).is_ok(),
                };
                if admit {
                    admitted.push(now);
                    ledger.record(now);
                }
            }
            ledger.max_in_window(limit.window_micros).0 as u64
        };
        for seed in 0..20 {
            assert!(replay(false, seed) <= limit.limit, "seed {seed}");
        }
        assert!((0..20).any(|seed| replay(true, seed) > limit.limit), "the ledger check missed the slip");
    }
}
