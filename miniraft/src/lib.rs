//! miniraft: Raft consensus, written to be read.
//!
//! Three layers, each usable alone:
//!
//! - **The core** ([`raft`]): a deterministic state machine with no I/O. Events go in
//!   (`tick`, `step` a message, `propose`, `read_index`, `advance` when storage is done)
//!   and a [`Ready`] batch of actions comes out (messages to send, state and entries to
//!   persist, entries to apply, reads to answer). It never touches a socket, a file or a
//!   clock, which is what makes the simulation possible.
//! - **The runtime** ([`node`], [`storage`], [`transport`], [`codec`]): a tokio task that
//!   drives the core, with the log on the minicore record log, the hard state written by
//!   atomic rename, snapshots as files, and a framed TCP transport. Applications implement
//!   [`StateMachine`]; [`kv`] is the replicated map the `miniraft` server runs.
//! - **The proof** ([`sim`], [`check`]): a whole cluster in one thread with virtual time,
//!   a seeded RNG and injected faults, invariants checked on every step, and client
//!   histories checked for linearizability.
//!
//! Read `docs/miniraft.md` for the tour, and the Raft paper section by section mapped to
//! the code.

pub mod check;
pub mod codec;
pub mod config;
pub mod error;
pub mod kv;
pub mod message;
pub mod node;
pub mod raft;
pub mod ready;
pub mod server;
pub mod sim;
pub mod state_machine;
pub mod storage;
pub mod transport;
pub mod types;

pub use config::{Bug, Config, ReadMode};
pub use error::{CompactError, ConfigError, ProposeError};
pub use message::{Conflict, Message, MessageBody};
pub use ready::{ReadState, Ready, Restored, SoftState};
pub use state_machine::{RestoreError, StateMachine};
pub use types::{
    Entry, EntryPayload, HardState, Index, Membership, MembershipChange, NodeId, Role, Snapshot, SnapshotMeta, Term,
};
