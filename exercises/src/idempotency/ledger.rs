//! The payment ledger in the KV store: an append-only journal of charges, written at
//! most once per payment however often a worker retries.
//!
//! Per run, one list and one marker per payment:
//!
//! ```text
//!  <ns>:journal              LIST    one JSON entry per recorded charge, in order
//!                                    (what accounting reads)
//!  <ns>:recorded:<payment>   STRING  the charge id (what makes the append conditional)
//!
//!  record(entry):  WATCH <ns>:recorded:<payment>
//!                  GET   <ns>:recorded:<payment>   present -> UNWATCH, AlreadyRecorded
//!                  MULTI
//!                    SET   <ns>:recorded:<payment> <charge>
//!                    RPUSH <ns>:journal <entry>
//!                  EXEC                             nil -> someone recorded it: look again
//! ```
//!
//! **The promise.** The marker and the journal entry are written by one
//! `MULTI`/`EXEC`, so a worker killed anywhere leaves both or neither (a transaction
//! whose connection closes before `EXEC` is discarded by the server). The `WATCH` makes
//! the append conditional on the marker not having changed since the `GET`, so two
//! workers recording the same payment at once (a TTR ran out while the first was slow)
//! append once. `SETNX` alone would not do: a kill between it and the `RPUSH` would
//! leave a payment marked recorded that the journal does not have. The marker is one
//! key per payment rather than one hash for all of them because `WATCH` watches a
//! whole key: on a shared hash every worker's append would abort every other worker's
//! transaction.
//!
//! `WATCH` state belongs to the connection, so a [`Ledger`] owns its connection and is
//! `&mut self`: one per worker, never shared. [`LedgerWrite::Blind`] is the
//! deliberately broken version (append without the check). Left out: the journal's
//! growth (a real ledger is a table with a unique constraint on the payment id, which
//! is what the markers stand in for), and expiring the markers (a real system keeps
//! them as long as a redelivery is possible).

use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};

/// How often a record looks again after its `EXEC` was aborted. Only a writer of the
/// same payment's marker aborts it, and then the next look finds the marker, so the
/// second attempt always ends it; the bound is for a store that misbehaves.
const RECORD_ATTEMPTS: usize = 5;

/// One journal entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub payment_id: String,
    pub account: String,
    pub amount_cents: u64,
    pub charge_id: String,
}

/// How a record is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LedgerWrite {
    /// `WATCH`/`HGET`/`MULTI`: appended at most once per payment.
    #[default]
    Checked,
    /// Broken on purpose: `RPUSH` then `HSET`, no check, no transaction. A payment
    /// redelivered after its ledger write is appended again.
    Blind,
}

/// What a record did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    Appended,
    /// The payment was already in the journal, with this charge id.
    AlreadyRecorded {
        charge_id: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("KV store: {0}")]
    Kv(#[from] redis::RedisError),
    #[error("journal entry for {0} does not serialise: {1}")]
    Encode(String, String),
    #[error("{RECORD_ATTEMPTS} transactions in a row were aborted though the marker stayed absent; is the KV store honouring WATCH?")]
    Contended,
}

/// The names of one run's ledger keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerKeys {
    namespace: String,
    pub journal: String,
}

impl LedgerKeys {
    pub fn new(namespace: &str) -> LedgerKeys {
        LedgerKeys { namespace: namespace.to_string(), journal: format!("{namespace}:journal") }
    }

    /// The marker that says `payment_id` is in the journal.
    pub fn marker(&self, payment_id: &str) -> String {
        format!("{}:recorded:{payment_id}", self.namespace)
    }
}

/// One worker's handle on the ledger, with its own connection.
pub struct Ledger {
    /// Owned, not a clone of a shared one: `WATCH` is per connection.
    conn: MultiplexedConnection,
    keys: LedgerKeys,
    write: LedgerWrite,
}

impl Ledger {
    /// Opens a connection of its own to the KV store at `url`.
    pub async fn connect(url: &str, keys: LedgerKeys, write: LedgerWrite) -> Result<Ledger, LedgerError> {
        let conn = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
        Ok(Ledger { conn, keys, write })
    }

    /// Records `entry` (at most once per payment, unless the write is [`LedgerWrite::Blind`]).
    pub async fn record(&mut self, entry: &LedgerEntry) -> Result<Recorded, LedgerError> {
        let json =
            serde_json::to_string(entry).map_err(|e| LedgerError::Encode(entry.payment_id.clone(), e.to_string()))?;
        let conn = &mut self.conn;
        let marker = self.keys.marker(&entry.payment_id);
        if self.write == LedgerWrite::Blind {
            let _: () = redis::cmd("RPUSH").arg(&self.keys.journal).arg(&json).query_async(conn).await?;
            let _: () = redis::cmd("SET").arg(&marker).arg(&entry.charge_id).query_async(conn).await?;
            return Ok(Recorded::Appended);
        }
        for _ in 0..RECORD_ATTEMPTS {
            let _: () = redis::cmd("WATCH").arg(&marker).query_async(conn).await?;
            let existing: Option<String> = redis::cmd("GET").arg(&marker).query_async(conn).await?;
            if let Some(charge_id) = existing {
                let _: () = redis::cmd("UNWATCH").query_async(conn).await?;
                return Ok(Recorded::AlreadyRecorded { charge_id });
            }
            let applied: Option<()> = redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(&marker)
                .arg(&entry.charge_id)
                .ignore()
                .cmd("RPUSH")
                .arg(&self.keys.journal)
                .arg(&json)
                .ignore()
                .query_async(conn)
                .await?;
            if applied.is_some() {
                return Ok(Recorded::Appended);
            }
            // EXEC was aborted: another worker recorded this payment in between. Look again.
        }
        Err(LedgerError::Contended)
    }
}

/// The journal as stored: every entry's raw text, in order (an unreadable entry is the
/// audit's to report, not a reason to stop reading).
pub async fn read_journal(conn: &mut MultiplexedConnection, keys: &LedgerKeys) -> Result<Vec<String>, LedgerError> {
    Ok(redis::cmd("LRANGE").arg(&keys.journal).arg(0).arg(-1).query_async(conn).await?)
}

/// Deletes the run's journal and the markers of `payment_ids`.
pub async fn delete(
    conn: &mut MultiplexedConnection,
    keys: &LedgerKeys,
    payment_ids: &[String],
) -> Result<(), LedgerError> {
    let _: () = redis::cmd("DEL").arg(&keys.journal).query_async(conn).await?;
    for chunk in payment_ids.chunks(500) {
        let markers: Vec<String> = chunk.iter().map(|id| keys.marker(id)).collect();
        let _: () = redis::cmd("DEL").arg(&markers).query_async(conn).await?;
    }
    Ok(())
}
