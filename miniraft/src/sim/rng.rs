//! The simulator's only source of randomness: a seeded xoshiro256** generator, and a small
//! 64-bit hash for trace digests.
//!
//! Everything random in a simulated run (message delays, which node crashes, what a client
//! does next) is drawn from one [`SimRng`] seeded by the run's seed, in the order the events
//! happen. So one seed is one run, exactly, on any machine: no OS randomness, no clock, no
//! `HashMap` iteration order. What it leaves out: cryptographic quality (not needed) and
//! streams per component (one stream is simpler, and still deterministic because the event
//! loop is).

/// xoshiro256** (Blackman and Vigna, 2018), seeded through splitmix64 as its authors
/// recommend, so that nearby seeds (1, 2, 3...) give unrelated streams.
#[derive(Clone, Debug)]
pub struct SimRng {
    /// The generator's 256 bits of state; never all zero (splitmix64 cannot produce that
    /// from any seed in four consecutive outputs).
    state: [u64; 4],
}

/// One step of splitmix64: the seeding function, also a decent 64-bit mixer on its own.
/// The mixing is the core's (`raft/election.rs`, which draws election timeouts with it).
pub fn splitmix64(x: &mut u64) -> u64 {
    let output = crate::raft::splitmix64(*x);
    *x = x.wrapping_add(crate::raft::SPLITMIX64_GAMMA);
    output
}

impl SimRng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> SimRng {
        let mut x = seed;
        let state = [splitmix64(&mut x), splitmix64(&mut x), splitmix64(&mut x), splitmix64(&mut x)];
        assert!(state.iter().any(|&word| word != 0), "xoshiro state must not be all zero");
        SimRng { state }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A uniform number in `0..n` (`n` > 0), by Lemire's multiply-shift: the bias is below
    /// 2^-64 * n, which no simulation can notice, and it costs no division.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0) has no possible value");
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A uniform number in `low..=high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high, "empty range {low}..={high}");
        low + self.below(high - low + 1)
    }

    /// True with probability `per_million` / 1,000,000. Integer odds, so that no float
    /// rounding differs between machines.
    pub fn chance(&mut self, per_million: u32) -> bool {
        self.below(1_000_000) < u64::from(per_million)
    }

    /// A uniformly chosen element, or None for an empty slice.
    pub fn choose<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            Some(&items[self.below(items.len() as u64) as usize])
        }
    }

    /// Shuffles in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// A 64-bit running digest (FNV-1a over bytes, with splitmix64 finishing on words): the
/// trace hash of a run and the digests the invariants compare entries by. Not a
/// cryptographic hash: it only has to make accidental equality unlikely.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest(pub u64);

impl Default for Digest {
    fn default() -> Digest {
        Digest(0xCBF2_9CE4_8422_2325)
    }
}

impl Digest {
    /// Mixes in bytes.
    pub fn bytes(mut self, bytes: &[u8]) -> Digest {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01B3);
        }
        // The length too, so that ("ab", "c") and ("a", "bc") differ.
        self.word(bytes.len() as u64)
    }

    /// Mixes in one word.
    pub fn word(mut self, word: u64) -> Digest {
        let mut x = self.0 ^ word;
        self.0 = splitmix64(&mut x);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_seed_is_one_stream() {
        let mut a = SimRng::new(42);
        let mut b = SimRng::new(42);
        let mut c = SimRng::new(43);
        let a: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let b: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let c: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = SimRng::new(7);
        let mut seen = [0u32; 5];
        for _ in 0..10_000 {
            let x = rng.below(5);
            seen[x as usize] += 1;
        }
        // Each bucket expects 2000; a broken reduction (say, always 0) fails this.
        assert!(seen.iter().all(|&count| (1700..2300).contains(&count)), "{seen:?}");
        assert_eq!(rng.range(3, 3), 3);
    }

    #[test]
    fn chance_matches_its_odds() {
        let mut rng = SimRng::new(9);
        let hits = (0..100_000).filter(|_| rng.chance(250_000)).count();
        assert!((23_500..26_500).contains(&hits), "{hits}");
        assert!(!(0..1000).any(|_| rng.chance(0)));
        assert!((0..1000).all(|_| rng.chance(1_000_000)));
    }

    #[test]
    fn digests_separate_field_boundaries() {
        let ab_c = Digest::default().bytes(b"ab").bytes(b"c");
        let a_bc = Digest::default().bytes(b"a").bytes(b"bc");
        assert_ne!(ab_c, a_bc);
        assert_eq!(Digest::default().word(1), Digest::default().word(1));
    }
}
