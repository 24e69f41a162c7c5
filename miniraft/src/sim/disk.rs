//! One node's simulated disk: what survives a crash, and the write that a crash may catch
//! half done.
//!
//! It models the real storage (`storage.rs`) closely enough that the simulator's crashes
//! lose exactly what a real crash could:
//!
//! - durable state: the hard state, the latest snapshot and the log entries after it;
//! - one write in progress (a `Ready`'s snapshot, entries and hard state), which becomes
//!   durable only when its virtual fsync completes. The runtime persists in this order:
//!   the received snapshot (a file renamed into place: all or nothing), the entries (the
//!   record log: appended one record per entry, so a crash keeps a prefix), then the hard
//!   state (atomic rename, after the log is synced). A crash before the fsync completes
//!   loses the whole write; with torn writes on, it keeps a random prefix of that order.
//!   Nothing in the write was acknowledged yet (the driver sends `Ready::messages` only
//!   after the fsync), so either outcome is one Raft must survive.
//! - the driver's own snapshots (compaction), written synchronously as the runtime does.
//!
//! A truncation works as in the record log: the first new record at index `i` supersedes
//! every older record at `i` or later, so a torn write that kept no new entry also leaves
//! the old suffix in place.
//!
//! What it leaves out: bit rot and misdirected writes (the storage's CRCs turn those into a
//! torn tail, which this covers), and disks that lie about fsync.

use crate::ready::Restored;
use crate::types::{Entry, HardState, Index, Membership, Snapshot, Term};

use super::rng::SimRng;

/// What a crash cannot take away.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Durable {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    /// The entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
}

/// A write in progress.
#[derive(Clone, Debug)]
pub struct PendingWrite {
    /// Which write this is, so a stale fsync completion (from before a crash) is ignored.
    pub id: u64,
    pub hard_state: Option<HardState>,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
}

/// What a crash did to the write in progress, for the trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashEffect {
    /// No write was in progress.
    Clean,
    /// Of the write's steps (snapshot, each entry, hard state), this many reached the disk.
    Torn { kept_steps: usize, total_steps: usize },
}

/// A node's disk.
#[derive(Clone, Debug)]
pub struct Disk {
    durable: Durable,
    pending: Option<PendingWrite>,
    /// The membership the node was started with (a founding cluster's voters, or what an
    /// operator gave a joining node): bootstrap configuration, kept like etcd keeps its
    /// `--initial-cluster`.
    initial_membership: Membership,
    /// The next write id.
    next_write: u64,
}

impl Disk {
    /// An empty disk for a node that starts with `initial_membership`.
    pub fn new(initial_membership: Membership) -> Disk {
        Disk { durable: Durable::default(), pending: None, initial_membership, next_write: 1 }
    }

    /// What survives.
    pub fn durable(&self) -> &Durable {
        &self.durable
    }

    /// Whether a write is waiting for its fsync.
    pub fn is_writing(&self) -> bool {
        self.pending.is_some()
    }

    /// The steps of the write in progress a crash can cut between (snapshot, each entry,
    /// hard state); 0 when none is in progress.
    pub fn pending_steps(&self) -> usize {
        self.pending.as_ref().map_or(0, steps)
    }

    /// Starts a write; returns its id. Only one write is in progress at a time, as only one
    /// `Ready` is.
    pub fn begin(&mut self, hard_state: Option<HardState>, snapshot: Option<Snapshot>, entries: Vec<Entry>) -> u64 {
        assert!(self.pending.is_none(), "a second write began before the first one's fsync");
        let id = self.next_write;
        self.next_write += 1;
        self.pending = Some(PendingWrite { id, hard_state, snapshot, entries });
        id
    }

    /// The fsync of write `id` completed: all of it is durable. Returns false if that write
    /// is not the one in progress (a completion scheduled before a crash).
    pub fn complete(&mut self, id: u64) -> Result<bool, String> {
        match self.pending.take() {
            Some(write) if write.id == id => {
                let steps = steps(&write);
                self.apply_prefix(write, steps)?;
                Ok(true)
            }
            other => {
                self.pending = other;
                Ok(false)
            }
        }
    }

    /// The node crashed: the write in progress is lost, or with `torn` a random prefix of
    /// it survives.
    pub fn crash(&mut self, rng: &mut SimRng, torn: bool) -> Result<CrashEffect, String> {
        let Some(write) = self.pending.take() else {
            return Ok(CrashEffect::Clean);
        };
        let total_steps = steps(&write);
        let kept_steps = if torn { rng.range(0, total_steps as u64) as usize } else { 0 };
        self.apply_prefix(write, kept_steps)?;
        Ok(CrashEffect::Torn { kept_steps, total_steps })
    }

    /// The driver saved a snapshot of its own state machine (compaction). Durable at once:
    /// the runtime writes it to a temporary file, fsyncs and renames it before telling the
    /// core. The log through its index is dropped.
    pub fn save_snapshot(&mut self, snapshot: Snapshot) -> Result<(), String> {
        assert!(self.pending.is_none(), "the driver compacts only between writes");
        let current = self.durable.snapshot.as_ref().map_or(0, |s| s.meta.index);
        if snapshot.meta.index <= current {
            return Err(format!(
                "compaction snapshot at {} is not past the durable snapshot at {current}",
                snapshot.meta.index
            ));
        }
        match self.term_at(snapshot.meta.index) {
            Some(term) if term == snapshot.meta.term => {}
            other => {
                return Err(format!(
                    "compaction snapshot at {} term {} but the durable log has term {other:?} there: \
                     an applied entry was not durable",
                    snapshot.meta.index, snapshot.meta.term
                ))
            }
        }
        self.install_snapshot(snapshot);
        Ok(())
    }

    /// What a restarting node recovers.
    pub fn restored(&self) -> Restored {
        Restored {
            hard_state: self.durable.hard_state,
            snapshot: self.durable.snapshot.clone(),
            entries: self.durable.entries.clone(),
            initial_membership: self.initial_membership.clone(),
        }
    }

    /// The last durable index.
    pub fn last_index(&self) -> Index {
        match self.durable.entries.last() {
            Some(entry) => entry.index,
            None => self.snapshot_index(),
        }
    }

    fn snapshot_index(&self) -> Index {
        self.durable.snapshot.as_ref().map_or(0, |s| s.meta.index)
    }

    /// The term of the durable entry at `index` (the snapshot's for its own index).
    pub fn term_at(&self, index: Index) -> Option<Term> {
        if index == 0 {
            return Some(0);
        }
        if let Some(snapshot) = &self.durable.snapshot {
            if snapshot.meta.index == index {
                return Some(snapshot.meta.term);
            }
        }
        let first = self.durable.entries.first()?.index;
        if index < first {
            return None;
        }
        self.durable.entries.get((index - first) as usize).map(|entry| entry.term)
    }

    fn install_snapshot(&mut self, snapshot: Snapshot) {
        let (index, term) = (snapshot.meta.index, snapshot.meta.term);
        if self.term_at(index) == Some(term) {
            // The log holds the snapshot's last entry: keep what follows it.
            self.durable.entries.retain(|entry| entry.index > index);
        } else {
            self.durable.entries.clear();
        }
        self.durable.snapshot = Some(snapshot);
    }

    /// Makes the first `kept` steps of `write` durable, in the runtime's order.
    fn apply_prefix(&mut self, write: PendingWrite, mut kept: usize) -> Result<(), String> {
        if kept == 0 {
            return Ok(());
        }
        if let Some(snapshot) = write.snapshot {
            self.install_snapshot(snapshot);
            kept -= 1;
        }
        let entries_kept = kept.min(write.entries.len());
        if entries_kept > 0 {
            self.append(&write.entries[..entries_kept])?;
        }
        kept -= entries_kept;
        if kept > 0 {
            if let Some(hard_state) = write.hard_state {
                self.durable.hard_state = hard_state;
            }
        }
        Ok(())
    }

    /// Appends entries, superseding the durable suffix from the first one's index on.
    fn append(&mut self, entries: &[Entry]) -> Result<(), String> {
        let first = entries[0].index;
        if let Some(pair) = entries.windows(2).find(|pair| pair[1].index != pair[0].index + 1) {
            return Err(format!("Ready::entries are not contiguous: {} then {}", pair[0].index, pair[1].index));
        }
        let snapshot_index = self.snapshot_index();
        if first <= snapshot_index {
            return Err(format!(
                "Ready::entries start at {first}, inside the durable snapshot (through {snapshot_index})"
            ));
        }
        let last = self.last_index();
        if first > last + 1 {
            return Err(format!("Ready::entries start at {first}, leaving a gap after the durable last index {last}"));
        }
        self.durable.entries.retain(|entry| entry.index < first);
        self.durable.entries.extend_from_slice(entries);
        Ok(())
    }
}

/// The steps of a write that a crash can cut between.
fn steps(write: &PendingWrite) -> usize {
    usize::from(write.snapshot.is_some()) + write.entries.len() + usize::from(write.hard_state.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{EntryPayload, SnapshotMeta};
    use bytes::Bytes;

    fn entry(index: Index, term: Term) -> Entry {
        Entry { index, term, payload: EntryPayload::Command(Bytes::from(vec![index as u8])) }
    }

    fn hard(term: Term, commit: Index) -> HardState {
        HardState { term, vote: Some(1), commit }
    }

    #[test]
    fn a_completed_write_is_durable_and_an_interrupted_one_is_lost() {
        let mut disk = Disk::new(Membership::with_voters([1, 2, 3]));
        let id = disk.begin(Some(hard(1, 0)), None, vec![entry(1, 1), entry(2, 1)]);
        assert_eq!(disk.complete(id), Ok(true));
        assert_eq!(disk.last_index(), 2);
        disk.begin(Some(hard(2, 2)), None, vec![entry(3, 2)]);
        let mut rng = SimRng::new(1);
        assert_eq!(disk.crash(&mut rng, false), Ok(CrashEffect::Torn { kept_steps: 0, total_steps: 2 }));
        assert_eq!(disk.durable().hard_state, hard(1, 0));
        assert_eq!(disk.last_index(), 2);
        assert_eq!(disk.complete(id), Ok(false), "a completion from before the crash is ignored");
    }

    #[test]
    fn a_torn_write_keeps_a_prefix_in_the_storage_order() {
        for seed in 0..64 {
            let mut disk = Disk::new(Membership::with_voters([1]));
            let id = disk.begin(Some(hard(1, 0)), None, vec![entry(1, 1), entry(2, 1), entry(3, 1)]);
            disk.complete(id).unwrap();
            // Overwrite from index 2 with term 2, and a new hard state.
            disk.begin(Some(hard(2, 1)), None, vec![entry(2, 2), entry(3, 2), entry(4, 2)]);
            let mut rng = SimRng::new(seed);
            let Ok(CrashEffect::Torn { kept_steps, .. }) = disk.crash(&mut rng, true) else { panic!("was writing") };
            let terms: Vec<Term> = disk.durable().entries.iter().map(|e| e.term).collect();
            let expected: Vec<Term> = match kept_steps {
                0 => vec![1, 1, 1],
                1 => vec![1, 2],
                2 => vec![1, 2, 2],
                _ => vec![1, 2, 2, 2],
            };
            assert_eq!(terms, expected, "kept {kept_steps}");
            // The hard state is renamed into place only after every entry is synced.
            assert_eq!(disk.durable().hard_state.term, if kept_steps == 4 { 2 } else { 1 });
        }
    }

    #[test]
    fn snapshots_drop_the_log_they_cover() {
        let mut disk = Disk::new(Membership::with_voters([1]));
        let id = disk.begin(None, None, vec![entry(1, 1), entry(2, 1), entry(3, 1)]);
        disk.complete(id).unwrap();
        let meta = |index, term| SnapshotMeta { index, term, membership: Membership::with_voters([1]) };
        disk.save_snapshot(Snapshot { meta: meta(2, 1), data: Bytes::new() }).unwrap();
        assert_eq!(disk.durable().entries.len(), 1);
        assert_eq!(disk.term_at(2), Some(1));
        assert!(disk.save_snapshot(Snapshot { meta: meta(2, 1), data: Bytes::new() }).is_err());
        // A leader's snapshot that does not match the log replaces all of it.
        let id = disk.begin(None, Some(Snapshot { meta: meta(5, 3), data: Bytes::new() }), vec![]);
        disk.complete(id).unwrap();
        assert!(disk.durable().entries.is_empty());
        assert_eq!(disk.last_index(), 5);
        let restored = disk.restored();
        assert_eq!(restored.snapshot.map(|s| s.meta.index), Some(5));
    }

    #[test]
    fn malformed_appends_are_errors_not_panics() {
        let mut disk = Disk::new(Membership::with_voters([1]));
        let id = disk.begin(None, None, vec![entry(2, 1)]);
        assert!(disk.complete(id).is_err(), "a gap after the last index");
        let id = disk.begin(None, None, vec![entry(1, 1), entry(3, 1)]);
        assert!(disk.complete(id).is_err(), "entries with a hole");
    }
}
