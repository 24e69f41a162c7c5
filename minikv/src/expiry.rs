//! Active expiry: removing keys whose TTL passed even if nobody reads them.
//!
//! Lazy expiry (in [`crate::keyspace::Keys::lookup`]) removes a key when it is touched;
//! this cycle removes the ones nobody touches, so their memory comes back. It follows
//! Redis's `activeExpireCycle`:
//!
//! 1. Pick 20 random keys among those with a TTL (`ACTIVE_EXPIRE_CYCLE_KEYS_PER_LOOP`).
//! 2. Delete the ones whose deadline passed.
//! 3. If more than 10% of the sample was stale (`ACCEPTABLE_STALE`), there are probably
//!    many more: go again. Otherwise move on.
//! 4. Stop when the time budget is spent: 25% of a cron tick (`SLOW_TIME_PERC`), i.e.
//!    25 ms per 100 ms at `hz 10`. Pick up at the next table on the next tick.
//!
//! The result is probabilistic: the fraction of expired-but-present keys stays around
//! 10% of the keys with a TTL under any load, without ever scanning the whole keyspace
//! at once.
//!
//! [`sample_and_expire`] is the pure core: it gets a table, a clock value and a random
//! source, and reports what it removed. The cron (`crate::cron`) supplies real time and
//! does the side effects (AOF, WATCH) for each removed key; tests supply virtual time.

use crate::keyspace::{CompactBytes, Table};

/// Keys sampled per round (Redis's ACTIVE_EXPIRE_CYCLE_KEYS_PER_LOOP).
pub const KEYS_PER_LOOP: usize = 20;
/// Repeat while more than this percentage of a sample was stale.
pub const ACCEPTABLE_STALE_PERCENT: usize = 10;
/// Percentage of each cron tick the cycle may use.
pub const SLOW_TIME_PERCENT: u64 = 25;
/// Rounds between two clock checks, as in Redis (reading the clock is not free).
pub const ROUNDS_PER_TIME_CHECK: usize = 16;

/// A source of random numbers (a real RNG in the server, a fixed sequence in tests).
pub trait Random {
    fn next_u64(&mut self) -> u64;
}

/// The server's random source.
pub struct FastRand;

impl Random for FastRand {
    fn next_u64(&mut self) -> u64 {
        fastrand::u64(..)
    }
}

/// What one round found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub sampled: usize,
    pub expired: usize,
}

impl Round {
    /// Whether the sample was stale enough to justify another round right away.
    pub fn worth_repeating(&self) -> bool {
        self.sampled > 0 && self.expired * 100 > self.sampled * ACCEPTABLE_STALE_PERCENT
    }
}

/// Samples up to [`KEYS_PER_LOOP`] keys with a TTL and removes the expired ones,
/// calling `removed` with each removed key.
pub fn sample_and_expire(
    table: &mut Table,
    now_ms: u64,
    rng: &mut dyn Random,
    mut removed: impl FnMut(CompactBytes),
) -> Round {
    let mut round = Round::default();
    let n = KEYS_PER_LOOP.min(table.volatile_len());
    for _ in 0..n {
        let Some((pos, at)) = table.random_volatile(rng.next_u64()) else {
            break;
        };
        round.sampled += 1;
        if at <= now_ms {
            let (key, _) = table.remove_at(pos);
            round.expired += 1;
            removed(key);
        }
    }
    round
}

/// Runs rounds on one table while they are worth repeating, up to `max_rounds`.
/// Returns the totals and whether the table still looked stale when it stopped.
pub fn expire_table(
    table: &mut Table,
    now_ms: u64,
    rng: &mut dyn Random,
    max_rounds: usize,
    mut removed: impl FnMut(CompactBytes),
) -> (Round, bool) {
    let mut total = Round::default();
    for _ in 0..max_rounds {
        let round = sample_and_expire(table, now_ms, rng, &mut removed);
        total.sampled += round.sampled;
        total.expired += round.expired;
        if !round.worth_repeating() {
            return (total, false);
        }
    }
    (total, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyspace::{hash_bytes, Value};

    /// A seeded xorshift, so every failure replays exactly.
    struct Seeded(u64);

    impl Random for Seeded {
        fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn table_with(live: usize, expired: usize, now: u64) -> Table {
        let mut t = Table::default();
        for i in 0..live + expired {
            let key = format!("k{i}");
            let pos = t.insert_new(hash_bytes(key.as_bytes()), key.as_bytes(), Value::str(b"v"), 0);
            let at = if i < expired { now - 1 } else { now + 60_000 };
            t.set_expire(pos, Some(at));
        }
        t
    }

    /// Runs cron ticks with a virtual clock; returns how many expired keys remain.
    fn run_ticks(table: &mut Table, now: u64, ticks: usize, rng: &mut dyn Random) -> usize {
        run_ticks_with_rounds(table, now, ticks, rng, ROUNDS_PER_TIME_CHECK)
    }

    fn run_ticks_with_rounds(table: &mut Table, now: u64, ticks: usize, rng: &mut dyn Random, rounds: usize) -> usize {
        for _ in 0..ticks {
            expire_table(table, now, rng, rounds, |_| {});
        }
        (0..table.len()).filter(|&p| table.expire_at(p).is_some_and(|at| at <= now)).count()
    }

    #[test]
    fn every_stale_key_goes_without_being_read() {
        for seed in [1u64, 7, 42, 1234] {
            let now = 1_000_000;
            let mut t = table_with(1000, 5000, now);
            // Live keys with a TTL dilute the samples, so the tail goes at ~1 round a tick.
            let left = run_ticks(&mut t, now, 1000, &mut Seeded(seed));
            assert_eq!(left, 0, "seed {seed}: {left} expired keys left");
            assert_eq!(t.len(), 1000, "seed {seed}: live keys must stay");
            t.check_invariants();
        }
    }

    #[test]
    fn stops_repeating_when_few_keys_are_stale() {
        let now = 1_000_000;
        let mut t = table_with(10_000, 0, now);
        let (round, still_stale) = expire_table(&mut t, now, &mut Seeded(3), 100, |_| {});
        assert_eq!(round.sampled, KEYS_PER_LOOP, "one round only when nothing is stale");
        assert!(!still_stale);
    }

    #[test]
    fn a_cycle_that_never_repeats_is_caught() {
        // The deliberately broken variant: one round per tick, ignoring how stale the
        // sample was. Under the same virtual time budget it leaves expired keys behind
        // where the real cycle leaves none, so the test above would catch it.
        let now = 1_000_000;
        let mut broken = table_with(0, 5000, now);
        let left = run_ticks_with_rounds(&mut broken, now, 100, &mut Seeded(42), 1);
        assert!(left > 0, "the non-repeating cycle removed everything; the test cannot tell them apart");
        let mut real = table_with(0, 5000, now);
        assert_eq!(run_ticks(&mut real, now, 100, &mut Seeded(42)), 0);
    }
}
