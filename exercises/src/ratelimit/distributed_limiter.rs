//! distributed-limiter: N limiter instances and no shared store. Each admits from a
//! local copy of the global bucket and a local share of it, and every exchange interval
//! tells its peers how many it has admitted, so they shrink their own copies.
//!
//! The first half of this module is the pure core, one [`Instance`] per limiter
//! process: events go in (a request at local time `t`, a tick, a peer's [`Gossip`]) and
//! a decision or a message comes out. It never reads a clock or touches a socket; the
//! caller passes each instance *its own* clock's reading. [`super::gossip_sim`] drives
//! N of them deterministically, with skewed and drifting clocks and an in-process
//! simulated network it controls (latency, loss, partitions). The second half is the
//! scenario, which compares them with the strongly consistent bucket on the KV store
//! under the same offered load.
//!
//! One instance's state, all in micro-tokens (see [`super::token_bucket::MICRO_TOKENS`]):
//!
//! ```text
//!  level   its estimate of the global bucket: + rate × elapsed (its own clock),
//!          capped at capacity; − its own admissions; − what peers report
//!  budget  its share of `level` for this interval: weight × level at each tick,
//!          + weight × refill between ticks; − its own admissions
//!  weight  its share of the cluster's demand, from the offered counts peers report
//!  admit   iff level ≥ 1 token and budget ≥ 1 token
//! ```
//!
//! Why each part:
//!
//! - **The level alone is not enough.** If every instance admitted while its copy of
//!   the bucket had tokens, all N would spend the same tokens until the next exchange:
//!   N× the burst. The **budget** splits what is there by demand, so N instances that
//!   agree on the level spend it once between them.
//! - **Gossip carries running totals, not deltas** ([`Counting::Totals`]). The receiver
//!   subtracts the difference from the last total it saw, so a lost message is repaired
//!   by the next one, and a duplicate or a late one changes nothing: the counts are a
//!   grow-only counter (a G-Counter CRDT). [`Counting::Deltas`] is the broken variant:
//!   every lost message's admissions are never subtracted anywhere.
//! - **Only differences of one clock are used.** Refill is `now − last` on the
//!   instance's own clock, and a peer's demand rate divides by differences of that
//!   peer's own timestamps. So an *offset* between instances' clocks changes nothing;
//!   *drift* (a clock running fast) does: that instance's copy refills faster than real
//!   time and it spends the surplus, so the fastest clock sets the cluster's rate. A
//!   clock *stepped* forward credits at most one bucketful (the cap); stepped back, it
//!   refills nothing until it has caught up.
//! - **Debt is floored at minus one capacity.** Reports arriving after a partition can
//!   push the level far below zero; paying it all back would shut the instance for as
//!   long as the partition lasted. The floor forgives beyond one bucketful: accuracy
//!   traded for availability, on purpose.
//! - **A silent peer's demand expires** after [`STALE_INTERVALS`] intervals: an
//!   instance that stopped talking (crashed, partitioned) stops holding a share.
//! - **Each life has an incarnation number.** A restarted instance counts from zero;
//!   a grow-only counter whose entry went down would be ignored by its peers until it
//!   passed its old value, so the new life announces a higher incarnation and peers
//!   start its count afresh ([`Gossip::incarnation`]).
//!
//! What it cannot do: be exact. Between exchanges every instance acts on counts up to
//! one interval (plus the network's delay) old, so admissions in flight are spent
//! twice; the shorter the interval, the smaller the error, and the more messages
//! (N × (N − 1) per interval here; a real deployment would gossip to a few peers or
//! aggregate through a tree). The interval must also be shorter than a full refill
//! (`capacity / rate`): otherwise each copy reaches its cap before it hears of the
//! others' spending, and the cap and the debt floor drop counts ([`in_flight_bound`]).
//! Left out: membership changes (N is fixed) and weighting by anything but offered
//! load.

use std::time::Duration;

use super::decision::{micros_to_duration, LimitError};
use super::gossip_sim::{
    accuracy, ideal, poisson_arrivals, simulate, Accuracy, Arrival, ClockModel, NetworkModel, Partition, SimOutcome,
    STEP_MICROS,
};
use super::token_bucket::{Limit, TokenBucket, MICRO_TOKENS};
use crate::framework::histogram::format_duration;
use crate::framework::{Demo, DemoError, LatencyHistogram, Report};

/// Most instances a cluster may have: every instance tracks every peer, and gossip is
/// all-to-all, so the cost grows with N².
pub const MAX_INSTANCES: usize = 64;

/// After this many of its own intervals without news from a peer, an instance stops
/// counting that peer's demand (it is gone or cut off), and takes its share.
pub const STALE_INTERVALS: i64 = 4;

/// One token, in the level's unit.
const TOKEN: i64 = MICRO_TOKENS as i64;

/// How admissions are reported to peers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Counting {
    /// Running totals since start: loss, duplication and reordering are harmless.
    #[default]
    Totals,
    /// **Broken on purpose**: admissions since the last message. Correct on a perfect
    /// network; with loss, the lost admissions are never subtracted by anyone, and the
    /// cluster over-admits by exactly what was lost. Kept so the tests can show it.
    Deltas,
}

/// What every instance of one cluster shares: the global limit and how they talk.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClusterConfig {
    pub limit: Limit,
    pub instances: usize,
    /// How often (on each instance's own clock) it sends its counts; `None`: never, so
    /// each instance keeps a static `1/N` share.
    pub interval_micros: Option<i64>,
    pub counting: Counting,
}

impl ClusterConfig {
    pub fn new(limit: Limit, instances: usize, interval_micros: Option<i64>) -> Result<ClusterConfig, LimitError> {
        if !(1..=MAX_INSTANCES).contains(&instances) {
            return Err(LimitError::InvalidLimit(format!("{instances} instances: use 1 to {MAX_INSTANCES}")));
        }
        if interval_micros.is_some_and(|i| i < 1_000) {
            return Err(LimitError::InvalidLimit("an exchange interval under 1 ms".into()));
        }
        Ok(ClusterConfig { limit, instances, interval_micros, counting: Counting::Totals })
    }

    pub fn with_counting(mut self, counting: Counting) -> ClusterConfig {
        self.counting = counting;
        self
    }
}

/// One instance's message to its peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gossip {
    pub from: usize,
    /// Which life of the sender this is. A restarted instance counts from zero again;
    /// without this, peers would ignore its admissions until its new total passed the
    /// old one (a G-Counter entry must never go down). A higher incarnation resets what
    /// peers know of the sender; a lower one is a message from a previous life.
    pub incarnation: u64,
    /// Admissions: all since start ([`Counting::Totals`]) or since the last message
    /// ([`Counting::Deltas`]).
    pub admitted: u64,
    /// Requests offered to the sender since start (always a total).
    pub offered: u64,
    /// The sender's clock when it sent this. Peers only ever subtract two of these
    /// from the same sender, so the sender's offset does not matter.
    pub sent_at_local: i64,
}

/// What an instance knows about one peer.
#[derive(Clone, Copy, Debug, Default)]
struct Peer {
    /// The peer's life the fields below describe.
    incarnation: u64,
    /// The highest admitted total received (Totals only).
    admitted_seen: u64,
    /// The offered total and sender time of the last message, for the demand rate.
    offered_seen: u64,
    sent_at: Option<i64>,
    /// Offered requests per second of the peer's clock, over its last interval.
    demand_per_sec: f64,
    /// When (own clock) we last heard from it.
    heard_at: Option<i64>,
}

/// One limiter instance.
#[derive(Clone, Debug)]
pub struct Instance {
    id: usize,
    /// This instance's life: 0 at first start, higher after each restart (a real
    /// deployment takes a boot counter or the start time).
    incarnation: u64,
    config: ClusterConfig,
    /// Estimate of the global bucket, micro-tokens; at least `−capacity`.
    level: i64,
    /// This instance's share of `level`; never above `max(level, 0)`.
    budget: i64,
    /// Share of demand, in (0, 1].
    weight: f64,
    /// The own-clock time the level was last refilled at; `None` before the first event.
    refilled_at: Option<i64>,
    /// When the next exchange is due (own clock).
    next_tick: Option<i64>,
    last_tick: Option<i64>,
    admitted_total: u64,
    offered_total: u64,
    admitted_at_last_gossip: u64,
    offered_at_last_tick: u64,
    /// Requests offered per second of own clock over the last interval.
    own_demand_per_sec: f64,
    peers: Vec<Peer>,
}

impl Instance {
    /// A fresh instance believes the bucket is full and holds a `1/N` share of it.
    pub fn new(id: usize, config: ClusterConfig) -> Instance {
        assert!(id < config.instances, "instance {id} of {}", config.instances);
        let capacity = capacity_of(&config);
        let weight = 1.0 / config.instances as f64;
        Instance {
            id,
            incarnation: 0,
            config,
            level: capacity,
            budget: (capacity as f64 * weight) as i64,
            weight,
            refilled_at: None,
            next_tick: None,
            last_tick: None,
            admitted_total: 0,
            offered_total: 0,
            admitted_at_last_gossip: 0,
            offered_at_last_tick: 0,
            own_demand_per_sec: 0.0,
            peers: vec![Peer::default(); config.instances],
        }
    }

    /// The same instance after a restart: a fresh state that peers must not confuse
    /// with its previous life (see [`Gossip::incarnation`]).
    pub fn with_incarnation(mut self, incarnation: u64) -> Instance {
        self.incarnation = incarnation;
        self
    }

    pub fn id(&self) -> usize {
        self.id
    }

    pub fn admitted(&self) -> u64 {
        self.admitted_total
    }

    /// Its share of the cluster's demand, as of its last tick.
    pub fn weight(&self) -> f64 {
        self.weight
    }

    /// Decides one request arriving at `now` on this instance's clock.
    pub fn decide(&mut self, now: i64) -> bool {
        self.refill(now);
        self.offered_total += 1;
        let admit = self.level >= TOKEN && self.budget >= TOKEN;
        if admit {
            self.level -= TOKEN;
            self.budget -= TOKEN;
            self.admitted_total += 1;
        }
        self.check_invariants();
        admit
    }

    /// Whether an exchange is due at `now` (own clock). The first call schedules the
    /// first exchange one interval later.
    pub fn tick_due(&mut self, now: i64) -> bool {
        let Some(interval) = self.config.interval_micros else { return false };
        match self.next_tick {
            None => {
                self.next_tick = Some(now + interval);
                self.last_tick = Some(now);
                false
            }
            Some(due) => now >= due,
        }
    }

    /// The exchange: re-weighs this instance's share, resets its budget to that share of
    /// the level, and returns the message for every peer.
    pub fn tick(&mut self, now: i64) -> Gossip {
        self.refill(now);
        let interval = self.config.interval_micros.unwrap_or(i64::MAX);
        // Own demand over the interval just ended; if the clock went back, the last
        // estimate stands (a negative or tiny elapsed time would make it absurd).
        let elapsed = self.last_tick.map_or(interval, |last| now - last);
        if elapsed > 0 {
            self.own_demand_per_sec = (self.offered_total - self.offered_at_last_tick) as f64 * 1e6 / elapsed as f64;
        }
        let own_demand = self.own_demand_per_sec;
        let stale_before = now.saturating_sub(STALE_INTERVALS.saturating_mul(interval));
        let live: Vec<&Peer> = self
            .peers
            .iter()
            .enumerate()
            .filter(|(i, p)| *i != self.id && p.heard_at.is_some_and(|at| at >= stale_before))
            .map(|(_, p)| p)
            .collect();
        let total_demand = own_demand + live.iter().map(|p| p.demand_per_sec).sum::<f64>();
        self.weight = if total_demand > 0.0 { own_demand / total_demand } else { 1.0 / (1 + live.len()) as f64 };
        // An instance with no demand of its own still keeps a sliver, so a first request
        // after a quiet interval is not refused by a zero share.
        self.weight = self.weight.max(0.01 / self.config.instances as f64);
        self.budget = (self.level.max(0) as f64 * self.weight) as i64;
        let admitted = match self.config.counting {
            Counting::Totals => self.admitted_total,
            Counting::Deltas => self.admitted_total - self.admitted_at_last_gossip,
        };
        self.admitted_at_last_gossip = self.admitted_total;
        self.offered_at_last_tick = self.offered_total;
        self.last_tick = Some(now);
        self.next_tick = Some(now.max(self.next_tick.unwrap_or(now)) + interval);
        self.check_invariants();
        Gossip {
            from: self.id,
            incarnation: self.incarnation,
            admitted,
            offered: self.offered_total,
            sent_at_local: now,
        }
    }

    /// A peer's message, received at `now` (own clock).
    pub fn receive(&mut self, gossip: &Gossip, now: i64) {
        if gossip.from == self.id || gossip.from >= self.peers.len() {
            return; // Our own echo, or a stranger: nothing to learn.
        }
        self.refill(now);
        let counting = self.config.counting;
        let peer = &mut self.peers[gossip.from];
        if gossip.incarnation < peer.incarnation {
            return; // From before the sender restarted: its counts are not comparable.
        }
        if gossip.incarnation > peer.incarnation {
            *peer = Peer { incarnation: gossip.incarnation, ..Peer::default() };
        }
        let newly_admitted = match counting {
            Counting::Totals => {
                let new = gossip.admitted.saturating_sub(peer.admitted_seen);
                peer.admitted_seen = peer.admitted_seen.max(gossip.admitted);
                new
            }
            Counting::Deltas => gossip.admitted,
        };
        // Demand: offered requests over the sender's own elapsed time. A reordered or
        // duplicated message (not newer than the last) teaches nothing.
        if let Some(prev) = peer.sent_at {
            if gossip.sent_at_local > prev && gossip.offered >= peer.offered_seen {
                peer.demand_per_sec =
                    (gossip.offered - peer.offered_seen) as f64 * 1e6 / (gossip.sent_at_local - prev) as f64;
            }
        }
        if peer.sent_at.is_none_or(|prev| gossip.sent_at_local > prev) {
            peer.sent_at = Some(gossip.sent_at_local);
            peer.offered_seen = gossip.offered;
        }
        peer.heard_at = Some(now);
        let capacity = capacity_of(&self.config);
        let spent = i64::try_from(newly_admitted).unwrap_or(i64::MAX).saturating_mul(TOKEN);
        self.level = self.level.saturating_sub(spent).max(-capacity);
        self.budget = self.budget.min(self.level.max(0));
        self.check_invariants();
    }

    /// Refill by this instance's own elapsed time; nothing when its clock went back.
    fn refill(&mut self, now: i64) {
        let Some(last) = self.refilled_at else {
            self.refilled_at = Some(now);
            return;
        };
        if now <= last {
            return;
        }
        let gained = i64::try_from(self.config.limit.refill_micro((now - last) as u64)).unwrap_or(i64::MAX);
        self.refilled_at = Some(now);
        let capacity = capacity_of(&self.config);
        self.level = self.level.saturating_add(gained).min(capacity);
        self.budget = self.budget.saturating_add((gained as f64 * self.weight) as i64).min(self.level.max(0));
    }

    fn check_invariants(&self) {
        let capacity = capacity_of(&self.config);
        assert!(self.level <= capacity && self.level >= -capacity, "level {} outside ±{capacity}", self.level);
        assert!(self.budget >= 0 && self.budget <= self.level.max(0), "budget {} vs level {}", self.budget, self.level);
        assert!(self.weight > 0.0 && self.weight <= 1.0, "weight {}", self.weight);
    }
}

fn capacity_of(config: &ClusterConfig) -> i64 {
    // At most MAX_CAPACITY × 10⁶, far below i64::MAX.
    config.limit.capacity_micro() as i64
}

// ---------------------------------------------------------------------------------
// The scenario behind `mini demo distributed-limiter`.
// ---------------------------------------------------------------------------------

/// The scenario's cluster: how many instances, and each one's share of the offered
/// load (uneven on purpose, so the demand weights matter).
pub const DEMO_INSTANCES: usize = 4;
pub const DEMO_LOAD_SHARES: [f64; DEMO_INSTANCES] = [0.4, 0.3, 0.2, 0.1];

/// The scenario's global limit: 40 tokens, 200 a second.
pub fn demo_limit() -> Limit {
    Limit::per_second(40, 200).expect("a valid limit")
}

/// The scenario's offered load: twice the limit's rate, split over the instances by
/// [`DEMO_LOAD_SHARES`], as seeded Poisson arrivals.
pub fn demo_arrivals(limit: &Limit, duration_micros: i64, rng: &mut fastrand::Rng) -> Vec<Arrival> {
    let offered_per_sec = 2.0 * limit.rate_per_second();
    let rates: Vec<f64> = DEMO_LOAD_SHARES.iter().map(|share| share * offered_per_sec).collect();
    poisson_arrivals(&rates, duration_micros, rng)
}

/// How much simulated time the scenario's tables cover, at any scale.
pub const DEMO_SIMULATED_MICROS: i64 = 8_000_000;

/// The exchange interval the skew and fault tables use.
pub const DEMO_INTERVAL_MICROS: i64 = 50_000;

/// The clocks of one skew level: offsets spread over ±`offset_micros`, and drifts
/// spread evenly from `+drift_ppm` (instance 0, the busiest) to `−drift_ppm` (the
/// quietest). The busiest instance runs fastest: the worst case, since it has the
/// demand to spend what its clock credits it.
pub fn skewed_clocks(instances: usize, offset_micros: i64, drift_ppm: i64) -> Vec<ClockModel> {
    // Fixed, uneven offsets: a random draw would add nothing but noise.
    const OFFSET_PATTERN: [f64; 4] = [0.85, -1.0, 0.15, -0.45];
    (0..instances)
        .map(|i| {
            let spread = if instances > 1 { 1.0 - 2.0 * i as f64 / (instances - 1) as f64 } else { 0.0 };
            ClockModel {
                offset_micros: (offset_micros as f64 * OFFSET_PATTERN[i % OFFSET_PATTERN.len()]) as i64,
                drift_ppm: (drift_ppm as f64 * spread) as i64,
                step: None,
            }
        })
        .collect()
}

/// The bound this design aims at with true clocks and a healthy network: no stretch
/// of time sees more than `capacity + rate × (interval + worst delay)` admissions
/// beyond what a correct bucket allows. That is what can be in flight: each instance
/// spends at most its share of the level it saw at its last exchange plus its share of
/// one interval's refill before the others hear of it, and the shares sum to one
/// bucketful plus one interval's refill. An estimate from the design (shares computed
/// from slightly different views can sum to a little more than one), which the tests
/// and the scenario check rather than a proof.
pub fn in_flight_bound(limit: &Limit, interval_micros: i64, network: &NetworkModel) -> i64 {
    let window = interval_micros + network.latency_micros + network.jitter_micros + STEP_MICROS;
    limit.capacity() as i64 + (limit.rate_per_second() * window as f64 / 1e6).ceil() as i64
}

/// What replaying the arrivals on the KV token bucket measured.
pub struct KvReplay {
    /// Admission times on the server's clock, ascending.
    pub admitted_at: Vec<i64>,
    pub per_instance: Vec<u64>,
    pub latency: LatencyHistogram,
    /// How late the worst request was sent against its schedule (a loaded machine).
    pub worst_lag: Duration,
    pub aborted: u64,
}

/// Replays `arrivals` in real time against one shared token bucket on the KV store,
/// one connection per instance: the strongly consistent version under the same load.
pub async fn replay_on_kv(url: &str, limit: Limit, arrivals: &[Arrival], key: &str) -> Result<KvReplay, DemoError> {
    let instances = arrivals.iter().map(|a| a.instance + 1).max().unwrap_or(0);
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let mut tasks = Vec::new();
    for instance in 0..instances {
        let mut bucket = TokenBucket::connect(url, limit).await?;
        let mine: Vec<i64> = arrivals.iter().filter(|a| a.instance == instance).map(|a| a.at_micros).collect();
        let key = key.to_string();
        tasks.push(tokio::spawn(async move {
            let mut admitted_at = Vec::new();
            let mut latency = LatencyHistogram::new();
            let mut worst_lag = Duration::ZERO;
            let mut aborted = 0u64;
            for at in mine {
                let due = start + micros_to_duration(at);
                tokio::time::sleep_until(due).await;
                let sent = tokio::time::Instant::now();
                worst_lag = worst_lag.max(sent.saturating_duration_since(due));
                let decision = bucket.acquire(&key, 1).await?;
                latency.record(sent.elapsed());
                aborted += u64::from(decision.aborted);
                if decision.admitted {
                    admitted_at.push(decision.at_micros);
                }
            }
            Ok::<_, LimitError>((instance, admitted_at, latency, worst_lag, aborted))
        }));
    }
    let mut replay = KvReplay {
        admitted_at: Vec::new(),
        per_instance: vec![0; instances],
        latency: LatencyHistogram::new(),
        worst_lag: Duration::ZERO,
        aborted: 0,
    };
    for task in tasks {
        let (instance, admitted_at, latency, worst_lag, aborted) = task.await??;
        replay.per_instance[instance] = admitted_at.len() as u64;
        replay.admitted_at.extend(admitted_at);
        replay.latency.merge(&latency);
        replay.worst_lag = replay.worst_lag.max(worst_lag);
        replay.aborted += aborted;
    }
    replay.admitted_at.sort_unstable();
    Ok(replay)
}

/// One row of an accuracy table.
fn accuracy_row(name: &str, acc: &Accuracy, per_instance: &[u64]) -> Vec<String> {
    vec![
        name.to_string(),
        acc.admitted.to_string(),
        acc.ideal.to_string(),
        format!("{:.2}%", acc.over_pct),
        format!("{:.2}%", acc.under_pct),
        acc.worst_excess.to_string(),
        per_instance.iter().map(|n| n.to_string()).collect::<Vec<_>>().join("/"),
    ]
}

const ACCURACY_HEADERS: [&str; 7] =
    ["limiter", "admitted", "ideal", "over", "under", "worst excess (tokens)", "per instance"];

/// A simulated run's accuracy against the ideal.
pub struct SimRow {
    pub name: String,
    pub accuracy: Accuracy,
    pub outcome: SimOutcome,
}

/// Runs one configuration of the cluster on the scenario's arrivals.
pub fn sim_row(
    name: impl Into<String>,
    config: ClusterConfig,
    clocks: &[ClockModel],
    network: &NetworkModel,
    arrivals: &[Arrival],
    ideal_admitted: u64,
    seed: u64,
) -> SimRow {
    let outcome = simulate(config, clocks, network, arrivals, seed);
    let accuracy = accuracy(&config.limit, &outcome.admitted_at, ideal_admitted);
    SimRow { name: name.into(), accuracy, outcome }
}

/// The drift levels of the skew table, in ppm (±).
pub const DRIFT_LEVELS_PPM: [i64; 4] = [1_000, 10_000, 50_000, 200_000];

/// The intervals of the interval table.
pub const INTERVALS_MICROS: [i64; 4] = [10_000, 50_000, 250_000, 1_000_000];

/// `mini demo distributed-limiter`.
pub async fn demo(demo: Demo) -> Result<Report, DemoError> {
    let url = demo.kv_url()?.to_string();
    let mut report =
        demo.report("distributed-limiter", "N instances, no shared store: local buckets that gossip admission counts");
    let limit = demo_limit();
    // The simulations run eight seconds of simulated time at any scale (they take
    // milliseconds); only the KV replay runs in real time, so Quick replays a prefix.
    let duration_micros: i64 = DEMO_SIMULATED_MICROS;
    let replay_micros: i64 = demo.scale.pick(DEMO_SIMULATED_MICROS, 2_000_000);
    let offered_per_sec = 2.0 * limit.rate_per_second();
    let arrivals = demo_arrivals(&limit, duration_micros, &mut demo.rng(1));
    let replayed: Vec<Arrival> = arrivals.iter().copied().filter(|a| a.at_micros < replay_micros).collect();
    let ideal_run = ideal(&limit, &arrivals);
    let ideal_replayed = ideal(&limit, &replayed);
    let network = NetworkModel::lan();
    let n = DEMO_INSTANCES;
    let true_clocks = vec![ClockModel::default(); n];
    let base = ClusterConfig::new(limit, n, Some(DEMO_INTERVAL_MICROS))?;
    let ms = |micros: i64| format_duration(micros_to_duration(micros));

    report.line("global limit", limit.describe());
    report.line(
        "offered load",
        format!(
            "{} requests over {} ({offered_per_sec:.0}/s, 2× the rate), split {} over {n} instances, Poisson, seeded",
            arrivals.len(),
            ms(duration_micros),
            DEMO_LOAD_SHARES.iter().map(|s| format!("{:.0}%", s * 100.0)).collect::<Vec<_>>().join("/")
        ),
    );
    report.line(
        "exchange",
        format!(
            "in-process simulated network, all-to-all, {} ± {}; gossip every {} unless the table varies it",
            ms(network.latency_micros),
            ms(network.jitter_micros),
            ms(DEMO_INTERVAL_MICROS)
        ),
    );
    report.line("ideal", format!("{} admitted: one exact bucket on true time, same arrivals", ideal_run.admitted));

    // --- The strongly consistent baseline, for real, in real time ---
    report.section(format!(
        "against the strongly consistent bucket (KV store, the first {} replayed in real time)",
        ms(replay_micros)
    ));
    let key = format!("ex:distributed-limiter:{}:{:08x}", demo.seed, demo.rng(0).u32(..));
    let mut kv = replay_on_kv(&url, limit, &replayed, &key).await?;
    let kv_accuracy = accuracy(&limit, &kv.admitted_at, ideal_replayed.admitted);
    let gossip_replayed =
        sim_row("gossip, true clocks", base, &true_clocks, &network, &replayed, ideal_replayed.admitted, demo.seed);
    let gossip = sim_row("gossip, true clocks", base, &true_clocks, &network, &arrivals, ideal_run.admitted, demo.seed);
    // What one local decision costs: no network at all.
    let local_cost = {
        let mut instance = Instance::new(0, base);
        let started = std::time::Instant::now();
        const DECISIONS: i64 = 200_000;
        let mut admitted = 0u32;
        for i in 0..DECISIONS {
            admitted += u32::from(instance.decide(i * 5));
        }
        std::hint::black_box(admitted);
        started.elapsed() / DECISIONS as u32
    };
    report.table(
        &ACCURACY_HEADERS,
        vec![
            accuracy_row(
                "ideal (exact, simulated)",
                &accuracy(&limit, &ideal_replayed.admitted_at, ideal_replayed.admitted),
                &ideal_replayed.per_instance,
            ),
            accuracy_row("KV token bucket (measured)", &kv_accuracy, &kv.per_instance),
            accuracy_row(&gossip_replayed.name, &gossip_replayed.accuracy, &gossip_replayed.outcome.per_instance),
        ],
    );
    report.histogram("KV decision latency", &mut kv.latency);
    report.line(
        "local decision",
        format!("{} (in-process, no network: the gossip limiter's request path)", format_duration(local_cost)),
    );
    report.line(
        "KV replay",
        format!("worst send lag {} behind schedule, {} aborted EXECs", format_duration(kv.worst_lag), kv.aborted),
    );

    // --- Clock skew ---
    report.section(format!(
        "clock skew (simulated {}, gossip every {})",
        ms(duration_micros),
        ms(DEMO_INTERVAL_MICROS)
    ));
    report.text("offsets spread over ±2s; drift from +d on the busiest instance to −d on the quietest");
    let mut skew_rows = vec![gossip];
    skew_rows.push(sim_row(
        "offsets ±2s, no drift",
        base,
        &skewed_clocks(n, 2_000_000, 0),
        &network,
        &arrivals,
        ideal_run.admitted,
        demo.seed,
    ));
    for ppm in DRIFT_LEVELS_PPM {
        skew_rows.push(sim_row(
            format!("offsets ±2s, drift ±{}%", ppm as f64 / 10_000.0),
            base,
            &skewed_clocks(n, 2_000_000, ppm),
            &network,
            &arrivals,
            ideal_run.admitted,
            demo.seed,
        ));
    }
    report.table(
        &ACCURACY_HEADERS,
        skew_rows.iter().map(|r| accuracy_row(&r.name, &r.accuracy, &r.outcome.per_instance)).collect(),
    );

    // --- Exchange interval ---
    report.section(format!("exchange interval (simulated {}, true clocks)", ms(duration_micros)));
    let mut interval_rows = Vec::new();
    for interval in INTERVALS_MICROS {
        let config = ClusterConfig::new(limit, n, Some(interval))?;
        let row = sim_row(
            format!("every {}", ms(interval)),
            config,
            &true_clocks,
            &network,
            &arrivals,
            ideal_run.admitted,
            demo.seed,
        );
        interval_rows.push((interval, row));
    }
    let never = sim_row(
        "never (static 1/N shares)",
        ClusterConfig::new(limit, n, None)?,
        &true_clocks,
        &network,
        &arrivals,
        ideal_run.admitted,
        demo.seed,
    );
    let mut rows: Vec<Vec<String>> = interval_rows
        .iter()
        .map(|(interval, r)| {
            let mut row = accuracy_row(&r.name, &r.accuracy, &r.outcome.per_instance);
            row.push(format!("{:.0}", r.outcome.messages_sent as f64 * 1e6 / duration_micros as f64));
            row.push(in_flight_bound(&limit, *interval, &network).to_string());
            row
        })
        .collect();
    let mut never_row = accuracy_row(&never.name, &never.accuracy, &never.outcome.per_instance);
    never_row.push("0".into());
    never_row.push("-".into());
    rows.push(never_row);
    let mut headers = ACCURACY_HEADERS.to_vec();
    headers.push("messages/s");
    headers.push("in-flight bound");
    report.table(&headers, rows);
    let full_refill = limit.full_refill_micros() as i64;
    for (interval, row) in &interval_rows {
        let bound = in_flight_bound(&limit, *interval, &network);
        if row.accuracy.worst_excess > bound {
            report.text(format!(
                "every {}: worst excess {} > the in-flight estimate {bound}: the interval is longer than a full \
                 refill ({}), so each copy reaches its cap before it hears of the others' spending, and the debt \
                 floor forgives the rest",
                ms(*interval),
                row.accuracy.worst_excess,
                ms(full_refill)
            ));
        }
    }

    // --- Faults ---
    report.section(format!(
        "faults (simulated {}, true clocks, gossip every {})",
        ms(duration_micros),
        ms(DEMO_INTERVAL_MICROS)
    ));
    let lossy = NetworkModel { loss: 0.2, ..network };
    let loss_totals =
        sim_row("20% of messages lost, totals", base, &true_clocks, &lossy, &arrivals, ideal_run.admitted, demo.seed);
    let loss_deltas = sim_row(
        "20% lost, deltas (broken on purpose)",
        base.with_counting(Counting::Deltas),
        &true_clocks,
        &lossy,
        &arrivals,
        ideal_run.admitted,
        demo.seed,
    );
    let partitioned = NetworkModel {
        partition: Some(Partition {
            from_micros: duration_micros / 3,
            until_micros: 2 * duration_micros / 3,
            split: n / 2,
        }),
        ..network
    };
    let partition = sim_row(
        "partition 2|2 for the middle third",
        base,
        &true_clocks,
        &partitioned,
        &arrivals,
        ideal_run.admitted,
        demo.seed,
    );
    let mut stepped_clocks = true_clocks.clone();
    stepped_clocks[0].step = Some((duration_micros / 2, 5_000_000));
    let stepped = sim_row(
        "busiest clock steps +5s mid-run",
        base,
        &stepped_clocks,
        &network,
        &arrivals,
        ideal_run.admitted,
        demo.seed,
    );
    report.table(
        &ACCURACY_HEADERS,
        [&loss_totals, &loss_deltas, &partition, &stepped]
            .iter()
            .map(|r| accuracy_row(&r.name, &r.accuracy, &r.outcome.per_instance))
            .collect(),
    );

    // --- Checks ---
    report.check(
        kv_accuracy.worst_excess <= 0,
        format!(
            "the KV bucket never ran ahead of capacity + rate × elapsed (server clock): worst excess {}",
            kv_accuracy.worst_excess
        ),
    );
    let bound = in_flight_bound(&limit, DEMO_INTERVAL_MICROS, &network);
    let healthy = &skew_rows[0].accuracy;
    report.check(
        healthy.error_pct() <= 1.0 && healthy.worst_excess <= bound,
        format!(
            "true clocks, {} interval: total within 1% of ideal ({:.2}%), worst excess {} <= in-flight bound {bound}",
            ms(DEMO_INTERVAL_MICROS),
            healthy.error_pct(),
            healthy.worst_excess
        ),
    );
    let offsets_only = &skew_rows[1].accuracy;
    report.check(
        offsets_only.error_pct() <= 1.0 && offsets_only.worst_excess <= bound,
        format!(
            "offsets alone change nothing that matters: {:.2}% off, worst excess {} (only clock differences are used)",
            offsets_only.error_pct(),
            offsets_only.worst_excess
        ),
    );
    let over = |i: usize| skew_rows[i].accuracy.over_pct;
    let (drift_5, drift_20) = (over(4), over(5));
    report.check(
        drift_5 > healthy.over_pct + 0.5 && drift_20 > drift_5 + 1.0,
        format!(
            "over-admission grows with drift: {:.2}% (none) < {drift_5:.2}% (±5%) < {drift_20:.2}% (±20%)",
            healthy.over_pct
        ),
    );
    let shortest = &interval_rows[0].1.accuracy;
    let longest = &interval_rows[interval_rows.len() - 1].1.accuracy;
    report.check(
        longest.worst_excess > 4 * shortest.worst_excess.max(1),
        format!(
            "the worst excess grows with the interval: {} tokens at {} vs {} at {}",
            shortest.worst_excess,
            ms(INTERVALS_MICROS[0]),
            longest.worst_excess,
            ms(INTERVALS_MICROS[INTERVALS_MICROS.len() - 1])
        ),
    );
    report.check(
        loss_totals.accuracy.error_pct() <= 1.0 && loss_deltas.accuracy.over_pct > loss_totals.accuracy.over_pct + 3.0,
        format!(
            "with 20% loss, running totals stay within 1% ({:.2}%); the deltas variant is caught over-admitting {:.2}%",
            loss_totals.accuracy.error_pct(),
            loss_deltas.accuracy.over_pct
        ),
    );
    report.check(
        stepped.accuracy.worst_excess <= limit.capacity() as i64 + bound,
        format!(
            "a clock stepped forward costs at most one more bucketful: worst excess {} <= {} + {bound}",
            stepped.accuracy.worst_excess,
            limit.capacity()
        ),
    );
    report.text(format!(
        "during the partition each side keeps serving from its own copy: worst excess {} tokens, {:.1}% over in total",
        partition.accuracy.worst_excess, partition.accuracy.over_pct
    ));
    report.verdict(if report.failures().count() == 0 {
        "gossip stays within one interval's admissions of the exact bucket on true clocks; drift, long intervals, lost deltas and partitions each cost accuracy"
    } else {
        "a check failed: see above"
    });
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(interval_ms: i64) -> ClusterConfig {
        ClusterConfig::new(Limit::per_second(10, 100).unwrap(), 2, Some(interval_ms * 1_000)).unwrap()
    }

    #[test]
    fn configs_are_validated() {
        let limit = Limit::per_second(1, 1).unwrap();
        assert!(ClusterConfig::new(limit, 0, None).is_err());
        assert!(ClusterConfig::new(limit, MAX_INSTANCES + 1, None).is_err());
        assert!(ClusterConfig::new(limit, 2, Some(999)).is_err());
    }

    #[test]
    fn a_fresh_instance_spends_only_its_share_of_the_burst() {
        let mut a = Instance::new(0, config(50));
        let admitted = (0..20).filter(|_| a.decide(0)).count();
        assert_eq!(admitted, 5, "half of a 10-token bucket for one of two instances");
    }

    /// Instance b admits 3, reports (message 1), admits 3 more, reports (message 2);
    /// `a` receives what `deliver` lets through. Returns a's level in tokens.
    fn level_after(counting: Counting, deliver_first: bool, duplicate_second: bool) -> i64 {
        let cfg = config(50).with_counting(counting);
        let mut a = Instance::new(0, cfg);
        let mut b = Instance::new(1, cfg);
        assert!(a.decide(0));
        b.tick_due(0);
        let mut messages = Vec::new();
        for _ in 0..2 {
            for _ in 0..3 {
                assert!(b.decide(0));
            }
            messages.push(b.tick(0));
        }
        if deliver_first {
            a.receive(&messages[0], 0);
        }
        a.receive(&messages[1], 0);
        if duplicate_second {
            a.receive(&messages[1], 0);
        }
        a.level / TOKEN
    }

    #[test]
    fn totals_repair_a_lost_message_and_ignore_a_duplicate() {
        // 10 tokens − a's own 1 − b's 6 = 3, however the messages fared.
        assert_eq!(level_after(Counting::Totals, true, false), 3);
        assert_eq!(level_after(Counting::Totals, false, false), 3, "the lost message is repaired by the next");
        assert_eq!(level_after(Counting::Totals, true, true), 3, "a duplicate changes nothing");
        // The broken variant: a lost delta is 3 admissions nobody ever subtracts.
        assert_eq!(level_after(Counting::Deltas, true, false), 3);
        assert_eq!(level_after(Counting::Deltas, false, false), 6, "deltas forget what was lost");
        assert_eq!(level_after(Counting::Deltas, true, true), 0, "and count a duplicate twice");
    }

    /// A restarted peer counts from zero again; its new incarnation makes the others
    /// count its admissions at once, and its old life's late messages are ignored.
    #[test]
    fn a_restarted_peer_is_counted_from_its_new_life() {
        let cfg = config(50);
        let mut a = Instance::new(0, cfg);
        let mut b = Instance::new(1, cfg);
        b.tick_due(0);
        for _ in 0..4 {
            assert!(b.decide(0));
        }
        let before_restart = b.tick(0);
        a.receive(&before_restart, 0);
        assert_eq!(a.level / TOKEN, 10 - 4);
        let mut b = Instance::new(1, cfg).with_incarnation(1);
        b.tick_due(0);
        assert!(b.decide(0) && b.decide(0));
        a.receive(&b.tick(0), 0);
        assert_eq!(a.level / TOKEN, 10 - 4 - 2, "the new life's 2 count although its total is below 4");
        a.receive(&before_restart, 0);
        assert_eq!(a.level / TOKEN, 10 - 4 - 2, "a late message from the old life changes nothing");
    }

    #[test]
    fn offsets_do_not_matter_and_a_clock_stepped_back_refills_nothing() {
        let run = |offset: i64| {
            let mut a = Instance::new(0, config(50));
            (0..200).filter(|i| a.decide(offset + i * 2_000)).count()
        };
        assert_eq!(run(0), run(5_000_000_000));
        let mut a = Instance::new(0, config(50));
        while a.decide(1_000_000) {}
        assert!(!a.decide(500_000), "the clock went back: no refill, still empty");
        assert!(!a.decide(1_000_000), "back where it was: still nothing credited twice");
    }
}
