//! A node's durable state: the Raft log on the minicore record log, the hard state in a
//! file replaced by atomic rename, and snapshots as files. The driver calls
//! [`Storage::persist`] with every [`Ready`] (step 2 of the loop in `ready.rs`) and
//! [`Storage::save_snapshot`] when it compacts; [`Storage::open`] recovers what a
//! restarted node starts from.
//!
//! # On-disk layout
//!
//! ```text
//! DIR/
//!   hardstate                                    term, vote, commit (32 bytes, CRC'd)
//!   snapshot-<index:020>-<term:020>.snap         the two newest snapshots
//!   log/00000000000000000000.log ...             minicore record log: one record per entry
//!   *.tmp                                        a write in progress; removed at open
//! hardstate: "MRHS" | term u64 LE | vote u64 LE (0 = none) | commit u64 LE | crc32 u32 LE over the rest
//! snapshot:  "MRSNAP01" | crc32 u32 LE over what follows | log_lsn u64 LE | meta (codec.rs)
//!            | data_len u64 LE | data
//! log record: one entry in codec.rs's entry encoding
//! ```
//!
//! # Durability: what `persist` promises when it returns
//!
//! With `fsync: true` (the default), everything in the Ready survives power loss when
//! `persist` returns, part by part, in this order:
//!
//! 1. **A received snapshot** (`ready.snapshot`) is written to `snapshot-….snap.tmp`,
//!    fsynced, renamed into place, and the directory is fsynced.
//! 2. **Entries** are appended to the record log, one record each, and `commit` waits for
//!    an fsync that covers the last of them (the record log's group commit).
//! 3. **The hard state** is written to `hardstate.tmp`, fsynced, renamed over `hardstate`,
//!    and the directory is fsynced, *but only when its term or vote changed*. A change of
//!    `commit` alone is remembered and rides along with the next write: the persisted
//!    commit index may lag, which Raft allows (it is only a hint for applying early after
//!    a restart; the leader tells the node the real one).
//!
//! So votes (in the hard state) and acknowledged entries are durable before the messages
//! that promise them go out, which is all Raft needs (Figure 2: "updated on stable storage
//! before responding to RPCs"). [`Storage::save_snapshot`] writes its file the same way
//! before it deletes anything.
//!
//! With `fsync: false` (`--unsafe-no-fsync`, etcd's flag of the same name), every write
//! above still reaches the operating system (write(2), rename(2)) before `persist`
//! returns, so a crashed *process* (kill -9) loses nothing that was acknowledged; a power
//! loss or kernel crash can lose the last writes, and a node that forgets a vote or an
//! acknowledged entry can break Raft's safety. Use it for benchmarks and tests only.
//!
//! # Recovery rules (`open`)
//!
//! - `*.tmp` files are removed: they are writes that never reached their rename.
//! - A missing `hardstate` means term 0, no vote, commit 0 (a new node). A `hardstate`
//!   that fails its CRC is an error, never a default: it is replaced only by rename, so
//!   damage means the disk failed, and silently forgetting a vote is how a node votes
//!   twice in one term.
//! - The record log cuts a torn tail (a partial last record: only unsynced data can be
//!   there) and refuses corruption in the middle; see `minicore::record_log`.
//! - Snapshot files are tried newest first. One whose CRC, header or name does not check
//!   is ignored (and reported) in favour of an older one, or none. A snapshot is usable
//!   only if the log still reaches back to it; the log is kept from the *older* of the two
//!   snapshots that are kept, so that falling back works after the driver's own
//!   compactions.
//! - Entries: the log is replayed from the snapshot's `log_lsn` (the first record that
//!   can matter after that snapshot; see below). A record for index `i` when records for
//!   indexes `>= i` were already seen replaces them: this is the conflicting-suffix
//!   truncation, done logically as etcd's WAL does it, with nothing rewritten on disk.
//!   Records at or below the snapshot's index are dropped. A record that skips an index is
//!   corruption (an error).
//! - The recovered commit index is raised to the snapshot's index (a snapshot holds only
//!   committed entries) and lowered to the last recovered index if it is beyond it.
//!
//! A snapshot's `log_lsn` is the LSN of the first live entry after the snapshot when it
//! was saved (or the log's next LSN if there was none). Every record before it is ignored
//! when replaying on top of that snapshot. That is what makes a snapshot received from a
//! leader that does not match the local log safe: the stale entries after its index are
//! simply before `log_lsn`, so no crash between writing the snapshot and appending the
//! next entries can bring them back.
//!
//! # Compaction
//!
//! After a snapshot file is durable, snapshot files beyond the newest
//! [`KEEP_SNAPSHOTS`] are removed, and log segments wholly before the oldest kept
//! snapshot's `log_lsn` are deleted (`RecordLog::delete_segments_before`); until there
//! are that many snapshots, the fallback is the whole log, which is kept. `save_snapshot`
//! rolls the active segment first, so the segments line up with snapshots and the next
//! compaction can free whole segments. An in-memory map from index to LSN for the live
//! entries finds `log_lsn` without reading the log.
//!
//! Left out: an inter-process lock on the directory (two nodes on one directory corrupt
//! it), streaming snapshots (a snapshot is read and written whole, in memory), and
//! reading entries back at run time (the core keeps every entry after its snapshot in
//! memory, so storage is read only at `open`).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use minicore::record_log::{FsyncPolicy, LogError, LogOptions, Lsn, RecordLog, RecoveryMode};

use crate::codec::{self, CodecError, Reader};
use crate::ready::{Ready, Restored};
use crate::types::{Entry, HardState, Index, Membership, Snapshot, Term};

/// How many snapshot files are kept. Two, so that a damaged newest snapshot can fall
/// back on the one before it (the log is kept from there on too).
pub const KEEP_SNAPSHOTS: usize = 2;

/// The largest log record (one encoded entry): the codec's frame limit, so that any
/// entry that can arrive in a message can be stored.
pub const MAX_ENTRY_RECORD_BYTES: u32 = codec::MAX_FRAME_BYTES as u32;

const HARD_STATE_FILE: &str = "hardstate";
const HARD_STATE_MAGIC: &[u8; 4] = b"MRHS";
const HARD_STATE_BYTES: usize = 4 + 8 + 8 + 8 + 4;
const SNAPSHOT_MAGIC: &[u8; 8] = b"MRSNAP01";
const LOG_DIR: &str = "log";
const TMP_SUFFIX: &str = ".tmp";

/// How to open a node's storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageOptions {
    /// fsync before `persist` and `save_snapshot` return (see the module docs for what
    /// `false` gives up).
    pub fsync: bool,
    /// The record log's segment size: smaller segments let compaction free space sooner.
    pub segment_bytes: u64,
}

impl Default for StorageOptions {
    /// fsync on, 64 MiB segments (the record log's default).
    fn default() -> Self {
        StorageOptions { fsync: true, segment_bytes: LogOptions::DEFAULT_SEGMENT_BYTES }
    }
}

/// What `open` recovered: what the node starts from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The persisted term and vote, and a commit index that may lag.
    pub hard_state: HardState,
    /// The newest usable snapshot.
    pub snapshot: Option<Snapshot>,
    /// The entries after the snapshot, contiguous, in index order.
    pub entries: Vec<Entry>,
    /// What recovery found and changed, one line, for the node's log.
    pub report: String,
}

impl Recovered {
    /// The core's starting point: this, plus the founding voters to use when neither the
    /// snapshot nor the entries name a membership (a new cluster).
    pub fn into_restored(self, initial_membership: Membership) -> Restored {
        Restored { hard_state: self.hard_state, snapshot: self.snapshot, entries: self.entries, initial_membership }
    }
}

/// What can go wrong with a node's storage. Every message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A file operation failed.
    #[error("could not {operation} ({path}): {source}; check the disk and the data directory's permissions")]
    Io {
        /// What storage was doing, phrased to follow "could not".
        operation: &'static str,
        /// The file or directory.
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The record log failed or refused to open.
    #[error("the Raft log: {0}")]
    Log(#[from] LogError),
    /// The hard state file is damaged.
    #[error(
        "{path} is damaged ({problem}). It holds this node's term and vote, and guessing them could make it vote \
         twice in a term: restore the file from a backup, or wipe this node's data directory and add it back to \
         the cluster as a new member"
    )]
    CorruptHardState { path: PathBuf, problem: String },
    /// A log record passed its CRC but is not an entry.
    #[error(
        "the Raft log record at LSN {lsn} is not an entry ({source}); the log was written by another program or \
         version. Restore the data directory from a backup, or wipe it and re-add the node"
    )]
    CorruptEntry {
        lsn: Lsn,
        #[source]
        source: CodecError,
    },
    /// The log does not connect to any usable snapshot (or to index 1 without one).
    #[error(
        "the Raft log cannot be replayed: {problem}. Entries are missing, so this node cannot restart safely: \
         restore the data directory from a backup, or wipe it and re-add the node"
    )]
    Unrecoverable { problem: String },
    /// A Ready or snapshot that does not fit what is persisted: a bug in the driver or the
    /// core, refused before anything is written.
    #[error("refusing to persist: {0}; this is a bug in the Raft driver or core")]
    Invalid(String),
}

/// A node's durable state.
pub struct Storage {
    /// The data directory.
    dir: PathBuf,
    /// Whether writes are fsynced (see the module docs).
    fsync: bool,
    /// The Raft log: one record per entry, truncation by later records.
    log: RecordLog,
    /// The hard state as last given to `persist` (its commit may be newer than the file's).
    hard_state: HardState,
    /// The term and vote in the file, to write it only when they change.
    written_term_vote: (Term, Option<u64>),
    /// The snapshot files kept, oldest first (at most `KEEP_SNAPSHOTS`).
    snapshots: Vec<SnapshotFile>,
    /// The live entries after the newest snapshot: `live[k]` is index
    /// `snapshot_index + 1 + k`. Their LSNs ascend with their indexes (a truncation
    /// appends the replacements after everything it replaces).
    live: VecDeque<LiveEntry>,
    /// A reusable encoding buffer.
    scratch: Vec<u8>,
}

/// Where a live entry's record is, and its term (to tell whether a received snapshot
/// matches the log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LiveEntry {
    /// The record holding the entry: what `log_lsn` and compaction are computed from.
    lsn: Lsn,
    /// The entry's term, to check a snapshot against the log without reading it.
    term: Term,
}

/// A snapshot file on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SnapshotFile {
    /// The last index the snapshot covers (also in the file name).
    index: Index,
    /// The term of that entry (also in the file name).
    term: Term,
    /// Replay the log from here on top of this snapshot (module docs).
    log_lsn: Lsn,
    /// Where the file is, to remove it when a newer one replaces it.
    path: PathBuf,
}

impl Storage {
    /// Opens (creating if needed) the storage in `dir` and recovers it by the rules in the
    /// module docs.
    pub fn open(dir: &Path, options: StorageOptions) -> Result<(Storage, Recovered), StorageError> {
        let created = !dir.exists();
        fs::create_dir_all(dir).map_err(|source| io_error("create the data directory", dir, source))?;
        if created && options.fsync {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fsync_dir(parent)?;
            }
        }
        let mut report = String::new();

        let removed = remove_tmp_files(dir)?;
        if removed > 0 {
            let _ = write!(report, "removed {removed} unfinished .tmp files; ");
        }

        let hard_state_path = dir.join(HARD_STATE_FILE);
        let mut hard_state = match fs::read(&hard_state_path) {
            Ok(bytes) => decode_hard_state(&bytes)
                .map_err(|problem| StorageError::CorruptHardState { path: hard_state_path.clone(), problem })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => HardState::default(),
            Err(source) => return Err(io_error("read the hard state", &hard_state_path, source)),
        };
        let written_term_vote = (hard_state.term, hard_state.vote);

        let (mut snapshots, ignored) = read_snapshot_files(dir)?;
        for problem in &ignored {
            let _ = write!(report, "ignored {problem}; ");
        }

        let log_options = LogOptions {
            segment_bytes: options.segment_bytes,
            fsync: if options.fsync { FsyncPolicy::Always } else { FsyncPolicy::Never },
            max_record_bytes: MAX_ENTRY_RECORD_BYTES,
            recovery: RecoveryMode::Strict,
            ..LogOptions::default()
        };
        let log_dir = dir.join(LOG_DIR);
        let (log, log_report) = RecordLog::open(&log_dir, log_options)?;
        let _ = write!(report, "log: {log_report}; ");

        // Newest snapshot first, then none; the first that the log connects to wins.
        let mut failures = Vec::new();
        let mut chosen = None;
        let candidates = snapshots.len();
        for candidate in (0..candidates).rev().map(Some).chain([None]) {
            let (base, from) = match candidate {
                Some(k) => {
                    let file: &SnapshotFile = &snapshots[k].0;
                    (file.index, file.log_lsn)
                }
                None => (0, log.first_lsn()),
            };
            match replay(&log, base, from) {
                Ok(replayed) => {
                    chosen = Some((candidate, replayed));
                    break;
                }
                Err(ReplayError::Fatal(error)) => return Err(error),
                Err(ReplayError::Gap(problem)) => failures.push(match candidate {
                    Some(k) => format!("snapshot {}: {problem}", snapshots[k].0.path.display()),
                    None => format!("without a snapshot: {problem}"),
                }),
            }
        }
        let Some((candidate, replayed)) = chosen else {
            return Err(StorageError::Unrecoverable { problem: failures.join("; ") });
        };
        for failure in &failures {
            let _ = write!(report, "could not use {failure}; ");
        }

        // Snapshots newer than the chosen one do not connect to the log: forget them (they
        // stay on disk, reported at every open, until a newer snapshot replaces them).
        let (snapshot, mut snapshot_files) = match candidate {
            Some(k) => {
                snapshots.truncate(k + 1);
                let snapshot = snapshots.last().map(|(_, snapshot)| snapshot.clone());
                (snapshot, snapshots.into_iter().map(|(file, _)| file).collect::<Vec<_>>())
            }
            None => (None, Vec::new()),
        };
        let base = snapshot.as_ref().map_or(0, |s: &Snapshot| s.meta.index);

        // A snapshot whose log_lsn is past the log's end (records lost to a power loss
        // with fsync off): move its log_lsn to the end, or future records would be ignored.
        if let Some(last) = snapshot_files.last_mut() {
            if last.log_lsn > log.next_lsn() {
                let data = snapshot.as_ref().expect("a chosen file has its snapshot");
                let _ = write!(
                    report,
                    "snapshot {} started the log at LSN {} but the log ends at {}: rewritten; ",
                    last.path.display(),
                    last.log_lsn,
                    log.next_lsn()
                );
                last.log_lsn = log.next_lsn();
                write_snapshot_file(dir, data, last.log_lsn, options.fsync)?;
            }
        }

        let last_index = base + replayed.entries.len() as u64;
        let original_commit = hard_state.commit;
        hard_state.commit = hard_state.commit.max(base).min(last_index);
        match &snapshot {
            Some(s) => {
                let _ =
                    write!(report, "snapshot index={} term={} ({} bytes); ", s.meta.index, s.meta.term, s.data.len());
            }
            None => report.push_str("no snapshot; "),
        }
        let _ = write!(
            report,
            "entries {}..={last_index} ({} records replayed, {} replaced by later ones); hard state term={} vote={:?} commit={}",
            base + 1,
            replayed.records,
            replayed.replaced,
            hard_state.term,
            hard_state.vote,
            hard_state.commit
        );
        if hard_state.commit != original_commit {
            let _ = write!(report, " (persisted commit {original_commit} moved into the recovered log)");
        }

        let mut storage = Storage {
            dir: dir.to_path_buf(),
            fsync: options.fsync,
            log,
            hard_state,
            written_term_vote,
            snapshots: snapshot_files,
            live: replayed.live,
            scratch: Vec::new(),
        };
        // A crash between writing a snapshot and compacting leaves extra files behind.
        storage.compact()?;
        storage.check_invariants();
        let recovered = Recovered { hard_state, snapshot, entries: replayed.entries, report };
        Ok((storage, recovered))
    }

    /// Makes a Ready's snapshot, entries and hard state durable (per `fsync`), in that
    /// order, and returns. The other fields of the Ready are not storage's business.
    ///
    /// Fails, before writing anything of the offending part, when the Ready does not fit
    /// the persisted log (entries that skip an index or reach below the snapshot, a
    /// snapshot older than the one persisted).
    pub fn persist(&mut self, ready: &Ready) -> Result<(), StorageError> {
        if let Some(snapshot) = &ready.snapshot {
            self.install_received_snapshot(snapshot)?;
        }
        if !ready.entries.is_empty() {
            self.append_entries(&ready.entries)?;
        }
        if let Some(hard_state) = ready.hard_state {
            self.save_hard_state(hard_state)?;
        }
        self.check_invariants();
        Ok(())
    }

    /// The driver's own snapshot (compaction): the state machine as of
    /// `snapshot.meta.index`, which must be a persisted entry of `snapshot.meta.term`.
    /// Written as a file and made durable; then old snapshot files and log segments that
    /// nothing needs any more are deleted. A snapshot that is not newer than the persisted
    /// one is ignored (a snapshot received from the leader overtook it).
    pub fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let meta = &snapshot.meta;
        if meta.index <= self.snapshot_index() {
            // A snapshot received from the leader overtook this one: nothing to do.
            return Ok(());
        }
        if self.term_at(meta.index) != Some(meta.term) {
            return Err(StorageError::Invalid(format!(
                "a snapshot through {} at term {} does not match the log (which has {:?} there); a driver's snapshot \
                 must cover persisted entries",
                meta.index,
                meta.term,
                self.term_at(meta.index)
            )));
        }
        // Roll first so that the segment boundary sits here: the compaction after the
        // next snapshot can then free everything before this point.
        self.log.roll_segment()?;
        self.write_snapshot(snapshot, true)?;
        self.check_invariants();
        Ok(())
    }

    /// The index of the newest persisted snapshot (0 without one).
    pub fn snapshot_index(&self) -> Index {
        self.snapshots.last().map_or(0, |s| s.index)
    }

    /// The last persisted index (the snapshot's when no entry follows it).
    pub fn last_index(&self) -> Index {
        self.snapshot_index() + self.live.len() as u64
    }

    /// The term of the persisted entry (or newest snapshot) at `index`.
    pub fn term_at(&self, index: Index) -> Option<Term> {
        let base = self.snapshot_index();
        match self.snapshots.last() {
            Some(s) if index == base => Some(s.term),
            None if index == 0 => Some(0),
            _ if index > base => self.live.get((index - base - 1) as usize).map(|e| e.term),
            _ => None,
        }
    }

    /// The hard state as last given (its commit may be newer than the file's).
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Segment files in the record log now (for tests and metrics).
    pub fn log_segments(&self) -> usize {
        self.log.stats().segments
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn append_entries(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let first = entries[0].index;
        let base = self.snapshot_index();
        if first <= base || first > self.last_index() + 1 {
            return Err(StorageError::Invalid(format!(
                "entries from index {first} do not fit a log holding {}..={} after a snapshot through {base}",
                base + 1,
                self.last_index()
            )));
        }
        for (k, pair) in entries.windows(2).enumerate() {
            if pair[1].index != pair[0].index + 1 {
                return Err(StorageError::Invalid(format!(
                    "entries skip from index {} to {} (position {k})",
                    pair[0].index, pair[1].index
                )));
            }
        }
        // The conflicting suffix: forgotten here, superseded at replay by the records
        // appended below (which come later in the log).
        self.live.truncate((first - base - 1) as usize);
        let mut last_lsn = 0;
        for entry in entries {
            self.scratch.clear();
            codec::encode_entry(entry, &mut self.scratch);
            last_lsn = self.log.append(&self.scratch)?;
            self.live.push_back(LiveEntry { lsn: last_lsn, term: entry.term });
        }
        self.log.commit(last_lsn)?;
        Ok(())
    }

    /// A snapshot from the leader: Figure 13's rules 6 and 7. If the log holds the
    /// snapshot's last entry (same index and term), the entries after it stay; otherwise
    /// the whole log is discarded.
    fn install_received_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let meta = &snapshot.meta;
        if meta.index <= self.snapshot_index() {
            return Err(StorageError::Invalid(format!(
                "a received snapshot through {} is not newer than the persisted one through {}",
                meta.index,
                self.snapshot_index()
            )));
        }
        let keeps_suffix = self.term_at(meta.index) == Some(meta.term);
        self.write_snapshot(snapshot, keeps_suffix)
    }

    /// Writes a snapshot file (durably), makes it the newest, and compacts. With
    /// `keeps_suffix`, the live entries after its index stay; without, they are dropped.
    fn write_snapshot(&mut self, snapshot: &Snapshot, keeps_suffix: bool) -> Result<(), StorageError> {
        let meta = &snapshot.meta;
        let base = self.snapshot_index();
        let mut live = self.live.clone();
        if keeps_suffix {
            let covered = (meta.index - base) as usize;
            live.drain(..covered.min(live.len()));
        } else {
            live.clear();
        }
        let log_lsn = live.front().map_or_else(|| self.log.next_lsn(), |e| e.lsn);
        let path = write_snapshot_file(&self.dir, snapshot, log_lsn, self.fsync)?;
        // The file is durable: from here on a restart uses it, so the memory state follows.
        self.live = live;
        self.snapshots.retain(|s| s.path != path);
        self.snapshots.push(SnapshotFile { index: meta.index, term: meta.term, log_lsn, path });
        self.compact()
    }

    /// Removes snapshot files beyond `KEEP_SNAPSHOTS` and log segments before the oldest
    /// kept snapshot's `log_lsn` (once there are `KEEP_SNAPSHOTS` of them).
    fn compact(&mut self) -> Result<(), StorageError> {
        let mut removed = false;
        while self.snapshots.len() > KEEP_SNAPSHOTS {
            let old = self.snapshots.remove(0);
            match fs::remove_file(&old.path) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(io_error("remove an old snapshot", &old.path, source)),
            }
        }
        if removed && self.fsync {
            fsync_dir(&self.dir)?;
        }
        // With fewer snapshots than that, the fallback is the whole log: keep it.
        if self.snapshots.len() == KEEP_SNAPSHOTS {
            let needed = self.snapshots.iter().map(|s| s.log_lsn).min().expect("KEEP_SNAPSHOTS > 0");
            self.log.delete_segments_before(needed)?;
        }
        Ok(())
    }

    fn save_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        assert_ne!(hard_state.vote, Some(0), "node id 0 is reserved; a vote for it cannot be persisted");
        if hard_state.term < self.hard_state.term {
            return Err(StorageError::Invalid(format!(
                "the term would go back from {} to {}",
                self.hard_state.term, hard_state.term
            )));
        }
        self.hard_state = hard_state;
        if (hard_state.term, hard_state.vote) == self.written_term_vote {
            return Ok(()); // only the commit changed: it rides along with the next write
        }
        let bytes = encode_hard_state(&hard_state);
        write_atomically(&self.dir, HARD_STATE_FILE, &[&bytes], self.fsync)?;
        self.written_term_vote = (hard_state.term, hard_state.vote);
        Ok(())
    }

    fn check_invariants(&self) {
        debug_assert!(self.live.iter().zip(self.live.iter().skip(1)).all(|(a, b)| a.lsn < b.lsn && a.term <= b.term));
        debug_assert!(self.snapshots.windows(2).all(|w| w[0].index < w[1].index && w[0].log_lsn <= w[1].log_lsn));
        debug_assert!(self.snapshots.len() <= KEEP_SNAPSHOTS);
        if let (Some(first), Some(newest)) = (self.live.front(), self.snapshots.last()) {
            debug_assert!(first.lsn >= newest.log_lsn, "a live entry before its snapshot's log_lsn");
        }
    }
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("dir", &self.dir)
            .field("fsync", &self.fsync)
            .field("hard_state", &self.hard_state)
            .field("snapshot_index", &self.snapshot_index())
            .field("last_index", &self.last_index())
            .finish()
    }
}

// ---- replay ----------------------------------------------------------------------

/// The log replayed on top of a snapshot (or of nothing).
struct Replayed {
    /// The entries after the snapshot, for the core.
    entries: Vec<Entry>,
    /// The same entries' LSNs and terms, for the storage.
    live: VecDeque<LiveEntry>,
    /// Records read (for the report).
    records: u64,
    /// Entries superseded by a later record for their index (for the report).
    replaced: u64,
}

enum ReplayError {
    /// The log does not connect to this base: try another snapshot.
    Gap(String),
    /// The log cannot be read at all.
    Fatal(StorageError),
}

/// Replays the records from `from` on top of a snapshot through `base`, applying the
/// rules in the module docs. Pure apart from reading the log.
fn replay(log: &RecordLog, base: Index, from: Lsn) -> Result<Replayed, ReplayError> {
    let mut replayed = Replayed { entries: Vec::new(), live: VecDeque::new(), records: 0, replaced: 0 };
    if from < log.first_lsn() {
        return Err(ReplayError::Gap(format!(
            "it needs the log from LSN {from}, but the log starts at LSN {}",
            log.first_lsn()
        )));
    }
    if from >= log.next_lsn() {
        return Ok(replayed); // nothing after the snapshot (or the rewrite case in `open`)
    }
    let reader = log.reader(from).map_err(|e| ReplayError::Fatal(e.into()))?;
    for record in reader {
        let (lsn, payload) = record.map_err(|e| ReplayError::Fatal(e.into()))?;
        let entry = codec::decode_entry(&payload)
            .map_err(|source| ReplayError::Fatal(StorageError::CorruptEntry { lsn, source }))?;
        replayed.records += 1;
        if entry.index <= base {
            continue; // covered by the snapshot
        }
        let last = base + replayed.entries.len() as u64;
        if entry.index > last + 1 {
            return Err(ReplayError::Gap(format!(
                "the record at LSN {lsn} holds index {} but the log so far ends at {last} (snapshot through {base})",
                entry.index
            )));
        }
        let keep = (entry.index - base - 1) as usize;
        replayed.replaced += (replayed.entries.len() - keep) as u64;
        replayed.entries.truncate(keep);
        replayed.live.truncate(keep);
        replayed.live.push_back(LiveEntry { lsn, term: entry.term });
        replayed.entries.push(entry);
    }
    Ok(replayed)
}

// ---- files -----------------------------------------------------------------------

fn encode_hard_state(hard_state: &HardState) -> [u8; HARD_STATE_BYTES] {
    let mut out = [0u8; HARD_STATE_BYTES];
    out[..4].copy_from_slice(HARD_STATE_MAGIC);
    out[4..12].copy_from_slice(&hard_state.term.to_le_bytes());
    out[12..20].copy_from_slice(&hard_state.vote.unwrap_or(0).to_le_bytes());
    out[20..28].copy_from_slice(&hard_state.commit.to_le_bytes());
    let crc = crc32fast::hash(&out[..28]);
    out[28..].copy_from_slice(&crc.to_le_bytes());
    out
}

fn decode_hard_state(bytes: &[u8]) -> Result<HardState, String> {
    if bytes.len() != HARD_STATE_BYTES {
        return Err(format!("{} bytes, expected {HARD_STATE_BYTES}", bytes.len()));
    }
    if &bytes[..4] != HARD_STATE_MAGIC {
        return Err("it does not start with MRHS".to_string());
    }
    let stored = u32::from_le_bytes([bytes[28], bytes[29], bytes[30], bytes[31]]);
    let computed = crc32fast::hash(&bytes[..28]);
    if stored != computed {
        return Err(format!("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"));
    }
    let mut r = Reader { bytes: &bytes[4..28], what: "hard state" };
    let term = r.u64().map_err(|e| e.to_string())?;
    let vote = r.u64().map_err(|e| e.to_string())?;
    let commit = r.u64().map_err(|e| e.to_string())?;
    Ok(HardState { term, vote: (vote != 0).then_some(vote), commit })
}

fn snapshot_file_name(index: Index, term: Term) -> String {
    format!("snapshot-{index:020}-{term:020}.snap")
}

/// Parses `snapshot-<index>-<term>.snap`.
fn parse_snapshot_file_name(name: &str) -> Option<(Index, Term)> {
    let rest = name.strip_prefix("snapshot-")?.strip_suffix(".snap")?;
    let (index, term) = rest.split_once('-')?;
    Some((index.parse().ok()?, term.parse().ok()?))
}

/// Writes `snapshot` as its file (tmp + fsync + rename + fsync dir) and returns the path.
fn write_snapshot_file(dir: &Path, snapshot: &Snapshot, log_lsn: Lsn, fsync: bool) -> Result<PathBuf, StorageError> {
    let mut body = Vec::with_capacity(64);
    body.extend_from_slice(&log_lsn.to_le_bytes());
    codec::encode_snapshot_meta(&snapshot.meta, &mut body);
    body.extend_from_slice(&(snapshot.data.len() as u64).to_le_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&body);
    hasher.update(&snapshot.data);
    let crc = hasher.finalize().to_le_bytes();
    let name = snapshot_file_name(snapshot.meta.index, snapshot.meta.term);
    write_atomically(dir, &name, &[SNAPSHOT_MAGIC, &crc, &body, &snapshot.data], fsync)?;
    Ok(dir.join(name))
}

/// Reads and checks one snapshot file.
fn read_snapshot_file(path: &Path, index: Index, term: Term) -> Result<(Lsn, Snapshot), String> {
    let bytes = fs::read(path).map_err(|e| format!("unreadable: {e}"))?;
    let Some(rest) = bytes.strip_prefix(SNAPSHOT_MAGIC) else {
        return Err("it does not start with MRSNAP01".to_string());
    };
    if rest.len() < 4 {
        return Err("truncated header".to_string());
    }
    let (crc, body) = rest.split_at(4);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(format!("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"));
    }
    let mut r = Reader { bytes: body, what: "snapshot file" };
    let log_lsn = r.u64().map_err(|e| e.to_string())?;
    let meta = r.meta().map_err(|e| e.to_string())?;
    let len = r.u64().map_err(|e| e.to_string())?;
    if len != r.bytes.len() as u64 {
        return Err(format!("it says {len} data bytes but holds {}", r.bytes.len()));
    }
    if (meta.index, meta.term) != (index, term) {
        return Err(format!("its name says index {index} term {term} but it holds {} {}", meta.index, meta.term));
    }
    Ok((log_lsn, Snapshot { meta, data: Bytes::copy_from_slice(r.bytes) }))
}

/// Every snapshot file that checks, oldest first (with its data), and a description of
/// each one that does not.
type SnapshotFiles = (Vec<(SnapshotFile, Snapshot)>, Vec<String>);

fn read_snapshot_files(dir: &Path) -> Result<SnapshotFiles, StorageError> {
    let mut named = Vec::new();
    for entry in fs::read_dir(dir).map_err(|source| io_error("list the data directory", dir, source))? {
        let entry = entry.map_err(|source| io_error("list the data directory", dir, source))?;
        let name = entry.file_name();
        if let Some((index, term)) = name.to_str().and_then(parse_snapshot_file_name) {
            named.push((index, term, entry.path()));
        }
    }
    named.sort();
    let mut valid: Vec<(SnapshotFile, Snapshot)> = Vec::new();
    let mut ignored = Vec::new();
    for (index, term, path) in named {
        match read_snapshot_file(&path, index, term) {
            // Two files for one index (a term differs) cannot both be right; keep the later.
            Ok((log_lsn, snapshot)) => {
                valid.retain(|(file, _)| file.index != index);
                valid.push((SnapshotFile { index, term, log_lsn, path }, snapshot));
            }
            Err(problem) => ignored.push(format!("snapshot {}: {problem}", path.display())),
        }
    }
    Ok((valid, ignored))
}

/// Writes `parts` to `dir/name` atomically: a `.tmp` file, fsynced, renamed over `name`,
/// and the directory fsynced (the fsyncs only when `fsync`).
fn write_atomically(dir: &Path, name: &str, parts: &[&[u8]], fsync: bool) -> Result<(), StorageError> {
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let target = dir.join(name);
    let mut file = File::create(&tmp).map_err(|source| io_error("create a temporary file", &tmp, source))?;
    for part in parts {
        file.write_all(part).map_err(|source| io_error("write a temporary file", &tmp, source))?;
    }
    if fsync {
        file.sync_all().map_err(|source| io_error("fsync a temporary file", &tmp, source))?;
    }
    drop(file);
    fs::rename(&tmp, &target).map_err(|source| io_error("rename a temporary file into place", &target, source))?;
    if fsync {
        fsync_dir(dir)?;
    }
    Ok(())
}

fn remove_tmp_files(dir: &Path) -> Result<usize, StorageError> {
    let mut removed = 0;
    for entry in fs::read_dir(dir).map_err(|source| io_error("list the data directory", dir, source))? {
        let entry = entry.map_err(|source| io_error("list the data directory", dir, source))?;
        if entry.file_name().to_str().is_some_and(|n| n.ends_with(TMP_SUFFIX)) {
            let path = entry.path();
            fs::remove_file(&path).map_err(|source| io_error("remove a leftover .tmp file", &path, source))?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn fsync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|source| io_error("fsync the directory", dir, source))
}

fn io_error(operation: &'static str, path: &Path, source: io::Error) -> StorageError {
    StorageError::Io { operation, path: path.to_path_buf(), source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hard_state_round_trips_and_rejects_damage() {
        let hs = HardState { term: 7, vote: Some(3), commit: 42 };
        let bytes = encode_hard_state(&hs);
        assert_eq!(decode_hard_state(&bytes), Ok(hs));
        let none = HardState { term: 1, vote: None, commit: 0 };
        assert_eq!(decode_hard_state(&encode_hard_state(&none)), Ok(none));
        for bit in 0..HARD_STATE_BYTES * 8 {
            let mut damaged = bytes;
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_hard_state(&damaged).is_err(), "bit {bit} flipped went unnoticed");
        }
        assert!(decode_hard_state(&bytes[..31]).is_err());
    }

    #[test]
    fn snapshot_names_parse() {
        assert_eq!(parse_snapshot_file_name(&snapshot_file_name(12, 3)), Some((12, 3)));
        assert_eq!(parse_snapshot_file_name("snapshot-1-2.snap.tmp"), None);
        assert_eq!(parse_snapshot_file_name("snapshot-x-2.snap"), None);
        assert_eq!(parse_snapshot_file_name("hardstate"), None);
    }

    proptest! {
        #[test]
        fn arbitrary_hard_state_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = decode_hard_state(&raw);
        }

        #[test]
        fn arbitrary_snapshot_files_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..96)) {
            let dir = tempfile::tempdir().expect("temp dir");
            let path = dir.path().join(snapshot_file_name(1, 1));
            fs::write(&path, &raw).expect("write");
            let mut framed = SNAPSHOT_MAGIC.to_vec();
            framed.extend_from_slice(&crc32fast::hash(&raw).to_le_bytes());
            framed.extend_from_slice(&raw);
            let framed_path = dir.path().join(snapshot_file_name(2, 1));
            fs::write(&framed_path, &framed).expect("write");
            let _ = read_snapshot_file(&path, 1, 1);
            let _ = read_snapshot_file(&framed_path, 2, 1);
        }
    }
}
