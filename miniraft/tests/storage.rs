//! The storage's promises, checked through reopen: round trips, the conflicting-suffix
//! truncation, snapshots with compaction, a torn tail, damaged files, and kill -9.
//!
//! The kill -9 test re-runs this test binary as a child (`crash_child`, which does nothing
//! unless `MINIRAFT_STORAGE_CRASH_DIR` is set). The child persists a seeded stream of
//! Readies and snapshots and prints `ack <n>` after step n returns; the parent SIGKILLs it
//! (by pid) at a random point, reopens the directory, and checks the recovered state is
//! what the acknowledged steps produced, plus any prefix of the one step in flight. The
//! seed is printed on failure; `MINIRAFT_STORAGE_CRASH_SEED=<n>` replays it.
//!
//! Run: `cargo test -p miniraft --test storage`.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use miniraft::storage::{Recovered, Storage, StorageError, StorageOptions};
use miniraft::{Entry, EntryPayload, HardState, Index, Membership, Ready, Snapshot, SnapshotMeta, Term};

// ---- helpers -------------------------------------------------------------------------

fn command(index: Index, term: Term) -> Entry {
    Entry { term, index, payload: EntryPayload::Command(Bytes::from(format!("cmd {index} at {term}"))) }
}

fn entries(range: std::ops::RangeInclusive<Index>, term: Term) -> Vec<Entry> {
    range.map(|i| command(i, term)).collect()
}

fn snapshot(index: Index, term: Term) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta { index, term, membership: Membership::with_voters([1, 2, 3]) },
        data: Bytes::from(format!("state through {index}")),
    }
}

fn ready(hard_state: Option<HardState>, entries: Vec<Entry>) -> Ready {
    Ready { hard_state, entries, ..Ready::default() }
}

fn small_segments() -> StorageOptions {
    StorageOptions { fsync: true, segment_bytes: 1024 }
}

fn open(dir: &Path, options: StorageOptions) -> (Storage, Recovered) {
    Storage::open(dir, options).unwrap_or_else(|e| panic!("open {}: {e}", dir.display()))
}

fn reopen(dir: &Path, options: StorageOptions) -> Recovered {
    open(dir, options).1
}

fn segment_files(dir: &Path) -> usize {
    fs::read_dir(dir.join("log")).expect("log dir").filter(|e| e.as_ref().is_ok_and(|e| is_segment(&e.path()))).count()
}

/// The base LSN of the oldest segment (segment files are named by it).
fn oldest_segment_lsn(dir: &Path) -> u64 {
    fs::read_dir(dir.join("log"))
        .expect("log dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_segment(p))
        .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse().ok()))
        .min()
        .expect("at least one segment")
}

fn is_segment(path: &Path) -> bool {
    path.extension().is_some_and(|x| x == "log")
}

fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("data dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "snap"))
        .collect();
    files.sort();
    files
}

// ---- round trips -----------------------------------------------------------------------

#[test]
fn a_new_directory_recovers_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let recovered = reopen(&dir.path().join("node"), StorageOptions::default());
    assert_eq!(recovered.hard_state, HardState::default());
    assert_eq!(recovered.snapshot, None);
    assert!(recovered.entries.is_empty());
}

#[test]
fn entries_and_hard_state_survive_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut storage, _) = open(dir.path(), StorageOptions::default());
    let hs = HardState { term: 2, vote: Some(3), commit: 4 };
    storage.persist(&ready(Some(hs), entries(1..=5, 2))).expect("persist");
    storage
        .persist(&ready(None, vec![Entry { term: 2, index: 6, payload: EntryPayload::Noop }]))
        .expect("persist a noop");
    drop(storage);
    let recovered = reopen(dir.path(), StorageOptions::default());
    assert_eq!(recovered.hard_state, hs);
    let mut expected = entries(1..=5, 2);
    expected.push(Entry { term: 2, index: 6, payload: EntryPayload::Noop });
    assert_eq!(recovered.entries, expected);
    assert!(recovered.report.contains("entries 1..=6"), "{}", recovered.report);
}

#[test]
fn a_commit_only_change_rides_along_with_the_next_term_or_vote_change() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut storage, _) = open(dir.path(), StorageOptions::default());
    storage.persist(&ready(Some(HardState { term: 1, vote: Some(1), commit: 0 }), entries(1..=5, 1))).expect("persist");
    storage.persist(&ready(Some(HardState { term: 1, vote: Some(1), commit: 5 }), vec![])).expect("commit only");
    drop(storage);
    let (mut storage, recovered) = open(dir.path(), StorageOptions::default());
    assert_eq!(recovered.hard_state, HardState { term: 1, vote: Some(1), commit: 0 }, "the commit lags: not written");
    storage.persist(&ready(Some(HardState { term: 1, vote: Some(1), commit: 3 }), vec![])).expect("commit only");
    storage.persist(&ready(Some(HardState { term: 2, vote: None, commit: 3 }), vec![])).expect("new term");
    drop(storage);
    assert_eq!(reopen(dir.path(), StorageOptions::default()).hard_state, HardState { term: 2, vote: None, commit: 3 });
}

#[test]
fn a_conflicting_suffix_is_replaced_and_stays_replaced() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut storage, _) = open(dir.path(), StorageOptions::default());
    storage.persist(&ready(None, entries(1..=10, 1))).expect("persist");
    storage
        .persist(&ready(Some(HardState { term: 2, vote: Some(2), commit: 0 }), entries(6..=8, 2)))
        .expect("truncate");
    assert_eq!(storage.last_index(), 8);
    drop(storage);

    let (mut storage, recovered) = open(dir.path(), StorageOptions::default());
    let mut expected = entries(1..=5, 1);
    expected.extend(entries(6..=8, 2));
    assert_eq!(recovered.entries, expected);
    assert!(recovered.report.contains("5 replaced"), "{}", recovered.report);

    // A second truncation on top of the first, after a reopen, then a plain append.
    storage.persist(&ready(None, entries(3..=4, 3))).expect("truncate again");
    storage.persist(&ready(None, entries(5..=5, 3))).expect("append");
    drop(storage);
    let mut expected = entries(1..=2, 1);
    expected.extend(entries(3..=5, 3));
    assert_eq!(reopen(dir.path(), StorageOptions::default()).entries, expected);
}

#[test]
fn readies_that_do_not_fit_the_log_are_refused_without_writing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut storage, _) = open(dir.path(), StorageOptions::default());
    storage.persist(&ready(None, entries(1..=3, 1))).expect("persist");
    let gap = storage.persist(&ready(None, entries(5..=6, 1)));
    assert!(matches!(gap, Err(StorageError::Invalid(_))), "{gap:?}");
    let mut skipping = entries(4..=4, 1);
    skipping.push(command(6, 1));
    assert!(matches!(storage.persist(&ready(None, skipping)), Err(StorageError::Invalid(_))));
    let mismatched = storage.save_snapshot(&snapshot(2, 9));
    assert!(matches!(mismatched, Err(StorageError::Invalid(_))), "{mismatched:?}");
    drop(storage);
    assert_eq!(reopen(dir.path(), StorageOptions::default()).entries, entries(1..=3, 1));
}

// ---- snapshots and compaction -----------------------------------------------------------

#[test]
fn snapshots_compact_the_log_and_reopen_gives_snapshot_plus_later_entries() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut storage, _) = open(dir.path(), small_segments());
    for batch in 0..20u64 {
        storage.persist(&ready(None, entries(batch * 10 + 1..=batch * 10 + 10, 1))).expect("persist");
    }
    let before = segment_files(dir.path());
    assert!(before > 5, "1 KiB segments should hold 200 entries in many files, got {before}");
    assert_eq!(oldest_segment_lsn(dir.path()), 0);

    storage.save_snapshot(&snapshot(100, 1)).expect("first snapshot");
    assert_eq!(oldest_segment_lsn(dir.path()), 0, "one snapshot: the log is kept whole for the fallback");
    storage.persist(&ready(None, entries(201..=260, 1))).expect("persist");
    storage.save_snapshot(&snapshot(180, 1)).expect("second snapshot");
    // The log is kept from the older snapshot (through 100) on: entry 101 is LSN 100, so
    // every segment wholly before it is gone.
    let cut = oldest_segment_lsn(dir.path());
    assert!(cut > 0 && cut <= 100, "the oldest segment starts at LSN {cut}, expected in 1..=100");
    storage.persist(&ready(None, entries(261..=300, 1))).expect("persist");
    storage.save_snapshot(&snapshot(250, 1)).expect("third snapshot");
    let second_cut = oldest_segment_lsn(dir.path());
    assert!(
        second_cut > 100 && second_cut <= 180,
        "the oldest segment starts at LSN {second_cut}, expected in 101..=180"
    );
    assert_eq!(snapshot_files(dir.path()).len(), 2, "two snapshot files are kept");
    drop(storage);

    let (storage, recovered) = open(dir.path(), small_segments());
    assert_eq!(recovered.snapshot, Some(snapshot(250, 1)));
    assert_eq!(recovered.entries, entries(251..=300, 1));
    assert_eq!(recovered.hard_state.commit, 250, "a snapshot's index is committed");
    assert_eq!(storage.last_index(), 300);
}

#[test]
fn a_damaged_newest_snapshot_falls_back_to_the_older_one_and_the_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut storage, _) = open(dir.path(), small_segments());
    storage.persist(&ready(None, entries(1..=100, 1))).expect("persist");
    storage.save_snapshot(&snapshot(40, 1)).expect("snapshot");
    storage.persist(&ready(None, entries(101..=150, 1))).expect("persist");
    storage.save_snapshot(&snapshot(120, 1)).expect("snapshot");
    drop(storage);

    let newest = snapshot_files(dir.path()).pop().expect("a snapshot file");
    let mut bytes = fs::read(&newest).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    fs::write(&newest, bytes).expect("damage");

    let recovered = reopen(dir.path(), small_segments());
    assert_eq!(recovered.snapshot, Some(snapshot(40, 1)));
    assert_eq!(recovered.entries, entries(41..=150, 1));
    assert!(recovered.report.contains("checksum mismatch"), "{}", recovered.report);
}

#[test]
fn a_received_snapshot_that_matches_keeps_the_entries_after_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut storage, _) = open(dir.path(), StorageOptions::default());
    storage.persist(&ready(None, entries(1..=10, 1))).expect("persist");
    let received = Ready { snapshot: Some(snapshot(6, 1)), ..Ready::default() };
    storage.persist(&received).expect("install");
    drop(storage);
    let recovered = reopen(dir.path(), StorageOptions::default());
    assert_eq!(recovered.snapshot, Some(snapshot(6, 1)));
    assert_eq!(recovered.entries, entries(7..=10, 1));
}

#[test]
fn a_received_snapshot_that_conflicts_discards_the_whole_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut storage, _) = open(dir.path(), StorageOptions::default());
    storage.persist(&ready(None, entries(1..=10, 1))).expect("persist");
    // The leader's snapshot through 8 has term 2: our 8 (term 1) and everything after it
    // are stale. Stale records 9 and 10 must not come back after the snapshot, with or
    // without entries following it.
    let received = Ready { snapshot: Some(snapshot(8, 2)), ..Ready::default() };
    storage.persist(&received).expect("install");
    drop(storage);
    let (mut storage, recovered) = open(dir.path(), StorageOptions::default());
    assert_eq!(recovered.snapshot, Some(snapshot(8, 2)));
    assert_eq!(recovered.entries, Vec::<Entry>::new());

    let with_entries = Ready { snapshot: Some(snapshot(12, 3)), entries: entries(13..=14, 3), ..Ready::default() };
    storage.persist(&with_entries).expect("install with entries");
    drop(storage);
    let recovered = reopen(dir.path(), StorageOptions::default());
    assert_eq!(recovered.snapshot, Some(snapshot(12, 3)));
    assert_eq!(recovered.entries, entries(13..=14, 3));
}

// ---- damage ---------------------------------------------------------------------------

#[test]
fn a_torn_tail_loses_only_the_record_being_written() {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = StorageOptions { fsync: false, segment_bytes: 1 << 20 };
    let (mut storage, _) = open(dir.path(), options);
    storage.persist(&ready(None, entries(1..=20, 1))).expect("persist");
    drop(storage);

    // A crash in the middle of writing entry 20's record: its last bytes never made it.
    let last = fs::read_dir(dir.path().join("log"))
        .expect("log dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_segment(p))
        .max()
        .expect("a segment");
    let len = fs::metadata(&last).expect("segment").len();
    fs::OpenOptions::new().write(true).open(&last).and_then(|f| f.set_len(len - 3)).expect("truncate");

    let (mut storage, recovered) = open(dir.path(), options);
    assert_eq!(recovered.entries, entries(1..=19, 1));
    assert!(recovered.report.contains("torn"), "the report should name the torn tail: {}", recovered.report);
    storage.persist(&ready(None, entries(20..=21, 2))).expect("append after recovery");
    drop(storage);
    let mut expected = entries(1..=19, 1);
    expected.extend(entries(20..=21, 2));
    assert_eq!(reopen(dir.path(), options).entries, expected);
}

#[test]
fn a_damaged_hard_state_is_an_error_not_a_default() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut storage, _) = open(dir.path(), StorageOptions::default());
    storage.persist(&ready(Some(HardState { term: 5, vote: Some(2), commit: 0 }), vec![])).expect("persist");
    drop(storage);
    let path = dir.path().join("hardstate");
    let mut bytes = fs::read(&path).expect("read");
    bytes[6] ^= 1;
    fs::write(&path, bytes).expect("damage");
    match Storage::open(dir.path(), StorageOptions::default()) {
        Err(StorageError::CorruptHardState { .. }) => {}
        other => panic!("expected CorruptHardState, got {:?}", other.map(|(_, r)| r)),
    }
}

#[test]
fn leftover_tmp_files_are_removed_at_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut storage, _) = open(dir.path(), StorageOptions::default());
    storage.persist(&ready(Some(HardState { term: 3, vote: None, commit: 0 }), vec![])).expect("persist");
    drop(storage);
    // A crash between writing the tmp file and renaming it.
    fs::write(dir.path().join("hardstate.tmp"), b"half a hard st").expect("tmp");
    fs::write(dir.path().join("snapshot-00000000000000000009-00000000000000000001.snap.tmp"), b"half").expect("tmp");
    let recovered = reopen(dir.path(), StorageOptions::default());
    assert_eq!(recovered.hard_state.term, 3);
    assert!(recovered.report.contains("removed 2 unfinished .tmp files"), "{}", recovered.report);
    assert!(!dir.path().join("hardstate.tmp").exists());
}

// ---- kill -9 ----------------------------------------------------------------------------

/// The child's directory and seed come in these variables.
const CHILD_DIR_VAR: &str = "MINIRAFT_STORAGE_CRASH_DIR";
const CHILD_SEED_VAR: &str = "MINIRAFT_STORAGE_CRASH_SEED_CHILD";
/// The child stops by itself after this long or this many steps, whatever the parent does.
const CHILD_SECONDS: u64 = 30;
const CHILD_MAX_STEPS: u64 = 200_000;
/// Kill rounds per test run, each with its own seed and directory.
const ROUNDS: u64 = 3;
/// Segments this small make rolls and compaction happen within a few hundred steps.
const CHILD_SEGMENT_BYTES: u64 = 4096;

/// One step of the workload: a Ready to persist, or the driver's own snapshot.
#[derive(Clone, Debug)]
enum Step {
    Persist(Box<Ready>),
    Save(Snapshot),
}

/// What the storage should hold after some steps: the model the recovered state is
/// compared with. The generator mutates it as it makes steps, so the parent can compute
/// the state after any number of steps from the seed alone.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Model {
    /// The hard state as last given.
    hard_state: HardState,
    /// The hard state as last written to the file (term or vote changed).
    file_hard_state: HardState,
    snapshot: Option<Snapshot>,
    /// The entries after the snapshot.
    entries: Vec<Entry>,
}

impl Model {
    fn new() -> Model {
        Model {
            hard_state: HardState::default(),
            file_hard_state: HardState::default(),
            snapshot: None,
            entries: vec![],
        }
    }

    fn base(&self) -> Index {
        self.snapshot.as_ref().map_or(0, |s| s.meta.index)
    }

    fn last(&self) -> Index {
        self.base() + self.entries.len() as u64
    }

    fn term_at(&self, index: Index) -> Option<Term> {
        if index == self.base() {
            return Some(self.snapshot.as_ref().map_or(0, |s| s.meta.term));
        }
        index.checked_sub(self.base() + 1).and_then(|k| self.entries.get(k as usize)).map(|e| e.term)
    }

    /// Applies `stage` parts of `step`: for a Persist, 0 = nothing, 1 = its snapshot,
    /// 1 + p = its snapshot and first p entries, 2 + len = everything. For a Save, 0 or 1.
    fn apply(&mut self, step: &Step, stage: usize) {
        match step {
            Step::Save(snapshot) => {
                if stage >= 1 {
                    let covered = (snapshot.meta.index - self.base()) as usize;
                    self.entries.drain(..covered);
                    self.snapshot = Some(snapshot.clone());
                }
            }
            Step::Persist(ready) => {
                if stage >= 1 {
                    if let Some(snapshot) = &ready.snapshot {
                        if self.term_at(snapshot.meta.index) == Some(snapshot.meta.term) {
                            let covered = (snapshot.meta.index - self.base()) as usize;
                            self.entries.drain(..covered);
                        } else {
                            self.entries.clear();
                        }
                        self.snapshot = Some(snapshot.clone());
                    }
                }
                let appended = stage.saturating_sub(1).min(ready.entries.len());
                if let Some(first) = ready.entries.first().filter(|_| appended > 0) {
                    self.entries.truncate((first.index - self.base() - 1) as usize);
                    self.entries.extend(ready.entries[..appended].iter().cloned());
                }
                if stage >= 2 + ready.entries.len() {
                    if let Some(hs) = ready.hard_state {
                        if (hs.term, hs.vote) != (self.file_hard_state.term, self.file_hard_state.vote) {
                            self.file_hard_state = hs;
                        }
                        self.hard_state = hs;
                    }
                }
            }
        }
    }

    fn stages(step: &Step) -> usize {
        match step {
            Step::Save(_) => 1,
            Step::Persist(ready) => 2 + ready.entries.len(),
        }
    }
}

/// A seeded stream of steps that are valid for the model they keep.
struct Workload {
    rng: fastrand::Rng,
    model: Model,
}

impl Workload {
    fn new(seed: u64) -> Workload {
        Workload { rng: fastrand::Rng::with_seed(seed), model: Model::new() }
    }

    fn entry(&mut self, index: Index, term: Term) -> Entry {
        let payload = match self.rng.u8(..20) {
            0 => EntryPayload::Noop,
            _ => {
                let len = self.rng.usize(0..200);
                let byte = self.rng.u8(..);
                EntryPayload::Command(Bytes::from(vec![byte; len]))
            }
        };
        Entry { term, index, payload }
    }

    fn snapshot_at(&mut self, index: Index, term: Term) -> Snapshot {
        let mut data = format!("state through {index} at {term};").into_bytes();
        data.resize(self.rng.usize(20..600), b'.');
        Snapshot {
            meta: SnapshotMeta { index, term, membership: Membership::with_voters(BTreeSet::from([1, 2, 3])) },
            data: Bytes::from(data),
        }
    }

    /// The next step; the model becomes the state after it.
    fn next(&mut self) -> Step {
        let m = &self.model;
        let (base, last, commit) = (m.base(), m.last(), m.hard_state.commit);
        let mut hs = m.hard_state;
        let roll = self.rng.u8(..100);
        let step = if roll < 3 && commit > base {
            // The driver compacts through the commit index.
            let term = m.term_at(commit).expect("the commit index is in the log");
            Step::Save(self.snapshot_at(commit, term))
        } else if roll < 5 {
            // A snapshot from a new leader: beyond our log (discarding it), or matching it.
            hs.term += 1;
            hs.vote = None;
            let (index, term) = if last > commit && self.rng.bool() {
                let index = self.rng.u64(commit.max(base) + 1..=last);
                (index, m.term_at(index).expect("in the log"))
            } else {
                (last + self.rng.u64(1..5), hs.term)
            };
            hs.commit = index;
            let snapshot = self.snapshot_at(index, term);
            let after = if self.rng.bool() { self.rng.u64(0..4) } else { 0 };
            let new_entries = (index + 1..=index + after).map(|i| self.entry(i, hs.term)).collect();
            Step::Persist(Box::new(Ready {
                hard_state: Some(hs),
                snapshot: Some(snapshot),
                entries: new_entries,
                ..Ready::default()
            }))
        } else if roll < 15 && last > commit.max(base) {
            // A new leader overwrites an uncommitted suffix.
            hs.term += 1;
            hs.vote = Some(self.rng.u64(1..=3));
            let from = self.rng.u64(commit.max(base) + 1..=last);
            let count = self.rng.u64(1..6);
            let new_entries = (from..from + count).map(|i| self.entry(i, hs.term)).collect();
            Step::Persist(Box::new(ready(Some(hs), new_entries)))
        } else if roll < 23 {
            // A vote or term change alone, or a commit change alone.
            if self.rng.bool() {
                hs.term += 1;
                hs.vote = Some(self.rng.u64(1..=3));
            } else {
                hs.commit = self.rng.u64(commit..=last);
            }
            Step::Persist(Box::new(ready(Some(hs), vec![])))
        } else {
            // The common case: append at the end, commit some of it.
            let term = hs.term.max(m.term_at(last).unwrap_or(0));
            hs.term = term;
            let count = self.rng.u64(1..9);
            let new_entries: Vec<Entry> = (last + 1..=last + count).map(|i| self.entry(i, term)).collect();
            hs.commit = self.rng.u64(commit..=last + count);
            Step::Persist(Box::new(ready(Some(hs), new_entries)))
        };
        let stages = Model::stages(&step);
        self.model.apply(&step, stages);
        step
    }
}

/// Whether `recovered` is the model after `acked` steps plus some stage of step
/// `acked + 1`. Returns every mismatch with each candidate (empty when one matches).
fn check_recovery(seed: u64, acked: u64, recovered: &Recovered) -> Result<(), String> {
    let mut workload = Workload::new(seed);
    for _ in 0..acked {
        workload.next();
    }
    let acknowledged = workload.model.clone();
    let in_flight = workload.next();
    let mut problems = Vec::new();
    for stage in 0..=Model::stages(&in_flight) {
        let mut candidate = acknowledged.clone();
        candidate.apply(&in_flight, stage);
        match compare(&candidate, recovered) {
            Ok(()) => return Ok(()),
            Err(problem) => problems.push(format!("stage {stage} of step {}: {problem}", acked + 1)),
        }
    }
    Err(problems.join("\n"))
}

fn compare(model: &Model, recovered: &Recovered) -> Result<(), String> {
    let file = model.file_hard_state;
    if (recovered.hard_state.term, recovered.hard_state.vote) != (file.term, file.vote) {
        return Err(format!("hard state {:?}, expected term/vote of {file:?}", recovered.hard_state));
    }
    let expected_commit = file.commit.max(model.base()).min(model.last());
    if recovered.hard_state.commit != expected_commit {
        return Err(format!("commit {}, expected {expected_commit}", recovered.hard_state.commit));
    }
    if recovered.snapshot != model.snapshot {
        return Err(format!(
            "snapshot {:?}, expected {:?}",
            recovered.snapshot.as_ref().map(|s| &s.meta),
            model.snapshot.as_ref().map(|s| &s.meta)
        ));
    }
    if recovered.entries != model.entries {
        let first_difference = recovered.entries.iter().zip(&model.entries).position(|(a, b)| a != b);
        return Err(format!(
            "{} entries (last {:?}), expected {} (last {:?}); first difference at position {first_difference:?}",
            recovered.entries.len(),
            recovered.entries.last().map(|e| (e.index, e.term)),
            model.entries.len(),
            model.entries.last().map(|e| (e.index, e.term))
        ));
    }
    Ok(())
}

/// Runs the workload against a real directory, printing `ack <n>` after step n returns.
#[test]
fn crash_child() {
    let (Ok(dir), Ok(seed)) = (std::env::var(CHILD_DIR_VAR), std::env::var(CHILD_SEED_VAR)) else {
        return; // not a child: nothing to do
    };
    let seed: u64 = seed.parse().expect("the parent passes a number");
    let options = StorageOptions { fsync: true, segment_bytes: CHILD_SEGMENT_BYTES };
    let (mut storage, _) = Storage::open(Path::new(&dir), options).expect("open");
    let mut workload = Workload::new(seed);
    let deadline = Instant::now() + Duration::from_secs(CHILD_SECONDS);
    let mut out = std::io::stdout().lock();
    for n in 1..=CHILD_MAX_STEPS {
        if Instant::now() > deadline {
            break;
        }
        match workload.next() {
            Step::Persist(ready) => storage.persist(&ready),
            Step::Save(snapshot) => storage.save_snapshot(&snapshot),
        }
        .unwrap_or_else(|e| panic!("step {n}: {e}"));
        use std::io::Write;
        writeln!(out, "ack {n}").and_then(|()| out.flush()).expect("stdout");
    }
}

/// The step number in an `ack <n>` line. libtest prints `test crash_child ... ` without a
/// newline before the test runs, so the first ack shares its line.
fn parse_ack(line: &str) -> Option<u64> {
    let at = line.find("ack ")?;
    line[at + 4..].trim().parse().ok()
}

/// Kills the child by pid if the test panics before it does.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill(); // SIGKILL, this child only
        let _ = self.0.wait();
    }
}

#[test]
fn acknowledged_state_survives_kill_9() {
    let base_seed =
        std::env::var("MINIRAFT_STORAGE_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
        });
    let rounds = if std::env::var("MINIRAFT_STORAGE_CRASH_SEED").is_ok() { 1 } else { ROUNDS };
    let exe = std::env::current_exe().expect("the test binary's path");
    for round in 0..rounds {
        let seed = base_seed.wrapping_add(round);
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x9e37_79b9_7f4a_7c15);
        let kill_after = rng.u64(50..1500);
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = ChildGuard(
            Command::new(&exe)
                .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD_DIR_VAR, dir.path())
                .env(CHILD_SEED_VAR, seed.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("re-run the test binary as the child"),
        );
        let stdout = child.0.stdout.take().expect("piped stdout");
        let (lines, lines_rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut acked = 0u64;
        let deadline = Instant::now() + Duration::from_secs(CHILD_SECONDS);
        while acked < kill_after {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(n) = parse_ack(&line) {
                        assert_eq!(n, acked + 1, "seed {seed}: acknowledgements out of order");
                        acked = n;
                    }
                }
                Err(_) => {
                    let _ = child.0.kill();
                    let mut stderr = String::new();
                    if let Some(mut e) = child.0.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
                    }
                    panic!(
                        "seed {seed}: the child stopped after {acked} acknowledgements, before {kill_after}:\n{stderr}"
                    );
                }
            }
        }
        child.0.kill().expect("SIGKILL the child");
        let _ = child.0.wait();
        // Acknowledgements already in the pipe were printed before the kill: count them.
        let _ = reader.join();
        for line in lines_rx.try_iter() {
            if let Some(n) = parse_ack(&line) {
                acked = n;
            }
        }

        let (_, recovered) =
            Storage::open(dir.path(), StorageOptions { fsync: true, segment_bytes: CHILD_SEGMENT_BYTES })
                .unwrap_or_else(|e| panic!("seed {seed}: reopening after kill -9 at step {acked}: {e}"));
        if let Err(problems) = check_recovery(seed, acked, &recovered) {
            panic!(
                "seed {seed}: after kill -9 with {acked} steps acknowledged, the recovered state matches no \
                 allowed state (replay with MINIRAFT_STORAGE_CRASH_SEED={seed}):\n{problems}\nrecovery: {}",
                recovered.report
            );
        }
        eprintln!(
            "seed {seed}: killed after {acked} acknowledged steps; recovered {} entries after snapshot {:?}; {}",
            recovered.entries.len(),
            recovered.snapshot.as_ref().map(|s| s.meta.index),
            recovered.report
        );
    }
}

// ---- the checker can fail ---------------------------------------------------------------

/// Runs the workload in process for `steps` steps and reopens, for the checker tests.
fn run_in_process(seed: u64, steps: u64, dir: &Path) -> Recovered {
    let options = StorageOptions { fsync: false, segment_bytes: CHILD_SEGMENT_BYTES };
    let (mut storage, _) = open(dir, options);
    let mut workload = Workload::new(seed);
    for _ in 0..steps {
        match workload.next() {
            Step::Persist(ready) => storage.persist(&ready),
            Step::Save(snapshot) => storage.save_snapshot(&snapshot),
        }
        .expect("step");
    }
    drop(storage);
    reopen(dir, options)
}

#[test]
fn checker_accepts_a_clean_run_and_the_in_flight_step() {
    let dir = tempfile::tempdir().expect("temp dir");
    let recovered = run_in_process(7, 400, dir.path());
    check_recovery(7, 400, &recovered).expect("a clean run matches");
    // The same state is "step 399 acknowledged, step 400 fully in flight".
    check_recovery(7, 399, &recovered).expect("the in-flight step may be durable");
}

#[test]
fn checker_catches_a_lost_entry_a_lost_vote_and_a_resurrected_entry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let recovered = run_in_process(11, 400, dir.path());
    assert!(!recovered.entries.is_empty(), "the workload should leave entries after its snapshot");

    let mut lost_entry = recovered.clone();
    lost_entry.entries.pop();
    assert!(check_recovery(11, 400, &lost_entry).is_err(), "a lost acknowledged entry went unnoticed");
    let mut lost_two = recovered.clone();
    let keep = lost_two.entries.len().saturating_sub(40);
    lost_two.entries.truncate(keep);
    assert!(check_recovery(11, 400, &lost_two).is_err(), "40 lost entries went unnoticed");

    let mut lost_vote = recovered.clone();
    lost_vote.hard_state.term -= 1;
    assert!(check_recovery(11, 400, &lost_vote).is_err(), "a lost term went unnoticed");

    let mut resurrected = recovered.clone();
    let next = resurrected.entries.last().map_or(1, |e| e.index + 1);
    resurrected.entries.push(command(next, 0));
    assert!(check_recovery(11, 400, &resurrected).is_err(), "an extra stale entry went unnoticed");
}
