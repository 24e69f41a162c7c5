//! A seeded Zipf key generator: the synthetic trace of `mini bench cache` and the key
//! sequence of the criterion throughput benchmark.
//!
//! Key `k` (ranked 0 to n-1) is drawn with probability proportional to 1/(k+1)^s. The
//! sampler keeps the cumulative distribution as a table of n floats and draws by binary
//! search on a uniform number: exact, O(log n) a draw, and 800 KB for 100k keys. The
//! rejection-inversion method real generators use (Hörmann and Derflinger) needs no
//! table, which matters at billions of keys, not at the hundred thousand used here.
//!
//! The random numbers come from fastrand's seeded generator, so a seed names a trace:
//! the same seed gives the same keys on every machine and in every run.
//!
//! Left out: scrambling the ranks (key 0 is the hottest). Every cache compared hashes
//! its keys, so which integer is hot does not matter to any of them.

/// Keys a generator may draw from: the table costs 8 bytes a key.
pub const MAX_KEYS: u64 = 100_000_000;

/// A Zipf distribution over the keys 0..n.
#[derive(Debug, Clone)]
pub struct Zipf {
    /// `cumulative[k]` is P(key <= k); the last entry is 1.
    cumulative: Vec<f64>,
}

/// Why a distribution could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ZipfError {
    #[error("a Zipf distribution needs between 1 and {MAX_KEYS} keys, not {0}")]
    Keys(u64),
    #[error("a Zipf exponent must be a finite number >= 0, not {0}")]
    Exponent(f64),
}

impl Zipf {
    /// The distribution over `keys` keys with exponent `s` (0 is uniform; 0.9 and 1.0
    /// are the usual web and cache figures).
    pub fn new(keys: u64, s: f64) -> Result<Zipf, ZipfError> {
        if keys == 0 || keys > MAX_KEYS {
            return Err(ZipfError::Keys(keys));
        }
        if !s.is_finite() || s < 0.0 {
            return Err(ZipfError::Exponent(s));
        }
        let mut cumulative = Vec::with_capacity(keys as usize);
        let mut total = 0.0;
        for rank in 1..=keys {
            total += (rank as f64).powf(-s);
            cumulative.push(total);
        }
        for c in &mut cumulative {
            *c /= total;
        }
        // Rounding may leave the last entry a hair under 1; a draw of 0.9999999 must
        // still find a key.
        if let Some(last) = cumulative.last_mut() {
            *last = 1.0;
        }
        debug_assert!(cumulative.windows(2).all(|w| w[0] <= w[1]), "a CDF never decreases");
        Ok(Zipf { cumulative })
    }

    pub fn keys(&self) -> u64 {
        self.cumulative.len() as u64
    }

    /// One key, drawn with `rng`.
    pub fn sample(&self, rng: &mut fastrand::Rng) -> u64 {
        let u = rng.f64();
        // The first key whose cumulative probability exceeds u.
        let key = self.cumulative.partition_point(|&c| c <= u);
        assert!(key < self.cumulative.len(), "u = {u} is below 1, and the last entry is 1");
        key as u64
    }

    /// `requests` keys drawn from a generator seeded with `seed`.
    pub fn trace(&self, requests: usize, seed: u64) -> Vec<u64> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..requests).map(|_| self.sample(&mut rng)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_empty_and_nonsense_distributions() {
        assert_eq!(Zipf::new(0, 1.0).err(), Some(ZipfError::Keys(0)));
        assert_eq!(Zipf::new(MAX_KEYS + 1, 1.0).err(), Some(ZipfError::Keys(MAX_KEYS + 1)));
        assert!(Zipf::new(10, -0.5).is_err() && Zipf::new(10, f64::NAN).is_err());
    }

    #[test]
    fn a_seed_names_a_trace() {
        let zipf = Zipf::new(1000, 0.9).expect("valid");
        assert_eq!(zipf.trace(500, 7), zipf.trace(500, 7));
        assert_ne!(zipf.trace(500, 7), zipf.trace(500, 8));
        assert!(zipf.trace(10_000, 1).iter().all(|&k| k < 1000));
    }

    /// The frequencies drawn follow 1/k^s (with s = 1 over 100 keys, key 0 comes up
    /// with probability 1/H(100) ≈ 0.19, key 99 with 0.0019), checked against the
    /// exact probabilities; a uniform sampler (s = 0) fails the same check.
    #[test]
    fn draws_follow_the_distribution() {
        let keys = 100;
        let draws = 200_000;
        let check = |zipf: &Zipf, s: f64| {
            let mut counts = vec![0u64; keys];
            for k in zipf.trace(draws, 42) {
                counts[k as usize] += 1;
            }
            let norm: f64 = (1..=keys).map(|r| (r as f64).powf(-s)).sum();
            [0usize, 1, 9, 99].iter().all(|&k| {
                let expected = draws as f64 * ((k + 1) as f64).powf(-s) / norm;
                // Five standard deviations of a binomial count.
                (counts[k] as f64 - expected).abs() <= 5.0 * expected.sqrt() + 1.0
            })
        };
        let zipf = Zipf::new(keys as u64, 1.0).expect("valid");
        assert!(check(&zipf, 1.0), "Zipf(1.0) draws match 1/k");
        let uniform = Zipf::new(keys as u64, 0.0).expect("valid");
        assert!(!check(&uniform, 1.0), "the check can fail: uniform draws do not match 1/k");
        assert!(check(&uniform, 0.0));
    }
}
