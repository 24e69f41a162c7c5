//! The payment audit: the requested payments against the provider's charges and the
//! ledger's journal. Pure: it takes what was read and returns counts, so it is tested
//! on hand-made books, including each way they can be wrong.
//!
//! The invariant is **every requested payment charged exactly once at the provider,
//! and recorded exactly once in the ledger with that charge**. Broken down, so a
//! failure says which half failed:
//!
//! ```text
//!  provider   double charged   a payment with two or more charges   (money moved twice)
//!             never charged    a payment with none                  (a lost payment)
//!             wrong amount     a charge for another amount than asked
//!             unrequested      a charge for a payment nobody asked for
//!  ledger     double recorded  a payment with two or more journal entries
//!             never recorded   a payment with none (charged, but the books do not say)
//!             mismatched       an entry whose charge id is not a charge of its payment,
//!                              or whose amount is not the one asked
//!             unrequested / unreadable entries
//!  queue      jobs left        jobs not deleted (ready, reserved, delayed or buried)
//! ```

use std::collections::HashMap;

use super::ledger::LedgerEntry;
use super::provider::Charge;
use serde::{Deserialize, Serialize};

/// How many example problems the audit keeps for the report.
const MAX_EXAMPLES: usize = 5;

/// One payment as requested (a job's body).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRequest {
    pub payment_id: String,
    pub account: String,
    pub amount_cents: u64,
}

/// What the audit found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Audit {
    pub requested: usize,
    pub charged_once: usize,
    pub double_charged: usize,
    /// Charges beyond the first, over all double-charged payments.
    pub extra_charges: usize,
    pub never_charged: usize,
    pub wrong_amount: usize,
    pub unrequested_charges: usize,
    pub recorded_once: usize,
    pub double_recorded: usize,
    pub never_recorded: usize,
    pub mismatched_records: usize,
    pub unrequested_records: usize,
    pub unreadable_records: usize,
    pub jobs_left: u64,
    /// A few of the problems, spelled out.
    pub examples: Vec<String>,
}

impl Audit {
    /// No double charge, no lost payment, books that agree, an empty queue.
    pub fn is_clean(&self) -> bool {
        self.double_charged == 0
            && self.never_charged == 0
            && self.wrong_amount == 0
            && self.unrequested_charges == 0
            && self.double_recorded == 0
            && self.never_recorded == 0
            && self.mismatched_records == 0
            && self.unrequested_records == 0
            && self.unreadable_records == 0
            && self.jobs_left == 0
    }

    fn example(&mut self, text: String) {
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(text);
        }
    }
}

/// Audits `journal` (the ledger's raw entries) and `charges` against `requested`.
pub fn audit(requested: &[PaymentRequest], charges: &[Charge], journal: &[String], jobs_left: u64) -> Audit {
    let mut audit = Audit { requested: requested.len(), jobs_left, ..Audit::default() };
    let wanted: HashMap<&str, &PaymentRequest> = requested.iter().map(|p| (p.payment_id.as_str(), p)).collect();
    assert_eq!(wanted.len(), requested.len(), "two requested payments share an id");

    let mut charges_of: HashMap<&str, Vec<&Charge>> = HashMap::new();
    for charge in charges {
        match wanted.get(charge.payment_id.as_str()) {
            Some(payment) => {
                if charge.amount_cents != payment.amount_cents {
                    audit.wrong_amount += 1;
                    audit.example(format!(
                        "{} charged {} cents, asked {}",
                        charge.charge_id, charge.amount_cents, payment.amount_cents
                    ));
                }
                charges_of.entry(payment.payment_id.as_str()).or_default().push(charge);
            }
            None => {
                audit.unrequested_charges += 1;
                audit.example(format!("{} is for unknown payment {}", charge.charge_id, charge.payment_id));
            }
        }
    }

    let mut entries_of: HashMap<String, Vec<LedgerEntry>> = HashMap::new();
    for raw in journal {
        match serde_json::from_str::<LedgerEntry>(raw) {
            Ok(entry) if wanted.contains_key(entry.payment_id.as_str()) => {
                entries_of.entry(entry.payment_id.clone()).or_default().push(entry);
            }
            Ok(entry) => {
                audit.unrequested_records += 1;
                audit.example(format!("journal entry for unknown payment {}", entry.payment_id));
            }
            Err(e) => {
                audit.unreadable_records += 1;
                audit.example(format!("unreadable journal entry ({e})"));
            }
        }
    }

    for payment in requested {
        let id = payment.payment_id.as_str();
        let made = charges_of.get(id).map(Vec::as_slice).unwrap_or_default();
        match made.len() {
            0 => {
                audit.never_charged += 1;
                audit.example(format!("{id} was never charged"));
            }
            1 => audit.charged_once += 1,
            n => {
                audit.double_charged += 1;
                audit.extra_charges += n - 1;
                let ids: Vec<&str> = made.iter().map(|c| c.charge_id.as_str()).collect();
                audit.example(format!("{id} charged {n} times: {}", ids.join(", ")));
            }
        }
        let recorded = entries_of.get(id).map(Vec::as_slice).unwrap_or_default();
        match recorded.len() {
            0 => {
                audit.never_recorded += 1;
                audit.example(format!("{id} is not in the ledger"));
            }
            1 => audit.recorded_once += 1,
            n => {
                audit.double_recorded += 1;
                audit.example(format!("{id} is in the ledger {n} times"));
            }
        }
        for entry in recorded {
            let real = made.iter().any(|c| c.charge_id == entry.charge_id);
            if !real || entry.amount_cents != payment.amount_cents {
                audit.mismatched_records += 1;
                audit.example(format!(
                    "ledger says {id} is {} for {} cents; the provider has {}",
                    entry.charge_id,
                    entry.amount_cents,
                    made.iter().map(|c| c.charge_id.as_str()).collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    debug_assert_eq!(audit.charged_once + audit.double_charged + audit.never_charged, audit.requested);
    debug_assert_eq!(audit.recorded_once + audit.double_recorded + audit.never_recorded, audit.requested);
    audit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment(id: &str, amount: u64) -> PaymentRequest {
        PaymentRequest { payment_id: id.into(), account: "acct".into(), amount_cents: amount }
    }

    fn charge(charge_id: &str, payment_id: &str, amount: u64) -> Charge {
        Charge {
            charge_id: charge_id.into(),
            payment_id: payment_id.into(),
            amount_cents: amount,
            idempotency_key: Some(format!("pay-{payment_id}")),
        }
    }

    fn entry(payment_id: &str, charge_id: &str, amount: u64) -> String {
        let entry = LedgerEntry {
            payment_id: payment_id.into(),
            account: "acct".into(),
            amount_cents: amount,
            charge_id: charge_id.into(),
        };
        serde_json::to_string(&entry).expect("json")
    }

    #[test]
    fn clean_books_are_clean() {
        let requested = [payment("p1", 100), payment("p2", 200)];
        let charges = [charge("ch1", "p1", 100), charge("ch2", "p2", 200)];
        let journal = [entry("p2", "ch2", 200), entry("p1", "ch1", 100)];
        let audit = audit(&requested, &charges, &journal, 0);
        assert!(audit.is_clean(), "{audit:?}");
        assert_eq!((audit.charged_once, audit.recorded_once), (2, 2));
    }

    #[test]
    fn every_kind_of_wrong_is_counted() {
        let requested = [payment("p1", 100), payment("p2", 200), payment("p3", 300)];
        let charges = [
            charge("ch1", "p1", 100),
            charge("ch2", "p1", 100), // p1 twice
            charge("ch3", "p2", 250), // p2 wrong amount; p3 never charged
            charge("ch4", "zz", 1),   // unrequested
        ];
        let journal = [
            entry("p1", "ch1", 100),
            entry("p1", "ch2", 100), // p1 recorded twice
            entry("p2", "ch9", 200), // p2 recorded with a charge that does not exist
            entry("zz", "ch4", 1),
            "not json".to_string(), // p3 never recorded
        ];
        let audit = audit(&requested, &charges, &journal, 2);
        assert!(!audit.is_clean());
        assert_eq!((audit.double_charged, audit.extra_charges, audit.never_charged), (1, 1, 1));
        assert_eq!((audit.wrong_amount, audit.unrequested_charges), (1, 1));
        assert_eq!((audit.double_recorded, audit.never_recorded, audit.mismatched_records), (1, 1, 1));
        assert_eq!((audit.unrequested_records, audit.unreadable_records, audit.jobs_left), (1, 1, 2));
        assert_eq!(audit.examples.len(), MAX_EXAMPLES);
    }

    #[test]
    fn a_double_charge_alone_is_caught_even_with_a_tidy_ledger() {
        // What the keyless worker leaves: the ledger has one entry, the provider two charges.
        let requested = [payment("p1", 100)];
        let charges = [charge("ch1", "p1", 100), charge("ch2", "p1", 100)];
        let audit = audit(&requested, &charges, &[entry("p1", "ch2", 100)], 0);
        assert_eq!((audit.double_charged, audit.recorded_once, audit.mismatched_records), (1, 1, 0));
        assert!(!audit.is_clean());
    }
}
