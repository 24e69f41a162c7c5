//! The simulated notification provider (think an email or SMS API), in-process, driven
//! by the seed, with a ledger of every call so the checks can count deliveries.
//!
//! It fails the way real providers do, by recipient domain:
//!
//! | domain                        | answer                                             |
//! |-------------------------------|----------------------------------------------------|
//! | a *rejected* domain           | permanent: `550 5.1.1 recipient rejected`          |
//! | a *down* domain (until healed) | transient: `503 service unavailable`, every call  |
//! | any other                     | transient with probability `transient_rate`, else delivered |
//!
//! The flaky draw is a pure function of (seed, notification id, call number)
//! ([`Provider::flaky_call_fails`]), not of a shared generator, so which calls fail does
//! not depend on how the workers' calls interleave: a scenario can compute what must
//! happen to each message and check that it did. Latency is drawn from a shared seeded
//! generator; it only moves timings.
//!
//! **Delivery is at-least-once.** The provider has no idempotency key: every call it
//! accepts is a delivery, so a worker that crashes after the provider accepted and
//! before it deleted the job causes a second delivery when the job is redelivered. The
//! ledger counts them ([`Ledger::deliveries`]) and the checks assert the exact number.
//! A provider that deduplicated on the notification id would make it effectively-once
//! (the idempotency theme builds that); this one deliberately does not, so the
//! duplicates stay visible.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::notification::Notification;

/// How the provider behaves.
#[derive(Clone, Debug)]
pub struct ProviderConfig {
    pub seed: u64,
    /// The chance that one call to a healthy domain fails transiently (0.0..=1.0).
    pub transient_rate: f64,
    /// Each call takes a uniform time in this range (inclusive bounds).
    pub latency: (Duration, Duration),
    /// Domains whose recipients the provider refuses for good.
    pub rejected_domains: Vec<String>,
    /// Domains that are down: every call fails transiently until [`Provider::heal`].
    pub down_domains: Vec<String>,
}

/// Why the provider did not deliver.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Worth retrying later.
    #[error("{0}")]
    Transient(String),
    /// Never worth retrying: the message is poison.
    #[error("{0}")]
    Permanent(String),
}

/// What the provider saw of one notification.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    /// Every call, whatever it answered.
    pub calls: u32,
    /// Calls it accepted: each one is a notification a user receives.
    pub deliveries: u32,
    pub transient_failures: u32,
    pub permanent_failures: u32,
    /// When it first accepted one (time-to-delivery in the report).
    pub first_delivery: Option<Instant>,
}

struct State {
    ledger: HashMap<u64, Ledger>,
    down: HashSet<String>,
    latency_rng: fastrand::Rng,
}

/// The provider. Share it with `Arc`; every method takes `&self`.
pub struct Provider {
    config: ProviderConfig,
    /// A parking_lot mutex, not a tokio one: no await happens while it is held (the
    /// latency sleep is outside it).
    state: Mutex<State>,
}

impl Provider {
    pub fn new(config: ProviderConfig) -> Provider {
        assert!((0.0..=1.0).contains(&config.transient_rate), "a rate is in 0..=1");
        assert!(config.latency.0 <= config.latency.1, "the latency range is (low, high)");
        let state = State {
            ledger: HashMap::new(),
            down: config.down_domains.iter().cloned().collect(),
            latency_rng: fastrand::Rng::with_seed(config.seed ^ 0x1a7e_4c7e),
        };
        Provider { config, state: Mutex::new(state) }
    }

    pub fn config(&self) -> &ProviderConfig {
        &self.config
    }

    /// Whether call number `call` (1-based, counted per notification) to a healthy
    /// domain fails transiently: a pure function of the seed, so a scenario can predict
    /// it.
    pub fn flaky_call_fails(&self, notification_id: u64, call: u32) -> bool {
        let mixed = splitmix64(
            self.config.seed ^ notification_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(call).rotate_left(32),
        );
        // The top 53 bits as a uniform float in [0, 1).
        ((mixed >> 11) as f64 / (1u64 << 53) as f64) < self.config.transient_rate
    }

    /// The domain is back up: calls to it now go through (no flaky failures either, so
    /// a replay after the fix is predictable).
    pub fn heal(&self, domain: &str) {
        self.state.lock().down.remove(domain);
    }

    pub fn is_rejected(&self, domain: &str) -> bool {
        self.config.rejected_domains.iter().any(|d| d == domain)
    }

    pub fn is_down(&self, domain: &str) -> bool {
        self.state.lock().down.contains(domain)
    }

    /// Sends one notification: waits the latency, then answers and records the call.
    pub async fn send(&self, notification: &Notification) -> Result<(), ProviderError> {
        let latency = {
            let mut state = self.state.lock();
            let (low, high) = self.config.latency;
            let span = u64::try_from((high - low).as_micros()).unwrap_or(u64::MAX);
            low + Duration::from_micros(state.latency_rng.u64(0..=span))
        };
        tokio::time::sleep(latency).await;

        let domain = notification.domain();
        let rejected = self.is_rejected(domain);
        let mut state = self.state.lock();
        let down = state.down.contains(domain);
        let ever_down = self.config.down_domains.iter().any(|d| d == domain);
        let entry = state.ledger.entry(notification.id).or_default();
        entry.calls += 1;
        let call = entry.calls;
        let answer = if rejected {
            entry.permanent_failures += 1;
            Err(ProviderError::Permanent(format!("550 5.1.1 <{}>: recipient address rejected", notification.to)))
        } else if down {
            entry.transient_failures += 1;
            Err(ProviderError::Transient(format!("503 service unavailable: {domain} is not answering")))
        } else if !ever_down && self.flaky_call_fails(notification.id, call) {
            entry.transient_failures += 1;
            Err(ProviderError::Transient(if call.is_multiple_of(2) {
                "429 too many requests".to_string()
            } else {
                "504 gateway timeout".to_string()
            }))
        } else {
            entry.deliveries += 1;
            entry.first_delivery.get_or_insert_with(Instant::now);
            Ok(())
        };
        answer
    }

    /// What the provider saw of `notification_id` (all zero if never called).
    pub fn ledger(&self, notification_id: u64) -> Ledger {
        self.state.lock().ledger.get(&notification_id).cloned().unwrap_or_default()
    }

    /// The total of every notification's ledger.
    pub fn totals(&self) -> Ledger {
        let state = self.state.lock();
        let mut total = Ledger::default();
        for entry in state.ledger.values() {
            total.calls += entry.calls;
            total.deliveries += entry.deliveries;
            total.transient_failures += entry.transient_failures;
            total.permanent_failures += entry.permanent_failures;
        }
        total
    }
}

/// Sebastiano Vigna's splitmix64 finaliser: a cheap, well-mixed hash of a u64.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(rate: f64) -> Provider {
        Provider::new(ProviderConfig {
            seed: 9,
            transient_rate: rate,
            latency: (Duration::ZERO, Duration::from_micros(10)),
            rejected_domains: vec!["bounce.example".into()],
            down_domains: vec!["down.example".into()],
        })
    }

    fn to(id: u64, domain: &str) -> Notification {
        Notification { id, to: format!("user{id}@{domain}"), text: "hi".into() }
    }

    #[test]
    fn the_flaky_rate_holds_and_does_not_depend_on_call_order() {
        let p = provider(0.3);
        let failing = (0..10_000u64).filter(|&id| p.flaky_call_fails(id, 1)).count();
        assert!((2_700..=3_300).contains(&failing), "{failing} of 10000 at a 30% rate");
        assert_eq!(p.flaky_call_fails(5, 2), provider(0.3).flaky_call_fails(5, 2), "the same seed, the same draw");
        assert!(!provider(0.0).flaky_call_fails(5, 1) && provider(1.0).flaky_call_fails(5, 1));
    }

    #[tokio::test]
    async fn domains_fail_as_configured_and_the_ledger_counts_every_call() {
        let p = provider(0.0);
        assert!(matches!(p.send(&to(1, "bounce.example")).await, Err(ProviderError::Permanent(_))));
        assert!(matches!(p.send(&to(2, "down.example")).await, Err(ProviderError::Transient(_))));
        assert!(matches!(p.send(&to(2, "down.example")).await, Err(ProviderError::Transient(_))));
        p.heal("down.example");
        assert_eq!(p.send(&to(2, "down.example")).await, Ok(()));
        assert_eq!(p.send(&to(3, "mail.example")).await, Ok(()));
        assert_eq!(p.send(&to(3, "mail.example")).await, Ok(()), "no dedupe: a second send is a second delivery");
        assert_eq!(p.ledger(1), Ledger { calls: 1, permanent_failures: 1, ..Ledger::default() });
        let two = p.ledger(2);
        assert_eq!((two.calls, two.transient_failures, two.deliveries), (3, 2, 1));
        assert_eq!(p.ledger(3).deliveries, 2);
        assert_eq!(p.ledger(99), Ledger::default());
        assert_eq!(p.totals().calls, 6);
    }
}
