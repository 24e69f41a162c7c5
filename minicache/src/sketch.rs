//! The frequency sketch behind W-TinyLFU's admission: "how often was this key seen lately?"
//!
//! A count-min sketch of 4-bit counters (16 to a `u64` word, four counters per key), in front
//! of it a *doorkeeper* Bloom filter, and periodic *halving* so that old popularity fades:
//!
//! - **Count-min**: each key maps to one counter in each of four rows; the estimate is the
//!   smallest of the four. Collisions only ever add, so an estimate never under-counts (until
//!   a counter saturates at 15, or a halving ages everything).
//! - **Doorkeeper**: the first sighting of a key in a sample period only sets its bits in a
//!   Bloom filter; the counters are touched from the second sighting on. One-hit wonders, which
//!   are most keys in most traces, then never pollute the counters (the TinyLFU paper's idea).
//!   The estimate adds one for a key the doorkeeper holds (admission uses a variant; see
//!   [`FrequencySketch::admission_frequency`]).
//! - **Halving**: after `sample_size` additions to the counters (10x the sketch's capacity, as
//!   in the paper and Caffeine; first sightings absorbed by the doorkeeper do not count) every
//!   counter is halved and the doorkeeper cleared. Without this a key that was
//!   hot an hour ago would beat today's hot keys at admission forever.
//!
//! Left out: Caffeine's cache-line-blocked layout (one 64-byte block per key, fewer cache
//! misses) and its SIMD-friendly reset; this is the original 2015 layout, easier to read.
//! The sketch knows nothing of keys, only of their 64-bit hashes.

/// Seeds that make the four row indices of one hash independent (odd 64-bit constants, from
/// Caffeine's original sketch).
const ROW_SEEDS: [u64; 4] =
    [0xc3a5_c85c_97cb_3127, 0xb492_b66f_be98_f273, 0x9ae1_6a3b_2f90_404f, 0xcbf2_9ce4_8422_2325];

/// Keeps the low three bits of every 4-bit counter: the mask applied after a right shift
/// halves sixteen counters at once.
const RESET_MASK: u64 = 0x7777_7777_7777_7777;

/// The low bit of every 4-bit counter: counts the odd counters that a halving rounds down.
const ONE_MASK: u64 = 0x1111_1111_1111_1111;

/// Words (16 counters each) per key of capacity. Caffeine uses one; two halve the collisions
/// for 8 more bytes per entry, which on the LIRS loop trace at 256 entries is the difference
/// between 24.3% and 25.2% hits (fewer false "this newcomer is hotter" verdicts).
const WORDS_PER_KEY: u64 = 2;

/// A sample period is this many additions per key of capacity (the TinyLFU paper's W = 10C).
const SAMPLE_MULTIPLIER: u64 = 10;

/// Doorkeeper bits per key of capacity. A period can see up to 10x capacity distinct keys
/// (a scan); 64 bits per key keeps false positives below ~10% even then and near zero for
/// a cache-friendly trace (16 bits measured 0.3-0.5 points worse on multi1 and loop).
const DOORKEEPER_BITS_PER_KEY: u64 = 64;

/// The most keys a sketch is sized for (2^22: 64 MiB of counters, 32 MiB of doorkeeper): a
/// cache of a billion entries does not need a sketch of a billion keys to rank them.
const MAX_SKETCH_ENTRIES: u64 = 1 << 22;

/// A count-min sketch with a doorkeeper and periodic halving, sized for `capacity` keys.
#[derive(Debug, Clone)]
pub(crate) struct FrequencySketch {
    /// 16 counters of 4 bits per word; a power-of-two length so that a mask picks a word.
    table: Vec<u64>,
    /// `table.len() - 1`.
    table_mask: u64,
    /// The Bloom filter that absorbs each key's first sighting in a sample period.
    doorkeeper: Doorkeeper,
    /// Additions since the last halving.
    additions: u64,
    /// Additions after which counters are halved: 10x the capacity the sketch was sized for.
    sample_size: u64,
    /// The number of keys the sketch was sized for.
    capacity: u64,
    /// `false` only in the deliberately broken variant a test uses to show that without
    /// halving a once-hot key keeps winning admission forever.
    halving: bool,
    /// Halvings so far (for tests and the replay's report).
    resets: u64,
}

impl FrequencySketch {
    /// A sketch for about `capacity` distinct keys (clamped to `[16, MAX_SKETCH_ENTRIES]`).
    pub(crate) fn new(capacity: u64) -> Self {
        let capacity = capacity.clamp(16, MAX_SKETCH_ENTRIES);
        // One word (16 counters) per expected key gives four counters per key in each row's
        // share, the width the TinyLFU paper found enough for a ~1% error.
        let words = capacity.next_power_of_two() * WORDS_PER_KEY;
        FrequencySketch {
            table: vec![0; words as usize],
            table_mask: words - 1,
            doorkeeper: Doorkeeper::new(capacity),
            additions: 0,
            sample_size: capacity.saturating_mul(SAMPLE_MULTIPLIER),
            capacity,
            halving: true,
            resets: 0,
        }
    }

    /// Turns halving off: the broken variant that tests use to show aging matters.
    pub(crate) fn disable_halving(&mut self) {
        self.halving = false;
    }

    /// The number of keys this sketch was sized for.
    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// How many halvings have happened.
    #[allow(dead_code)] // read by the unit tests and, through the cache, by the replay
    pub(crate) fn resets(&self) -> u64 {
        self.resets
    }

    /// Records one sighting of `hash`.
    pub(crate) fn increment(&mut self, hash: u64) {
        let added = if self.doorkeeper.insert(hash) {
            // First sighting this period: the doorkeeper holds it, the counters stay clean.
            // It does not count toward the sample period either: the period measures what
            // the counters took in. Counting one-hit wonders would make a heavy-tailed trace
            // (Zipf over many keys) age its counters several times faster than a loop of the
            // same length: measured on Zipf(0.9) over 100k keys, 38.6% hits at 500 entries
            // counting them, 40.3% not (quick_cache: 40.0).
            false
        } else {
            let start = ((hash & 3) << 2) as u32;
            let mut added = false;
            for (row, seed) in ROW_SEEDS.iter().enumerate() {
                added |= self.increment_at(self.index_of(hash, *seed), start + row as u32);
            }
            added
        };
        if added {
            self.additions += 1;
            if self.additions >= self.sample_size && self.halving {
                self.reset();
            }
        }
    }

    /// The estimated number of sightings of `hash` since the last halving, plus what the
    /// halvings left of earlier ones (0 to 16). The classic TinyLFU estimate, counters plus
    /// the doorkeeper bit: it never under-counts while no counter has saturated and no
    /// halving has happened.
    #[cfg_attr(not(test), allow(dead_code))] // admission uses `admission_frequency`; tests use both
    pub(crate) fn frequency(&self, hash: u64) -> u32 {
        self.counters_minimum(hash) + u32::from(self.doorkeeper.contains(hash))
    }

    /// What W-TinyLFU's admission compares: the counters, or 1 for a key only the
    /// doorkeeper has seen; `frequency` without the doorkeeper's +1 for keys the counters
    /// already know (so at most one less than `frequency`).
    ///
    /// Why not `frequency`: its +1 goes to every key seen since the last halving (the
    /// doorkeeper was cleared then) and to none of the keys that are not yet seen again. On
    /// a loop the admission candidate has just been seen and the victim (main's eldest) is
    /// the next one due, so the +1 lets nearly every newcomer evict the resident that was
    /// about to hit: measured on the LIRS loop trace at 256 entries, 21% hits comparing
    /// `frequency`, 25% (the static optimum) comparing this. The doorkeeper still does its
    /// job: a one-hit wonder scores 1 and never touches the counters.
    pub(crate) fn admission_frequency(&self, hash: u64) -> u32 {
        self.counters_minimum(hash).max(u32::from(self.doorkeeper.contains(hash)))
    }

    /// The smallest of the key's four counters: the count-min estimate without the doorkeeper.
    fn counters_minimum(&self, hash: u64) -> u32 {
        let start = ((hash & 3) << 2) as u32;
        let mut minimum = u32::MAX;
        for (row, seed) in ROW_SEEDS.iter().enumerate() {
            let word = self.table[self.index_of(hash, *seed)];
            minimum = minimum.min(((word >> ((start + row as u32) << 2)) & 0xf) as u32);
        }
        minimum
    }

    /// The word of one row for `hash`.
    fn index_of(&self, hash: u64, seed: u64) -> usize {
        let mut h = hash.wrapping_add(seed).wrapping_mul(seed);
        h ^= h >> 32;
        (h & self.table_mask) as usize
    }

    /// Adds one to counter `counter` (0..16) of word `index` unless it is saturated.
    fn increment_at(&mut self, index: usize, counter: u32) -> bool {
        let offset = counter << 2;
        let mask = 0xf_u64 << offset;
        let word = &mut self.table[index];
        if *word & mask != mask {
            *word += 1 << offset;
            true
        } else {
            false
        }
    }

    /// Halves every counter and clears the doorkeeper: the aging step.
    fn reset(&mut self) {
        let mut odd = 0u64;
        for word in &mut self.table {
            odd += u64::from((*word & ONE_MASK).count_ones());
            *word = (*word >> 1) & RESET_MASK;
        }
        self.doorkeeper.clear();
        // Halving rounds each odd counter down by a half: take that off the count too (the
        // correction Caffeine makes), so the next period is about as long as the first.
        self.additions = (self.additions / 2).saturating_sub(odd / 4);
        self.resets += 1;
    }
}

/// A Bloom filter of three probes per key, about 16 bits per key of capacity.
#[derive(Debug, Clone)]
pub(crate) struct Doorkeeper {
    /// The bits, 64 to a word; a power-of-two number of bits.
    words: Vec<u64>,
    /// Number of bits - 1.
    bit_mask: u64,
}

impl Doorkeeper {
    /// A filter sized for about `capacity` keys per sample period. A period sees up to 10x
    /// capacity additions but far fewer distinct keys in a cache-friendly trace; 16 bits per
    /// key keeps false positives at a few percent for twice the capacity in distinct keys.
    pub(crate) fn new(capacity: u64) -> Self {
        let bits = capacity.max(16).next_power_of_two().saturating_mul(DOORKEEPER_BITS_PER_KEY);
        Doorkeeper { words: vec![0; (bits / 64) as usize], bit_mask: bits - 1 }
    }

    /// The three bit positions of `hash` (double hashing: h1 + i*h2).
    fn probes(&self, hash: u64) -> [u64; 3] {
        let h1 = hash;
        let h2 = hash.rotate_left(32).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        [h1 & self.bit_mask, h1.wrapping_add(h2) & self.bit_mask, h1.wrapping_add(h2 << 1) & self.bit_mask]
    }

    /// Sets the bits of `hash`; `true` if at least one was clear (the key looked new).
    pub(crate) fn insert(&mut self, hash: u64) -> bool {
        let mut was_new = false;
        for bit in self.probes(hash) {
            let word = &mut self.words[(bit / 64) as usize];
            let mask = 1u64 << (bit % 64);
            was_new |= *word & mask == 0;
            *word |= mask;
        }
        was_new
    }

    /// Whether all bits of `hash` are set (it may be a false positive, never a false negative).
    pub(crate) fn contains(&self, hash: u64) -> bool {
        self.probes(hash).iter().all(|bit| self.words[(bit / 64) as usize] & (1u64 << (bit % 64)) != 0)
    }

    /// Forgets every key.
    pub(crate) fn clear(&mut self) {
        self.words.fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A well-mixed hash of a small integer (what the cache hands the sketch).
    fn spread(key: u64) -> u64 {
        let mut h = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }

    #[test]
    fn estimates_never_under_count_before_saturation_or_halving() {
        let mut sketch = FrequencySketch::new(512);
        sketch.disable_halving();
        let mut truth: HashMap<u64, u32> = HashMap::new();
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..4_000 {
            // A skewed key stream: a few keys often, many keys rarely.
            let key = if rng.bool() { rng.u64(0..20) } else { rng.u64(0..5_000) };
            sketch.increment(spread(key));
            *truth.entry(key).or_default() += 1;
        }
        for (key, count) in truth {
            let estimate = sketch.frequency(spread(key));
            assert!(estimate >= count.min(16), "key {key}: estimate {estimate} < true count {count}");
        }
    }

    #[test]
    fn counters_saturate_at_fifteen_plus_the_doorkeeper_bit() {
        let mut sketch = FrequencySketch::new(64);
        sketch.disable_halving();
        for _ in 0..100 {
            sketch.increment(spread(1));
        }
        assert_eq!(sketch.frequency(spread(1)), 16);
    }

    #[test]
    fn the_first_sighting_only_reaches_the_doorkeeper() {
        let mut sketch = FrequencySketch::new(64);
        sketch.increment(spread(3));
        assert_eq!(sketch.frequency(spread(3)), 1, "doorkeeper bit only");
        let start = ((spread(3) & 3) << 2) as u32;
        let in_counters = ROW_SEEDS
            .iter()
            .enumerate()
            .map(|(row, seed)| (sketch.table[sketch.index_of(spread(3), *seed)] >> ((start + row as u32) << 2)) & 0xf)
            .min();
        assert_eq!(in_counters, Some(0), "a one-hit wonder must leave the counters clean");
        sketch.increment(spread(3));
        assert_eq!(sketch.frequency(spread(3)), 2);
    }

    #[test]
    fn halving_ages_counts_and_clears_the_doorkeeper() {
        let mut sketch = FrequencySketch::new(16);
        let hot = spread(42);
        for _ in 0..15 {
            sketch.increment(hot);
        }
        let before = sketch.frequency(hot);
        assert!(before >= 15);
        // Fill the rest of the sample period with keys seen twice (first sightings only
        // reach the doorkeeper and do not count toward the period) until a halving happens.
        let mut key = 1_000;
        while sketch.resets() == 0 {
            assert!(key < 100_000, "no halving after {key} keys: the period never ends");
            sketch.increment(spread(key));
            sketch.increment(spread(key));
            key += 1;
        }
        let after = sketch.frequency(hot);
        assert!(after <= before / 2 + 1, "halving must at least halve: {before} -> {after}");
        assert!(!sketch.doorkeeper.contains(hot) || after > 0, "the doorkeeper was cleared");
        assert!(sketch.additions < sketch.sample_size / 2 + 1);
    }

    #[test]
    fn one_hit_wonders_do_not_end_the_sample_period() {
        let mut sketch = FrequencySketch::new(1_024);
        for key in 0..12_000 {
            sketch.increment(spread(1_000_000 + key));
        }
        // 12000 distinct keys against a 10240-addition period: had first sightings counted,
        // a halving. Only doorkeeper false positives (a few percent) reach the counters.
        assert_eq!(sketch.resets(), 0, "first sightings ended a sample period");
        assert!(sketch.additions < 1_000, "{} additions from first sightings", sketch.additions);
    }

    #[test]
    fn admission_frequency_drops_only_the_doorkeeper_bonus() {
        let mut sketch = FrequencySketch::new(64);
        sketch.disable_halving();
        let key = spread(9);
        assert_eq!((sketch.frequency(key), sketch.admission_frequency(key)), (0, 0));
        sketch.increment(key);
        assert_eq!((sketch.frequency(key), sketch.admission_frequency(key)), (1, 1), "a one-hit wonder scores 1");
        for _ in 0..4 {
            sketch.increment(key);
        }
        assert_eq!((sketch.frequency(key), sketch.admission_frequency(key)), (5, 4));
    }

    #[test]
    fn without_halving_a_stale_key_keeps_its_count() {
        let mut sketch = FrequencySketch::new(16);
        sketch.disable_halving();
        let hot = spread(42);
        for _ in 0..15 {
            sketch.increment(hot);
        }
        for key in 0..10_000 {
            sketch.increment(spread(10_000 + key));
            sketch.increment(spread(10_000 + key));
        }
        assert_eq!(sketch.resets(), 0);
        assert!(sketch.frequency(hot) >= 15);
    }

    #[test]
    fn doorkeeper_has_no_false_negatives_and_few_false_positives() {
        let mut doorkeeper = Doorkeeper::new(1_000);
        for key in 0..1_000 {
            doorkeeper.insert(spread(key));
        }
        assert!((0..1_000).all(|key| doorkeeper.contains(spread(key))));
        let false_positives = (1_000..11_000).filter(|key| doorkeeper.contains(spread(*key))).count();
        assert!(false_positives < 200, "{false_positives} false positives in 10000 (expected ~0.5%)");
        doorkeeper.clear();
        assert!((0..1_000).all(|key| !doorkeeper.contains(spread(key))));
    }
}
