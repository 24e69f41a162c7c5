//! The record of what a limiter admitted and when, and the two invariants the scenarios
//! and tests check over it.
//!
//! - A token bucket promises `admitted ≤ capacity + rate × (t_last − t_first)` for any
//!   run of decisions on one key ([`Ledger::span_micros`] with
//!   [`super::token_bucket::Limit::bound`]).
//! - A sliding window promises at most `limit` admissions in any window of its length
//!   ([`Ledger::max_in_window`]).
//!
//! Times are the ones the limiter decided at ([`super::decision::Decision::at_micros`]),
//! so the check uses the same clock as the decision: the server's, for the KV limiters.
//! Checking against the caller's clock instead would add the network's jitter to the
//! bound and make the check either loose or flaky.

/// Admission times, in microseconds, in any order until [`Ledger::sorted`] is asked.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    times: Vec<i64>,
    /// Whether `times` is sorted; recording clears it.
    sorted: bool,
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    pub fn record(&mut self, at_micros: i64) {
        self.times.push(at_micros);
        self.sorted = false;
    }

    /// Adds every entry of `other` (per-client ledgers merged at the end).
    pub fn merge(&mut self, other: &Ledger) {
        self.times.extend_from_slice(&other.times);
        self.sorted = false;
    }

    pub fn len(&self) -> usize {
        self.times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// The admission times, ascending.
    pub fn sorted(&mut self) -> &[i64] {
        if !self.sorted {
            self.times.sort_unstable();
            self.sorted = true;
        }
        &self.times
    }

    /// `t_last − t_first` over the admissions; zero with fewer than two.
    pub fn span_micros(&mut self) -> u64 {
        let times = self.sorted();
        match (times.first(), times.last()) {
            (Some(first), Some(last)) => u64::try_from(last - first).unwrap_or(0),
            _ => 0,
        }
    }

    /// The most admissions inside any half-open window `(t − window, t]`, and the `t`
    /// that window ends at. Half-open on the left because that is the window a sliding
    /// log enforces: an entry exactly `window` old has left it.
    pub fn max_in_window(&mut self, window_micros: u64) -> (usize, Option<i64>) {
        // A zero-length window holds nothing; one microsecond is the shortest that holds anything.
        let window = i64::try_from(window_micros.max(1)).unwrap_or(i64::MAX);
        let times = self.sorted();
        let mut best = (0, None);
        let mut start = 0;
        // Two pointers: for each end `i`, `start` is the first entry inside (t_i − window, t_i].
        for (i, &end) in times.iter().enumerate() {
            while times[start] <= end.saturating_sub(window) {
                start += 1;
            }
            let count = i + 1 - start;
            if count > best.0 {
                best = (count, Some(end));
            }
        }
        best
    }

    /// How many admissions fall in `[from, until)`.
    pub fn count_between(&mut self, from: i64, until: i64) -> usize {
        let times = self.sorted();
        let low = times.partition_point(|&t| t < from);
        let high = times.partition_point(|&t| t < until);
        high.saturating_sub(low)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(times: &[i64]) -> Ledger {
        let mut ledger = Ledger::new();
        for &t in times {
            ledger.record(t);
        }
        ledger
    }

    #[test]
    fn the_window_is_open_on_the_left() {
        // 0 and 10 are exactly one window apart: never in the same (t − 10, t].
        assert_eq!(ledger(&[0, 10]).max_in_window(10).0, 1);
        assert_eq!(ledger(&[0, 9]).max_in_window(10).0, 2);
        assert_eq!(ledger(&[5, 0, 9, 10, 11, 30]).max_in_window(10), (4, Some(11)));
        assert_eq!(ledger(&[]).max_in_window(10), (0, None));
        // Equal times count together.
        assert_eq!(ledger(&[3, 3, 3]).max_in_window(1).0, 3);
    }

    #[test]
    fn span_and_counts() {
        let mut l = ledger(&[40, 10, 25]);
        assert_eq!(l.span_micros(), 30);
        assert_eq!(l.count_between(10, 40), 2);
        assert_eq!(ledger(&[7]).span_micros(), 0);
    }

    /// The two-pointer scan against the obvious quadratic count, on random ledgers.
    #[test]
    fn max_in_window_matches_brute_force() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..200 {
            let times: Vec<i64> = (0..rng.usize(0..40)).map(|_| rng.i64(0..100)).collect();
            let window = rng.u64(1..30);
            let brute = times
                .iter()
                .map(|&end| times.iter().filter(|&&t| t > end - window as i64 && t <= end).count())
                .max()
                .unwrap_or(0);
            assert_eq!(ledger(&times).max_in_window(window).0, brute, "{times:?} window {window}");
        }
    }
}
