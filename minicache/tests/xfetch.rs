//! XFetch against its formula: with β = 1 and a fixed δ, the share of reads that
//! recompute early at a remaining TTL of `r` must be `P(early) = exp(-r / (δ·β))`.
//!
//! ## The tolerance
//!
//! Over `n` independent reads, the number that fire is Binomial(n, p). Hoeffding's
//! inequality bounds how far its share `p̂` strays from `p`, for any `p`, with no normal
//! approximation:
//!
//! ```text
//! P(|p̂ - p| >= t) <= 2·exp(-2·n·t²)   so   t = sqrt(ln(2/α) / (2n))
//! ```
//!
//! keeps a correct implementation's failure probability at `α` per checked point. With
//! `α = 1e-9` (so even the five points together fail once in 2·10^8 runs if the seed is
//! changed; with the fixed seeds here the result is deterministic anyway):
//!
//! - `n = 200_000` draws: `t = sqrt(ln(2e9) / 400_000) = 0.0073`. (The binomial's own
//!   standard deviation at p = e^-1 is sqrt(p(1-p)/n) = 0.0011, so this is ~6.7 σ.)
//! - `n = 2_000` reads through the cache: `t = sqrt(ln(2e9) / 4_000) = 0.073`.
//!
//! To show the check has teeth, the same bound must *reject* XFetch run with β = 1.25
//! against the β = 1 formula.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use minicache::{Cache, MockClock, RandomSource, SeededRandom, XFetch};

/// The per-point failure probability the tolerances are derived for.
const ALPHA: f64 = 1e-9;

/// Hoeffding's two-sided bound on `|p̂ - p|` for `trials` draws at confidence `1 - ALPHA`.
fn tolerance(trials: u32) -> f64 {
    ((2.0 / ALPHA).ln() / (2.0 * f64::from(trials))).sqrt()
}

/// The share of `trials` reads, `remaining` before expiry of an entry whose load took
/// `delta`, that XFetch decides to recompute early.
fn early_share(xfetch: &XFetch, remaining: Duration, delta: Duration, trials: u32) -> f64 {
    let expires_at = 1_000_000_000_000u64; // any absolute time; only `remaining` matters
    let now = expires_at - remaining.as_nanos() as u64;
    let delta = delta.as_nanos() as u64;
    let fired = (0..trials).filter(|_| xfetch.should_recompute_early(now, expires_at, delta)).count();
    fired as f64 / f64::from(trials)
}

fn expected(remaining: Duration, delta: Duration, beta: f64) -> f64 {
    (-remaining.as_secs_f64() / (delta.as_secs_f64() * beta)).exp()
}

#[test]
fn the_share_of_early_recomputes_matches_exp_minus_remaining_over_delta_beta() {
    const TRIALS: u32 = 200_000;
    let delta = Duration::from_secs(1);
    let t = tolerance(TRIALS);
    assert!((t - 0.0073).abs() < 0.0001, "the bound the module docs state: {t}");
    for (seed, remaining_ms) in [(1, 250), (2, 500), (3, 1_000), (4, 2_000), (5, 3_000)] {
        let xfetch = XFetch::default().with_random(SeededRandom::new(seed));
        let remaining = Duration::from_millis(remaining_ms);
        let share = early_share(&xfetch, remaining, delta, TRIALS);
        let p = expected(remaining, delta, 1.0);
        assert!((xfetch.early_probability(remaining.as_nanos() as u64, delta.as_nanos() as u64) - p).abs() < 1e-12);
        assert!(
            (share - p).abs() < t,
            "remaining {remaining_ms} ms, δ 1 s, β 1: {share:.4} fired, formula says {p:.4} ± {t:.4} (seed {seed})"
        );
    }
}

#[test]
fn the_same_bound_rejects_a_different_beta() {
    // A wrong β (or a δ measured in the wrong unit) shifts the share far outside the bound.
    const TRIALS: u32 = 200_000;
    let delta = Duration::from_secs(1);
    let remaining = Duration::from_secs(1);
    let wrong = XFetch::new(1.25).map(|x| x.with_random(SeededRandom::new(3))).expect("a valid beta");
    let share = early_share(&wrong, remaining, delta, TRIALS);
    let p = expected(remaining, delta, 1.0);
    assert!(
        (share - p).abs() > tolerance(TRIALS),
        "β = 1.25 gave {share:.4}, indistinguishable from the β = 1 formula's {p:.4}: the check has no power"
    );
    assert!((share - expected(remaining, delta, 1.25)).abs() < tolerance(TRIALS), "but it matches its own β");
}

#[test]
fn through_the_cache_delta_is_each_entrys_own_measured_load_time() {
    // Every trial loads a fresh key with a loader that takes δ of (mock) cache time, moves
    // to `remaining` before that entry expires and reads it once. The read recomputes in
    // the foreground when XFetch fires (no refresh loader), which the second init counts.
    const TRIALS: u32 = 2_000;
    const TTL: Duration = Duration::from_secs(100);
    let remaining = Duration::from_secs(1);
    let clock = MockClock::new();
    let cache: Cache<u32, u32> = Cache::builder()
        .max_capacity(3 * u64::from(TRIALS))
        .time_to_live(TTL)
        .clock(Arc::new(clock.clone()))
        .xfetch(XFetch::default().with_random(SeededRandom::new(11)))
        .build();
    let mut key = 0;
    for delta in [Duration::from_secs(1), Duration::from_secs(3)] {
        let early = AtomicUsize::new(0);
        for _ in 0..TRIALS {
            key += 1;
            cache.get_with(key, || {
                clock.advance(delta); // the load "takes" δ, as the cache's clock sees it
                key
            });
            clock.advance(TTL - remaining);
            cache.get_with(key, || {
                early.fetch_add(1, Ordering::SeqCst);
                key
            });
        }
        let share = early.load(Ordering::SeqCst) as f64 / f64::from(TRIALS);
        let p = expected(remaining, delta, 1.0);
        let t = tolerance(TRIALS);
        assert!(
            (share - p).abs() < t,
            "δ {delta:?}, remaining {remaining:?}: {share:.3} fired early, formula {p:.3} ± {t:.3}"
        );
    }
}

/// Draws the same number every time, to force XFetch's decision either way.
#[derive(Debug)]
struct Always(f64);

impl RandomSource for Always {
    fn next_unit(&self) -> f64 {
        self.0
    }
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn with_a_refresh_loader_an_early_recompute_runs_in_the_background() {
    let clock = MockClock::new();
    let refreshes = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&refreshes);
    let cache: Cache<&str, u32> = Cache::builder()
        .max_capacity(10)
        .time_to_live(Duration::from_secs(60))
        .clock(Arc::new(clock.clone()))
        // A draw of e^-30 fires whenever remaining < 30·δ.
        .xfetch(XFetch::default().with_random(Always((-30.0f64).exp())))
        .refresh_loader(move |_key: &&str| {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok::<u32, String>(2)
        })
        .build();
    let load_clock = clock.clone();
    cache.get_with("k", || {
        load_clock.advance(Duration::from_secs(1)); // δ = 1 s
        1
    });
    clock.advance(Duration::from_secs(60 - 40)); // 40 s left: 40 > 30·δ, no
    assert_eq!(cache.get_with("k", || panic!("served from the cache")), 1);
    assert_eq!(refreshes.load(Ordering::SeqCst), 0);
    clock.advance(Duration::from_secs(20)); // 20 s left: fires
    assert_eq!(cache.get_with("k", || panic!("served from the cache")), 1, "the reader is not delayed");
    wait_until("the background recompute finished", || {
        refreshes.load(Ordering::SeqCst) == 1 && cache.loads_in_flight() == 0
    });
    assert_eq!(cache.get_with("k", || panic!("served from the cache")), 2);
}

#[test]
fn an_entry_inserted_rather_than_loaded_has_no_delta_and_never_fires_early() {
    let clock = MockClock::new();
    let cache: Cache<&str, u32> = Cache::builder()
        .max_capacity(10)
        .time_to_live(Duration::from_secs(60))
        .clock(Arc::new(clock.clone()))
        .xfetch(XFetch::default().with_random(Always(f64::MIN_POSITIVE)))
        .build();
    cache.insert("k", 1);
    clock.advance(Duration::from_secs(59));
    assert_eq!(cache.get_with("k", || 2), 1, "δ = 0: XFetch has nothing to scale by");
}
