//! The simulated network between Raft nodes: every message in flight sits in a priority
//! queue ordered by its delivery time, with a sequence number to break ties, so two runs
//! of one seed deliver the same messages in the same order.
//!
//! Faults, each switched on by [`Faults`](super::Faults) and scaled per seed:
//!
//! - **drop**: a message is lost;
//! - **delay**: a message takes far longer than usual (up to many election timeouts);
//! - **reorder**: without it each directed link is FIFO, as TCP is; with it, a later
//!   message may overtake an earlier one (the core must cope, as it would over UDP or
//!   across reconnects);
//! - **duplicate**: a message arrives twice (a retransmission after a reconnect);
//! - **partitions and one-way cuts**: a directed link is cut for a while. A message on a cut
//!   link is lost, whether it was cut when the message was sent or while it was in flight.
//!
//! What it leaves out: bandwidth (a message's size does not change its latency) and
//! corruption (the codec's CRC turns corruption into a drop, which `drop` covers).

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap};

use crate::message::Message;
use crate::types::NodeId;

use super::rng::SimRng;

/// How the network misbehaves in one run. Rates are per million messages.
#[derive(Clone, Debug, Default)]
pub struct NetworkSettings {
    /// The usual one-way latency is uniform in `min_latency_us..=max_latency_us`.
    pub min_latency_us: u64,
    pub max_latency_us: u64,
    /// Odds that a message is lost.
    pub drop_per_million: u32,
    /// Odds that a message is delayed by up to `max_extra_delay_us` more.
    pub delay_per_million: u32,
    pub max_extra_delay_us: u64,
    /// Odds that a message is delivered twice; the copy comes up to `max_extra_delay_us`
    /// (or the usual latency, without delays) after the original.
    pub duplicate_per_million: u32,
    /// Whether messages on one link may overtake each other.
    pub reorder: bool,
}

impl NetworkSettings {
    /// A network that only has latency: what the cluster sees once a run heals at the end.
    pub fn calm(&self) -> NetworkSettings {
        NetworkSettings {
            min_latency_us: self.min_latency_us,
            max_latency_us: self.max_latency_us,
            ..NetworkSettings::default()
        }
    }
}

/// What the network did, for the run's report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkStats {
    pub sent: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub cut: u64,
    pub delayed: u64,
    pub duplicated: u64,
}

/// One message on its way.
#[derive(Debug)]
struct InFlight {
    /// Virtual time of delivery, in microseconds.
    at: u64,
    /// The order it was sent in: the tiebreak between messages due at the same time, so the
    /// heap's order never depends on anything but the run.
    seq: u64,
    message: Message,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &InFlight) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &InFlight) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &InFlight) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The network: messages in flight, and which directed links are cut.
#[derive(Debug)]
pub struct Network {
    /// A min-heap by (delivery time, send order).
    queue: BinaryHeap<Reverse<InFlight>>,
    /// The next send order number.
    next_seq: u64,
    /// Cut directed links (from, to), with how many faults cut each: a partition and a
    /// one-way cut may overlap, and healing one must not heal the other.
    cut: BTreeMap<(NodeId, NodeId), u32>,
    /// Without reordering, the latest delivery time scheduled on each link, so that a
    /// later message never arrives before an earlier one.
    last_delivery: BTreeMap<(NodeId, NodeId), u64>,
    pub settings: NetworkSettings,
    pub stats: NetworkStats,
}

impl Network {
    /// An empty network.
    pub fn new(settings: NetworkSettings) -> Network {
        assert!(settings.min_latency_us <= settings.max_latency_us, "latency range is empty");
        Network {
            queue: BinaryHeap::new(),
            next_seq: 0,
            cut: BTreeMap::new(),
            last_delivery: BTreeMap::new(),
            settings,
            stats: NetworkStats::default(),
        }
    }

    /// Whether the link `from -> to` is cut now.
    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cut.contains_key(&(from, to))
    }

    /// Cuts the directed link `from -> to` (one more fault holds it cut).
    pub fn cut(&mut self, from: NodeId, to: NodeId) {
        *self.cut.entry((from, to)).or_insert(0) += 1;
    }

    /// Releases one fault's hold on `from -> to`.
    pub fn heal(&mut self, from: NodeId, to: NodeId) {
        if let Some(holds) = self.cut.get_mut(&(from, to)) {
            *holds -= 1;
            if *holds == 0 {
                self.cut.remove(&(from, to));
            }
        }
    }

    /// Heals every link.
    pub fn heal_all(&mut self) {
        self.cut.clear();
    }

    /// Puts a message on the wire at virtual time `now`.
    pub fn send(&mut self, now: u64, message: Message, rng: &mut SimRng) {
        self.stats.sent += 1;
        if self.is_cut(message.from, message.to) {
            self.stats.cut += 1;
            return;
        }
        if self.settings.drop_per_million > 0 && rng.chance(self.settings.drop_per_million) {
            self.stats.dropped += 1;
            return;
        }
        let mut at = now + rng.range(self.settings.min_latency_us, self.settings.max_latency_us);
        if self.settings.delay_per_million > 0 && rng.chance(self.settings.delay_per_million) {
            self.stats.delayed += 1;
            at += rng.range(0, self.settings.max_extra_delay_us);
        }
        let link = (message.from, message.to);
        if !self.settings.reorder {
            // FIFO per link: never before the previous message on it. Equal times keep
            // their send order through the sequence tiebreak.
            let last = self.last_delivery.entry(link).or_insert(0);
            at = at.max(*last);
            *last = at;
        }
        if self.settings.duplicate_per_million > 0 && rng.chance(self.settings.duplicate_per_million) {
            self.stats.duplicated += 1;
            let spread = self.settings.max_extra_delay_us.max(self.settings.max_latency_us);
            let copy_at = at + rng.range(0, spread);
            self.push(copy_at, message.clone());
        }
        self.push(at, message);
    }

    fn push(&mut self, at: u64, message: Message) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push(Reverse(InFlight { at, seq, message }));
    }

    /// When the next message is due, if any is in flight.
    pub fn next_time(&self) -> Option<u64> {
        self.queue.peek().map(|Reverse(in_flight)| in_flight.at)
    }

    /// Takes the next due message. None when the queue is empty or when the message was
    /// lost to a link cut while it was in flight.
    pub fn pop(&mut self) -> Option<(u64, Message)> {
        let Reverse(in_flight) = self.queue.pop()?;
        if self.is_cut(in_flight.message.from, in_flight.message.to) {
            self.stats.cut += 1;
            return None;
        }
        self.stats.delivered += 1;
        Some((in_flight.at, in_flight.message))
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageBody;

    fn message(from: NodeId, to: NodeId, term: u64) -> Message {
        Message { from, to, term, body: MessageBody::TimeoutNow }
    }

    fn drain(network: &mut Network) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        while network.next_time().is_some() {
            if let Some((at, message)) = network.pop() {
                out.push((at, message.term));
            }
        }
        out
    }

    #[test]
    fn links_are_fifo_without_reordering() {
        let settings = NetworkSettings { min_latency_us: 1, max_latency_us: 1000, ..NetworkSettings::default() };
        let mut network = Network::new(settings);
        let mut rng = SimRng::new(1);
        for term in 0..200 {
            network.send(term, message(1, 2, term), &mut rng);
        }
        let terms: Vec<u64> = drain(&mut network).into_iter().map(|(_, term)| term).collect();
        assert_eq!(terms, (0..200).collect::<Vec<_>>());
    }

    #[test]
    fn reordering_lets_messages_overtake() {
        let settings =
            NetworkSettings { min_latency_us: 1, max_latency_us: 1000, reorder: true, ..NetworkSettings::default() };
        let mut network = Network::new(settings);
        let mut rng = SimRng::new(1);
        for term in 0..200 {
            network.send(term, message(1, 2, term), &mut rng);
        }
        let delivered = drain(&mut network);
        assert_eq!(delivered.len(), 200);
        assert!(delivered.windows(2).all(|pair| pair[0].0 <= pair[1].0), "delivered in time order");
        assert!(delivered.windows(2).any(|pair| pair[0].1 > pair[1].1), "some message overtook another");
    }

    #[test]
    fn a_cut_link_loses_messages_in_flight_and_heals_per_fault() {
        let settings = NetworkSettings { min_latency_us: 10, max_latency_us: 10, ..NetworkSettings::default() };
        let mut network = Network::new(settings);
        let mut rng = SimRng::new(1);
        network.send(0, message(1, 2, 1), &mut rng);
        network.send(0, message(2, 1, 2), &mut rng);
        // Two faults cut 1 -> 2; healing one of them leaves it cut.
        network.cut(1, 2);
        network.cut(1, 2);
        network.heal(1, 2);
        assert!(network.is_cut(1, 2));
        assert!(!network.is_cut(2, 1), "a one-way cut leaves the other direction up");
        assert_eq!(drain(&mut network), vec![(10, 2)]);
        network.send(20, message(1, 2, 3), &mut rng);
        assert_eq!(network.stats.cut, 2);
        network.heal(1, 2);
        network.send(20, message(1, 2, 4), &mut rng);
        assert_eq!(drain(&mut network), vec![(30, 4)]);
    }

    #[test]
    fn drops_and_duplicates_happen_at_their_rates() {
        let settings = NetworkSettings {
            min_latency_us: 10,
            max_latency_us: 20,
            drop_per_million: 100_000,
            duplicate_per_million: 100_000,
            ..NetworkSettings::default()
        };
        let mut network = Network::new(settings);
        let mut rng = SimRng::new(5);
        for term in 0..10_000 {
            network.send(0, message(1, 2, term), &mut rng);
        }
        let delivered = drain(&mut network).len() as i64;
        // 10% dropped, then 10% of the rest doubled: about 9,900.
        assert!((delivered - 9_900).abs() < 400, "{delivered}");
        assert!(network.stats.dropped > 800 && network.stats.duplicated > 800);
    }
}
