//! token-bucket: a per-key token bucket kept on the KV store, made atomic with
//! WATCH/MULTI/EXEC, so any number of client instances share one limit per key.
//!
//! The bucket holds up to `capacity` tokens and gains `refill_tokens` every
//! `refill_every`; a request costing `cost` is admitted when that many tokens are there.
//! The key is a hash of two fields, written only on admission:
//!
//! ```text
//!  HSET <key> micro_tokens <level × 10⁶> at_us <server time of the last admission>
//!  PEXPIRE <key> <time until the bucket is full again>
//! ```
//!
//! One decision (see [`TokenBucket::acquire`]):
//!
//! ```text
//!  round trip 1 (pipeline):  UNWATCH; WATCH key; HMGET key micro_tokens at_us; TIME
//!     compute locally:      level = min(capacity, stored + rate × (now − at_us))
//!     refused?  reply "retry after (cost − level) / rate"  — no write, done in 1 round trip
//!  round trip 2 (atomic):   MULTI; HSET key …; PEXPIRE key …; EXEC
//!     EXEC = nil?           another client changed the key after our WATCH: read again
//!                           (bounded: MAX_ATTEMPTS, counted in Decision::aborted)
//! ```
//!
//! Why these choices:
//!
//! - **Time comes from the server's `TIME`**, read inside the watched read. Every
//!   instance then measures elapsed time on one clock, so instances whose clocks are
//!   off by seconds still refill the same bucket at the same rate; with local clocks, an
//!   instance running 2 s ahead would credit itself 2 s of refill on every call. And
//!   because the time is read after WATCH, a committed decision's time is never earlier
//!   than the previous commit's (that one happened before our WATCH, or our EXEC would
//!   abort), so the stored `at_us` only moves forward. If the server's clock is stepped
//!   back anyway, the bucket refills nothing until it catches up: it under-admits, never
//!   over-admits.
//! - **Expiry is the reset.** The TTL is the time until the bucket would be full again,
//!   so an idle key disappears exactly when it would read as full, and an absent key
//!   *is* a full bucket. No cleanup job, and memory is held only by keys in use.
//! - **Integer micro-tokens.** Refill is `floor(elapsed × rate)` in millionths of a
//!   token, so the sum of all refills never exceeds the exact refill over the whole span;
//!   floats would make the bound below true only approximately.
//!
//! The invariant, with its fencepost: over any run of admissions on one key, from the
//! first admission at `t_first` to the last at `t_last` (server times, as stored),
//! `admitted ≤ capacity + floor(refill_tokens × (t_last − t_first) / refill_every)`.
//! The bucket holds at most `capacity` at `t_first` (that admission is paid from it;
//! there is no "+1"), and between two admissions it gains at most the exact refill of
//! the time between them. [`Limit::bound`] computes the right-hand side. Because the
//! level is capped, the same holds for every stretch of the run, not only the whole of
//! it; [`Limit::worst_excess`] checks that stronger form, which a bucket that forgot its
//! cap fails after an idle spell.
//!
//! The price of optimistic locking is contention: on one hot key, every admission is a
//! race that one client wins and the others retry (jittered backoff, see
//! [`super::decision::backoff`]). The scenario measures it: tens of aborted EXECs per
//! admission with 100 clients on one key.
//!
//! [`Variant::Unwatched`] is the same read-compute-write without WATCH, kept as a
//! deliberately broken variant: concurrent clients read the same level and each spends
//! the same token, which the 100-client check catches.
//!
//! Left out: a server-side script (EVAL would make this one round trip and contention
//! free, but minikv has no scripting; the WATCH version runs on both), and costs that
//! vary by key.

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::decision::{backoff, ceil_millis, connect, server_micros, Decision, LimitError, Limiter, Variant};
use super::hammer::{hammer, HammerOutcome};
use crate::framework::histogram::format_duration;
use crate::framework::{Demo, DemoError, Report};

/// Millionths of a token per token: the bucket's fixed-point unit.
pub const MICRO_TOKENS: u64 = 1_000_000;

/// The largest capacity (and refill amount) a [`Limit`] accepts, so `capacity ×
/// MICRO_TOKENS` and every product below fit in 64 bits with room to spare.
pub const MAX_CAPACITY: u64 = 1_000_000_000;

/// How many times one decision reads again after an aborted EXEC before it gives up
/// with [`LimitError::Contended`]. With 100 clients on one key, a burst of `capacity`
/// free tokens makes the unluckiest client lose up to about `capacity` races in a row;
/// 64 covers the scenarios here with room, and the report shows the worst seen.
pub const MAX_ATTEMPTS: u32 = 64;

/// The hash fields the bucket is stored in.
const FIELD_LEVEL: &str = "micro_tokens";
const FIELD_AT: &str = "at_us";

/// A bucket's shape: `capacity` tokens, refilled by `refill_tokens` every `refill_every`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    capacity: u64,
    refill_tokens: u64,
    refill_every_micros: u64,
}

impl Limit {
    pub fn new(capacity: u64, refill_tokens: u64, refill_every: Duration) -> Result<Limit, LimitError> {
        let refill_every_micros = u64::try_from(refill_every.as_micros()).unwrap_or(u64::MAX);
        if !(1..=MAX_CAPACITY).contains(&capacity) || !(1..=MAX_CAPACITY).contains(&refill_tokens) {
            return Err(LimitError::InvalidLimit(format!(
                "capacity {capacity} and refill {refill_tokens} must each be between 1 and {MAX_CAPACITY}"
            )));
        }
        // A year bounds `elapsed × refill_tokens × MICRO_TOKENS` products comfortably in u128.
        if !(1..=365 * 24 * 3600 * 1_000_000).contains(&refill_every_micros) {
            return Err(LimitError::InvalidLimit(format!(
                "the refill period {refill_every:?} must be between 1µs and a year"
            )));
        }
        Ok(Limit { capacity, refill_tokens, refill_every_micros })
    }

    /// `capacity` tokens, refilled at `per_second` tokens a second.
    pub fn per_second(capacity: u64, per_second: u64) -> Result<Limit, LimitError> {
        Limit::new(capacity, per_second, Duration::from_secs(1))
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn rate_per_second(&self) -> f64 {
        self.refill_tokens as f64 * 1e6 / self.refill_every_micros as f64
    }

    /// The bucket's capacity in micro-tokens.
    pub fn capacity_micro(&self) -> u64 {
        self.capacity * MICRO_TOKENS
    }

    /// Micro-tokens gained over `elapsed_micros`, rounded down.
    pub fn refill_micro(&self, elapsed_micros: u64) -> u64 {
        let gained = u128::from(elapsed_micros) * u128::from(self.refill_tokens) * u128::from(MICRO_TOKENS)
            / u128::from(self.refill_every_micros);
        u64::try_from(gained).unwrap_or(u64::MAX)
    }

    /// Microseconds until `missing_micro` micro-tokens have been gained, rounded up, so
    /// that `refill_micro(micros_to_refill(m)) ≥ m`: a caller who waits that long finds
    /// them there.
    pub fn micros_to_refill(&self, missing_micro: u64) -> u64 {
        let per_micro_token_numerator = u128::from(missing_micro) * u128::from(self.refill_every_micros);
        let denominator = u128::from(self.refill_tokens) * u128::from(MICRO_TOKENS);
        u64::try_from(per_micro_token_numerator.div_ceil(denominator)).unwrap_or(u64::MAX)
    }

    /// How long an empty bucket takes to fill: the TTL of a key just emptied.
    pub fn full_refill_micros(&self) -> u64 {
        self.micros_to_refill(self.capacity_micro())
    }

    /// The most a bucket of this shape can admit between a first and a last admission
    /// `span_micros` apart: `capacity + floor(refill_tokens × span / refill_every)`.
    pub fn bound(&self, span_micros: u64) -> u64 {
        let refilled = u128::from(span_micros) * u128::from(self.refill_tokens) / u128::from(self.refill_every_micros);
        self.capacity.saturating_add(u64::try_from(refilled).unwrap_or(u64::MAX))
    }

    /// The most any stretch of consecutive admissions exceeds the bound over its own
    /// span: `max over i ≤ j of (j − i + 1) − bound(t_j − t_i)`, for `sorted` admission
    /// times. At most zero for a correct bucket, because the promise holds for every
    /// stretch of time, not only for the whole run: a bucket that forgot its cap would
    /// pass the whole-run bound after a long idle spell (the idle time pays for the
    /// burst) and fail this. Linear time: with `g(k) = k × every − t_k × refill`, a
    /// stretch `(i, j)` breaks the bound exactly when `g(j) − g(i) > (capacity − 1) ×
    /// every`, so the best `i` for each `j` is the running minimum of `g`. The sign of
    /// the answer is exact; its size is within one token of the exact maximum (the
    /// floor in the bound).
    pub fn worst_excess(&self, sorted: &[i64]) -> i64 {
        assert!(sorted.windows(2).all(|w| w[0] <= w[1]), "admission times must be sorted");
        let g = |k: usize, t: i64| {
            k as i128 * i128::from(self.refill_every_micros) - i128::from(t) * i128::from(self.refill_tokens)
        };
        let mut worst = i64::MIN;
        let mut lowest: Option<(i128, usize)> = None;
        for (j, &t) in sorted.iter().enumerate() {
            let here = g(j, t);
            if lowest.is_none_or(|(low, _)| here < low) {
                lowest = Some((here, j));
            }
            let i = lowest.map_or(j, |(_, i)| i);
            let span = u64::try_from(t - sorted[i]).unwrap_or(0);
            let excess = (j - i + 1) as i64 - i64::try_from(self.bound(span)).unwrap_or(i64::MAX);
            worst = worst.max(excess);
        }
        if sorted.is_empty() {
            0
        } else {
            worst
        }
    }

    /// "50 tokens, +250 every 1s".
    pub fn describe(&self) -> String {
        format!(
            "{} tokens, +{} every {} (full after {})",
            self.capacity,
            self.refill_tokens,
            format_duration(Duration::from_micros(self.refill_every_micros)),
            format_duration(Duration::from_micros(self.full_refill_micros())),
        )
    }
}

/// What the key holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketState {
    pub micro_tokens: u64,
    /// Server time of the last admission, µs since the epoch.
    pub at_micros: i64,
}

/// The pure decision, before anything is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Write `state`, expiring after `ttl_micros`.
    Admit { state: BucketState, remaining: u64, ttl_micros: u64 },
    /// Write nothing.
    Refuse { at_micros: i64, remaining: u64, retry_after_micros: u64 },
}

/// The bucket's arithmetic: given what the key holds (`None`: absent, which is a full
/// bucket) and the server's `now`, admit `cost` or say when to retry. Pure, so the
/// property tests drive it without a server.
pub fn decide(limit: &Limit, stored: Option<BucketState>, now: i64, cost: u64) -> Result<Step, LimitError> {
    if cost == 0 || cost > limit.capacity {
        return Err(LimitError::CostAboveCapacity { cost, capacity: limit.capacity });
    }
    let capacity = limit.capacity_micro();
    let (level, at) = match stored {
        None => (capacity, now),
        // A key written with a larger capacity is clamped: never more than this limit.
        Some(state) if now >= state.at_micros => {
            let elapsed = u64::try_from(now - state.at_micros).unwrap_or(0);
            (state.micro_tokens.min(capacity).saturating_add(limit.refill_micro(elapsed)).min(capacity), now)
        }
        // The server's clock went back: refill nothing, and keep the later time so the
        // bucket never credits the same interval twice.
        Some(state) => (state.micro_tokens.min(capacity), state.at_micros),
    };
    assert!(level <= capacity, "the level {level} exceeds the capacity {capacity}");
    let ahead = u64::try_from(at - now).unwrap_or(0);
    let cost_micro = cost * MICRO_TOKENS;
    if level >= cost_micro {
        let left = level - cost_micro;
        let ttl_micros = ahead + limit.micros_to_refill(capacity - left);
        Ok(Step::Admit {
            state: BucketState { micro_tokens: left, at_micros: at },
            remaining: left / MICRO_TOKENS,
            ttl_micros,
        })
    } else {
        let retry_after_micros = ahead + limit.micros_to_refill(cost_micro - level);
        Ok(Step::Refuse { at_micros: at, remaining: level / MICRO_TOKENS, retry_after_micros })
    }
}

/// One client's view of the shared buckets: a connection of its own and a limit.
pub struct TokenBucket {
    /// Owned, never cloned: WATCH state is per connection (see [`connect`]).
    connection: MultiplexedConnection,
    limit: Limit,
    variant: Variant,
    /// Jitter for the backoff after an aborted EXEC.
    rng: fastrand::Rng,
}

impl TokenBucket {
    pub async fn connect(url: &str, limit: Limit) -> Result<TokenBucket, LimitError> {
        Ok(TokenBucket { connection: connect(url).await?, limit, variant: Variant::Watched, rng: fastrand::Rng::new() })
    }

    pub fn with_variant(mut self, variant: Variant) -> TokenBucket {
        self.variant = variant;
        self
    }

    /// Seeds the backoff jitter, so a scenario replays.
    pub fn with_seed(mut self, seed: u64) -> TokenBucket {
        self.rng = fastrand::Rng::with_seed(seed);
        self
    }

    pub fn limit(&self) -> Limit {
        self.limit
    }

    /// Admits `cost` tokens from the bucket at `key`, or refuses and says when to retry.
    pub async fn acquire(&mut self, key: &str, cost: u64) -> Result<Decision, LimitError> {
        if cost == 0 || cost > self.limit.capacity {
            return Err(LimitError::CostAboveCapacity { cost, capacity: self.limit.capacity });
        }
        let mut round_trips = 0;
        for attempt in 1..=MAX_ATTEMPTS {
            // Round trip 1. UNWATCH first: a refusal returns without EXEC and so leaves
            // its WATCH on the connection; clearing it here saves the refusal a round trip.
            let mut read = redis::pipe();
            read.cmd("UNWATCH").ignore();
            if self.variant == Variant::Watched {
                read.cmd("WATCH").arg(key).ignore();
            }
            read.cmd("HMGET").arg(key).arg(FIELD_LEVEL).arg(FIELD_AT).cmd("TIME");
            let (fields, time): (Vec<Option<String>>, (i64, i64)) =
                read.query_async(&mut self.connection).await.map_err(|e| wrong_type(key, e))?;
            round_trips += 1;
            let now = server_micros(time)?;
            let stored = parse_state(key, &fields)?;
            match decide(&self.limit, stored, now, cost)? {
                Step::Refuse { at_micros, remaining, retry_after_micros } => {
                    return Ok(Decision {
                        admitted: false,
                        remaining,
                        retry_after: Duration::from_micros(retry_after_micros),
                        at_micros,
                        aborted: attempt - 1,
                        round_trips,
                    });
                }
                Step::Admit { state, remaining, ttl_micros } => {
                    // Round trip 2: the write, applied only if nobody wrote the key since WATCH.
                    let committed: Option<()> = redis::pipe()
                        .atomic()
                        .cmd("HSET")
                        .arg(key)
                        .arg(FIELD_LEVEL)
                        .arg(state.micro_tokens)
                        .arg(FIELD_AT)
                        .arg(state.at_micros)
                        .ignore()
                        .cmd("PEXPIRE")
                        .arg(key)
                        .arg(ceil_millis(ttl_micros))
                        .ignore()
                        .query_async(&mut self.connection)
                        .await?;
                    round_trips += 1;
                    if committed.is_some() {
                        return Ok(Decision {
                            admitted: true,
                            remaining,
                            retry_after: Duration::ZERO,
                            at_micros: state.at_micros,
                            aborted: attempt - 1,
                            round_trips,
                        });
                    }
                    backoff(attempt, &mut self.rng).await;
                }
            }
        }
        Err(LimitError::Contended { key: key.to_string(), attempts: MAX_ATTEMPTS })
    }
}

impl Limiter for TokenBucket {
    async fn try_acquire(&mut self, key: &str) -> Result<Decision, LimitError> {
        self.acquire(key, 1).await
    }
}

/// The two fields as the key holds them: both absent (a full bucket), or both integers.
fn parse_state(key: &str, fields: &[Option<String>]) -> Result<Option<BucketState>, LimitError> {
    let corrupt = |what: String| LimitError::Corrupt { key: key.to_string(), what };
    match fields {
        [None, None] => Ok(None),
        [Some(level), Some(at)] => {
            let micro_tokens = level.parse::<u64>().map_err(|_| corrupt(format!("{FIELD_LEVEL} = {level:?}")))?;
            let at_micros = at.parse::<i64>().map_err(|_| corrupt(format!("{FIELD_AT} = {at:?}")))?;
            Ok(Some(BucketState { micro_tokens, at_micros }))
        }
        [_, _] => Err(corrupt(format!("only one of {FIELD_LEVEL} and {FIELD_AT} is set"))),
        other => Err(corrupt(format!("HMGET answered {} fields for 2", other.len()))),
    }
}

/// A key of another type answers WRONGTYPE: say which key and what to do.
pub(super) fn wrong_type(key: &str, e: redis::RedisError) -> LimitError {
    if e.code() == Some("WRONGTYPE") {
        LimitError::Corrupt { key: key.to_string(), what: "it holds another type".into() }
    } else {
        LimitError::Kv(e)
    }
}

// ---------------------------------------------------------------------------------
// The scenario behind `mini demo token-bucket`.
// ---------------------------------------------------------------------------------

/// Connects `clients` buckets, each with its own connection.
pub async fn connect_many(
    url: &str,
    limit: Limit,
    variant: Variant,
    clients: usize,
    seed: u64,
) -> Result<Vec<TokenBucket>, LimitError> {
    let mut buckets = Vec::with_capacity(clients);
    for i in 0..clients {
        buckets.push(TokenBucket::connect(url, limit).await?.with_variant(variant).with_seed(seed ^ i as u64));
    }
    Ok(buckets)
}

/// One hammer run against the bucket's promise.
pub struct BoundCheck {
    pub admitted: u64,
    /// `capacity + rate × span` over the whole run.
    pub bound: u64,
    pub span_micros: u64,
    /// [`Limit::worst_excess`] over every stretch of the run; at most zero when it holds.
    pub worst_excess: i64,
}

/// `admitted` against `capacity + rate × span` for one hammer run, and every stretch
/// of it against its own bound.
pub fn bound_check(limit: &Limit, outcome: &mut HammerOutcome) -> BoundCheck {
    let span_micros = outcome.admitted.span_micros();
    let worst_excess = limit.worst_excess(outcome.admitted.sorted());
    BoundCheck { admitted: outcome.admitted.len() as u64, bound: limit.bound(span_micros), span_micros, worst_excess }
}

fn report_hammer(report: &mut Report, limit: &Limit, outcome: &mut HammerOutcome) -> BoundCheck {
    let check = bound_check(limit, outcome);
    report.line("decisions", outcome.decisions);
    report.line("admitted", check.admitted);
    report.line("refused", outcome.refused);
    report.line("gave up (contended)", outcome.contended);
    report.line(
        "bound",
        format!(
            "{} = {} + {:.0}/s × {} (first to last admission, server clock)",
            check.bound,
            limit.capacity(),
            limit.rate_per_second(),
            format_duration(Duration::from_micros(check.span_micros))
        ),
    );
    report.line("worst stretch", format!("{:+} tokens against its own bound (<= 0 holds)", check.worst_excess));
    let admissions = check.admitted.max(1) as f64;
    report.line(
        "aborted EXECs",
        format!(
            "{} ({:.2} per admission, worst decision {})",
            outcome.aborted,
            outcome.aborted as f64 / admissions,
            outcome.max_aborted
        ),
    );
    report
        .line("utilisation", format!("{:.1}% of the bound", check.admitted as f64 * 100.0 / check.bound.max(1) as f64));
    report.line(
        "round trips",
        format!(
            "{:.2} per admission, {:.2} per refusal",
            outcome.round_trips_per_admission(),
            outcome.round_trips_per_refusal()
        ),
    );
    report.histogram("decision latency", &mut outcome.latency);
    report.histogram("admission latency", &mut outcome.admitted_latency);
    check
}

/// `mini demo token-bucket`.
pub async fn demo(demo: Demo) -> Result<Report, DemoError> {
    let url = demo.kv_url()?.to_string();
    let mut report =
        demo.report("token-bucket", "a per-key token bucket on the KV store, atomic with WATCH/MULTI/EXEC");
    let prefix = format!("ex:token-bucket:{}:{:08x}", demo.seed, demo.rng(0).u32(..));
    let clients = demo.scale.pick(100, 25);
    let hammer_for = demo.scale.pick(Duration::from_secs(4), Duration::from_millis(800));
    let broken_for = demo.scale.pick(Duration::from_secs(2), Duration::from_millis(500));
    let limit = Limit::per_second(50, 250)?;
    report.line("limit", limit.describe());
    report.line("clients", format!("{clients}, one connection each, all on one key, closed loop"));

    report.section(format!("with WATCH (the pattern), {}", format_duration(hammer_for)));
    let buckets = connect_many(&url, limit, Variant::Watched, clients, demo.seed).await?;
    let mut watched = hammer(buckets, &format!("{prefix}:watched"), hammer_for).await?;
    let good = report_hammer(&mut report, &limit, &mut watched);

    report.section(format!("without WATCH (broken on purpose), {}", format_duration(broken_for)));
    let buckets = connect_many(&url, limit, Variant::Unwatched, clients, demo.seed).await?;
    let mut unwatched = hammer(buckets, &format!("{prefix}:unwatched"), broken_for).await?;
    let bad = report_hammer(&mut report, &limit, &mut unwatched);

    report.section("boundaries");
    let boundaries = boundaries(&url, &prefix).await?;
    for line in &boundaries.lines {
        report.text(line.clone());
    }

    report.check(
        good.admitted <= good.bound,
        format!("with WATCH, {clients} clients admitted {} <= bound {}", good.admitted, good.bound),
    );
    report.check(
        good.worst_excess <= 0,
        format!("with WATCH, no stretch of the run exceeded its own bound: worst {:+}", good.worst_excess),
    );
    // Not an invariant but a sign of life: at least the initial burst went through. How
    // close the run came to the bound (the utilisation line) depends on the machine:
    // a hot key's throughput under WATCH is about one commit per race.
    report.check(
        good.admitted >= limit.capacity(),
        format!("with WATCH, the bucket is used: admitted {} >= capacity {}", good.admitted, limit.capacity()),
    );
    report.check(
        good.admitted > 0 && watched.contended * 100 <= watched.decisions,
        format!("with WATCH, {} of {} decisions gave up on contention (<= 1%)", watched.contended, watched.decisions),
    );
    report.check(
        bad.admitted > bad.bound,
        format!(
            "without WATCH, the check catches over-admission: admitted {} > bound {} (+{})",
            bad.admitted,
            bad.bound,
            bad.admitted.saturating_sub(bad.bound)
        ),
    );
    for (passed, what) in boundaries.checks {
        report.check(passed, what);
    }
    report.verdict(if report.failures().count() == 0 {
        "WATCH/MULTI/EXEC keeps 100 clients within capacity + rate × elapsed; without WATCH they over-admit"
    } else {
        "a check failed: see above"
    });
    Ok(report)
}

/// What the boundary phase saw: lines for the report and checks.
pub struct Boundaries {
    pub lines: Vec<String>,
    pub checks: Vec<(bool, String)>,
}

/// A full burst, an empty bucket and its retry-after, and the TTL reset, on keys of
/// their own under `prefix`.
pub async fn boundaries(url: &str, prefix: &str) -> Result<Boundaries, DemoError> {
    let mut lines = Vec::new();
    let mut checks = Vec::new();
    let mut admin = connect(url).await?;

    // A full burst: refill slow enough (1 a minute) that none arrives during the burst.
    let slow = Limit::new(10, 1, Duration::from_secs(60))?;
    let mut bucket = TokenBucket::connect(url, slow).await?;
    let burst_key = format!("{prefix}:burst");
    let mut admitted_in_a_row = 0;
    let mut next = bucket.acquire(&burst_key, 1).await?;
    while next.admitted && admitted_in_a_row <= slow.capacity() {
        admitted_in_a_row += 1;
        next = bucket.acquire(&burst_key, 1).await?;
    }
    lines.push(format!(
        "full burst ({}): {admitted_in_a_row} admitted back to back, the next refused, retry after {}",
        slow.describe(),
        format_duration(next.retry_after)
    ));
    checks.push((
        admitted_in_a_row == slow.capacity() && !next.admitted,
        format!("a full bucket admits exactly its capacity at once: {admitted_in_a_row} of {}", slow.capacity()),
    ));
    checks.push((
        next.retry_after > Duration::from_secs(55) && next.retry_after <= Duration::from_secs(60),
        format!(
            "the refusal at 0 tokens says when: retry after {} (one token = 60s)",
            format_duration(next.retry_after)
        ),
    ));
    let burst_ttl: i64 = redis::cmd("PTTL").arg(&burst_key).query_async(&mut admin).await?;
    let full_refill_ms = slow.full_refill_micros() / 1_000;
    lines.push(format!("an emptied bucket's key expires in {burst_ttl} ms: a full refill takes {full_refill_ms} ms"));
    checks.push((
        burst_ttl > 0 && burst_ttl as u64 <= full_refill_ms && burst_ttl as u64 + 5_000 >= full_refill_ms,
        format!("the TTL is the time to refill: PTTL {burst_ttl} ms, full refill {full_refill_ms} ms"),
    ));

    // An empty bucket, honestly dated: retrying early fails, at retry_after succeeds.
    let quick = Limit::new(1, 1, Duration::from_millis(400))?;
    let mut bucket = TokenBucket::connect(url, quick).await?;
    let zero_key = format!("{prefix}:zero");
    let first = bucket.acquire(&zero_key, 1).await?;
    let refused = bucket.acquire(&zero_key, 1).await?;
    tokio::time::sleep(refused.retry_after / 2).await;
    let early = bucket.acquire(&zero_key, 1).await?;
    tokio::time::sleep(early.retry_after).await;
    let on_time = bucket.acquire(&zero_key, 1).await?;
    lines.push(format!(
        "empty bucket ({}): refused, retry after {}; at half of that refused again (retry after {}); after it admitted: {}",
        quick.describe(),
        format_duration(refused.retry_after),
        format_duration(early.retry_after),
        on_time.admitted
    ));
    checks.push((
        first.admitted && !refused.admitted && !early.admitted && on_time.admitted,
        format!(
            "retry-after is honest: early retry refused ({}), retry at retry-after admitted ({})",
            !early.admitted, on_time.admitted
        ),
    ));

    // The reset through TTL: once the key has expired, the bucket is full again.
    let ttl: i64 = redis::cmd("PTTL").arg(&zero_key).query_async(&mut admin).await?;
    tokio::time::sleep(Duration::from_millis(u64::try_from(ttl.max(0)).unwrap_or(0) + 50)).await;
    let exists: i64 = redis::cmd("EXISTS").arg(&zero_key).query_async(&mut admin).await?;
    let after_expiry = bucket.acquire(&zero_key, 1).await?;
    lines.push(format!(
        "idle key expired after {ttl} ms (exists: {exists}); the next request finds a full bucket: admitted {}",
        after_expiry.admitted
    ));
    checks.push((
        exists == 0 && after_expiry.admitted && after_expiry.remaining == quick.capacity() - 1,
        format!("an expired key is a full bucket: exists {exists}, admitted {}", after_expiry.admitted),
    ));
    let _: i64 = redis::cmd("DEL").arg(&burst_key).arg(&zero_key).query_async(&mut admin).await?;
    Ok(Boundaries { lines, checks })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limit(capacity: u64, tokens: u64, every_micros: u64) -> Limit {
        Limit::new(capacity, tokens, Duration::from_micros(every_micros)).unwrap()
    }

    #[test]
    fn limits_are_validated() {
        assert!(Limit::per_second(0, 1).is_err());
        assert!(Limit::per_second(1, 0).is_err());
        assert!(Limit::per_second(MAX_CAPACITY + 1, 1).is_err());
        assert!(Limit::new(1, 1, Duration::ZERO).is_err());
        assert!(Limit::new(1, 1, Duration::from_secs(400 * 24 * 3600)).is_err());
        let l = Limit::per_second(10, 5).unwrap();
        assert!(matches!(decide(&l, None, 0, 11), Err(LimitError::CostAboveCapacity { .. })));
        assert!(matches!(decide(&l, None, 0, 0), Err(LimitError::CostAboveCapacity { .. })));
    }

    #[test]
    fn an_absent_key_is_a_full_bucket_and_refill_is_by_elapsed_time() {
        let l = limit(3, 1, 100_000); // 10 a second
        let Step::Admit { state, remaining, ttl_micros } = decide(&l, None, 1_000, 1).unwrap() else { panic!() };
        assert_eq!((state.micro_tokens, state.at_micros, remaining), (2 * MICRO_TOKENS, 1_000, 2));
        assert_eq!(ttl_micros, 100_000, "one token short of full: one refill period");
        // 50 ms later: half a token more.
        let Step::Admit { state, .. } = decide(&l, Some(state), 51_000, 1).unwrap() else { panic!() };
        assert_eq!(state.micro_tokens, MICRO_TOKENS + MICRO_TOKENS / 2);
        // Empty: the refusal says how long until one token.
        let empty = BucketState { micro_tokens: 0, at_micros: 0 };
        assert_eq!(
            decide(&l, Some(empty), 25_000, 1).unwrap(),
            Step::Refuse { at_micros: 25_000, remaining: 0, retry_after_micros: 75_000 }
        );
        // Refill stops at the capacity.
        let Step::Admit { remaining, .. } = decide(&l, Some(empty), 10_000_000, 1).unwrap() else { panic!() };
        assert_eq!(remaining, 2);
    }

    #[test]
    fn a_clock_stepped_back_refills_nothing() {
        let l = limit(3, 1, 100_000);
        let stored = BucketState { micro_tokens: MICRO_TOKENS / 2, at_micros: 500_000 };
        assert_eq!(
            decide(&l, Some(stored), 400_000, 1).unwrap(),
            Step::Refuse { at_micros: 500_000, remaining: 0, retry_after_micros: 100_000 + 50_000 }
        );
        // A level above this limit's capacity (another limit wrote the key) is clamped.
        let big = BucketState { micro_tokens: 100 * MICRO_TOKENS, at_micros: 0 };
        let Step::Admit { remaining, .. } = decide(&l, Some(big), 0, 1).unwrap() else { panic!() };
        assert_eq!(remaining, 2);
    }

    #[test]
    fn the_bound_has_no_extra_token() {
        let l = limit(5, 2, 1_000_000);
        assert_eq!(l.bound(0), 5);
        assert_eq!(l.bound(499_999), 5);
        assert_eq!(l.bound(500_000), 6);
        assert_eq!(l.micros_to_refill(1), 1, "a micro-token takes under a µs here: rounded up to 1");
        assert!(l.refill_micro(l.micros_to_refill(777)) >= 777);
    }

    /// Runs `step` over decisions at `gaps` apart (costs cycling through `costs`) and
    /// returns what it admitted and the bound over the admissions' span, checking the
    /// retry-after of each refusal on the way.
    fn run_sequence(
        l: &Limit,
        step: impl Fn(Option<BucketState>, i64, u64) -> Step,
        gaps: &[u64],
        costs: &[u64],
    ) -> (u64, u64, Vec<i64>) {
        let mut stored = None;
        let mut now = 1_000_000i64;
        let (mut admitted, mut first, mut last) = (0u64, None, 0i64);
        let mut times = Vec::new();
        for (gap, cost) in gaps.iter().zip(costs.iter().cycle()) {
            now += *gap as i64;
            let cost = (*cost).min(l.capacity());
            match step(stored, now, cost) {
                Step::Admit { state, ttl_micros, .. } => {
                    assert!(ttl_micros <= l.full_refill_micros(), "TTL {ttl_micros} longer than a full refill");
                    admitted += cost;
                    times.extend(std::iter::repeat_n(now, cost as usize));
                    first.get_or_insert(now);
                    last = now;
                    stored = Some(state);
                }
                Step::Refuse { retry_after_micros, .. } => {
                    // Waiting exactly that long is enough.
                    let later = step(stored, now + retry_after_micros as i64, cost);
                    assert!(matches!(later, Step::Admit { .. }), "retry_after {retry_after_micros} is too short");
                }
            }
        }
        let bound = first.map_or(0, |first| l.bound((last - first) as u64));
        (admitted, bound, times)
    }

    proptest! {
        /// Any sequence of decisions at non-decreasing times admits at most the bound.
        #[test]
        fn decisions_never_exceed_the_bound(
            capacity in 1u64..20,
            tokens in 1u64..10,
            every in 1u64..5_000,
            gaps in proptest::collection::vec(0u64..3_000, 1..200),
            costs in proptest::collection::vec(1u64..4, 1..10),
        ) {
            let l = limit(capacity, tokens, every);
            let (admitted, bound, times) =
                run_sequence(&l, |s, now, cost| decide(&l, s, now, cost).unwrap(), &gaps, &costs);
            prop_assert!(admitted <= bound, "admitted {admitted} > bound {bound}");
            prop_assert!(l.worst_excess(&times) <= 0, "a stretch exceeded its bound: {}", l.worst_excess(&times));
        }
    }

    /// The property catches the classic bucket bug: refilling without the cap, so an
    /// idle key saves up more than `capacity` and then bursts. The whole-run bound
    /// misses it (the idle time pays for the burst); the every-stretch check does not.
    #[test]
    fn a_bucket_without_its_cap_is_caught() {
        let l = limit(5, 1, 1_000_000);
        let uncapped = |stored: Option<BucketState>, now: i64, cost: u64| {
            let level = match stored {
                None => l.capacity_micro(),
                Some(s) => s.micro_tokens + l.refill_micro((now - s.at_micros) as u64), // no .min(capacity)
            };
            if level >= cost * MICRO_TOKENS {
                let left = level - cost * MICRO_TOKENS;
                Step::Admit { state: BucketState { micro_tokens: left, at_micros: now }, remaining: 0, ttl_micros: 0 }
            } else {
                Step::Refuse { at_micros: now, remaining: 0, retry_after_micros: 1_000_000 }
            }
        };
        // One request, 30 s idle, then a burst of 20 in the same microsecond.
        let gaps: Vec<u64> = std::iter::once(0).chain(std::iter::once(30_000_000)).chain([0; 19]).collect();
        let (admitted, bound, times) = run_sequence(&l, uncapped, &gaps, &[1]);
        assert!(admitted <= bound, "the whole-run bound is blind to this: {admitted} <= {bound}");
        assert_eq!(l.worst_excess(&times), 20 - 5, "the burst of 20 in one µs is 15 over a capacity of 5");
        let (_, _, times) = run_sequence(&l, |s, now, cost| decide(&l, s, now, cost).unwrap(), &gaps, &[1]);
        assert!(l.worst_excess(&times) <= 0, "the real bucket: {}", l.worst_excess(&times));
    }

    /// The linear scan against the quadratic definition, on random ledgers.
    #[test]
    fn worst_excess_matches_the_definition() {
        let mut rng = fastrand::Rng::with_seed(11);
        for _ in 0..300 {
            let l = limit(rng.u64(1..6), rng.u64(1..4), rng.u64(1..50));
            let mut times: Vec<i64> = (0..rng.usize(0..40)).map(|_| rng.i64(0..200)).collect();
            times.sort_unstable();
            let exact = (0..times.len())
                .flat_map(|i| (i..times.len()).map(move |j| (i, j)))
                .map(|(i, j)| (j - i + 1) as i64 - l.bound((times[j] - times[i]) as u64) as i64)
                .max()
                .unwrap_or(0);
            let fast = l.worst_excess(&times);
            assert_eq!(fast > 0, exact > 0, "{times:?} {l:?}: sign");
            assert!(fast <= exact && fast + 1 >= exact, "{times:?} {l:?}: {fast} vs {exact}");
        }
    }
}
