//! A deterministic driver for N [`Instance`]s of the distributed limiter: simulated
//! true time, one clock per instance (offset, drift, an optional step), and an
//! in-process simulated network (a queue of messages ordered by delivery time, with
//! latency, jitter, loss and partitions). The same seed replays the same run exactly.
//!
//! The exchange is simulated rather than sent over loopback UDP so that a run is a pure
//! function of its inputs: eight seconds of a four-instance cluster take milliseconds,
//! every skew level runs against the *same* arrivals, and a failing check can be
//! replayed. The instances cannot tell: they only see their clock readings and
//! [`Gossip`] values, which is all a UDP transport would hand them.
//!
//! ```text
//!  every STEP of true time t:
//!    deliver the messages due by t        (receiver's clock: clocks[i].local(t))
//!    each instance whose clock says an exchange is due: tick, send to every peer
//!        (dropped if lost or across a partition; else due at t + latency ± jitter)
//!    each arrival in [t, t + STEP):       decide on the instance's clock at its time
//! ```
//!
//! [`ideal`] is the yardstick: one exact token bucket on true time, fed the same
//! arrivals, which is what the strongly consistent limiter would do with zero latency.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::distributed_limiter::{ClusterConfig, Gossip, Instance};
use super::token_bucket::{decide, Limit, Step};

/// The simulator's time step. Ticks and deliveries happen on step boundaries, so this
/// is also the resolution of the network's latency; arrivals keep their exact times.
pub const STEP_MICROS: i64 = 250;

/// One instance's clock, as a function of true time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockModel {
    /// What the clock reads at true time zero.
    pub offset_micros: i64,
    /// How much faster than true time it runs, in parts per million (negative: slower).
    pub drift_ppm: i64,
    /// A jump by `by_micros` at true time `at_micros` (an NTP step, a VM resumed).
    pub step: Option<(i64, i64)>,
}

impl ClockModel {
    /// The clock's reading at true time `t`.
    pub fn local(&self, t: i64) -> i64 {
        let drifted = i128::from(t) * i128::from(self.drift_ppm) / 1_000_000;
        let stepped = match self.step {
            Some((at, by)) if t >= at => by,
            _ => 0,
        };
        self.offset_micros + t + drifted as i64 + stepped
    }
}

/// The simulated network between instances.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NetworkModel {
    pub latency_micros: i64,
    /// Each message's latency is `latency ± jitter`, uniformly.
    pub jitter_micros: i64,
    /// The chance each message is lost, 0..=1.
    pub loss: f64,
    /// During `[from, until)` (true time), instances below `split` and the rest cannot
    /// reach each other.
    pub partition: Option<Partition>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partition {
    pub from_micros: i64,
    pub until_micros: i64,
    pub split: usize,
}

impl NetworkModel {
    /// A quiet LAN: 1 ms ± 0.5 ms, nothing lost.
    pub fn lan() -> NetworkModel {
        NetworkModel { latency_micros: 1_000, jitter_micros: 500, loss: 0.0, partition: None }
    }

    fn cut(&self, from: usize, to: usize, t: i64) -> bool {
        self.partition.is_some_and(|p| t >= p.from_micros && t < p.until_micros && (from < p.split) != (to < p.split))
    }
}

/// One request, at a true time, to one instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    /// Microseconds of true time since the run's start.
    pub at_micros: i64,
    pub instance: usize,
}

/// Poisson arrivals at `rates_per_sec[i]` to instance `i` for `duration_micros`,
/// merged in time order.
pub fn poisson_arrivals(rates_per_sec: &[f64], duration_micros: i64, rng: &mut fastrand::Rng) -> Vec<Arrival> {
    let mut arrivals = Vec::new();
    for (instance, &rate) in rates_per_sec.iter().enumerate() {
        assert!(rate > 0.0, "instance {instance}: a rate of {rate}");
        let mut t = 0.0;
        loop {
            // Exponential gaps; 1 − u is in (0, 1], so the log is finite.
            t += -(1.0 - rng.f64()).ln() / rate * 1e6;
            if t >= duration_micros as f64 {
                break;
            }
            arrivals.push(Arrival { at_micros: t as i64, instance });
        }
    }
    arrivals.sort_by_key(|a| (a.at_micros, a.instance));
    arrivals
}

/// What a run admitted, and when (true time).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimOutcome {
    pub offered: u64,
    pub admitted: u64,
    pub per_instance: Vec<u64>,
    /// True times of the admissions, ascending.
    pub admitted_at: Vec<i64>,
    pub messages_sent: u64,
    pub messages_lost: u64,
}

/// Runs a cluster of `config.instances` over `arrivals`. `clocks` has one model per
/// instance; `seed` drives the network's jitter and loss.
pub fn simulate(
    config: ClusterConfig,
    clocks: &[ClockModel],
    network: &NetworkModel,
    arrivals: &[Arrival],
    seed: u64,
) -> SimOutcome {
    let n = config.instances;
    assert_eq!(clocks.len(), n, "one clock per instance");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut instances: Vec<Instance> = (0..n).map(|i| Instance::new(i, config)).collect();
    let mut outcome = SimOutcome { per_instance: vec![0; n], ..SimOutcome::default() };
    // (delivery time, sequence for a stable order, receiver, message)
    let mut in_flight: BinaryHeap<Reverse<(i64, u64, usize, GossipKey)>> = BinaryHeap::new();
    let mut messages: Vec<Gossip> = Vec::new();
    let end = arrivals.last().map_or(0, |a| a.at_micros) + STEP_MICROS;
    let mut next_arrival = 0;
    let mut t = 0;
    for (i, instance) in instances.iter_mut().enumerate() {
        instance.tick_due(clocks[i].local(0));
    }
    while t < end {
        while let Some(Reverse((due, _, to, key))) = in_flight.peek().copied() {
            if due > t {
                break;
            }
            in_flight.pop();
            instances[to].receive(&messages[key.0], clocks[to].local(t));
        }
        for from in 0..n {
            let now = clocks[from].local(t);
            if !instances[from].tick_due(now) {
                continue;
            }
            let gossip = instances[from].tick(now);
            let key = GossipKey(messages.len());
            messages.push(gossip);
            for to in (0..n).filter(|&to| to != from) {
                outcome.messages_sent += 1;
                if network.cut(from, to, t) || (network.loss > 0.0 && rng.f64() < network.loss) {
                    outcome.messages_lost += 1;
                    continue;
                }
                let jitter =
                    if network.jitter_micros > 0 { rng.i64(-network.jitter_micros..=network.jitter_micros) } else { 0 };
                let due = t + (network.latency_micros + jitter).max(0);
                in_flight.push(Reverse((due, outcome.messages_sent, to, key)));
            }
        }
        while let Some(arrival) = arrivals.get(next_arrival) {
            if arrival.at_micros >= t + STEP_MICROS {
                break;
            }
            next_arrival += 1;
            outcome.offered += 1;
            let i = arrival.instance;
            if instances[i].decide(clocks[i].local(arrival.at_micros)) {
                outcome.admitted += 1;
                outcome.per_instance[i] += 1;
                outcome.admitted_at.push(arrival.at_micros);
            }
        }
        t += STEP_MICROS;
    }
    assert_eq!(outcome.offered as usize, arrivals.len(), "every arrival decided once");
    assert_eq!(outcome.per_instance.iter().sum::<u64>(), outcome.admitted);
    outcome
}

/// An index into the run's sent messages (the heap holds indices, not copies).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct GossipKey(usize);

/// One exact token bucket on true time, fed `arrivals`: the strongly consistent answer
/// with no latency at all.
pub fn ideal(limit: &Limit, arrivals: &[Arrival]) -> SimOutcome {
    let mut outcome = SimOutcome {
        per_instance: vec![0; arrivals.iter().map(|a| a.instance + 1).max().unwrap_or(0)],
        ..SimOutcome::default()
    };
    let mut stored = None;
    for arrival in arrivals {
        outcome.offered += 1;
        // Cost 1 on a validated limit cannot fail.
        if let Ok(Step::Admit { state, .. }) = decide(limit, stored, arrival.at_micros, 1) {
            stored = Some(state);
            outcome.admitted += 1;
            outcome.per_instance[arrival.instance] += 1;
            outcome.admitted_at.push(arrival.at_micros);
        }
    }
    outcome
}

/// How far a run is from the ideal.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Accuracy {
    pub admitted: u64,
    pub ideal: u64,
    /// `(admitted − ideal) / ideal` when positive, in percent.
    pub over_pct: f64,
    /// `(ideal − admitted) / ideal` when positive, in percent.
    pub under_pct: f64,
    /// The most any stretch of the run admitted beyond what a correct bucket could
    /// have over that stretch ([`Limit::worst_excess`]), in tokens; zero or less for a
    /// correct bucket. It sees a burst that a later shortfall hides in the totals.
    pub worst_excess: i64,
}

impl Accuracy {
    /// `|admitted − ideal| / ideal`, in percent.
    pub fn error_pct(&self) -> f64 {
        self.over_pct.max(self.under_pct)
    }
}

/// `admitted_at` (ascending, one clock) against the ideal count and the bucket's bound.
pub fn accuracy(limit: &Limit, admitted_at: &[i64], ideal: u64) -> Accuracy {
    let admitted = admitted_at.len() as u64;
    let pct = |a: u64, b: u64| if ideal == 0 { 0.0 } else { a.saturating_sub(b) as f64 * 100.0 / ideal as f64 };
    let worst_excess = limit.worst_excess(admitted_at);
    Accuracy { admitted, ideal, over_pct: pct(admitted, ideal), under_pct: pct(ideal, admitted), worst_excess }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(interval_ms: i64) -> ClusterConfig {
        ClusterConfig::new(Limit::per_second(20, 100).unwrap(), 3, Some(interval_ms * 1_000)).unwrap()
    }

    #[test]
    fn clocks_offset_drift_and_step() {
        let c = ClockModel { offset_micros: 5, drift_ppm: 10_000, step: Some((1_000_000, -300)) };
        assert_eq!(c.local(0), 5);
        assert_eq!(c.local(999_999), 5 + 999_999 + 9_999);
        assert_eq!(c.local(1_000_000), 5 + 1_000_000 + 10_000 - 300);
    }

    #[test]
    fn arrivals_are_seeded_sorted_and_near_their_rate() {
        let a = poisson_arrivals(&[100.0, 50.0], 10_000_000, &mut fastrand::Rng::with_seed(3));
        let b = poisson_arrivals(&[100.0, 50.0], 10_000_000, &mut fastrand::Rng::with_seed(3));
        assert_eq!(a, b);
        assert!(a.windows(2).all(|w| w[0].at_micros <= w[1].at_micros));
        let to_first = a.iter().filter(|x| x.instance == 0).count();
        assert!((900..1_100).contains(&to_first), "{to_first} arrivals at 100/s over 10 s");
    }

    #[test]
    fn a_run_replays_from_its_seed() {
        let arrivals = poisson_arrivals(&[150.0, 100.0, 50.0], 3_000_000, &mut fastrand::Rng::with_seed(1));
        let clocks = [ClockModel::default(); 3];
        let network = NetworkModel { loss: 0.1, ..NetworkModel::lan() };
        let a = simulate(cluster(20), &clocks, &network, &arrivals, 9);
        let b = simulate(cluster(20), &clocks, &network, &arrivals, 9);
        assert_eq!(a, b);
        assert!(a.messages_lost > 0 && a.messages_lost < a.messages_sent);
    }

    #[test]
    fn the_ideal_bucket_never_exceeds_its_bound() {
        let limit = Limit::per_second(20, 100).unwrap();
        let arrivals = poisson_arrivals(&[300.0], 5_000_000, &mut fastrand::Rng::with_seed(2));
        let run = ideal(&limit, &arrivals);
        let acc = accuracy(&limit, &run.admitted_at, run.admitted);
        assert!(acc.worst_excess <= 0, "{acc:?}");
        assert_eq!((acc.over_pct, acc.under_pct), (0.0, 0.0));
        // Offered 3× the rate for 5 s: the ideal admits the burst plus the refill.
        assert!((515..=521).contains(&run.admitted), "{}", run.admitted);
    }
}
