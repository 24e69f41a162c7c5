//! The search for a linearization of one partition's operations: Wing & Gong's algorithm
//! with Lowe's memoisation, as Porcupine implements it.
//!
//! The history becomes a doubly linked list of *events*, one call and one return per
//! operation, in time order. At any moment the list holds the operations not yet placed in
//! the linearization. An operation may be placed next iff its call comes before the first
//! return in the list: otherwise some unplaced operation finished before it started, and
//! real-time order says that one goes first. So the search walks the list from the head,
//! trying each call until the first return:
//!
//! - if the model accepts the operation from the current state, the operation is *lifted*
//!   (its call and return unlinked, O(1)), pushed on a stack with the state before it, and
//!   the walk restarts from the head;
//! - if the walk reaches a return, every candidate failed: pop the last placed operation,
//!   *unlift* it (relink its two events; they still point at their old neighbours), restore
//!   the state, and go on with the call after it.
//!
//! Success is a list with no known operation left in it (below); failure is a dead end with
//! an empty stack. Lowe's improvement
//! (Testing for linearizability, 2017) is a cache of every (set of placed operations, state)
//! pair already reached: reaching one again means its whole subtree was already explored
//! without success, so it is skipped. That turns the factorial search into one bounded by
//! the number of distinct configurations, which is small when few operations overlap.
//!
//! Choices of this implementation (the rest is Porcupine's `checkSingle`):
//!
//! - **Ties.** At equal times calls sort before returns: an operation that returned at `t`
//!   precedes one called at `t` only if `return < call` strictly, so equal timestamps count
//!   as overlapping. That can only accept more histories, never report a false violation
//!   from a coarse clock.
//! - **Unknown outcomes** (timeouts) have no return time: they return at "infinity",
//!   after every finite event, so they never constrain anything. They are *optional*: the
//!   search succeeds as soon as every operation with a known outcome is placed (an unknown
//!   operation that was never applied is simply never placed), and the model steps them with
//!   no output, so only their effect on the state counts.
//! - **Known candidates first.** At each configuration the walk tries the operations with a
//!   known outcome before the unknown ones, so an unknown write is placed only when no known
//!   operation can go next without it, and the first path to reach a configuration tends to
//!   be the one that spent the fewest timed-out operations.
//! - **Dominance, not just equality.** Porcupine's cache key is (placed set, state). Here it
//!   is (known operations placed, state), holding the sets of unknown operations placed with
//!   it; a configuration whose unknown set contains one already entered is skipped. That is
//!   sound because unknown operations are optional and never block anything: the earlier
//!   configuration can do everything the later one can, and has more timed-out operations
//!   left to use. Without it, k pending timeouts on a key make a failing search try all 2^k
//!   subsets of them; with it (and known-first) a history with a violation and fifteen
//!   pending timeouts on a key is decided in thousands of steps, not millions.
//! - **The overwrite rule.** A timed-out operation immediately followed by a timed-out
//!   overwrite ([`Model::overwrites`], a put or delete) has no effect, so the search never
//!   places an unknown overwrite right after an unknown operation; dropping the first one
//!   gives the same state with fewer operations spent, which dominance prefers anyway.
//! - **Budget.** The search counts model steps and gives up past `max_steps`, so a pathological
//!   partition (many overlapping operations, many pending timeouts) ends as "unknown" instead of
//!   running for hours.
//! - **Excerpt.** At every dead end the search remembers the deepest one (most known operations
//!   placed, then fewest unknown ones): the prefix that was linearizable, the state it left, and the candidates none of
//!   which could go next. That is what a violation report prints.
//!
//! Left out: Porcupine's parallel search over partitions and its visualisation, and a proof
//! of the dominance rule beyond the argument above; `tests/checker.rs` checks it against a
//! brute-force search over every order.

use std::cmp::Reverse;
use std::hash::{Hash, Hasher};

use hashbrown::{Equivalent, HashMap};

use super::model::Model;

/// One operation of a partition, as the search sees it: times and the model's input/output.
#[derive(Debug)]
pub struct SearchOp<'a, M: Model> {
    /// What the client asked.
    pub input: &'a M::Input,
    /// When the client sent it.
    pub call: u64,
    /// What the client was told and when; `None` for an unknown outcome, which returns at
    /// "infinity" and may or may not have taken effect.
    pub returned: Option<(&'a M::Output, u64)>,
}

/// What the search concluded.
#[derive(Debug, PartialEq, Eq)]
pub enum SearchResult<S> {
    /// `order` is a witness: the operations (indexes into the input slice) in linearization
    /// order. It holds every operation with a known outcome and the unknown ones that took
    /// effect.
    Linearizable { order: Vec<usize> },
    /// No linearization exists; the deepest dead end found.
    NotLinearizable(DeadEnd<S>),
    /// The step budget ran out before an answer; the deepest dead end found so far, if any.
    Exhausted { deepest: Option<DeadEnd<S>> },
}

/// The furthest the search got: a linearizable prefix and the operations that could not
/// follow it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadEnd<S> {
    /// The placed operations in linearization order, each with the state after it.
    pub prefix: Vec<(usize, S)>,
    /// The state after the prefix (the initial state if it is empty).
    pub state: S,
    /// The unplaced operations called before `blocking` returned: the only ones that could
    /// have gone next, and none could (the model refused them, or every continuation after
    /// them was already known to fail).
    pub candidates: Vec<usize>,
    /// The unplaced operation whose return ends the candidates: it had to be placed before
    /// that return and could not be.
    pub blocking: usize,
}

/// The result with the work it took.
#[derive(Debug)]
pub struct Search<S> {
    pub result: SearchResult<S>,
    /// Model steps tried (the budget counts these).
    pub steps: u64,
    /// Configurations entered: (placed set, state) pairs neither seen nor dominated before.
    pub configurations: usize,
}

/// Searches for a linearization of `ops` (one partition) under `model`, trying at most
/// `max_steps` model steps.
///
/// # Panics
///
/// If an operation returned before it was called; [`super::History`] refuses such
/// operations, so this is a caller's bug.
pub fn linearize<M: Model>(model: &M, ops: &[SearchOp<'_, M>], max_steps: u64) -> Search<M::State> {
    for (i, op) in ops.iter().enumerate() {
        if let Some((_, at)) = op.returned {
            assert!(at >= op.call, "operation {i} returned at {at}, before its call at {}", op.call);
        }
    }
    let mut list = EventList::new(ops);
    let known_total = ops.iter().filter(|op| op.returned.is_some()).count();
    let mut known_left = known_total;
    // Unknown operations not yet placed: when none is left, the second pass is skipped.
    let mut unknown_left = ops.len() - known_total;
    let mut state = model.init();
    let mut placed_known = Bitset::new(ops.len());
    let mut placed_unknown = Bitset::new(ops.len());
    // foldhash, not SipHash: the keys are our own, not an attacker's, and hashing is a good
    // part of each step. Fixed seed, so step counts are the same from run to run.
    let mut seen: Seen<M::State> = HashMap::with_hasher(foldhash::fast::FixedState::default());
    let mut configurations = 0usize;
    let mut stack: Vec<Frame<M::State>> = Vec::new();
    let mut deepest: Option<(Depth, DeadEnd<M::State>)> = None;
    let mut steps = 0u64;
    let mut pass = Pass::Known;
    let mut entry = list.next[HEAD];

    loop {
        if known_left == 0 {
            let order = stack.iter().map(|frame| EventList::op_of(frame.call)).collect();
            return Search { result: SearchResult::Linearizable { order }, steps, configurations };
        }
        if EventList::is_call(entry) {
            let op = EventList::op_of(entry);
            let known = ops[op].returned.is_some();
            let skip = match pass {
                Pass::Known => !known,
                // The overwrite rule (module docs): a timed-out overwrite right after another
                // timed-out operation would make that one useless.
                Pass::Unknown => {
                    known || (model.overwrites(ops[op].input) && stack.last().is_some_and(|frame| !frame.known))
                }
            };
            if skip {
                entry = list.next[entry];
                continue;
            }
            if steps >= max_steps {
                let deepest = deepest.map(|(_, dead_end)| dead_end);
                return Search { result: SearchResult::Exhausted { deepest }, steps, configurations };
            }
            steps += 1;
            if let Some(next_state) = model.step(&state, ops[op].input, ops[op].returned.map(|(output, _)| output)) {
                let placed = if known { &mut placed_known } else { &mut placed_unknown };
                placed.insert(op);
                if enter(&mut seen, &placed_known, &placed_unknown, &next_state) {
                    configurations += 1;
                    let before = std::mem::replace(&mut state, next_state);
                    stack.push(Frame { call: entry, state_before: before, pass, known });
                    if known {
                        known_left -= 1;
                    } else {
                        unknown_left -= 1;
                    }
                    list.lift(entry);
                    entry = list.next[HEAD];
                    pass = Pass::Known;
                    continue;
                }
                let placed = if known { &mut placed_known } else { &mut placed_unknown };
                placed.remove(op);
            }
            entry = list.next[entry];
        } else {
            // A return: every candidate of this pass has been tried.
            assert!(entry != TAIL, "the walk reached the tail with {known_left} known operations unplaced");
            if pass == Pass::Known && unknown_left > 0 {
                pass = Pass::Unknown;
                entry = list.next[HEAD];
                continue;
            }
            // Deepest: most known operations placed, then fewest unknown ones (a prefix that
            // needs no guesses about timed-out writes is the easier one to read).
            let depth: Depth = (known_total - known_left, Reverse(stack.len()));
            if deepest.as_ref().is_none_or(|(best, _)| depth > *best) {
                deepest = Some((depth, dead_end(&list, &stack, &state, entry)));
            }
            let Some(frame) = stack.pop() else {
                let (_, dead_end) = deepest.expect("a dead end was just recorded");
                return Search { result: SearchResult::NotLinearizable(dead_end), steps, configurations };
            };
            let op = EventList::op_of(frame.call);
            list.unlift(frame.call);
            if frame.known {
                placed_known.remove(op);
                known_left += 1;
            } else {
                placed_unknown.remove(op);
                unknown_left += 1;
            }
            state = frame.state_before;
            entry = list.next[frame.call];
            pass = frame.pass;
        }
    }
}

/// Records the configuration (known placed, unknown placed, state) as entered and returns
/// true, or returns false if it, or one that dominates it, was entered before.
///
/// Configurations with the same known operations placed and the same state share an entry
/// that lists the sets of unknown operations they were reached with. A set that contains a
/// listed one is dominated: the listed configuration has every option this one has, plus the
/// timed-out operations it has not spent yet. Only the minimal sets are kept.
fn enter<S: Clone + Eq + Hash>(seen: &mut Seen<S>, known: &Bitset, unknown: &Bitset, state: &S) -> bool {
    // Look up by reference first: most steps of a hard search find their configuration, and
    // cloning the sets and state only to drop them again would double the cost.
    if let Some(entered) = seen.get_mut(&Configuration(known, state)) {
        if entered.iter().any(|before| before.is_subset(unknown)) {
            return false;
        }
        entered.retain(|before| !unknown.is_subset(before));
        entered.push(unknown.clone());
    } else {
        seen.insert((known.clone(), state.clone()), vec![unknown.clone()]);
    }
    true
}

/// Snapshot of the current dead end, for the report.
fn dead_end<S: Clone>(list: &EventList, stack: &[Frame<S>], state: &S, blocking_return: usize) -> DeadEnd<S> {
    // The state after placed operation i is the state before operation i + 1.
    let prefix = stack
        .iter()
        .enumerate()
        .map(|(i, frame)| {
            let after = stack.get(i + 1).map_or(state, |next| &next.state_before);
            (EventList::op_of(frame.call), after.clone())
        })
        .collect();
    let mut candidates = Vec::new();
    let mut entry = list.next[HEAD];
    while entry != blocking_return {
        if EventList::is_call(entry) {
            candidates.push(EventList::op_of(entry));
        }
        entry = list.next[entry];
    }
    DeadEnd { prefix, state: state.clone(), candidates, blocking: EventList::op_of(blocking_return) }
}

/// How deep a dead end is: known operations placed, then (reversed) all operations placed.
type Depth = (usize, Reverse<usize>);

/// Which candidates a walk tries: known outcomes first, then unknown ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    Known,
    Unknown,
}

/// A placed operation, to backtrack over.
struct Frame<S> {
    /// Its call event.
    call: usize,
    /// The state before it was applied, restored on backtrack.
    state_before: S,
    /// The pass that placed it, resumed on backtrack.
    pass: Pass,
    /// Whether its outcome is known.
    known: bool,
}

/// The configurations entered: (known operations placed, state) -> the minimal sets of
/// unknown operations placed with them (see `enter`).
type Seen<S> = HashMap<(Bitset, S), Vec<Bitset>, foldhash::fast::FixedState>;

/// A configuration by reference, to look up in [`Seen`] without cloning. It must hash exactly
/// as the tuple `(Bitset, S)` does: the fields in order.
struct Configuration<'a, S>(&'a Bitset, &'a S);

impl<S: Hash> Hash for Configuration<'_, S> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
        self.1.hash(state);
    }
}

impl<S: Eq> Equivalent<(Bitset, S)> for Configuration<'_, S> {
    fn equivalent(&self, key: &(Bitset, S)) -> bool {
        *self.0 == key.0 && *self.1 == key.1
    }
}

/// The sentinel before the first event.
const HEAD: usize = 0;
/// The sentinel after the last event.
const TAIL: usize = 1;

/// The events of unplaced operations as a doubly linked list over array indexes: node
/// `2 + 2i` is operation i's call and `3 + 2i` its return. Indexes instead of pointers, so
/// lifting and unlifting are a few array writes and the borrow checker stays out of it.
struct EventList {
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl EventList {
    fn new<M: Model>(ops: &[SearchOp<'_, M>]) -> EventList {
        // Sort key: finite times before infinite ones, then time, then calls before returns.
        let mut events: Vec<((bool, u64, bool), usize)> = Vec::with_capacity(2 * ops.len());
        for (i, op) in ops.iter().enumerate() {
            events.push(((false, op.call, false), EventList::call_of(i)));
            let return_key = match op.returned {
                Some((_, at)) => (false, at, true),
                None => (true, 0, true),
            };
            events.push((return_key, EventList::call_of(i) + 1));
        }
        events.sort();
        let size = 2 + 2 * ops.len();
        let mut list = EventList { next: vec![TAIL; size], prev: vec![HEAD; size] };
        let mut last = HEAD;
        for &(_, node) in &events {
            list.next[last] = node;
            list.prev[node] = last;
            last = node;
        }
        list.next[last] = TAIL;
        list.prev[TAIL] = last;
        list
    }

    fn call_of(op: usize) -> usize {
        2 + 2 * op
    }

    fn is_call(node: usize) -> bool {
        node >= 2 && node.is_multiple_of(2)
    }

    fn op_of(node: usize) -> usize {
        debug_assert!(node >= 2, "a sentinel is not an operation");
        (node - 2) / 2
    }

    /// Unlinks a call and its return. Their own links are kept, which is what lets
    /// `unlift` put them back.
    fn lift(&mut self, call: usize) {
        debug_assert!(EventList::is_call(call));
        let ret = call + 1;
        for node in [call, ret] {
            let (prev, next) = (self.prev[node], self.next[node]);
            self.next[prev] = next;
            self.prev[next] = prev;
        }
    }

    /// Relinks what `lift` unlinked, in the reverse order (dancing links). Only valid for the
    /// most recently lifted operation still out, which the search's stack guarantees.
    fn unlift(&mut self, call: usize) {
        debug_assert!(EventList::is_call(call));
        let ret = call + 1;
        for node in [ret, call] {
            let (prev, next) = (self.prev[node], self.next[node]);
            self.next[prev] = node;
            self.prev[next] = node;
        }
    }
}

/// A fixed-size set of operation indexes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Bitset(Box<[u64]>);

impl Bitset {
    fn new(len: usize) -> Bitset {
        Bitset(vec![0; len.div_ceil(64)].into_boxed_slice())
    }

    fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn remove(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }

    fn is_subset(&self, other: &Bitset) -> bool {
        self.0.iter().zip(other.0.iter()).all(|(mine, theirs)| mine & !theirs == 0)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::check::model::KvRegister;
    use crate::kv::{KvCommand, KvResponse};

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    /// (command, call, Some((response, return)) or None)
    type Row = (KvCommand, u64, Option<(KvResponse, u64)>);

    fn put(v: &str) -> KvCommand {
        KvCommand::Put { key: b("k"), value: b(v) }
    }

    fn get() -> KvCommand {
        KvCommand::Get { key: b("k") }
    }

    fn read(v: Option<&str>) -> KvResponse {
        KvResponse::Value(v.map(b))
    }

    fn run(rows: &[Row], max_steps: u64) -> Search<Option<Bytes>> {
        let ops: Vec<SearchOp<'_, KvRegister>> = rows
            .iter()
            .map(|(input, call, returned)| SearchOp {
                input,
                call: *call,
                returned: returned.as_ref().map(|(output, at)| (output, *at)),
            })
            .collect();
        linearize(&KvRegister, &ops, max_steps)
    }

    #[test]
    fn lift_and_unlift_restore_the_list() {
        let rows: Vec<Row> =
            vec![(put("a"), 0, Some((KvResponse::Ok, 10))), (put("b"), 5, Some((KvResponse::Ok, 6))), (get(), 7, None)];
        let ops: Vec<SearchOp<'_, KvRegister>> = rows
            .iter()
            .map(|(input, call, returned)| SearchOp {
                input,
                call: *call,
                returned: returned.as_ref().map(|(o, at)| (o, *at)),
            })
            .collect();
        let mut list = EventList::new(&ops);
        let walk = |list: &EventList| {
            let mut order = Vec::new();
            let mut node = list.next[HEAD];
            while node != TAIL {
                assert_eq!(list.next[list.prev[node]], node, "prev/next agree");
                order.push(node);
                node = list.next[node];
            }
            order
        };
        let original = walk(&list);
        // call a, call b, return b, call get, return a, return get (infinite).
        assert_eq!(original, vec![2, 4, 5, 6, 3, 7]);
        list.lift(4);
        assert_eq!(walk(&list), vec![2, 6, 3, 7]);
        list.lift(2);
        assert_eq!(walk(&list), vec![6, 7]);
        list.unlift(2);
        list.unlift(4);
        assert_eq!(walk(&list), original);
    }

    #[test]
    fn a_sequential_history_is_its_own_witness() {
        let rows: Vec<Row> = vec![
            (put("a"), 0, Some((KvResponse::Ok, 1))),
            (get(), 2, Some((read(Some("a")), 3))),
            (put("b"), 4, Some((KvResponse::Ok, 5))),
            (get(), 6, Some((read(Some("b")), 7))),
        ];
        let search = run(&rows, u64::MAX);
        assert_eq!(search.result, SearchResult::Linearizable { order: vec![0, 1, 2, 3] });
    }

    #[test]
    fn overlapping_operations_may_reorder() {
        // The read overlaps the write of b and still saw a: it goes before it.
        let rows: Vec<Row> = vec![
            (put("a"), 0, Some((KvResponse::Ok, 1))),
            (put("b"), 2, Some((KvResponse::Ok, 10))),
            (get(), 3, Some((read(Some("a")), 4))),
        ];
        assert_eq!(run(&rows, u64::MAX).result, SearchResult::Linearizable { order: vec![0, 2, 1] });
    }

    #[test]
    fn equal_times_overlap() {
        // put b returned at 5 and the read was called at 5: they overlap, so the read may
        // still see a. One nanosecond later it may not.
        let mut rows: Vec<Row> = vec![
            (put("a"), 0, Some((KvResponse::Ok, 1))),
            (put("b"), 2, Some((KvResponse::Ok, 5))),
            (get(), 5, Some((read(Some("a")), 6))),
        ];
        assert!(matches!(run(&rows, u64::MAX).result, SearchResult::Linearizable { .. }));
        rows[2].1 = 6;
        rows[2].2 = Some((read(Some("a")), 7));
        assert!(matches!(run(&rows, u64::MAX).result, SearchResult::NotLinearizable(_)));
    }

    #[test]
    fn a_stale_read_is_a_dead_end_naming_the_read() {
        let rows: Vec<Row> = vec![
            (put("a"), 0, Some((KvResponse::Ok, 1))),
            (put("b"), 2, Some((KvResponse::Ok, 3))),
            (get(), 4, Some((read(Some("a")), 5))),
        ];
        let SearchResult::NotLinearizable(dead_end) = run(&rows, u64::MAX).result else {
            panic!("a stale read was accepted");
        };
        assert_eq!(dead_end.prefix, vec![(0, Some(b("a"))), (1, Some(b("b")))]);
        assert_eq!(dead_end.state, Some(b("b")));
        assert_eq!(dead_end.candidates, vec![2]);
        assert_eq!(dead_end.blocking, 2);
    }

    #[test]
    fn unknown_operations_are_optional_and_placed_only_when_needed() {
        // The timed-out put of b never took effect as far as anyone saw: not in the witness.
        let rows: Vec<Row> = vec![
            (put("a"), 0, Some((KvResponse::Ok, 1))),
            (put("b"), 2, None),
            (get(), 3, Some((read(Some("a")), 4))),
            (get(), 10, Some((read(Some("a")), 11))),
        ];
        assert_eq!(run(&rows, u64::MAX).result, SearchResult::Linearizable { order: vec![0, 2, 3] });
        // A later read that saw b needs it, long after the client gave up.
        let mut rows = rows;
        rows.push((get(), 20, Some((read(Some("b")), 21))));
        assert_eq!(run(&rows, u64::MAX).result, SearchResult::Linearizable { order: vec![0, 2, 3, 1, 4] });
    }

    #[test]
    fn the_budget_turns_a_long_search_into_exhausted() {
        // Twelve overlapping writes and a read nobody wrote: a full search is needed to say no.
        let mut rows: Vec<Row> = (0..12).map(|i| (put(&i.to_string()), 0, Some((KvResponse::Ok, 100)))).collect();
        rows.push((get(), 200, Some((read(Some("never")), 201))));
        let small = run(&rows, 1_000);
        assert!(matches!(small.result, SearchResult::Exhausted { deepest: Some(_) }), "{:?}", small.result);
        assert_eq!(small.steps, 1_000);
        let full = run(&rows, u64::MAX);
        assert!(matches!(full.result, SearchResult::NotLinearizable(_)));
        // 12 writes in any order: every subset of them, with the last one written as the state.
        assert!(full.configurations > 4_000, "memoisation keeps one configuration per (set, state)");
    }
}
