//! What a correct sequential object does: the specification a history is checked against.
//!
//! A [`Model`] is a deterministic sequential object written as a pure function: from a state
//! and an operation's input (and, if the client saw one, its output) it gives the next state,
//! or `None` if that output is impossible from that state. The search in
//! [`super::search`] asks nothing else of it, so another object (a queue, a counter, a
//! multi-key transaction) is a new `Model`, not a new checker.
//!
//! [`KvRegister`] is the model of [`crate::kv`]: one register per key, so that histories
//! split by key ([`Model::partition`]) and each key is checked on its own. That split is
//! sound because linearizability is *local* (Herlihy & Wing 1990, theorem 1): a history is
//! linearizable iff each object's sub-history is; a register per key is such an object.
//!
//! Left out: models whose operations span several keys (a multi-key transaction would need
//! one partition for all the keys it touches).

use std::fmt::Debug;
use std::hash::Hash;

use bytes::Bytes;

use crate::kv::{KvCommand, KvResponse};

/// A sequential specification, stepped by the linearizability search.
pub trait Model {
    /// What a client asked for.
    type Input: Debug;
    /// What the client was told.
    type Output: Debug;
    /// The object's state. `Hash + Eq` because the search memoises (linearized set, state)
    /// pairs it has already explored; `Clone` because it keeps the state before each
    /// tentative step to backtrack to. Keep it small: it is cloned on every step.
    type State: Clone + Eq + Hash + Debug;
    /// Which independent object an input touches (a key). Operations with different keys are
    /// checked separately, which is what keeps the search small.
    type PartitionKey: Ord + Clone + Debug;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// Applies `input` to `state`. `output` is what the client saw, or `None` when the
    /// outcome is unknown (timed out): then any output is accepted and only the state moves.
    /// Returns `None` when `output` is not what the object would have answered from `state`.
    fn step(&self, state: &Self::State, input: &Self::Input, output: Option<&Self::Output>) -> Option<Self::State>;

    /// The independent object `input` belongs to.
    fn partition(&self, input: &Self::Input) -> Self::PartitionKey;

    /// Whether `input` with an unknown output replaces the state whatever it was (a blind
    /// write): `step(s, input, None)` is `Some` and the same for every `s`. The search uses it
    /// to skip placing a timed-out operation just before a timed-out overwrite, which would
    /// have no effect. `false` is always correct, only slower.
    fn overwrites(&self, input: &Self::Input) -> bool {
        let _ = input;
        false
    }
}

/// The replicated map of [`crate::kv`] seen as one register per key: the state is the
/// key's value (`None`: absent).
///
/// [`KvResponse::Invalid`] is never a correct answer: it is what the state machine says to
/// bytes that do not decode, and a history only holds well-formed commands, so a client that
/// was told `Invalid` saw a bug (in the codec or the transport) and the check says so.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvRegister;

impl KvRegister {
    /// What the register answers to `command` when it holds `state`, and the state after.
    /// The one place the semantics live: `step` compares against it, and the violation
    /// report prints it ("here it would have answered ...").
    pub fn apply(state: &Option<Bytes>, command: &KvCommand) -> (KvResponse, Option<Bytes>) {
        match command {
            KvCommand::Put { value, .. } => (KvResponse::Ok, Some(value.clone())),
            KvCommand::Delete { .. } => (KvResponse::Deleted(state.is_some()), None),
            KvCommand::Cas { expected, new, .. } => {
                if state == expected {
                    (KvResponse::Cas(true), Some(new.clone()))
                } else {
                    (KvResponse::Cas(false), state.clone())
                }
            }
            KvCommand::Get { .. } => (KvResponse::Value(state.clone()), state.clone()),
        }
    }
}

impl Model for KvRegister {
    type Input = KvCommand;
    type Output = KvResponse;
    type State = Option<Bytes>;
    type PartitionKey = Bytes;

    fn init(&self) -> Option<Bytes> {
        None
    }

    fn step(&self, state: &Option<Bytes>, command: &KvCommand, response: Option<&KvResponse>) -> Option<Option<Bytes>> {
        let (answer, next) = KvRegister::apply(state, command);
        match response {
            Some(seen) if *seen != answer => None,
            _ => Some(next),
        }
    }

    fn partition(&self, command: &KvCommand) -> Bytes {
        command.key().clone()
    }

    /// A put or a delete sets the value whatever it was; a CAS depends on it.
    fn overwrites(&self, command: &KvCommand) -> bool {
        matches!(command, KvCommand::Put { .. } | KvCommand::Delete { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    fn put(v: &'static str) -> KvCommand {
        KvCommand::Put { key: b("k"), value: b(v) }
    }

    fn cas(expected: Option<&'static str>, new: &'static str) -> KvCommand {
        KvCommand::Cas { key: b("k"), expected: expected.map(b), new: b(new) }
    }

    const GET: fn() -> KvCommand = || KvCommand::Get { key: Bytes::from_static(b"k") };
    const DEL: fn() -> KvCommand = || KvCommand::Delete { key: Bytes::from_static(b"k") };

    #[test]
    fn put_answers_ok_and_sets_the_value() {
        let m = KvRegister;
        assert_eq!(m.step(&None, &put("a"), Some(&KvResponse::Ok)), Some(Some(b("a"))));
        assert_eq!(m.step(&Some(b("x")), &put("a"), Some(&KvResponse::Cas(true))), None, "wrong response kind");
    }

    #[test]
    fn get_must_see_the_current_value() {
        let m = KvRegister;
        let held = Some(b("a"));
        assert_eq!(m.step(&held, &GET(), Some(&KvResponse::Value(Some(b("a"))))), Some(held.clone()));
        assert_eq!(m.step(&held, &GET(), Some(&KvResponse::Value(Some(b("b"))))), None);
        assert_eq!(m.step(&held, &GET(), Some(&KvResponse::Value(None))), None);
        assert_eq!(m.step(&None, &GET(), Some(&KvResponse::Value(None))), Some(None));
    }

    #[test]
    fn delete_reports_whether_the_key_existed() {
        let m = KvRegister;
        assert_eq!(m.step(&Some(b("a")), &DEL(), Some(&KvResponse::Deleted(true))), Some(None));
        assert_eq!(m.step(&Some(b("a")), &DEL(), Some(&KvResponse::Deleted(false))), None);
        assert_eq!(m.step(&None, &DEL(), Some(&KvResponse::Deleted(false))), Some(None));
        assert_eq!(m.step(&None, &DEL(), Some(&KvResponse::Deleted(true))), None);
    }

    #[test]
    fn cas_swaps_only_on_a_match_including_absent() {
        let m = KvRegister;
        assert_eq!(m.step(&None, &cas(None, "a"), Some(&KvResponse::Cas(true))), Some(Some(b("a"))));
        assert_eq!(m.step(&None, &cas(Some("x"), "a"), Some(&KvResponse::Cas(false))), Some(None));
        assert_eq!(m.step(&Some(b("x")), &cas(Some("x"), "a"), Some(&KvResponse::Cas(true))), Some(Some(b("a"))));
        assert_eq!(m.step(&Some(b("x")), &cas(Some("x"), "a"), Some(&KvResponse::Cas(false))), None);
        assert_eq!(m.step(&Some(b("y")), &cas(Some("x"), "a"), Some(&KvResponse::Cas(true))), None);
        assert_eq!(m.step(&Some(b("y")), &cas(None, "a"), Some(&KvResponse::Cas(false))), Some(Some(b("y"))));
    }

    #[test]
    fn unknown_outputs_only_move_the_state() {
        let m = KvRegister;
        assert_eq!(m.step(&None, &put("a"), None), Some(Some(b("a"))));
        assert_eq!(m.step(&Some(b("a")), &DEL(), None), Some(None));
        assert_eq!(m.step(&Some(b("a")), &cas(Some("a"), "b"), None), Some(Some(b("b"))));
        assert_eq!(m.step(&Some(b("c")), &cas(Some("a"), "b"), None), Some(Some(b("c"))));
    }

    #[test]
    fn invalid_is_never_a_correct_answer() {
        let m = KvRegister;
        for command in [put("a"), GET(), DEL(), cas(None, "a")] {
            assert_eq!(m.step(&None, &command, Some(&KvResponse::Invalid)), None, "{command:?}");
        }
    }

    #[test]
    fn overwrites_are_exactly_the_state_independent_commands() {
        let m = KvRegister;
        let states = [None, Some(b("a")), Some(b("x"))];
        for command in [put("a"), DEL(), cas(None, "a"), cas(Some("x"), "b"), GET()] {
            let after: Vec<_> = states.iter().map(|s| m.step(s, &command, None)).collect();
            let same_everywhere = after.iter().all(|a| a.is_some() && *a == after[0]);
            assert_eq!(m.overwrites(&command), same_everywhere, "{command:?}");
        }
    }

    #[test]
    fn partitions_by_key() {
        let m = KvRegister;
        assert_eq!(m.partition(&KvCommand::Get { key: b("x") }), b("x"));
        assert_eq!(m.partition(&put("v")), b("k"));
    }
}
