//! A simulated payment provider, in process, that honours an idempotency key per charge
//! as Stripe's API does.
//!
//! A charge with a key the provider has seen returns the first charge again (marked
//! as a replay) instead of moving money twice; a key reused with a different amount or
//! payment is refused, as Stripe answers 400 for "keys for idempotent requests can
//! only be used with the same parameters they were first used with". A charge without
//! a key always moves money: that is what the broken worker variant does.
//!
//! The provider is slow and unreliable the way a remote API is: every call takes a
//! little time on each side of the moment the charge is applied, so a worker killed
//! during the call may or may not have charged; and with
//! [`ProviderConfig::lost_reply_probability`] the charge is applied but the reply is
//! lost ([`ChargeError::ReplyLost`]), so the caller cannot know and must retry with
//! the same key.
//!
//! It keeps every charge in memory, for the audit. Left out: refunds, declines, the
//! network (it is called as a function; a real one is an HTTPS API), and key expiry
//! (Stripe forgets keys after 24 hours; this one remembers them for the run).

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;

/// The provider's behaviour.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProviderConfig {
    /// Each call sleeps a uniform time in this range before the charge is applied, and
    /// again after it, before the reply.
    pub latency: (Duration, Duration),
    /// The chance that a charge is applied but its reply never arrives.
    pub lost_reply_probability: f64,
    pub seed: u64,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            latency: (Duration::from_micros(500), Duration::from_millis(2)),
            lost_reply_probability: 0.0,
            seed: 0,
        }
    }
}

/// One charge as the caller asks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChargeRequest {
    pub payment_id: String,
    pub amount_cents: u64,
    /// Stripe's `Idempotency-Key`; `None` charges unconditionally.
    pub idempotency_key: Option<String>,
}

/// Money that moved, as the provider's books record it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charge {
    pub charge_id: String,
    pub payment_id: String,
    pub amount_cents: u64,
    pub idempotency_key: Option<String>,
}

/// What a successful call answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub charge_id: String,
    /// The key had been seen: this is the earlier charge, nothing new moved.
    pub replayed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChargeError {
    #[error("the charge was applied but its reply was lost: retry with the same idempotency key to learn its id")]
    ReplyLost,
    #[error("idempotency key {0} was first used with other parameters: use a new key for a new charge")]
    KeyReused(String),
}

/// Counters for the report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProviderStats {
    pub calls: u64,
    pub charges: u64,
    pub replays: u64,
    pub lost_replies: u64,
    pub refused: u64,
}

#[derive(Default)]
struct Books {
    charges: Vec<Charge>,
    /// Key → index into `charges`.
    by_key: HashMap<String, usize>,
    stats: ProviderStats,
}

/// The provider; share it behind an `Arc`.
pub struct PaymentProvider {
    config: ProviderConfig,
    /// A parking_lot mutex: held to apply a charge, never across the simulated latency.
    books: Mutex<Books>,
    rng: Mutex<fastrand::Rng>,
}

impl PaymentProvider {
    pub fn new(config: ProviderConfig) -> PaymentProvider {
        assert!(config.latency.0 <= config.latency.1, "latency range {:?} is backwards", config.latency);
        assert!((0.0..=1.0).contains(&config.lost_reply_probability), "a probability is in 0..=1");
        PaymentProvider {
            config,
            books: Mutex::new(Books::default()),
            rng: Mutex::new(fastrand::Rng::with_seed(config.seed)),
        }
    }

    /// Charges `request`, or replays the charge its key already made.
    pub async fn charge(&self, request: &ChargeRequest) -> Result<Receipt, ChargeError> {
        tokio::time::sleep(self.latency()).await;
        let (receipt, lose_reply) = {
            let lose_reply = self.rng.lock().f64() < self.config.lost_reply_probability;
            let mut books = self.books.lock();
            books.stats.calls += 1;
            let existing = request.idempotency_key.as_ref().and_then(|key| books.by_key.get(key).copied());
            let receipt = match existing {
                Some(index) => {
                    let first = &books.charges[index];
                    if first.payment_id != request.payment_id || first.amount_cents != request.amount_cents {
                        books.stats.refused += 1;
                        return Err(ChargeError::KeyReused(request.idempotency_key.clone().unwrap_or_default()));
                    }
                    let receipt = Receipt { charge_id: first.charge_id.clone(), replayed: true };
                    books.stats.replays += 1;
                    receipt
                }
                None => {
                    let charge_id = format!("ch_{:06}", books.charges.len() + 1);
                    books.charges.push(Charge {
                        charge_id: charge_id.clone(),
                        payment_id: request.payment_id.clone(),
                        amount_cents: request.amount_cents,
                        idempotency_key: request.idempotency_key.clone(),
                    });
                    if let Some(key) = &request.idempotency_key {
                        let index = books.charges.len() - 1;
                        books.by_key.insert(key.clone(), index);
                    }
                    books.stats.charges += 1;
                    Receipt { charge_id, replayed: false }
                }
            };
            if lose_reply {
                books.stats.lost_replies += 1;
            }
            (receipt, lose_reply)
        };
        // The reply travels back; a caller killed now charged without knowing it.
        tokio::time::sleep(self.latency()).await;
        if lose_reply {
            return Err(ChargeError::ReplyLost);
        }
        Ok(receipt)
    }

    /// Every charge, in the order they were made.
    pub fn charges(&self) -> Vec<Charge> {
        self.books.lock().charges.clone()
    }

    pub fn stats(&self) -> ProviderStats {
        self.books.lock().stats
    }

    fn latency(&self) -> Duration {
        let (min, max) = (self.config.latency.0.as_micros() as u64, self.config.latency.1.as_micros() as u64);
        Duration::from_micros(self.rng.lock().u64(min..=max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(payment: &str, amount: u64, key: Option<&str>) -> ChargeRequest {
        ChargeRequest { payment_id: payment.into(), amount_cents: amount, idempotency_key: key.map(str::to_string) }
    }

    #[tokio::test]
    async fn a_key_charges_once_and_replays_after() {
        let provider = PaymentProvider::new(ProviderConfig::default());
        let first = provider.charge(&request("p1", 500, Some("pay-p1"))).await.expect("charges");
        let again = provider.charge(&request("p1", 500, Some("pay-p1"))).await.expect("replays");
        assert_eq!((first.replayed, again.replayed), (false, true));
        assert_eq!(first.charge_id, again.charge_id);
        assert_eq!(provider.charges().len(), 1);
        let reused = provider.charge(&request("p2", 500, Some("pay-p1"))).await;
        assert_eq!(reused, Err(ChargeError::KeyReused("pay-p1".into())));
        assert_eq!(provider.charges().len(), 1, "a refused call moves no money");
    }

    #[tokio::test]
    async fn without_a_key_every_call_moves_money() {
        let provider = PaymentProvider::new(ProviderConfig::default());
        for _ in 0..3 {
            provider.charge(&request("p1", 500, None)).await.expect("charges");
        }
        assert_eq!(provider.charges().len(), 3);
        assert_eq!(provider.stats().charges, 3);
    }

    #[tokio::test]
    async fn a_lost_reply_still_charged_and_the_retry_learns_the_id() {
        let config = ProviderConfig { lost_reply_probability: 1.0, ..ProviderConfig::default() };
        let provider = PaymentProvider::new(config);
        let lost = provider.charge(&request("p1", 500, Some("k"))).await;
        assert_eq!(lost, Err(ChargeError::ReplyLost));
        assert_eq!(provider.charges().len(), 1, "the money moved");
        let again = provider.charge(&request("p1", 500, Some("k"))).await;
        assert_eq!(again, Err(ChargeError::ReplyLost), "every reply is lost at 100%");
        assert_eq!((provider.charges().len(), provider.stats().replays), (1, 1));
    }
}
