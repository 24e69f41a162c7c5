//! Log compaction and InstallSnapshot (§7, Figure 13; diss. §5.1–5.4).
//!
//! The driver snapshots its state machine when it likes (the runtime: every
//! `--snapshot-count` entries), writes it durably, and calls `Raft::compact`; the core
//! drops the log through that index and keeps the bytes. A follower whose next entry was
//! compacted away gets the snapshot instead, in chunks of `snapshot_chunk_bytes`, one chunk
//! at a time: a chunk must start where the follower's assembled bytes end, otherwise the
//! follower answers with the offset it wants and the leader resumes from there. On the last
//! chunk the follower hands the snapshot to its driver (`Ready::snapshot`) and answers
//! `done` only after that `Ready` is durable.
//!
//! What it leaves out: chunks are stop-and-wait (no pipelining of snapshot bytes) and the
//! snapshot bytes are held in memory on both sides; a real system streams them from a file.

use bytes::{Bytes, BytesMut};

use crate::error::CompactError;
use crate::message::MessageBody;
use crate::raft::progress::ProgressState;
use crate::raft::Raft;
use crate::types::{Index, NodeId, Snapshot, SnapshotMeta, Term};

/// A snapshot a follower is receiving.
pub(crate) struct IncomingSnapshot {
    /// The leader sending it and its term: chunks of another leader's snapshot of the same
    /// index may hold different bytes (encodings need not be canonical), so they never mix.
    from: NodeId,
    term: Term,
    meta: SnapshotMeta,
    /// The bytes received so far, from offset 0.
    data: BytesMut,
}

impl Raft {
    /// `compact`'s body.
    pub(super) fn compact_log(&mut self, through: Index, data: Bytes) -> Result<(), CompactError> {
        if through <= self.log.snapshot_index() {
            return Err(CompactError::AlreadyCompacted { snapshot: self.log.snapshot_index() });
        }
        if through > self.applied {
            return Err(CompactError::NotApplied { requested: through, applied: self.applied });
        }
        self.log.compact(through, data);
        Ok(())
    }

    /// Sends `to` the next chunk of the latest snapshot, switching its progress to the
    /// Snapshot state (or to a newer snapshot) as needed.
    pub(super) fn send_snapshot_chunk(&mut self, to: NodeId) {
        let Some(snapshot) = self.log.snapshot() else { return };
        let (meta, data) = (snapshot.meta.clone(), snapshot.data.clone());
        let round = self.round;
        let Some(progress) = self.leader_state.as_mut().and_then(|l| l.progress.get_mut(&to)) else { return };
        let offset = match &mut progress.state {
            ProgressState::Snapshot { index, offset, chunk_in_flight } if *index == meta.index => {
                if *chunk_in_flight {
                    return;
                }
                *chunk_in_flight = true;
                *offset
            }
            state => {
                *state = ProgressState::Snapshot { index: meta.index, offset: 0, chunk_in_flight: true };
                progress.inflights.clear();
                progress.probe_sent = false;
                0
            }
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(data.len());
        let end = start.saturating_add(self.config.snapshot_chunk_bytes).min(data.len());
        let body = MessageBody::InstallSnapshot {
            meta,
            offset: start as u64,
            data: data.slice(start..end),
            done: end == data.len(),
            round,
        };
        self.send_now(to, body);
    }

    /// A follower's side of an InstallSnapshot chunk, in our term.
    pub(super) fn handle_install_snapshot(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
        done: bool,
        round: u64,
    ) {
        if !self.follow_leader_of_this_term(from) {
            return;
        }
        if meta.term > self.term || (meta.index > 0 && meta.term == 0) {
            return; // cannot come from a correct leader
        }
        let snapshot_index = meta.index;
        let reply = |next_offset: u64, done: bool| MessageBody::InstallSnapshotResponse {
            snapshot_index,
            next_offset,
            done,
            round,
        };
        if meta.index <= self.commit {
            // We already have everything it covers, committed (and a newer snapshot must
            // never be replaced by an older one). "Done": the leader may move on.
            self.incoming_snapshot = None;
            let body = reply(offset.saturating_add(data.len() as u64), true);
            self.send_after_persist(from, body);
            return;
        }
        let same_snapshot =
            |incoming: &IncomingSnapshot| incoming.from == from && incoming.term == self.term && incoming.meta == meta;
        if offset == 0 {
            self.incoming_snapshot =
                Some(IncomingSnapshot { from, term: self.term, meta: meta.clone(), data: BytesMut::new() });
        }
        let have = match self.incoming_snapshot.as_ref() {
            Some(incoming) if same_snapshot(incoming) => incoming.data.len() as u64,
            _ => 0,
        };
        if offset != have || self.incoming_snapshot.as_ref().is_none_or(|i| !same_snapshot(i)) {
            // Out of order, duplicated, or of another snapshot: ask for what we need.
            let body = reply(have, false);
            self.send_after_persist(from, body);
            return;
        }
        let Some(incoming) = self.incoming_snapshot.as_mut() else { return };
        incoming.data.extend_from_slice(&data);
        let received = incoming.data.len() as u64;
        if !done {
            let body = reply(received, false);
            self.send_after_persist(from, body);
            return;
        }
        let Some(incoming) = self.incoming_snapshot.take() else { return };
        let snapshot = Snapshot { meta: incoming.meta, data: incoming.data.freeze() };
        self.install_snapshot(snapshot);
        // After the persist: "done" promises the snapshot survives a crash.
        let body = reply(received, true);
        self.send_after_persist(from, body);
    }

    /// Replaces the log's prefix (or all of it) with `snapshot`, and has the driver persist
    /// it and restore the state machine from it.
    fn install_snapshot(&mut self, snapshot: Snapshot) {
        debug_assert!(snapshot.meta.index > self.commit);
        let index = snapshot.meta.index;
        self.log.install(snapshot.clone());
        self.commit = index;
        // The state machine is restored from the snapshot, so nothing below it is applied
        // from entries any more.
        self.applying = index;
        self.snapshot_to_persist = Some(snapshot);
    }

    /// The leader's side of an InstallSnapshot answer, in our term.
    pub(super) fn handle_install_snapshot_response(
        &mut self,
        from: NodeId,
        snapshot_index: Index,
        next_offset: u64,
        done: bool,
        round: u64,
    ) {
        let last = self.log.last_index();
        let current = self.log.snapshot().map(|s| s.meta.index);
        let Some(progress) = self.leader_state.as_mut().and_then(|l| l.progress.get_mut(&from)) else { return };
        progress.recent_active = true;
        self.acknowledge_round(from, round);
        let Some(progress) = self.leader_state.as_mut().and_then(|l| l.progress.get_mut(&from)) else { return };
        if done {
            if snapshot_index > last {
                return; // not from a correct follower
            }
            let advanced = progress.acknowledge(snapshot_index);
            if matches!(progress.state, ProgressState::Snapshot { .. }) {
                progress.become_replicate();
            }
            if advanced {
                self.maybe_commit();
            }
            self.after_follower_progress(from);
            return;
        }
        if let ProgressState::Snapshot { index, offset, chunk_in_flight } = &mut progress.state {
            if Some(*index) == current && *index == snapshot_index {
                *offset = next_offset;
            } else {
                // An answer about an older snapshot: start the current one over.
                *offset = 0;
            }
            *chunk_in_flight = false;
            self.send_snapshot_chunk(from);
        }
    }
}
