//! The interface between Raft and the application it replicates.
//!
//! Raft orders opaque commands; the state machine gives them meaning. Applying must be
//! deterministic (the same commands in the same order give the same state and the same
//! responses on every node), or the replicas diverge however correct Raft is.

use bytes::Bytes;

use crate::types::{Index, Snapshot};

/// An application replicated by Raft.
pub trait StateMachine: Send + 'static {
    /// Applies the committed command at `index` and returns the response for the client
    /// that proposed it. Called once per index, in index order. A command the application
    /// cannot parse must still be "applied" (as a no-op with an error response) so that
    /// every replica does the same thing.
    fn apply(&mut self, index: Index, command: &[u8]) -> Bytes;

    /// Answers a read-only query against the current state. The runtime calls it only
    /// once ReadIndex (or the lease) says the state is fresh enough.
    fn query(&self, query: &[u8]) -> Bytes;

    /// The index of the last applied command (the snapshot's index after `restore`).
    fn applied_index(&self) -> Index;

    /// Serializes the whole state, as of `applied_index`.
    fn snapshot(&self) -> Bytes;

    /// Replaces the whole state with a snapshot's; `applied_index` becomes
    /// `snapshot.meta.index`.
    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), RestoreError>;
}

/// A snapshot's bytes that the state machine cannot read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the snapshot cannot be restored: {0}; the snapshot file is damaged or from another application")]
pub struct RestoreError(pub String);
