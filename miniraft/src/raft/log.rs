//! The in-memory Raft log: every entry after the latest snapshot, the snapshot boundary,
//! the membership history above that boundary, and how far the entries have been handed
//! to storage and made durable (§5.3, §7; diss. §4.1 for membership on append).
//!
//! Index arithmetic lives here and nowhere else. The log is a `Vec` whose element `i` holds
//! index `snapshot_index + 1 + i`; index `snapshot_index` itself is represented only by its
//! term (the snapshot's), which is what AppendEntries' consistency check needs (§7: "the
//! last included index and term").
//!
//! What it leaves out: it never reads or writes storage. The core keeps every entry after
//! its last snapshot in memory, so a node's memory grows until the driver calls
//! `Raft::compact`. Real implementations (etcd's `raftLog` with its `unstable` and
//! `Storage` halves) can serve old entries from disk instead.

use crate::raft::membership::apply_change;
use crate::types::{Entry, EntryPayload, Index, Membership, Snapshot, SnapshotMeta, Term};

/// The log of one node.
pub(crate) struct RaftLog {
    /// The latest snapshot (made by `compact` or received from a leader), with its bytes,
    /// kept so that a leader can send it to followers whose next entry was compacted away.
    snapshot: Option<Snapshot>,
    /// The last index the snapshot covers (0 without one): entries at or below it are gone.
    snapshot_index: Index,
    /// The term of the entry at `snapshot_index` (0 without a snapshot: the empty prefix).
    snapshot_term: Term,
    /// The entries after `snapshot_index`, contiguous.
    entries: Vec<Entry>,
    /// The membership as of `snapshot_index`: the snapshot's, or the founding voters.
    base_membership: Membership,
    /// For every membership entry still in `entries`: its index and the membership that
    /// results from it. Kept so that a truncation can revert to the configuration before
    /// the removed entries (diss. §4.1: the latest configuration in the log is in effect,
    /// committed or not), and so that `compact` can record the membership as of any index.
    membership_changes: Vec<(Index, Membership)>,
    /// Entries at or below this index are durable and equal to what is in memory.
    stable: Index,
    /// Entries at or below this index have been handed to the driver in a `Ready` (they
    /// become `stable` on `advance`); the ones above it go in the next `Ready`.
    handed: Index,
}

impl RaftLog {
    /// A log restored from storage: a snapshot (if any) and the entries after it. Entries
    /// at or below the snapshot are skipped (storage may keep a few); the rest must be
    /// contiguous and their terms must not decrease.
    pub(crate) fn restore(
        snapshot: Option<Snapshot>,
        initial_membership: Membership,
        entries: Vec<Entry>,
    ) -> Result<RaftLog, String> {
        let (snapshot_index, snapshot_term, base_membership) = match &snapshot {
            Some(s) => (s.meta.index, s.meta.term, s.meta.membership.clone()),
            None => (0, 0, initial_membership),
        };
        if snapshot_index > 0 && snapshot_term == 0 {
            return Err(format!("the snapshot at index {snapshot_index} has term 0"));
        }
        let mut log = RaftLog {
            snapshot,
            snapshot_index,
            snapshot_term,
            entries: Vec::with_capacity(entries.len()),
            base_membership,
            membership_changes: Vec::new(),
            stable: snapshot_index,
            handed: snapshot_index,
        };
        for entry in entries.into_iter().filter(|e| e.index > snapshot_index) {
            if entry.index != log.last_index() + 1 {
                return Err(format!(
                    "the restored entries are not contiguous: index {} follows {}",
                    entry.index,
                    log.last_index()
                ));
            }
            if entry.term < log.last_term() {
                return Err(format!(
                    "the restored entry at index {} has term {}, lower than the term {} before it",
                    entry.index,
                    entry.term,
                    log.last_term()
                ));
            }
            log.push(entry);
        }
        log.stable = log.last_index();
        log.handed = log.last_index();
        log.check_invariants();
        Ok(log)
    }

    /// The first index held in memory: one past the snapshot.
    pub(crate) fn first_index(&self) -> Index {
        self.snapshot_index + 1
    }

    /// The last index in the log (the snapshot's when no entry follows it).
    pub(crate) fn last_index(&self) -> Index {
        self.snapshot_index + self.entries.len() as u64
    }

    /// The term of the last entry (the snapshot's when no entry follows it).
    pub(crate) fn last_term(&self) -> Term {
        self.entries.last().map_or(self.snapshot_term, |e| e.term)
    }

    /// The snapshot boundary: its index and term.
    pub(crate) fn snapshot_index(&self) -> Index {
        self.snapshot_index
    }

    /// The latest snapshot with its bytes.
    pub(crate) fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// The term of the entry at `index`, when known: the snapshot's index and every entry
    /// in memory. Compacted indexes and indexes past the end give None.
    pub(crate) fn term_at(&self, index: Index) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        self.entry(index).map(|e| e.term)
    }

    /// The entry at `index`, if it is in memory.
    pub(crate) fn entry(&self, index: Index) -> Option<&Entry> {
        if index <= self.snapshot_index {
            return None;
        }
        let offset = usize::try_from(index - self.snapshot_index - 1).ok()?;
        self.entries.get(offset)
    }

    /// Clones of the entries from `from` to `through` inclusive (both in memory), for the
    /// committed entries of a `Ready`.
    pub(crate) fn entries_between(&self, from: Index, through: Index) -> Vec<Entry> {
        if from > through {
            return Vec::new();
        }
        debug_assert!(from > self.snapshot_index && through <= self.last_index(), "range outside the log");
        let start = (from - self.snapshot_index - 1) as usize;
        let end = (through - self.snapshot_index) as usize;
        self.entries[start..end].to_vec()
    }

    /// A batch for one AppendEntries: entries from `from`, at most `max_entries` of them
    /// and at most `max_bytes` of payload, but always at least one if any exists (a single
    /// entry bigger than the limit must still get through).
    pub(crate) fn batch(&self, from: Index, max_entries: usize, max_bytes: usize) -> Vec<Entry> {
        if from <= self.snapshot_index || from > self.last_index() {
            return Vec::new();
        }
        let start = (from - self.snapshot_index - 1) as usize;
        let mut bytes = 0usize;
        let mut batch = Vec::new();
        for entry in self.entries[start..].iter().take(max_entries) {
            let size = payload_bytes(&entry.payload);
            if !batch.is_empty() && bytes.saturating_add(size) > max_bytes {
                break;
            }
            bytes = bytes.saturating_add(size);
            batch.push(entry.clone());
        }
        batch
    }

    /// Appends one entry at the end (the leader's own proposals and Noop).
    pub(crate) fn append(&mut self, entry: Entry) {
        assert_eq!(entry.index, self.last_index() + 1, "appended entry must follow the last index");
        assert!(entry.term >= self.last_term(), "terms never decrease along the log");
        self.push(entry);
    }

    /// Merges entries from a leader whose log matches ours at the index just before the
    /// first of them (the caller checked that, and validated that they are contiguous).
    /// Entries we already hold with the same term are skipped: an AppendEntries that
    /// arrives late must not truncate entries a later one appended (§5.3: "if an existing
    /// entry conflicts with a new one ... delete the existing entry and all that follow
    /// it" — only on a conflict). Returns the index a conflicting suffix was cut at.
    pub(crate) fn merge(&mut self, entries: Vec<Entry>) -> Option<Index> {
        let mut truncated_at = None;
        for entry in entries {
            match self.term_at(entry.index) {
                Some(term) if term == entry.term => continue,
                Some(_) => {
                    self.truncate_from(entry.index);
                    truncated_at = Some(entry.index);
                }
                None => {}
            }
            self.append(entry);
        }
        truncated_at
    }

    /// Drops the entries from `index` on, and the membership changes they carried. What
    /// storage holds from `index` on no longer matches, so `stable` and `handed` go back.
    fn truncate_from(&mut self, index: Index) {
        assert!(index > self.snapshot_index, "cannot truncate into the snapshot");
        let keep = (index - self.snapshot_index - 1) as usize;
        self.entries.truncate(keep);
        self.membership_changes.retain(|(i, _)| *i < index);
        self.stable = self.stable.min(index - 1);
        self.handed = self.handed.min(index - 1);
    }

    /// Adds an entry at the end, tracking the membership it carries.
    fn push(&mut self, entry: Entry) {
        if let EntryPayload::Membership(change) = &entry.payload {
            let next = apply_change(self.membership(), change);
            self.membership_changes.push((entry.index, next));
        }
        self.entries.push(entry);
    }

    /// The membership in effect: the latest one in the log, committed or not.
    pub(crate) fn membership(&self) -> &Membership {
        self.membership_changes.last().map_or(&self.base_membership, |(_, m)| m)
    }

    /// The membership as of `index` (the latest change at or below it).
    pub(crate) fn membership_at(&self, index: Index) -> Membership {
        self.membership_changes
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map_or_else(|| self.base_membership.clone(), |(_, m)| m.clone())
    }

    /// The index of the latest membership entry still in the log, if any.
    pub(crate) fn last_membership_change(&self) -> Option<Index> {
        self.membership_changes.last().map(|(i, _)| *i)
    }

    /// The last index holding an entry of `term`, if the log holds that term (terms are
    /// sorted along the log, so this is a binary search). Used by the leader's fast
    /// backtracking.
    pub(crate) fn last_index_of_term(&self, term: Term) -> Option<Index> {
        let after = self.entries.partition_point(|e| e.term <= term);
        if after > 0 && self.entries[after - 1].term == term {
            return Some(self.snapshot_index + after as u64);
        }
        (self.snapshot_term == term && self.snapshot_index > 0).then_some(self.snapshot_index)
    }

    /// The first index of the run of entries of `term` that contains `index`, but not below
    /// `floor`. Used by a follower's fast-backtracking hint.
    pub(crate) fn first_index_of_term_run(&self, index: Index, term: Term, floor: Index) -> Index {
        let mut first = index;
        while first > floor && first > self.first_index() && self.term_at(first - 1) == Some(term) {
            first -= 1;
        }
        first
    }

    /// Compacts through `through` (already checked applied and in the log), keeping
    /// `data` for followers. Returns the snapshot's meta.
    pub(crate) fn compact(&mut self, through: Index, data: bytes::Bytes) -> SnapshotMeta {
        assert!(through > self.snapshot_index && through <= self.stable, "compaction needs durable entries");
        let term = self.term_at(through).unwrap_or_else(|| unreachable!("through is in memory"));
        let membership = self.membership_at(through);
        let drop = (through - self.snapshot_index) as usize;
        self.entries.drain(..drop);
        self.base_membership = membership.clone();
        self.membership_changes.retain(|(i, _)| *i > through);
        self.snapshot_index = through;
        self.snapshot_term = term;
        let meta = SnapshotMeta { index: through, term, membership };
        self.snapshot = Some(Snapshot { meta: meta.clone(), data });
        self.check_invariants();
        meta
    }

    /// Installs a snapshot from the leader (§7). If the log holds the snapshot's last entry
    /// (same index and term), the entries after it are kept: they may be ahead of the
    /// snapshot and still valid. Otherwise the whole log is replaced. Returns whether the
    /// suffix was kept.
    pub(crate) fn install(&mut self, snapshot: Snapshot) -> bool {
        let meta = &snapshot.meta;
        assert!(meta.index > self.snapshot_index, "installing an older snapshot");
        let keep = self.term_at(meta.index) == Some(meta.term);
        if keep {
            let drop = (meta.index - self.snapshot_index) as usize;
            self.entries.drain(..drop);
            self.membership_changes.retain(|(i, _)| *i > meta.index);
        } else {
            self.entries.clear();
            self.membership_changes.clear();
        }
        self.base_membership = meta.membership.clone();
        self.snapshot_index = meta.index;
        self.snapshot_term = meta.term;
        // The snapshot goes to storage in the next Ready and covers everything at or below
        // its index; a kept suffix is tracked as before. (Counting the snapshot as durable
        // a little early is harmless: only a leader counts `stable`, and this node can only
        // become leader after its vote requests left, which is after this Ready persisted.)
        if keep {
            self.stable = self.stable.max(meta.index);
            self.handed = self.handed.max(meta.index);
        } else {
            self.stable = meta.index;
            self.handed = meta.index;
        }
        self.snapshot = Some(snapshot);
        self.check_invariants();
        keep
    }

    /// The entries not yet handed to storage; marks them handed.
    pub(crate) fn take_unstable(&mut self) -> Vec<Entry> {
        let from = self.handed + 1;
        let last = self.last_index();
        self.handed = last;
        self.entries_between(from, last)
    }

    /// Whether some entries have not been handed to storage yet.
    pub(crate) fn has_unstable(&self) -> bool {
        self.handed < self.last_index()
    }

    /// Storage is done with the last `Ready`: what was handed (and not truncated since) is
    /// durable.
    pub(crate) fn mark_handed_stable(&mut self) {
        self.stable = self.handed;
    }

    /// The last index that is durable in storage.
    pub(crate) fn stable(&self) -> Index {
        self.stable
    }

    /// Checks the log's invariants; a failure is a bug in the core, never bad input.
    pub(crate) fn check_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        // The whole log for small logs; for long ones its ends and the last entries, which
        // is where appends and truncations happen (keeps debug simulations fast).
        const FULL_CHECK_UP_TO: usize = 256;
        let checked_from = self.entries.len().saturating_sub(FULL_CHECK_UP_TO);
        if let Some(first) = self.entries.first() {
            assert_eq!(first.index, self.snapshot_index + 1, "the log starts right after the snapshot");
            assert!(first.term >= self.snapshot_term, "terms must not decrease along the log");
        }
        let mut previous = match checked_from.checked_sub(1) {
            Some(i) => (self.entries[i].index, self.entries[i].term),
            None => (self.snapshot_index, self.snapshot_term),
        };
        for entry in &self.entries[checked_from..] {
            assert_eq!(entry.index, previous.0 + 1, "log must be contiguous");
            assert!(entry.term >= previous.1, "terms must not decrease along the log");
            previous = (entry.index, entry.term);
        }
        let mut last_change = self.snapshot_index;
        for (index, _) in &self.membership_changes {
            assert!(*index > last_change, "membership changes in index order above the snapshot");
            assert!(
                matches!(self.entry(*index).map(|e| &e.payload), Some(EntryPayload::Membership(_))),
                "a recorded membership change must be a membership entry"
            );
            last_change = *index;
        }
        assert!(self.stable <= self.handed, "durable entries were handed out first");
        assert!(self.handed <= self.last_index(), "cannot hand out entries that do not exist");
        assert!(self.stable >= self.snapshot_index, "the snapshot is durable");
    }
}

/// The bytes an entry counts toward `max_bytes_per_message`: its payload.
fn payload_bytes(payload: &EntryPayload) -> usize {
    match payload {
        EntryPayload::Noop => 0,
        EntryPayload::Command(bytes) => bytes.len(),
        EntryPayload::Membership(_) => 16,
    }
}
