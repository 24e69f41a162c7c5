//! Produce latencies, counted in a fixed-size histogram instead of kept one by one.
//!
//! A run acknowledges millions of records, and Redis acknowledges a thousand of them
//! with one pipeline reply: a histogram takes both in its stride (`record(latency,
//! count)`), costs the same 30 KiB whatever the run's size, and never allocates in a
//! producer's hot loop. The price is precision: a value is known to within 1/64 of
//! itself (1.6%), the same trade HdrHistogram makes with two significant digits.
//! Percentiles are reported as the upper edge of their bucket, so they never flatter.

/// Bits of sub-bucket per power of two: 2^6 = 64 buckets between 2^k and 2^(k+1).
const SUB_BITS: u32 = 6;
/// Buckets per power of two.
const SUB: usize = 1 << SUB_BITS;
/// Enough buckets for every `u64` nanosecond value: exact below [`SUB`], then one row of
/// [`SUB`] buckets for each power of two from 2^6 to 2^63.
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

/// Latencies in nanoseconds.
#[derive(Clone)]
pub struct Histogram {
    /// How many values fell into each bucket; see [`bucket`] for the layout.
    counts: Vec<u64>,
    /// The sum of `counts`: how many values were recorded.
    total: u64,
    /// The largest value recorded, exactly: the top percentile is capped by it, so a
    /// bucket's width never makes p99 exceed the worst latency seen.
    max: u64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram { counts: vec![0; BUCKETS], total: 0, max: 0 }
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram").field("total", &self.total).field("max", &self.max).finish()
    }
}

/// The bucket of `value`: exact below 64, then 64 buckets per power of two.
fn bucket(value: u64) -> usize {
    if value < SUB as u64 {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros(); // >= SUB_BITS here
    let shift = exponent - SUB_BITS;
    let mantissa = (value >> shift) as usize & (SUB - 1);
    ((shift as usize + 1) << SUB_BITS) | mantissa
}

/// The largest value that lands in bucket `index`.
fn upper_edge(index: usize) -> u64 {
    if index < SUB {
        return index as u64;
    }
    let shift = (index >> SUB_BITS) - 1;
    let lowest = ((SUB + (index & (SUB - 1))) as u64) << shift;
    lowest + ((1u64 << shift) - 1)
}

impl Histogram {
    /// Counts `count` records that each took `nanos`.
    pub fn record(&mut self, nanos: u64, count: u64) {
        if count == 0 {
            return;
        }
        self.counts[bucket(nanos)] += count;
        self.total += count;
        self.max = self.max.max(nanos);
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `q`-quantile (0.99 for p99) in nanoseconds, `None` when nothing was recorded.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        assert!((0.0..=1.0).contains(&q), "a quantile is between 0 and 1, got {q}");
        if self.total == 0 {
            return None;
        }
        // The smallest value with at least q of all values at or below it.
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(upper_edge(index).min(self.max));
            }
        }
        unreachable!("rank {rank} is at most the total {}", self.total)
    }

    /// The largest value recorded, `None` when nothing was.
    pub fn max(&self) -> Option<u64> {
        (self.total > 0).then_some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_within_one_sixty_fourth() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(63), 63);
        assert_eq!(bucket(64), 64);
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        let mut previous = 0;
        let mut value = 1u64;
        while value < u64::MAX / 3 {
            let b = bucket(value);
            assert!(b == previous || b == previous + 1, "bucket of {value} jumps from {previous} to {b}");
            assert!(upper_edge(b) >= value, "{value} above its bucket's edge {}", upper_edge(b));
            assert!((upper_edge(b) - value) as f64 <= value as f64 / 64.0, "{value}: edge {}", upper_edge(b));
            assert_eq!(bucket(upper_edge(b)), b);
            previous = b;
            value += (value / 128).max(1); // under a bucket's width: every bucket visited, not all of u64
        }
    }

    #[test]
    fn quantiles_of_a_uniform_spread() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v * 1000, 1);
        }
        let p50 = h.quantile(0.5).expect("values") as f64;
        let p99 = h.quantile(0.99).expect("values") as f64;
        assert!((5_000_000.0..=5_000_000.0 * 1.016).contains(&p50), "{p50}");
        assert!((9_900_000.0..=9_900_000.0 * 1.016).contains(&p99), "{p99}");
        assert_eq!(h.quantile(1.0), Some(10_000_000), "the top is the exact max");
        assert_eq!(h.count(), 10_000);
    }

    #[test]
    fn a_weighted_record_counts_as_many() {
        // One pipeline reply for 990 records at 1 ms, ten stragglers at 50 ms: p99 is
        // still 1 ms (990 of 1000 at or below it), p99.9 is 50 ms.
        let mut h = Histogram::default();
        h.record(1_000_000, 990);
        for _ in 0..10 {
            h.record(50_000_000, 1);
        }
        let p99 = h.quantile(0.99).expect("values");
        assert!((1_000_000..=1_016_000).contains(&p99), "{p99}");
        assert_eq!(h.quantile(0.999), Some(50_000_000));
        assert_eq!(h.max(), Some(50_000_000));
    }

    #[test]
    fn an_empty_histogram_has_no_quantiles() {
        let mut h = Histogram::default();
        h.record(5, 0);
        assert_eq!(h.quantile(0.99), None);
        assert_eq!(h.max(), None);
    }
}
