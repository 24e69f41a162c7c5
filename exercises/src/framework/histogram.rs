//! A latency histogram for reports: exact percentiles, and bars on a doubling scale.
//!
//! It keeps every sample (8 bytes each) and sorts on demand, so percentiles are exact
//! rather than bucketed. A scenario records at most a few million samples, which is a
//! few tens of MB at worst; a long-running service would want a bounded structure
//! (HdrHistogram, a t-digest) instead, and this module says so rather than pretending.
//!
//! The bars group samples by powers of two from 1 µs (1–2 µs, 2–4 µs, ...): latency
//! spans orders of magnitude, and the doubling scale shows a bimodal "fast path vs
//! waited for the stampede" shape at a glance.

use std::fmt::Write as _;
use std::time::Duration;

/// Width of the longest bar, in characters.
const BAR_WIDTH: usize = 40;

/// Latency samples, in nanoseconds.
#[derive(Clone, Debug, Default)]
pub struct LatencyHistogram {
    samples: Vec<u64>,
    /// Whether `samples` is sorted; recording clears it, reading sorts once.
    sorted: bool,
}

impl LatencyHistogram {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&mut self, latency: Duration) {
        self.samples.push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
        self.sorted = false;
    }

    /// Adds every sample of `other` (per-task histograms merged at the end).
    pub fn merge(&mut self, other: &LatencyHistogram) {
        self.samples.extend_from_slice(&other.samples);
        self.sorted = false;
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The `q` quantile (0.0..=1.0), nearest-rank; zero when empty.
    pub fn quantile(&mut self, q: f64) -> Duration {
        assert!((0.0..=1.0).contains(&q), "a quantile is in 0..=1, got {q}");
        self.sort();
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q * self.samples.len() as f64).ceil() as usize).clamp(1, self.samples.len());
        Duration::from_nanos(self.samples[rank - 1])
    }

    pub fn max(&mut self) -> Duration {
        self.quantile(1.0)
    }

    pub fn mean(&self) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        let total: u128 = self.samples.iter().map(|&s| u128::from(s)).sum();
        Duration::from_nanos((total / self.samples.len() as u128) as u64)
    }

    /// `n=1000 p50=0.21ms p90=0.40ms p99=1.90ms p99.9=3.10ms max=4.00ms`.
    pub fn summary(&mut self) -> String {
        format!(
            "n={} p50={} p90={} p99={} p99.9={} max={}",
            self.len(),
            format_duration(self.quantile(0.5)),
            format_duration(self.quantile(0.9)),
            format_duration(self.quantile(0.99)),
            format_duration(self.quantile(0.999)),
            format_duration(self.max()),
        )
    }

    /// One line per non-empty doubling bucket: its range, a bar, the count.
    pub fn bars(&mut self) -> Vec<String> {
        self.sort();
        let mut buckets: Vec<(u32, usize)> = Vec::new();
        for &nanos in &self.samples {
            let bucket = bucket_of(nanos);
            match buckets.last_mut() {
                Some((b, count)) if *b == bucket => *count += 1,
                _ => buckets.push((bucket, 1)),
            }
        }
        let tallest = buckets.iter().map(|&(_, c)| c).max().unwrap_or(0);
        buckets
            .iter()
            .map(|&(bucket, count)| {
                let (low, high) = bucket_range(bucket);
                let width = if tallest == 0 { 0 } else { (count * BAR_WIDTH).div_ceil(tallest) };
                let mut line = String::new();
                let _ = write!(
                    line,
                    "{:>9} – {:<9} {:<width$} {count}",
                    format_duration(low),
                    format_duration(high),
                    "█".repeat(width),
                    width = BAR_WIDTH
                );
                line
            })
            .collect()
    }

    fn sort(&mut self) {
        if !self.sorted {
            self.samples.sort_unstable();
            self.sorted = true;
        }
    }
}

/// Bucket 0 is below 1 µs; bucket k (k ≥ 1) is [2^(k-1), 2^k) µs.
fn bucket_of(nanos: u64) -> u32 {
    let micros = nanos / 1_000;
    if micros == 0 {
        0
    } else {
        64 - micros.leading_zeros()
    }
}

fn bucket_range(bucket: u32) -> (Duration, Duration) {
    if bucket == 0 {
        (Duration::ZERO, Duration::from_micros(1))
    } else {
        let low = 1u64 << (bucket - 1);
        (Duration::from_micros(low), Duration::from_micros(low.saturating_mul(2)))
    }
}

/// A duration the way a latency report reads: `850ns`, `12.3µs`, `1.90ms`, `2.50s`.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos < 1_000 {
        format!("{nanos}ns")
    } else if nanos < 1_000_000 {
        format!("{:.1}µs", nanos as f64 / 1e3)
    } else if nanos < 1_000_000_000 {
        format!("{:.2}ms", nanos as f64 / 1e6)
    } else {
        format!("{:.2}s", nanos as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut h = LatencyHistogram::new();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.quantile(0.5), Duration::from_millis(50));
        assert_eq!(h.quantile(0.99), Duration::from_millis(99));
        assert_eq!(h.max(), Duration::from_millis(100));
        assert_eq!(h.quantile(0.0), Duration::from_millis(1));
        assert_eq!(LatencyHistogram::new().quantile(0.5), Duration::ZERO);
    }

    #[test]
    fn bars_cover_every_sample() {
        let mut h = LatencyHistogram::new();
        for us in [0, 1, 3, 3, 700, 5_000_000] {
            h.record(Duration::from_micros(us));
        }
        let bars = h.bars();
        let counted: usize =
            bars.iter().map(|line| line.rsplit(' ').next().and_then(|c| c.parse::<usize>().ok()).unwrap()).sum();
        assert_eq!(counted, 6, "{bars:#?}");
        assert_eq!(bucket_of(999), 0);
        assert_eq!(bucket_of(1_000), 1);
        assert_eq!(bucket_of(3_999), 2);
    }
}
