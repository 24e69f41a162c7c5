//! The linearizability checker: did the replicated map behave like one map on one machine?
//!
//! Clients record a [`History`]: for every operation, when it was called, and either when it
//! returned and with what, or that its outcome is unknown (timed out, the connection dropped,
//! the leader changed after proposing: possibly applied, no end time), or that it definitely
//! failed (refused before it was proposed). The history is *linearizable* if there is one
//! order of the operations that (1) the map's sequential specification accepts, response by
//! response, and (2) respects real time: an operation that returned before another was called
//! comes first. Jepsen, Knossos and Porcupine check distributed stores this way; this is
//! Wing & Gong's search with Lowe's memoisation, as Porcupine writes it ([`search`]).
//!
//! Three things keep the search small:
//!
//! - **Per key.** Linearizability is local, so each key's sub-history is checked on its own
//!   ([`model::Model::partition`]); 5,000 operations over 20 keys are 20 searches of 250.
//! - **Memoisation.** A (set of placed operations, register value) pair is explored once,
//!   and one that spent more timed-out operations than an explored one is skipped.
//! - **Dropped operations.** `Failed` operations never happened; a `Get` with an unknown
//!   outcome cannot constrain anything (nobody saw what it read, and it changes nothing).
//!   Both are left out before the search.
//!
//! An unknown write is optional: the search may place it anywhere after its call, or never.
//!
//! # A worked example
//!
//! Four operations on key `x`, times in nanoseconds:
//!
//! ```text
//!   client 1  [0 ---- PUT x 1 ---- 10]
//!   client 2      [5 ----------- GET x -> 2 ----------- 30]
//!   client 3         [8 ---- PUT x 2 ---- 20]
//!   client 4                                                [35 -- GET x -> 1 -- 40]
//!
//!   events in time order:  call P1 · call G2 · call P2 · ret P1 · ret P2 · ret G2 · call G1 · ret G1
//! ```
//!
//! The candidates for the first place are the calls before the first return (`ret P1`): P1,
//! G2, P2. The search tries them in order:
//!
//! 1. P1 (x = 1). Next candidates, up to `ret P2`: G2 reads 2 but x is 1, no; P2 (x = 2).
//!    Then G2 (reads 2, yes). Then G1 reads 1 but x is 2: dead end. Backtrack: undo G2, P2
//!    and P1; each has no other candidate left in its position.
//! 2. G2 first: x is absent, no.
//! 3. P2 first (x = 2). Then P1 (x = 1): G2 cannot follow, dead end; back to P2 and try G2
//!    (reads 2, yes), then P1 (x = 1), then G1 (reads 1, yes). Every operation is placed.
//!
//! The witness is `P2, G2, P1, G1`: client 1's write took effect after client 3's, although it
//! was called first; both overlap, so that is allowed. Call G2 at 25 instead (after both
//! writes returned) and no order works: G2 needs P1 before P2, G1 needs P2 before P1. The
//! report then names key `x`, the longest prefix that worked (`P1, P2, G2`, x = 2) and the
//! operation that could not follow it (`GET x -> 1`, where the register would answer 2).
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use miniraft::check::{check_kv, CheckBudget, History};
//! use miniraft::kv::{KvCommand, KvResponse};
//!
//! let key = Bytes::from_static(b"x");
//! let mut history = History::new();
//! let put = history.invoke(1, KvCommand::Put { key: key.clone(), value: Bytes::from_static(b"1") }, 0);
//! history.complete(put, KvResponse::Ok, 10);
//! // A read that starts after the write returned and misses it: a stale read.
//! let get = history.invoke(2, KvCommand::Get { key: key.clone() }, 20);
//! history.complete(get, KvResponse::Value(None), 30);
//!
//! let report = check_kv(&history, CheckBudget::default());
//! assert!(!report.is_linearizable());
//! println!("{}", report.violations[0]); // the key, the prefix, the read, with times
//! ```
//!
//! Left out: checking across keys (a multi-key transaction would need a multi-key model), and
//! Porcupine's parallel search and HTML visualisation; the text report is the excerpt.

pub mod model;
pub mod search;

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;

use crate::kv::{KvCommand, KvResponse};
use model::{KvRegister, Model};
use search::{DeadEnd, SearchOp, SearchResult};

/// One client operation in a history. Times are nanoseconds (virtual in the simulator, since
/// a start `Instant` in the process test); only their order matters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Who sent it, for the report (the checker does not need it: real time orders a client's
    /// own operations anyway).
    pub client: u64,
    /// What was asked.
    pub command: KvCommand,
    /// When the client sent it.
    pub call: u64,
    /// What came of it.
    pub outcome: Outcome,
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The client got `response` at time `at`.
    Returned { response: KvResponse, at: u64 },
    /// Timed out, crashed, connection lost: possibly applied, no end time.
    Unknown,
    /// Definitely not applied (e.g. NotLeader before proposing): dropped by the checker.
    Failed,
}

/// An operation's place in its [`History`], returned by [`History::invoke`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(usize);

impl OpId {
    /// The operation's index in [`History::operations`].
    pub fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A complete operation that cannot be recorded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error(
        "an operation returned at {at} ns, before its call at {call} ns; take both times from one monotonic clock"
    )]
    ReturnBeforeCall { call: u64, at: u64 },
}

/// A record of client operations, in invocation order.
///
/// An operation is invoked, then resolved once: [`complete`](History::complete),
/// [`unknown`](History::unknown) or [`fail`](History::fail). One still pending when the
/// history is checked counts as unknown (the client never heard back).
#[derive(Clone, Debug, Default)]
pub struct History {
    operations: Vec<Operation>,
    /// Whether each operation was resolved: a pending one reads as `Outcome::Unknown`, and
    /// resolving twice is a bug in the recording client that must not pass silently.
    resolved: Vec<bool>,
}

impl History {
    /// An empty history.
    pub fn new() -> History {
        History::default()
    }

    /// Records that `client` sent `command` at `call_time`.
    pub fn invoke(&mut self, client: u64, command: KvCommand, call_time: u64) -> OpId {
        self.operations.push(Operation { client, command, call: call_time, outcome: Outcome::Unknown });
        self.resolved.push(false);
        OpId(self.operations.len() - 1)
    }

    /// Records that `op` returned `response` at `at`.
    ///
    /// # Panics
    ///
    /// If `op` is not from this history, was already resolved, or `at` is before its call:
    /// all bugs of the recording code, which would otherwise corrupt the check.
    pub fn complete(&mut self, op: OpId, response: KvResponse, at: u64) {
        let call = self.pending(op).call;
        assert!(at >= call, "{op} returned at {at} ns, before its call at {call} ns");
        self.resolve(op, Outcome::Returned { response, at });
    }

    /// Records that `op` may or may not have taken effect (timeout, crash, lost connection).
    ///
    /// # Panics
    ///
    /// If `op` is not from this history or was already resolved.
    pub fn unknown(&mut self, op: OpId) {
        self.pending(op);
        self.resolve(op, Outcome::Unknown);
    }

    /// Records that `op` definitely did not take effect.
    ///
    /// # Panics
    ///
    /// If `op` is not from this history or was already resolved.
    pub fn fail(&mut self, op: OpId) {
        self.pending(op);
        self.resolve(op, Outcome::Failed);
    }

    /// Adds an already resolved operation (for histories built by hand or loaded from a file).
    pub fn push(&mut self, operation: Operation) -> Result<OpId, HistoryError> {
        if let Outcome::Returned { at, .. } = operation.outcome {
            if at < operation.call {
                return Err(HistoryError::ReturnBeforeCall { call: operation.call, at });
            }
        }
        self.operations.push(operation);
        self.resolved.push(true);
        Ok(OpId(self.operations.len() - 1))
    }

    /// The number of operations.
    pub fn len(&self) -> usize {
        self.operations.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    /// The operations, in invocation order (indexed by [`OpId::index`]).
    pub fn operations(&self) -> &[Operation] {
        &self.operations
    }

    /// The number of operations invoked and not yet resolved.
    pub fn pending_count(&self) -> usize {
        self.resolved.iter().filter(|resolved| !**resolved).count()
    }

    fn pending(&self, op: OpId) -> &Operation {
        assert!(op.0 < self.operations.len(), "{op} is not an operation of this history");
        assert!(!self.resolved[op.0], "{op} was already resolved as {:?}", self.operations[op.0].outcome);
        &self.operations[op.0]
    }

    fn resolve(&mut self, op: OpId, outcome: Outcome) {
        self.operations[op.0].outcome = outcome;
        self.resolved[op.0] = true;
    }
}

/// How much work one key's search may do before giving up with [`CheckResult::Unknown`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckBudget {
    /// Model steps (candidate states) tried per key. A linearizable key with a few
    /// overlapping clients needs a few per operation; an exhausted budget means many
    /// overlapping or timed-out operations on one key, which more keys or fewer timeouts fix.
    pub max_states_per_key: u64,
}

impl Default for CheckBudget {
    /// One million steps. A search that uses them all (every step a new configuration, the
    /// worst case) took about 0.4 s and 25 MB in a release build and 2 s in a debug build here;
    /// linearizable histories need a few steps per operation (5,000 operations: 10,000 steps).
    fn default() -> CheckBudget {
        CheckBudget { max_states_per_key: 1_000_000 }
    }
}

/// The verdict over all keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// Every key has a linearization.
    Linearizable,
    /// At least one key has none (see [`KvCheckReport::violations`]).
    NotLinearizable,
    /// No violation found, but some key's search ran out of budget (see
    /// [`KvCheckReport::undecided`]).
    Unknown,
}

/// What [`check_kv`] found.
#[derive(Clone, Debug)]
pub struct KvCheckReport {
    /// Keys checked.
    pub keys: usize,
    /// Operations checked (after dropping failed operations and unknown reads).
    pub operations: usize,
    /// Operations dropped before the search.
    pub dropped: usize,
    /// Model steps tried, over all keys.
    pub steps: u64,
    pub result: CheckResult,
    /// One per key without a linearization, in key order.
    pub violations: Vec<Violation>,
    /// Keys whose search ran out of budget.
    pub undecided: Vec<Undecided>,
}

impl KvCheckReport {
    /// Whether every key was shown linearizable (an exhausted budget is not).
    pub fn is_linearizable(&self) -> bool {
        self.result == CheckResult::Linearizable
    }
}

/// How many operations of a violation's prefix the report prints: the last ones, which led to
/// the state the stuck operations disagree with.
const PREFIX_EXCERPT: usize = 8;

/// A key whose history has no linearization, with an excerpt to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub key: Bytes,
    /// Operations checked on this key.
    pub key_operations: usize,
    /// The length of the longest linearizable prefix the search found.
    pub prefix_len: usize,
    /// Its last operations (at most 8), in linearization order.
    pub prefix_tail: Vec<PlacedOperation>,
    /// The register's value after the prefix.
    pub state: Option<Bytes>,
    /// The operations that could have come next, none of which fits.
    pub unplaced: Vec<UnplacedOperation>,
}

/// An operation of a violation's linearizable prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedOperation {
    pub id: OpId,
    pub operation: Operation,
    /// The register's value after it.
    pub state_after: Option<Bytes>,
}

/// An operation that could not follow a violation's prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnplacedOperation {
    pub id: OpId,
    pub operation: Operation,
    /// What the register would have answered after the prefix.
    pub expected: KvResponse,
    /// Whether this is the operation whose return closed the window: it had to be placed
    /// before anything called later, and could not be.
    pub blocking: bool,
}

/// A key the search gave up on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Undecided {
    pub key: Bytes,
    pub key_operations: usize,
    /// Of which with an unknown outcome: each is concurrent with everything after its call,
    /// the usual reason a search explodes.
    pub unknown_operations: usize,
    pub steps: u64,
}

/// Checks a history of the replicated map for linearizability, key by key.
pub fn check_kv(history: &History, budget: CheckBudget) -> KvCheckReport {
    let operations = history.operations();
    // The operations that take part, with their history index.
    let mut ids = Vec::with_capacity(operations.len());
    let mut search_ops = Vec::with_capacity(operations.len());
    for (index, op) in operations.iter().enumerate() {
        let returned = match &op.outcome {
            Outcome::Returned { response, at } => Some((response, *at)),
            Outcome::Unknown if op.command.is_read() => continue,
            Outcome::Unknown => None,
            Outcome::Failed => continue,
        };
        ids.push(OpId(index));
        search_ops.push(SearchOp::<KvRegister> { input: &op.command, call: op.call, returned });
    }
    let partitions = check_partitions(&KvRegister, &search_ops, budget.max_states_per_key);

    let mut report = KvCheckReport {
        keys: partitions.len(),
        operations: search_ops.len(),
        dropped: operations.len() - search_ops.len(),
        steps: 0,
        result: CheckResult::Linearizable,
        violations: Vec::new(),
        undecided: Vec::new(),
    };
    for partition in partitions {
        report.steps += partition.steps;
        match partition.result {
            SearchResult::Linearizable { .. } => {}
            SearchResult::NotLinearizable(dead_end) => {
                report.violations.push(violation(history, &ids, partition.key, partition.members.len(), dead_end));
            }
            SearchResult::Exhausted { .. } => {
                let unknown_operations =
                    partition.members.iter().filter(|&&i| search_ops[i].returned.is_none()).count();
                report.undecided.push(Undecided {
                    key: partition.key,
                    key_operations: partition.members.len(),
                    unknown_operations,
                    steps: partition.steps,
                });
            }
        }
    }
    report.result = if !report.violations.is_empty() {
        CheckResult::NotLinearizable
    } else if !report.undecided.is_empty() {
        CheckResult::Unknown
    } else {
        CheckResult::Linearizable
    };
    report
}

/// One partition's search, with indexes into the slice given to [`check_partitions`].
#[derive(Debug)]
pub struct PartitionCheck<M: Model> {
    pub key: M::PartitionKey,
    /// The operations of this partition (indexes into the checked slice), in slice order.
    pub members: Vec<usize>,
    /// Indexes in the witness and the dead end are into the checked slice too.
    pub result: SearchResult<M::State>,
    pub steps: u64,
}

/// Splits `ops` by [`Model::partition`] and searches each part with at most
/// `max_steps_per_partition` steps: the generic layer under [`check_kv`], for other models.
pub fn check_partitions<M: Model>(
    model: &M,
    ops: &[SearchOp<'_, M>],
    max_steps_per_partition: u64,
) -> Vec<PartitionCheck<M>> {
    let mut parts: BTreeMap<M::PartitionKey, Vec<usize>> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        parts.entry(model.partition(op.input)).or_default().push(i);
    }
    parts
        .into_iter()
        .map(|(key, members)| {
            let local: Vec<SearchOp<'_, M>> = members
                .iter()
                .map(|&i| SearchOp { input: ops[i].input, call: ops[i].call, returned: ops[i].returned })
                .collect();
            let search = search::linearize(model, &local, max_steps_per_partition);
            let global = |local: usize| members[local];
            let result = match search.result {
                SearchResult::Linearizable { order } => {
                    SearchResult::Linearizable { order: order.into_iter().map(global).collect() }
                }
                SearchResult::NotLinearizable(dead_end) => SearchResult::NotLinearizable(remap(dead_end, global)),
                SearchResult::Exhausted { deepest } => {
                    SearchResult::Exhausted { deepest: deepest.map(|dead_end| remap(dead_end, global)) }
                }
            };
            PartitionCheck { key, members, result, steps: search.steps }
        })
        .collect()
}

fn remap<S>(dead_end: DeadEnd<S>, global: impl Fn(usize) -> usize) -> DeadEnd<S> {
    DeadEnd {
        prefix: dead_end.prefix.into_iter().map(|(i, state)| (global(i), state)).collect(),
        state: dead_end.state,
        candidates: dead_end.candidates.into_iter().map(&global).collect(),
        blocking: global(dead_end.blocking),
    }
}

/// Builds the printable excerpt of a key's dead end; `ids` maps search indexes to history ids.
fn violation(
    history: &History,
    ids: &[OpId],
    key: Bytes,
    key_operations: usize,
    dead_end: DeadEnd<Option<Bytes>>,
) -> Violation {
    let operation = |i: usize| history.operations()[ids[i].0].clone();
    let skip = dead_end.prefix.len().saturating_sub(PREFIX_EXCERPT);
    let prefix_tail = dead_end.prefix[skip..]
        .iter()
        .map(|(i, state)| PlacedOperation { id: ids[*i], operation: operation(*i), state_after: state.clone() })
        .collect();
    let unplaced = dead_end
        .candidates
        .iter()
        .map(|&i| {
            let operation = operation(i);
            let (expected, _) = KvRegister::apply(&dead_end.state, &operation.command);
            UnplacedOperation { id: ids[i], operation, expected, blocking: i == dead_end.blocking }
        })
        .collect();
    Violation { key, key_operations, prefix_len: dead_end.prefix.len(), prefix_tail, state: dead_end.state, unplaced }
}

// ---- printing ----

/// Bytes as a quoted string, non-printable bytes escaped.
struct Quoted<'a>(&'a [u8]);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

/// A register value: quoted, or `nil` for absent (redis-cli's word for it).
struct Value<'a>(&'a Option<Bytes>);

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(value) => Quoted(value).fmt(f),
            None => f.write_str("nil"),
        }
    }
}

/// Nanoseconds as milliseconds with full precision: `1.250000ms`.
struct Time(u64);

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}ms", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

/// A command in the client protocol's words.
struct Command<'a>(&'a KvCommand);

impl fmt::Display for Command<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            KvCommand::Put { key, value } => write!(f, "SET {} {}", Quoted(key), Quoted(value)),
            KvCommand::Delete { key } => write!(f, "DEL {}", Quoted(key)),
            KvCommand::Cas { key, expected, new } => {
                write!(f, "CAS {} {} {}", Quoted(key), Value(expected), Quoted(new))
            }
            KvCommand::Get { key } => write!(f, "GET {}", Quoted(key)),
        }
    }
}

/// A response in the client protocol's words.
struct Response<'a>(&'a KvResponse);

impl fmt::Display for Response<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            KvResponse::Ok => f.write_str("OK"),
            KvResponse::Value(value) => Value(value).fmt(f),
            KvResponse::Deleted(existed) => write!(f, "{}", if *existed { "deleted" } else { "absent" }),
            KvResponse::Cas(swapped) => write!(f, "{}", if *swapped { "swapped" } else { "not swapped" }),
            KvResponse::Invalid => f.write_str("INVALID"),
        }
    }
}

impl fmt::Display for Operation {
    /// `client 3  GET "k" -> "v"  [1.000000ms, 2.500000ms]`; unknown outcomes end at `?`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {}  {} -> ", self.client, Command(&self.command))?;
        match &self.outcome {
            Outcome::Returned { response, at } => {
                write!(f, "{}  [{}, {}]", Response(response), Time(self.call), Time(*at))
            }
            Outcome::Unknown => write!(f, "unknown  [{}, ?]", Time(self.call)),
            Outcome::Failed => write!(f, "failed  [{}, -]", Time(self.call)),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {}: not linearizable. The longest linearizable prefix found has {} of its {} operations; \
             no operation can follow it.",
            Quoted(&self.key),
            self.prefix_len,
            self.key_operations
        )?;
        if self.prefix_len > self.prefix_tail.len() {
            writeln!(f, "  prefix (last {}, in linearization order; => the value after):", self.prefix_tail.len())?;
        } else {
            writeln!(f, "  prefix (in linearization order; => the value after):")?;
        }
        for placed in &self.prefix_tail {
            writeln!(f, "    {:>6}  {}  => {}", placed.id.to_string(), placed.operation, Value(&placed.state_after))?;
        }
        writeln!(f, "  value after the prefix: {}", Value(&self.state))?;
        writeln!(f, "  operations that could come next, none of which fits:")?;
        for unplaced in &self.unplaced {
            write!(f, "    {:>6}  {}", unplaced.id.to_string(), unplaced.operation)?;
            if unplaced.operation.outcome == Outcome::Unknown {
                write!(f, "  (outcome unknown: fits, but nothing after it does)")?;
            } else {
                write!(f, "  (here it would answer {})", Response(&unplaced.expected))?;
            }
            if unplaced.blocking {
                write!(f, "  <- returned before anything later was called, so it must go here")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

impl fmt::Display for Undecided {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "key {}: undecided after {} steps ({} operations, {} with unknown outcome); raise \
             CheckBudget::max_states_per_key or spread the load over more keys",
            Quoted(&self.key),
            self.steps,
            self.key_operations,
            self.unknown_operations
        )
    }
}

impl fmt::Display for KvCheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match self.result {
            CheckResult::Linearizable => "linearizable",
            CheckResult::NotLinearizable => "NOT linearizable",
            CheckResult::Unknown => "undecided",
        };
        writeln!(
            f,
            "{verdict}: {} keys, {} operations checked ({} dropped: failed, or reads with unknown outcome), {} steps",
            self.keys, self.operations, self.dropped, self.steps
        )?;
        for violation in &self.violations {
            write!(f, "{violation}")?;
        }
        for undecided in &self.undecided {
            writeln!(f, "{undecided}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn pending_operations_read_as_unknown() {
        let mut history = History::new();
        let op = history.invoke(1, KvCommand::Put { key: b("k"), value: b("v") }, 3);
        assert_eq!(history.operations()[op.index()].outcome, Outcome::Unknown);
        assert_eq!(history.pending_count(), 1);
        history.fail(op);
        assert_eq!(history.pending_count(), 0);
        assert_eq!(history.operations()[0].outcome, Outcome::Failed);
    }

    #[test]
    #[should_panic(expected = "already resolved")]
    fn resolving_twice_is_refused() {
        let mut history = History::new();
        let op = history.invoke(1, KvCommand::Get { key: b("k") }, 0);
        history.complete(op, KvResponse::Value(None), 1);
        history.unknown(op);
    }

    #[test]
    #[should_panic(expected = "before its call")]
    fn returning_before_the_call_is_refused() {
        let mut history = History::new();
        let op = history.invoke(1, KvCommand::Get { key: b("k") }, 10);
        history.complete(op, KvResponse::Value(None), 9);
    }

    #[test]
    fn push_validates_times() {
        let mut history = History::new();
        let op = Operation {
            client: 1,
            command: KvCommand::Get { key: b("k") },
            call: 10,
            outcome: Outcome::Returned { response: KvResponse::Value(None), at: 9 },
        };
        assert_eq!(history.push(op), Err(HistoryError::ReturnBeforeCall { call: 10, at: 9 }));
        assert!(history.is_empty());
    }

    #[test]
    fn failed_operations_and_unknown_reads_are_dropped() {
        let mut history = History::new();
        // A failed put of "x" and an unknown read that "saw" it: neither counts.
        let put = history.invoke(1, KvCommand::Put { key: b("k"), value: b("x") }, 0);
        history.fail(put);
        let get = history.invoke(2, KvCommand::Get { key: b("k") }, 1);
        history.unknown(get);
        let get = history.invoke(2, KvCommand::Get { key: b("k") }, 2);
        history.complete(get, KvResponse::Value(None), 3);
        let report = check_kv(&history, CheckBudget::default());
        assert!(report.is_linearizable(), "{report}");
        assert_eq!((report.keys, report.operations, report.dropped), (1, 1, 2));
    }

    #[test]
    fn the_report_prints_the_key_the_prefix_and_the_stuck_read() {
        // The module docs' example with G2 called at 25.
        let key = b("x");
        let mut history = History::new();
        let p1 = history.invoke(1, KvCommand::Put { key: key.clone(), value: b("1") }, 0);
        let g2 = history.invoke(2, KvCommand::Get { key: key.clone() }, 25);
        let p2 = history.invoke(3, KvCommand::Put { key: key.clone(), value: b("2") }, 8);
        let g1 = history.invoke(4, KvCommand::Get { key: key.clone() }, 35);
        history.complete(p1, KvResponse::Ok, 10);
        history.complete(g2, KvResponse::Value(Some(b("2"))), 30);
        history.complete(p2, KvResponse::Ok, 20);
        history.complete(g1, KvResponse::Value(Some(b("1"))), 40);
        let report = check_kv(&history, CheckBudget::default());
        assert_eq!(report.result, CheckResult::NotLinearizable);
        let violation = &report.violations[0];
        assert_eq!(violation.key, key);
        assert_eq!(violation.prefix_len, 3);
        assert_eq!(violation.state, Some(b("2")));
        assert_eq!(violation.unplaced.len(), 1);
        assert_eq!(violation.unplaced[0].id, g1);
        assert_eq!(violation.unplaced[0].expected, KvResponse::Value(Some(b("2"))));
        let text = violation.to_string();
        for needle in [
            "key \"x\": not linearizable",
            "#3  client 4  GET \"x\" -> \"1\"  [0.000035ms, 0.000040ms]  (here it would answer \"2\")",
            "#1  client 2  GET \"x\" -> \"2\"",
            "value after the prefix: \"2\"",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
    }

    #[test]
    fn the_worked_example_is_linearizable() {
        let key = b("x");
        let rows = [(1, "1", 0, 10), (3, "2", 8, 20)];
        let mut history = History::new();
        for (client, value, call, at) in rows {
            let op = history.invoke(client, KvCommand::Put { key: key.clone(), value: b(value) }, call);
            history.complete(op, KvResponse::Ok, at);
        }
        for (client, value, call, at) in [(2, "2", 5, 30), (4, "1", 35, 40)] {
            let op = history.invoke(client, KvCommand::Get { key: key.clone() }, call);
            history.complete(op, KvResponse::Value(Some(b(value))), at);
        }
        let report = check_kv(&history, CheckBudget::default());
        assert!(report.is_linearizable(), "{report}");
    }
}
