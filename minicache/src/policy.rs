//! Eviction: which entry leaves when a shard is over its capacity.
//!
//! Three policies over the same intrusive doubly linked lists:
//!
//! - [`Lru`]: one list in recency order; the baseline every other policy must beat.
//! - [`S3Fifo`]: a small FIFO (~10% of capacity) that new keys enter, a main FIFO, and a
//!   ghost FIFO of the hashes recently evicted from the small queue. A key seen again while
//!   in the small queue is promoted to main, a key evicted from small is remembered in ghost,
//!   and a ghost hit goes straight to main. Each entry has a 2-bit frequency (capped at 3)
//!   that buys it extra laps through main (Yang et al., SOSP 2023).
//! - [`WTinyLfu`]: an LRU admission *window* in front of a segmented LRU *main* region
//!   (probation + protected, protected up to 80% of main). An entry leaving the window is
//!   admitted into main only if the frequency sketch says it is seen more often than the
//!   entry main would evict in its place. A *hill climber* moves capacity between window and
//!   main by the hit rate of each sample period, as Caffeine does (Einziger et al., 2017).
//!
//! The policies work on *slots* (small integers the cache core hands out per entry) and
//! 64-bit key hashes; they never see a key or a value. That keeps them deterministic and
//! testable without a cache around them. Every capacity here is a weight: with no weigher
//! each entry weighs 1 and capacity counts entries. Every write evicts until the policy is
//! back within capacity before it returns (asserted), which is the cache's zero-slack bound.
//!
//! Where W-TinyLFU here differs from Caffeine's, each for a measured reason (the LIRS traces
//! replayed by `examples/replay.rs`; the constants' docs give the figures):
//!
//! - admission compares [`FrequencySketch::admission_frequency`], which drops the
//!   doorkeeper's +1 for keys the counters already know;
//! - a hill-climber sample ends every [`CLIMB_EVERY_RESETS`] halvings of the sketch rather
//!   than every N requests, and the window may shrink to nothing (Caffeine keeps one entry);
//! - first sightings absorbed by the doorkeeper do not count toward the sketch's sample
//!   period (Caffeine has no doorkeeper).
//!
//! Kept from Caffeine: the 1% initial window, protected at 80% of main, the climber's step
//! (6.25%), decay (0.98) and restart threshold (5%), and the random admission of a warm
//! candidate 1 time in 128 (a defence against hash flooding), with a seeded generator so
//! that replays are reproducible for a given hash seed. Left out: Caffeine's per-entry
//! "policy weight" snapshots and its transfer of entries above the window's quota in one
//! climb (capped here at [`QUEUE_TRANSFER_THRESHOLD`] as there).

use crate::sketch::FrequencySketch;
use hashbrown::HashTable;
use std::collections::VecDeque;

/// "No slot": the end of a list.
pub(crate) const NIL: u32 = u32::MAX;

/// Which eviction algorithm a shard runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Window TinyLFU with a hill-climbing window (Caffeine's policy); the best hit ratio on
    /// most traces, including scans and loops where LRU collapses.
    #[default]
    WTinyLfu,
    /// S3-FIFO: three FIFO queues; cheap, scan-resistant, close to W-TinyLFU on web traces.
    S3Fifo,
    /// Plain least-recently-used: the baseline.
    Lru,
}

/// The queue an entry is in; `Unlinked` for a free slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queue {
    Unlinked,
    Lru,
    Window,
    Probation,
    Protected,
    Small,
    Main,
}

/// The policy's view of one entry.
#[derive(Debug, Clone, Copy)]
struct Node {
    /// Towards the eldest end of the node's queue.
    prev: u32,
    /// Towards the newest end.
    next: u32,
    /// The key's hash: what the sketch and the ghost queue remember.
    hash: u64,
    /// The entry's weight (1 without a weigher).
    weight: u32,
    queue: Queue,
    /// S3-FIFO's access count since insertion or the last lap, capped at 3.
    freq: u8,
}

const UNLINKED: Node = Node { prev: NIL, next: NIL, hash: 0, weight: 0, queue: Queue::Unlinked, freq: 0 };

/// One doubly linked list: `head` is the eldest (next to go), `tail` the newest.
#[derive(Debug, Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
    len: u64,
    weight: u64,
}

impl List {
    const EMPTY: List = List { head: NIL, tail: NIL, len: 0, weight: 0 };
}

/// The nodes of every slot, indexed by slot; lists thread through them.
#[derive(Debug, Default)]
struct Nodes {
    nodes: Vec<Node>,
}

impl Nodes {
    fn node(&self, slot: u32) -> &Node {
        &self.nodes[slot as usize]
    }

    fn node_mut(&mut self, slot: u32) -> &mut Node {
        &mut self.nodes[slot as usize]
    }

    /// Makes `slot` a fresh, unlinked node (growing the vector if the slot is new).
    fn reset(&mut self, slot: u32, hash: u64, weight: u32) {
        let index = slot as usize;
        if index >= self.nodes.len() {
            self.nodes.resize(index + 1, UNLINKED);
        }
        assert_eq!(self.nodes[index].queue, Queue::Unlinked, "slot {slot} reused while still linked");
        self.nodes[index] = Node { hash, weight, ..UNLINKED };
    }

    fn push_back(&mut self, list: &mut List, slot: u32, queue: Queue) {
        let weight = {
            let node = self.node_mut(slot);
            debug_assert_eq!(node.queue, Queue::Unlinked);
            node.prev = list.tail;
            node.next = NIL;
            node.queue = queue;
            node.weight
        };
        if list.tail == NIL {
            list.head = slot;
        } else {
            self.node_mut(list.tail).next = slot;
        }
        list.tail = slot;
        list.len += 1;
        list.weight += u64::from(weight);
    }

    fn unlink(&mut self, list: &mut List, slot: u32) {
        let Node { prev, next, weight, .. } = *self.node(slot);
        if prev == NIL {
            list.head = next;
        } else {
            self.node_mut(prev).next = next;
        }
        if next == NIL {
            list.tail = prev;
        } else {
            self.node_mut(next).prev = prev;
        }
        let node = self.node_mut(slot);
        node.prev = NIL;
        node.next = NIL;
        node.queue = Queue::Unlinked;
        list.len -= 1;
        list.weight -= u64::from(weight);
    }

    fn move_to_back(&mut self, list: &mut List, slot: u32) {
        if list.tail != slot {
            let queue = self.node(slot).queue;
            self.unlink(list, slot);
            self.push_back(list, slot, queue);
        }
    }

    /// Changes a linked node's weight, keeping its list's total right.
    fn reweigh(&mut self, list: &mut List, slot: u32, weight: u32) {
        let node = self.node_mut(slot);
        list.weight = list.weight - u64::from(node.weight) + u64::from(weight);
        node.weight = weight;
    }
}

/// A shard's eviction state: one of the three policies over the shard's slots.
#[derive(Debug)]
pub(crate) struct EvictionPolicy {
    nodes: Nodes,
    /// The shard's capacity in weight.
    capacity: u64,
    algorithm: Algorithm,
}

#[derive(Debug)]
enum Algorithm {
    Lru(Lru),
    S3Fifo(S3Fifo),
    WTinyLfu(Box<WTinyLfu>),
}

/// Tuning the cache core passes down.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PolicyConfig {
    pub(crate) policy: Policy,
    /// The shard's capacity in weight.
    pub(crate) capacity: u64,
    /// How many distinct entries the shard may hold, if known (capacity without a weigher);
    /// sizes the sketch. `None` with a weigher: the sketch then grows with the shard.
    pub(crate) entries_hint: Option<u64>,
    /// `false` only in the broken variant that shows frequency aging matters.
    pub(crate) sketch_halving: bool,
}

impl EvictionPolicy {
    pub(crate) fn new(config: PolicyConfig) -> Self {
        let algorithm = match config.policy {
            Policy::Lru => Algorithm::Lru(Lru { list: List::EMPTY }),
            Policy::S3Fifo => Algorithm::S3Fifo(S3Fifo::new(config.capacity)),
            Policy::WTinyLfu => Algorithm::WTinyLfu(Box::new(WTinyLfu::new(config))),
        };
        EvictionPolicy { nodes: Nodes::default(), capacity: config.capacity, algorithm }
    }

    /// The total weight of the entries the policy holds.
    pub(crate) fn weighted_size(&self) -> u64 {
        match &self.algorithm {
            Algorithm::Lru(lru) => lru.list.weight,
            Algorithm::S3Fifo(s3) => s3.small.weight + s3.main.weight,
            Algorithm::WTinyLfu(w) => w.window.weight + w.probation.weight + w.protected.weight,
        }
    }

    /// The number of entries the policy holds.
    pub(crate) fn len(&self) -> u64 {
        match &self.algorithm {
            Algorithm::Lru(lru) => lru.list.len,
            Algorithm::S3Fifo(s3) => s3.small.len + s3.main.len,
            Algorithm::WTinyLfu(w) => w.window.len + w.probation.len + w.protected.len,
        }
    }

    /// A new entry in `slot`. Pushes onto `victims` the slots evicted to make room (unlinked
    /// already; possibly `slot` itself, when admission rejects it), and returns with the
    /// weighted size within capacity.
    pub(crate) fn insert(&mut self, slot: u32, hash: u64, weight: u32, victims: &mut Vec<u32>) {
        self.nodes.reset(slot, hash, weight);
        match &mut self.algorithm {
            Algorithm::Lru(lru) => self.nodes.push_back(&mut lru.list, slot, Queue::Lru),
            Algorithm::S3Fifo(s3) => s3.insert(&mut self.nodes, slot),
            Algorithm::WTinyLfu(w) => w.insert(&mut self.nodes, slot),
        }
        self.evict(victims);
    }

    /// A read of the entry in `slot`.
    pub(crate) fn access(&mut self, slot: u32) {
        match &mut self.algorithm {
            Algorithm::Lru(lru) => self.nodes.move_to_back(&mut lru.list, slot),
            Algorithm::S3Fifo(_) => {
                let node = self.nodes.node_mut(slot);
                node.freq = (node.freq + 1).min(S3FIFO_MAX_FREQ);
            }
            Algorithm::WTinyLfu(w) => w.access(&mut self.nodes, slot, true),
        }
    }

    /// The entry in `slot` got a new value of `weight`; counts as an access.
    pub(crate) fn update(&mut self, slot: u32, weight: u32, victims: &mut Vec<u32>) {
        let queue = self.nodes.node(slot).queue;
        self.nodes.reweigh(list_of(&mut self.algorithm, queue), slot, weight);
        match &mut self.algorithm {
            Algorithm::WTinyLfu(w) => w.access(&mut self.nodes, slot, false),
            _ => self.access(slot),
        }
        self.evict(victims);
    }

    /// The entry in `slot` left the cache for another reason (invalidated, expired).
    pub(crate) fn remove(&mut self, slot: u32) {
        let queue = self.nodes.node(slot).queue;
        assert_ne!(queue, Queue::Unlinked, "removing slot {slot}, which the policy does not hold");
        self.nodes.unlink(list_of(&mut self.algorithm, queue), slot);
    }

    /// W-TinyLFU's current window share of capacity, for the replay's report.
    #[allow(dead_code)] // read by tests and the replay through the cache
    pub(crate) fn window_capacity(&self) -> Option<u64> {
        match &self.algorithm {
            Algorithm::WTinyLfu(w) => Some(w.window_max),
            _ => None,
        }
    }

    /// Evicts until the weighted size is within capacity.
    fn evict(&mut self, victims: &mut Vec<u32>) {
        while self.weighted_size() > self.capacity {
            let evicted = match &mut self.algorithm {
                Algorithm::Lru(lru) => {
                    let eldest = lru.list.head;
                    if eldest != NIL {
                        self.nodes.unlink(&mut lru.list, eldest);
                        victims.push(eldest);
                    }
                    eldest != NIL
                }
                Algorithm::S3Fifo(s3) => s3.evict_one(&mut self.nodes, victims),
                Algorithm::WTinyLfu(w) => {
                    w.evict(&mut self.nodes, self.capacity, victims);
                    true
                }
            };
            assert!(evicted, "over capacity with nothing left to evict (the lists lost a node)");
        }
        if let Algorithm::WTinyLfu(w) = &mut self.algorithm {
            w.climb(&mut self.nodes, self.capacity);
        }
        assert!(self.weighted_size() <= self.capacity);
    }
}

/// The list that holds nodes of `queue`.
fn list_of(algorithm: &mut Algorithm, queue: Queue) -> &mut List {
    match (algorithm, queue) {
        (Algorithm::Lru(lru), Queue::Lru) => &mut lru.list,
        (Algorithm::S3Fifo(s3), Queue::Small) => &mut s3.small,
        (Algorithm::S3Fifo(s3), Queue::Main) => &mut s3.main,
        (Algorithm::WTinyLfu(w), Queue::Window) => &mut w.window,
        (Algorithm::WTinyLfu(w), Queue::Probation) => &mut w.probation,
        (Algorithm::WTinyLfu(w), Queue::Protected) => &mut w.protected,
        (_, queue) => panic!("a node in queue {queue:?} under the wrong policy (a slot mix-up)"),
    }
}

/// Plain LRU: one list, eldest at the head.
#[derive(Debug)]
struct Lru {
    list: List,
}

/// S3-FIFO's frequency cap (2 bits).
const S3FIFO_MAX_FREQ: u8 = 3;

/// S3-FIFO: small, main and ghost queues.
#[derive(Debug)]
struct S3Fifo {
    small: List,
    main: List,
    /// The small queue's target weight: 10% of capacity.
    small_max: u64,
    ghost: Ghost,
}

impl S3Fifo {
    fn new(capacity: u64) -> Self {
        S3Fifo { small: List::EMPTY, main: List::EMPTY, small_max: (capacity / 10).max(1), ghost: Ghost::default() }
    }

    fn insert(&mut self, nodes: &mut Nodes, slot: u32) {
        let hash = nodes.node(slot).hash;
        if self.ghost.take(hash) {
            // Evicted from small recently and back already: it deserves main.
            nodes.push_back(&mut self.main, slot, Queue::Main);
        } else {
            nodes.push_back(&mut self.small, slot, Queue::Small);
        }
    }

    /// Evicts one entry (some may move from small to main first). `false` if empty.
    fn evict_one(&mut self, nodes: &mut Nodes, victims: &mut Vec<u32>) -> bool {
        let from_small = self.small.len > 0 && (self.small.weight >= self.small_max || self.main.len == 0);
        if from_small && self.evict_small(nodes, victims) {
            return true;
        }
        self.evict_main(nodes, victims)
    }

    /// Takes from the small queue's head: an entry read at least twice there moves to main,
    /// otherwise it is evicted and remembered in ghost. `false` if small ran empty (every
    /// entry moved to main).
    fn evict_small(&mut self, nodes: &mut Nodes, victims: &mut Vec<u32>) -> bool {
        while self.small.head != NIL {
            let slot = self.small.head;
            nodes.unlink(&mut self.small, slot);
            let node = nodes.node_mut(slot);
            if node.freq > 1 {
                node.freq = 0;
                nodes.push_back(&mut self.main, slot, Queue::Main);
            } else {
                let hash = node.hash;
                // The ghost remembers about as many keys as the cache holds entries (the
                // paper sizes it as main; this is measured at eviction, i.e. when full).
                self.ghost.remember(hash, (self.small.len + self.main.len + 1).max(1));
                victims.push(slot);
                return true;
            }
        }
        false
    }

    /// Takes from main's head: an entry with frequency left gets another lap (one less),
    /// otherwise it is evicted. `false` if main is empty.
    fn evict_main(&mut self, nodes: &mut Nodes, victims: &mut Vec<u32>) -> bool {
        while self.main.head != NIL {
            let slot = self.main.head;
            let node = nodes.node_mut(slot);
            if node.freq > 0 {
                node.freq -= 1;
                nodes.move_to_back(&mut self.main, slot);
            } else {
                nodes.unlink(&mut self.main, slot);
                victims.push(slot);
                return true;
            }
        }
        false
    }
}

/// S3-FIFO's ghost queue: hashes of keys recently evicted from the small queue.
#[derive(Debug, Default)]
struct Ghost {
    /// FIFO of (hash, sequence number of that insertion).
    order: VecDeque<(u64, u64)>,
    /// hash -> sequence number of its live insertion; the hash is its own hash.
    members: HashTable<(u64, u64)>,
    next_sequence: u64,
}

impl Ghost {
    fn remember(&mut self, hash: u64, limit: u64) {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        match self.members.find_mut(hash, |(h, _)| *h == hash) {
            Some(member) => member.1 = sequence,
            None => {
                self.members.insert_unique(hash, (hash, sequence), |(h, _)| *h);
            }
        }
        self.order.push_back((hash, sequence));
        while self.order.len() as u64 > limit {
            let Some((old, old_sequence)) = self.order.pop_front() else { break };
            if let Ok(member) = self.members.find_entry(old, |(h, s)| *h == old && *s == old_sequence) {
                member.remove();
            }
        }
    }

    /// Whether `hash` is remembered; forgets it if so.
    fn take(&mut self, hash: u64) -> bool {
        match self.members.find_entry(hash, |(h, _)| *h == hash) {
            Ok(member) => {
                member.remove();
                true
            }
            Err(_) => false,
        }
    }
}

// Caffeine's constants for the window and the hill climber.
const INITIAL_WINDOW_SHARE: f64 = 0.01;
const PROTECTED_SHARE_OF_MAIN: f64 = 0.80;
const HILL_CLIMBER_STEP_PERCENT: f64 = 0.0625;
const HILL_CLIMBER_STEP_DECAY_RATE: f64 = 0.98;
const HILL_CLIMBER_RESTART_THRESHOLD: f64 = 0.05;
/// A hill-climber sample ends every this many halvings of the sketch, not every N requests
/// as in Caffeine. Aligned with the aging cycle, each sample sees the same phase of it; on a
/// loop the hit rate swings with that phase (churn right after a halving), and a sample of
/// arbitrary alignment read those swings as the window's doing and kept resizing it (LIRS
/// loop at 256 entries: 23.9% hits with Caffeine's sampling, 25.2% aligned over three).
const CLIMB_EVERY_RESETS: u64 = 3;
/// The most entries one climb moves between window and main (bounds a write's latency).
const QUEUE_TRANSFER_THRESHOLD: u32 = 1_000;
/// A candidate at least this frequent that loses to the victim still gets in 1 time in 128:
/// otherwise an attacker who makes a victim look hot could keep every new key out.
const ADMIT_HASHDOS_THRESHOLD: u32 = 6;

/// Window TinyLFU with a hill climber.
#[derive(Debug)]
struct WTinyLfu {
    window: List,
    probation: List,
    protected: List,
    /// The window's share of capacity, moved by the hill climber.
    window_max: u64,
    /// The protected segment's share; main's share is `capacity - window_max`.
    protected_max: u64,
    sketch: FrequencySketch,
    /// Whether the sketch may grow with the shard (only when capacity is a weight).
    sketch_grows: bool,
    sketch_halving: bool,
    hits_in_sample: u64,
    misses_in_sample: u64,
    previous_hit_rate: f64,
    step_size: f64,
    /// Capacity still to move: positive grows the window, negative shrinks it.
    adjustment: i64,
    /// xorshift state for the hash-flooding jitter.
    random: u64,
    /// The sketch's halving count when the last sample ended.
    resets_at_last_sample: u64,
}

impl WTinyLfu {
    fn new(config: PolicyConfig) -> Self {
        let capacity = config.capacity;
        let window_max = capacity - (capacity as f64 * (1.0 - INITIAL_WINDOW_SHARE)) as u64;
        let protected_max = ((capacity - window_max) as f64 * PROTECTED_SHARE_OF_MAIN) as u64;
        let mut sketch = FrequencySketch::new(config.entries_hint.unwrap_or(64));
        if !config.sketch_halving {
            sketch.disable_halving();
        }
        WTinyLfu {
            window: List::EMPTY,
            probation: List::EMPTY,
            protected: List::EMPTY,
            window_max,
            protected_max,
            sketch,
            sketch_grows: config.entries_hint.is_none(),
            sketch_halving: config.sketch_halving,
            hits_in_sample: 0,
            misses_in_sample: 0,
            previous_hit_rate: 0.0,
            step_size: -HILL_CLIMBER_STEP_PERCENT * capacity as f64,
            adjustment: 0,
            random: 0x2545_f491_4f6c_dd1d,
            resets_at_last_sample: 0,
        }
    }

    fn len(&self) -> u64 {
        self.window.len + self.probation.len + self.protected.len
    }

    fn insert(&mut self, nodes: &mut Nodes, slot: u32) {
        if self.sketch_grows && self.len() >= self.sketch.capacity() {
            // A weighted shard holds more entries than the sketch was sized for: start a
            // bigger one (the history is lost once per doubling, as in Caffeine).
            self.sketch = FrequencySketch::new(self.sketch.capacity() * 2);
            if !self.sketch_halving {
                self.sketch.disable_halving();
            }
        }
        self.sketch.increment(nodes.node(slot).hash);
        self.misses_in_sample += 1;
        nodes.push_back(&mut self.window, slot, Queue::Window);
    }

    /// A read (`hit`) or an update of the entry in `slot`.
    fn access(&mut self, nodes: &mut Nodes, slot: u32, hit: bool) {
        self.sketch.increment(nodes.node(slot).hash);
        if hit {
            self.hits_in_sample += 1;
        }
        match nodes.node(slot).queue {
            Queue::Window => nodes.move_to_back(&mut self.window, slot),
            Queue::Probation => {
                if u64::from(nodes.node(slot).weight) > self.protected_max {
                    nodes.move_to_back(&mut self.probation, slot);
                } else {
                    nodes.unlink(&mut self.probation, slot);
                    nodes.push_back(&mut self.protected, slot, Queue::Protected);
                    self.demote_from_protected(nodes);
                }
            }
            Queue::Protected => nodes.move_to_back(&mut self.protected, slot),
            queue => panic!("W-TinyLFU access to a node in {queue:?}"),
        }
    }

    /// Moves protected's eldest to probation until protected fits its share.
    fn demote_from_protected(&mut self, nodes: &mut Nodes) {
        while self.protected.weight > self.protected_max {
            let eldest = self.protected.head;
            if eldest == NIL {
                break;
            }
            nodes.unlink(&mut self.protected, eldest);
            nodes.push_back(&mut self.probation, eldest, Queue::Probation);
        }
    }

    /// Moves window overflow into probation, then evicts from main (or the candidates) until
    /// the shard fits `capacity`.
    fn evict(&mut self, nodes: &mut Nodes, capacity: u64, victims: &mut Vec<u32>) {
        // The entries leaving the window become admission candidates, at probation's newest end.
        let mut candidate = NIL;
        while self.window.weight > self.window_max {
            let eldest = self.window.head;
            if eldest == NIL {
                break;
            }
            nodes.unlink(&mut self.window, eldest);
            nodes.push_back(&mut self.probation, eldest, Queue::Probation);
            if candidate == NIL {
                candidate = eldest;
            }
        }

        let mut victim = self.probation.head;
        let mut victim_queue = Queue::Probation;
        while self.window.weight + self.probation.weight + self.protected.weight > capacity {
            // Run out of probation victims: look in protected, then in the window.
            if victim == NIL && victim_queue == Queue::Probation {
                victim_queue = Queue::Protected;
                victim = self.protected.head;
            }
            if victim == NIL && victim_queue == Queue::Protected {
                victim_queue = Queue::Window;
                victim = self.window.head;
            }
            if candidate == NIL && victim == NIL {
                break;
            }
            if candidate == NIL || victim == NIL || candidate == victim {
                // One side only (or they met): evict what there is.
                let evict = if victim != NIL { victim } else { candidate };
                if evict == victim {
                    victim = nodes.node(victim).next;
                }
                if evict == candidate {
                    candidate = nodes.node(candidate).next;
                }
                self.evict_node(nodes, evict, victims);
                continue;
            }
            let candidate_node = *nodes.node(candidate);
            let victim_node = *nodes.node(victim);
            if u64::from(candidate_node.weight) > capacity {
                // Too heavy to ever fit.
                let evict = candidate;
                candidate = candidate_node.next;
                self.evict_node(nodes, evict, victims);
                continue;
            }
            if self.admit(candidate_node.hash, victim_node.hash) {
                let evict = victim;
                victim = victim_node.next;
                self.evict_node(nodes, evict, victims);
            } else {
                let evict = candidate;
                candidate = candidate_node.next;
                self.evict_node(nodes, evict, victims);
            }
        }
    }

    fn evict_node(&mut self, nodes: &mut Nodes, slot: u32, victims: &mut Vec<u32>) {
        match nodes.node(slot).queue {
            Queue::Window => nodes.unlink(&mut self.window, slot),
            Queue::Probation => nodes.unlink(&mut self.probation, slot),
            Queue::Protected => nodes.unlink(&mut self.protected, slot),
            queue => panic!("W-TinyLFU evicting a node in {queue:?}"),
        }
        victims.push(slot);
    }

    /// Whether the candidate (leaving the window) should replace the victim (main's eldest).
    fn admit(&mut self, candidate_hash: u64, victim_hash: u64) -> bool {
        let victim_freq = self.sketch.admission_frequency(victim_hash);
        let candidate_freq = self.sketch.admission_frequency(candidate_hash);
        if candidate_freq > victim_freq {
            true
        } else if candidate_freq >= ADMIT_HASHDOS_THRESHOLD {
            self.random ^= self.random << 13;
            self.random ^= self.random >> 7;
            self.random ^= self.random << 17;
            self.random & 127 == 0
        } else {
            false
        }
    }

    /// The hill climber: once per sample period, compare the hit rate with the previous
    /// period's; keep moving the window's size the same way while it helps, turn around
    /// when it hurts, with a step that decays (and restarts after a big change in hit rate).
    fn climb(&mut self, nodes: &mut Nodes, capacity: u64) {
        if self.len() < capacity.min(self.sketch.capacity()) / 2 && self.adjustment == 0 {
            // Like Caffeine, which starts its sketch at half full: no climbing while warming.
            self.hits_in_sample = 0;
            self.misses_in_sample = 0;
            self.previous_hit_rate = 0.0;
            return;
        }
        let requests = self.hits_in_sample + self.misses_in_sample;
        // A sample ends every CLIMB_EVERY_RESETS halvings of the sketch (see the constant).
        let resets = self.sketch.resets();
        if resets >= self.resets_at_last_sample + CLIMB_EVERY_RESETS && requests > 0 {
            self.resets_at_last_sample = resets;
            let hit_rate = self.hits_in_sample as f64 / requests as f64;
            let change = hit_rate - self.previous_hit_rate;
            let amount = if change >= 0.0 { self.step_size } else { -self.step_size };
            self.step_size = if change.abs() >= HILL_CLIMBER_RESTART_THRESHOLD {
                HILL_CLIMBER_STEP_PERCENT * capacity as f64 * if amount >= 0.0 { 1.0 } else { -1.0 }
            } else {
                HILL_CLIMBER_STEP_DECAY_RATE * amount
            };
            self.previous_hit_rate = hit_rate;
            self.adjustment = amount as i64;

            self.hits_in_sample = 0;
            self.misses_in_sample = 0;
        }
        self.demote_from_protected(nodes);
        if self.adjustment > 0 {
            self.increase_window(nodes);
        } else if self.adjustment < 0 {
            self.decrease_window(nodes);
        }
    }

    /// Moves up to `adjustment` of capacity from main to the window, taking main's eldest.
    fn increase_window(&mut self, nodes: &mut Nodes) {
        if self.protected_max == 0 {
            self.adjustment = 0;
            return;
        }
        let mut quota = (self.adjustment as u64).min(self.protected_max);
        self.protected_max -= quota;
        self.window_max += quota;
        self.demote_from_protected(nodes);
        for _ in 0..QUEUE_TRANSFER_THRESHOLD {
            let (slot, from_probation) =
                if self.probation.head != NIL && u64::from(nodes.node(self.probation.head).weight) <= quota {
                    (self.probation.head, true)
                } else {
                    (self.protected.head, false)
                };
            if slot == NIL || u64::from(nodes.node(slot).weight) > quota {
                break;
            }
            quota -= u64::from(nodes.node(slot).weight);
            if from_probation {
                nodes.unlink(&mut self.probation, slot);
            } else {
                nodes.unlink(&mut self.protected, slot);
            }
            nodes.push_back(&mut self.window, slot, Queue::Window);
        }
        // What could not move yet stays owed to the next climb.
        self.protected_max += quota;
        self.window_max -= quota;
        self.adjustment = quota as i64;
    }

    /// Moves up to `-adjustment` of capacity from the window to main. The window may shrink
    /// to nothing (Caffeine keeps one entry): on a loop every window slot is a sure miss, and
    /// at 512 entries the 1% window alone costs half a point of hits.
    fn decrease_window(&mut self, nodes: &mut Nodes) {
        if self.window_max == 0 {
            self.adjustment = 0;
            return;
        }
        let mut quota = self.adjustment.unsigned_abs().min(self.window_max);
        self.protected_max += quota;
        self.window_max -= quota;
        for _ in 0..QUEUE_TRANSFER_THRESHOLD {
            let slot = self.window.head;
            if slot == NIL || u64::from(nodes.node(slot).weight) > quota {
                break;
            }
            quota -= u64::from(nodes.node(slot).weight);
            nodes.unlink(&mut self.window, slot);
            nodes.push_back(&mut self.probation, slot, Queue::Probation);
        }
        self.protected_max -= quota;
        self.window_max += quota;
        self.adjustment = -(quota as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A replay of `keys` on a bare policy, read-through; slots are the keys themselves.
    struct Harness {
        policy: EvictionPolicy,
        resident: Vec<bool>,
        victims: Vec<u32>,
        hits: u64,
        resident_count: u64,
    }

    impl Harness {
        fn new(policy: Policy, capacity: u64, keys: usize) -> Self {
            let config = PolicyConfig { policy, capacity, entries_hint: Some(capacity), sketch_halving: true };
            Harness {
                policy: EvictionPolicy::new(config),
                resident: vec![false; keys],
                victims: Vec::new(),
                hits: 0,
                resident_count: 0,
            }
        }

        fn hash(key: u32) -> u64 {
            u64::from(key).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29) ^ 0x5bd1_e995
        }

        fn request(&mut self, key: u32) {
            if self.resident[key as usize] {
                self.hits += 1;
                self.policy.access(key);
            } else {
                self.resident[key as usize] = true;
                self.resident_count += 1;
                self.policy.insert(key, Self::hash(key), 1, &mut self.victims);
                for victim in self.victims.drain(..) {
                    assert!(self.resident[victim as usize], "evicted {victim}, which was not resident");
                    self.resident[victim as usize] = false;
                    self.resident_count -= 1;
                }
            }
            assert!(self.policy.weighted_size() <= self.policy.capacity);
            assert_eq!(self.policy.len(), self.resident_count);
        }
    }

    #[test]
    fn every_policy_keeps_its_lists_consistent_with_weights() {
        for policy in [Policy::WTinyLfu, Policy::S3Fifo, Policy::Lru] {
            let mut policy_state =
                EvictionPolicy::new(PolicyConfig { policy, capacity: 50, entries_hint: None, sketch_halving: true });
            let mut rng = fastrand::Rng::with_seed(11);
            let mut weights: Vec<Option<u32>> = vec![None; 200];
            let mut victims = Vec::new();
            for _ in 0..20_000 {
                let slot = rng.u32(0..200);
                match (weights[slot as usize], rng.u8(0..4)) {
                    (None, _) => {
                        let weight = rng.u32(0..8);
                        weights[slot as usize] = Some(weight);
                        policy_state.insert(slot, Harness::hash(slot), weight, &mut victims);
                    }
                    (Some(_), 0) => {
                        policy_state.remove(slot);
                        weights[slot as usize] = None;
                    }
                    (Some(_), 1) => {
                        let weight = rng.u32(0..8);
                        weights[slot as usize] = Some(weight);
                        policy_state.update(slot, weight, &mut victims);
                    }
                    (Some(_), _) => policy_state.access(slot),
                }
                for victim in victims.drain(..) {
                    assert!(weights[victim as usize].take().is_some(), "{policy:?} evicted absent slot {victim}");
                }
                let expected: u64 = weights.iter().flatten().map(|w| u64::from(*w)).sum();
                assert_eq!(policy_state.weighted_size(), expected, "{policy:?}");
                assert!(expected <= 50, "{policy:?} over capacity: {expected}");
            }
        }
    }

    #[test]
    fn w_tinylfu_keeps_a_hot_set_through_a_scan() {
        let mut harness = Harness::new(Policy::WTinyLfu, 100, 20_000);
        for _ in 0..20 {
            for key in 0..80 {
                harness.request(key);
            }
        }
        for key in 1_000..11_000 {
            harness.request(key); // a one-time scan of 10000 keys
        }
        let kept = (0..80).filter(|key| harness.resident[*key as usize]).count();
        assert!(kept >= 75, "the scan flushed the hot set: {kept} of 80 left");

        let mut lru = Harness::new(Policy::Lru, 100, 20_000);
        for key in (0..80).chain(1_000..11_000) {
            lru.request(key);
        }
        assert_eq!((0..80).filter(|key| lru.resident[*key as usize]).count(), 0, "LRU, the baseline, loses it all");
    }

    #[test]
    fn the_hill_climber_grows_the_window_for_recency_and_shrinks_it_for_a_loop() {
        // Recency: each key is read a few times within a short span, then never again. Only a
        // big window catches the repeats; frequency history is useless.
        let mut recency = Harness::new(Policy::WTinyLfu, 200, 400_000);
        let initial = recency.policy.window_capacity();
        for base in 0..150_000u32 {
            recency.request(base);
            recency.request(base.saturating_sub(150));
        }
        let grown = recency.policy.window_capacity();
        assert!(grown > initial.map(|w| w + 20), "window {initial:?} -> {grown:?} on a recency trace");

        // A loop bigger than the cache: the window is pure loss, so it goes.
        let mut looping = Harness::new(Policy::WTinyLfu, 200, 1_000);
        for _ in 0..300 {
            for key in 0..500 {
                looping.request(key);
            }
        }
        assert_eq!(looping.policy.window_capacity(), Some(0));
        assert!(looping.hits as f64 / 150_000.0 > 0.35, "loop hit ratio {}", looping.hits as f64 / 150_000.0);
    }

    #[test]
    fn s3fifo_sends_ghost_hits_to_main_and_keeps_reused_entries() {
        let mut harness = Harness::new(Policy::S3Fifo, 10, 1_000);
        // Key 0 read twice while in small: promoted to main on the next eviction from small.
        harness.request(0);
        harness.request(0);
        harness.request(0);
        for key in 1..=30 {
            harness.request(key);
        }
        assert!(harness.resident[0], "a reused entry moved to main and survives one-hit wonders");
        // Key 30 is in small; key 21 was evicted from small into the ghost.
        assert!(!harness.resident[21]);
        harness.request(21);
        let Algorithm::S3Fifo(s3) = &harness.policy.algorithm else { unreachable!() };
        assert_eq!(harness.policy.nodes.node(21).queue, Queue::Main, "a ghost hit enters main");
        assert!(s3.small.weight <= 10);
    }
}
