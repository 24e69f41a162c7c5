//! Property tests for `minicore::record_log`: crash recovery, corruption handling, readers
//! and segment deletion, over random workloads with tiny segments so rolls happen all the
//! time.
//!
//! The central property is the crash property: after any sequence of appends and commits,
//! a crash recovers exactly a prefix of what was appended, and that prefix contains every
//! record acknowledged as durable. Two crashes are modelled. A process kill leaves the
//! files as they are. A power loss cuts the last segment at any byte at or after the
//! durable end, then may append random bytes or zeros after the cut. The durable end is
//! the lower of where the acknowledged records end and what an fsync *really* covered
//! (observed through `on_fsync`), so a log that acknowledges without fsyncing cannot hide
//! behind its own claims.
//!
//! `the_crash_property_catches_a_log_that_acks_before_syncing` shows the property can
//! fail: it runs the same check against a log that writes but skips the fsync before
//! acknowledging, a bug no kill -9 test can see.
//!
//! To replay a failing run exactly, set `PROPTEST_RNG_SEED` (proptest prints the minimal
//! failing input, and persists failing seeds under `proptest-regressions/`).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use minicore::record_log::{Durability, FsyncPolicy, LogError, LogOptions, RecordLog, RecoveryMode, TruncationReason};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};

/// Bytes in a frame header (`len` + `crc`), as documented in the module's on-disk format.
const HEADER_BYTES: u64 = 8;

/// The record limit used throughout: above the largest generated payload.
const MAX_RECORD_BYTES: u32 = 8 * 1024;

// ---------------------------------------------------------------------------------------
// Workload generation
// ---------------------------------------------------------------------------------------

/// Payloads: empty, small, and multi-KiB (larger than many of the generated segments).
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => Just(Vec::new()),
        6 => prop::collection::vec(any::<u8>(), 1..64),
        2 => prop::collection::vec(any::<u8>(), 1024..5000),
    ]
}

/// Segment sizes small enough that most workloads roll several times.
fn segment_bytes() -> impl Strategy<Value = u64> {
    64u64..8192
}

#[derive(Debug, Clone)]
enum Step {
    Append(Vec<u8>),
    /// `commit(last appended LSN)`: Synced under Always, Written otherwise.
    Commit,
    /// `sync(last appended LSN)`: Synced under every policy.
    Sync,
    /// `write_out(last appended LSN)`: Written.
    WriteOut,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => payload().prop_map(Step::Append),
        1 => Just(Step::Commit),
        1 => Just(Step::Sync),
        1 => Just(Step::WriteOut),
    ]
}

/// What the crash leaves after the cut in the last segment.
#[derive(Debug, Clone)]
enum Garbage {
    Nothing,
    Random(Vec<u8>),
    Zeros(usize),
}

#[derive(Debug, Clone)]
struct CrashScript {
    fsync: FsyncPolicy,
    segment_bytes: u64,
    steps: Vec<Step>,
    /// false: the process is killed (files keep everything written). true: power loss,
    /// which cuts the last segment somewhere at or after the durable end.
    power_loss: bool,
    /// Picks the cut offset within the allowed range.
    cut: Index,
    garbage: Garbage,
}

fn crash_script() -> impl Strategy<Value = CrashScript> {
    let garbage = prop_oneof![
        2 => Just(Garbage::Nothing),
        1 => prop::collection::vec(any::<u8>(), 1..300).prop_map(Garbage::Random),
        1 => (1usize..300).prop_map(Garbage::Zeros),
    ];
    (
        prop_oneof![Just(FsyncPolicy::Always), Just(FsyncPolicy::Never)],
        segment_bytes(),
        prop::collection::vec(step(), 0..40),
        prop::bool::weighted(0.75),
        any::<Index>(),
        garbage,
    )
        .prop_map(|(fsync, segment_bytes, steps, power_loss, cut, garbage)| CrashScript {
            fsync,
            segment_bytes,
            steps,
            power_loss,
            cut,
            garbage,
        })
}

// ---------------------------------------------------------------------------------------
// Helpers over the directory
// ---------------------------------------------------------------------------------------

fn options(segment_bytes: u64, fsync: FsyncPolicy) -> LogOptions {
    LogOptions { segment_bytes, fsync, max_record_bytes: MAX_RECORD_BYTES, ..LogOptions::default() }
}

/// Segment files in `dir` as (base LSN, path), sorted by base.
fn segment_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut segments: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .expect("test directory is readable")
        .map(|entry| entry.expect("directory entry").path())
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?;
            let base = name.strip_suffix(".log")?.parse().ok()?;
            Some((base, path))
        })
        .collect();
    segments.sort();
    segments
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create the crash copy");
    for entry in fs::read_dir(from).expect("read the log directory") {
        let entry = entry.expect("directory entry");
        fs::copy(entry.path(), to.join(entry.file_name())).expect("copy a segment");
    }
}

fn read_all(log: &RecordLog, from: u64) -> Result<Vec<(u64, Vec<u8>)>, LogError> {
    log.reader(from)?.collect()
}

fn frame_bytes(payload: &[u8]) -> u64 {
    HEADER_BYTES + payload.len() as u64
}

/// Where record `lsn` starts in the file of the segment that holds it.
fn locate(dir: &Path, payloads: &[Vec<u8>], lsn: u64) -> (PathBuf, u64) {
    let segments = segment_files(dir);
    let (base, path) =
        segments.iter().rev().find(|(base, _)| *base <= lsn).expect("some segment holds the record").clone();
    let offset = payloads[base as usize..lsn as usize].iter().map(|p| frame_bytes(p)).sum();
    (path, offset)
}

// ---------------------------------------------------------------------------------------
// The crash property
// ---------------------------------------------------------------------------------------

/// Runs `script` against a log (broken on purpose when `ack_before_sync`), crashes it, and
/// checks that recovery yields a prefix of what was appended containing everything
/// acknowledged.
fn check_crash_recovery(script: &CrashScript, ack_before_sync: bool) -> Result<(), TestCaseError> {
    let scratch = tempfile::tempdir().expect("temp dir");
    let live_dir = scratch.path().join("wal");
    let crash_dir = scratch.path().join("after-crash");
    let mut opts = options(script.segment_bytes, script.fsync);
    opts.debug_ack_before_sync = ack_before_sync;
    // What power loss can take is decided by the fsyncs that really happened, not by what
    // the log claims: after every segment fsync, note each file's size. The script runs on
    // one thread and waits for each sync, so no write races with this snapshot.
    let synced_sizes: Arc<Mutex<HashMap<OsString, u64>>> = Arc::default();
    let observer_sizes = Arc::clone(&synced_sizes);
    let observed_dir = live_dir.clone();
    opts.on_fsync = Some(Arc::new(move |_elapsed| {
        let mut sizes = observer_sizes.lock().expect("size map");
        for (_, path) in segment_files(&observed_dir) {
            let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let name = path.file_name().expect("segment name").to_owned();
            let size = sizes.entry(name).or_insert(0);
            *size = (*size).max(len);
        }
    }));

    let (log, _) = RecordLog::open(&live_dir, opts.clone()).map_err(fail)?;
    let mut appended: Vec<Vec<u8>> = Vec::new();
    // One past the last record acknowledged as Synced / as at least Written.
    let mut acked_synced = 0u64;
    let mut acked_written = 0u64;
    for step in &script.steps {
        let last = (appended.len() as u64).checked_sub(1);
        match (step, last) {
            (Step::Append(payload), _) => {
                let lsn = log.append(payload).map_err(fail)?;
                prop_assert_eq!(lsn, appended.len() as u64, "LSNs are consecutive from 0");
                appended.push(payload.clone());
            }
            (Step::Commit, Some(last)) => {
                let level = log.commit(last).map_err(fail)?;
                let promised =
                    if script.fsync == FsyncPolicy::Always { Durability::Synced } else { Durability::Written };
                prop_assert!(level >= promised, "commit reached {:?}, policy promises {:?}", level, promised);
                acked_written = acked_written.max(last + 1);
                if level == Durability::Synced {
                    acked_synced = acked_synced.max(last + 1);
                }
            }
            (Step::Sync, Some(last)) => {
                log.sync(last).map_err(fail)?;
                acked_synced = acked_synced.max(last + 1);
                acked_written = acked_written.max(last + 1);
            }
            (Step::WriteOut, Some(last)) => {
                log.write_out(last).map_err(fail)?;
                acked_written = acked_written.max(last + 1);
            }
            (Step::Commit | Step::Sync | Step::WriteOut, None) => {}
        }
        // The watermarks are promises too.
        acked_synced = acked_synced.max(log.durable_lsn());
        acked_written = acked_written.max(log.written_lsn()).max(acked_synced);
    }

    // kill -9: the files hold exactly what was written to the OS at this instant. Copy
    // them while the log is still open (its background threads are idle: nothing is
    // requested), then let it go; its shutdown sync only touches the original.
    copy_dir(&live_dir, &crash_dir);
    drop(log);

    if script.power_loss {
        // Power loss: the last segment loses an arbitrary part of its tail, and may get
        // garbage in its place. Earlier segments were fsynced before their successor was
        // created.
        let segments = segment_files(&crash_dir);
        let (last_base, last_path) = segments.last().expect("a log always has a segment");
        let name = last_path.file_name().expect("segment name");
        let synced_end = synced_sizes.lock().expect("size map").get(name).copied().unwrap_or(0);
        // Every cut the acknowledgements allow is fair too: from where the last record
        // acknowledged as Synced ends. For an honest log that is at or before
        // `synced_end`; for a log that acknowledges without fsyncing it is after it.
        let acked_end: u64 = if acked_synced > *last_base {
            appended[*last_base as usize..acked_synced as usize].iter().map(|p| frame_bytes(p)).sum()
        } else {
            0
        };
        let file_len = fs::metadata(last_path).expect("segment metadata").len();
        let lowest_cut = synced_end.min(acked_end).min(file_len);
        let cut = lowest_cut + script.cut.index((file_len - lowest_cut + 1) as usize) as u64;
        let mut bytes = fs::read(last_path).expect("read the last segment");
        bytes.truncate(cut as usize);
        match &script.garbage {
            Garbage::Nothing => {}
            Garbage::Random(junk) => bytes.extend_from_slice(junk),
            Garbage::Zeros(count) => bytes.resize(bytes.len() + count, 0),
        }
        fs::write(last_path, &bytes).expect("write the crashed segment");
    }

    // Recovery always uses the honest log, in the default strict mode.
    let (recovered_log, report) = RecordLog::open(&crash_dir, options(script.segment_bytes, script.fsync))
        .map_err(|error| TestCaseError::fail(format!("recovery refused a crashed log: {error}")))?;
    let recovered = read_all(&recovered_log, 0).map_err(fail)?;
    prop_assert_eq!(report.records, recovered.len() as u64, "the report counts the records kept");
    prop_assert_eq!(recovered_log.next_lsn(), recovered.len() as u64, "appends continue after the kept prefix");
    prop_assert!(
        recovered.len() as u64 >= acked_synced,
        "recovery lost acknowledged records: {} records acknowledged as Synced, {} recovered",
        acked_synced,
        recovered.len()
    );
    if !script.power_loss {
        prop_assert!(
            recovered.len() as u64 >= acked_written,
            "a process kill lost records acknowledged as Written: {} acknowledged, {} recovered",
            acked_written,
            recovered.len()
        );
    }
    prop_assert!(recovered.len() <= appended.len(), "recovery invented records");
    for (index, (lsn, payload)) in recovered.iter().enumerate() {
        prop_assert_eq!(*lsn, index as u64, "recovered LSNs are consecutive from 0");
        prop_assert_eq!(payload, &appended[index], "record {} came back changed", index);
    }

    // The log goes on from the recovered prefix, and the cut really happened on disk: a
    // reopen finds nothing more to cut.
    let next = recovered_log.append(b"after the crash").map_err(fail)?;
    prop_assert_eq!(next, recovered.len() as u64);
    recovered_log.close().map_err(fail)?;
    let (_, again) = RecordLog::open(&crash_dir, options(script.segment_bytes, script.fsync)).map_err(fail)?;
    prop_assert_eq!(again.truncated, None, "recovery left something to cut");
    prop_assert_eq!(again.records, recovered.len() as u64 + 1);
    Ok(())
}

fn fail(error: LogError) -> TestCaseError {
    TestCaseError::fail(error.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_crash_recovers_a_prefix_holding_every_durable_record(script in crash_script()) {
        check_crash_recovery(&script, false)?;
    }
}

/// The test that shows the crash property can fail: with `debug_ack_before_sync`, `sync`
/// and `Always` commits write the records and acknowledge them as `Synced` without an
/// fsync. Kill -9 cannot tell; the power-loss half of the same property must find a
/// script where an acknowledged record does not survive.
#[test]
fn the_crash_property_catches_a_log_that_acks_before_syncing() {
    let config = Config { cases: 96, max_shrink_iters: 256, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    match runner.run(&crash_script(), |script| check_crash_recovery(&script, true)) {
        Err(TestError::Fail(reason, minimal)) => {
            let reason = reason.to_string();
            assert!(reason.contains("lost acknowledged records"), "caught, but for another reason: {reason}");
            eprintln!("caught the broken log as expected: {reason}\nminimal script: {minimal:#?}");
        }
        other => {
            panic!("the crash property did not catch a log that acks before syncing: {other:?}")
        }
    }
}

// ---------------------------------------------------------------------------------------
// Arbitrary bytes on disk
// ---------------------------------------------------------------------------------------

/// Valid frames followed by arbitrary bytes, or arbitrary bytes alone.
fn segment_contents() -> impl Strategy<Value = Vec<u8>> {
    (prop::collection::vec(payload(), 0..6), prop::collection::vec(any::<u8>(), 0..512)).prop_map(|(payloads, junk)| {
        let mut bytes = Vec::new();
        for payload in payloads {
            let len = (payload.len() as u32).to_le_bytes();
            let mut crc = crc32fast::Hasher::new();
            crc.update(&len);
            crc.update(&payload);
            bytes.extend_from_slice(&len);
            bytes.extend_from_slice(&crc.finalize().to_le_bytes());
            bytes.extend_from_slice(&payload);
        }
        bytes.extend_from_slice(&junk);
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever is in the files, `open` returns an error or a log, never panics; and a log
    /// it returns is consistent: its records read back, and reopening finds nothing to cut.
    #[test]
    fn arbitrary_segment_bytes_never_panic_on_open(
        first in segment_contents(),
        second in prop::option::of((0u64..8, segment_contents())),
        truncate_mode in any::<bool>(),
    ) {
        let scratch = tempfile::tempdir().expect("temp dir");
        let dir = scratch.path();
        fs::write(dir.join("00000000000000000000.log"), &first).expect("write segment");
        if let Some((base, bytes)) = &second {
            fs::write(dir.join(format!("{:020}.log", base + 1)), bytes).expect("write segment");
        }
        let mut opts = options(4096, FsyncPolicy::Never);
        if truncate_mode {
            opts.recovery = RecoveryMode::TruncateAtCorruption;
        }
        let Ok((log, report)) = RecordLog::open(dir, opts.clone()) else {
            return Ok(());
        };
        let records = read_all(&log, report.first_lsn).map_err(fail)?;
        prop_assert_eq!(records.len() as u64, report.records);
        drop(log);
        let (_, again) = RecordLog::open(dir, opts).map_err(fail)?;
        prop_assert_eq!(again.truncated, None, "recovery is idempotent");
        prop_assert_eq!(again.records, report.records);
    }
}

// ---------------------------------------------------------------------------------------
// Mid-log corruption
// ---------------------------------------------------------------------------------------

/// Writes `payloads` to a fresh log in `dir`, synced, and closes it.
fn write_log(dir: &Path, segment_bytes: u64, payloads: &[Vec<u8>]) -> Result<(), TestCaseError> {
    let (log, _) = RecordLog::open(dir, options(segment_bytes, FsyncPolicy::Always)).map_err(fail)?;
    for payload in payloads {
        log.append(payload).map_err(fail)?;
    }
    if let Some(last) = (payloads.len() as u64).checked_sub(1) {
        log.sync(last).map_err(fail)?;
    }
    log.close().map_err(fail)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Flipping a byte of a durable record that valid records follow is corruption: strict
    /// open names the file and offset of that record; TruncateAtCorruption keeps exactly
    /// the records before it.
    #[test]
    fn a_flipped_byte_before_valid_records_is_corruption_at_its_offset(
        payloads in prop::collection::vec(payload(), 2..30),
        segment_bytes in segment_bytes(),
        victim in any::<Index>(),
        position in any::<Index>(),
        flip in 1u8..=255,
    ) {
        let scratch = tempfile::tempdir().expect("temp dir");
        let dir = scratch.path();
        write_log(dir, segment_bytes, &payloads)?;

        // Any record but the very last one is followed by a valid record somewhere.
        let victim = victim.index(payloads.len() - 1) as u64;
        let (file, offset) = locate(dir, &payloads, victim);
        let frame_len = frame_bytes(&payloads[victim as usize]);
        let mut bytes = fs::read(&file).expect("read segment");
        let at = offset + position.index(frame_len as usize) as u64;
        bytes[at as usize] ^= flip;
        fs::write(&file, &bytes).expect("write segment");

        match RecordLog::open(dir, options(segment_bytes, FsyncPolicy::Always)) {
            Err(LogError::Corrupt { file: named, offset: named_offset, .. }) => {
                prop_assert_eq!(&named, &file);
                prop_assert_eq!(named_offset, offset);
            }
            other => prop_assert!(false, "expected corruption at {} offset {}, got {:?}", file.display(), offset, other.map(|(_, r)| r)),
        }
        let files_before = segment_files(dir);

        let mut lenient = options(segment_bytes, FsyncPolicy::Always);
        lenient.recovery = RecoveryMode::TruncateAtCorruption;
        let (log, report) = RecordLog::open(dir, lenient).map_err(fail)?;
        let truncation = report.truncated.clone().expect("the cut is reported");
        prop_assert_eq!(&truncation.file, &file);
        prop_assert_eq!(truncation.offset, offset);
        let is_corruption = matches!(truncation.reason, TruncationReason::Corruption { .. });
        prop_assert!(is_corruption, "reported as {:?}", truncation.reason);
        prop_assert!(report.lost_committed_data());
        let later: Vec<PathBuf> = files_before.iter().filter(|(_, p)| *p > file).map(|(_, p)| p.clone()).collect();
        prop_assert_eq!(&truncation.removed_segments, &later);
        // Walking headers is exact while every length field is intact; a flipped length
        // makes it an estimate, but never zero.
        let flipped_a_length = at - offset < 4;
        if flipped_a_length {
            prop_assert!(truncation.records_dropped >= 1);
        } else {
            prop_assert_eq!(truncation.records_dropped, payloads.len() as u64 - victim);
        }
        let kept = read_all(&log, 0).map_err(fail)?;
        prop_assert_eq!(kept.len() as u64, victim);
        for (lsn, payload) in &kept {
            prop_assert_eq!(payload, &payloads[*lsn as usize]);
        }

        // The repaired log works: appends continue and a strict reopen is clean.
        let lsn = log.append(b"after repair").map_err(fail)?;
        prop_assert_eq!(lsn, victim);
        log.close().map_err(fail)?;
        let (_, clean) = RecordLog::open(dir, options(segment_bytes, FsyncPolicy::Always)).map_err(fail)?;
        prop_assert_eq!(clean.truncated, None);
        prop_assert_eq!(clean.records, victim + 1);
    }
}

// ---------------------------------------------------------------------------------------
// Readers and deletion
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// A reader from any LSN yields exactly the written suffix from there, live and after
    /// a reopen.
    #[test]
    fn a_reader_from_any_lsn_yields_exactly_the_suffix(
        payloads in prop::collection::vec(payload(), 0..40),
        segment_bytes in segment_bytes(),
        written in any::<Index>(),
        from in any::<Index>(),
    ) {
        let scratch = tempfile::tempdir().expect("temp dir");
        let dir = scratch.path();
        let (log, _) = RecordLog::open(dir, options(segment_bytes, FsyncPolicy::Never)).map_err(fail)?;
        for payload in &payloads {
            log.append(payload).map_err(fail)?;
        }
        let count = payloads.len() as u64;
        // Write some prefix out; the rest stays buffered and must stay invisible.
        let written = written.index(payloads.len() + 1) as u64;
        if let Some(last) = written.checked_sub(1) {
            log.write_out(last).map_err(fail)?;
        }
        let visible = log.written_lsn();
        prop_assert!(visible >= written);
        let from = from.index(payloads.len() + 1) as u64;
        let expected: Vec<(u64, Vec<u8>)> =
            (from..visible.max(from)).map(|lsn| (lsn, payloads[lsn as usize].clone())).collect();
        prop_assert_eq!(read_all(&log, from).map_err(fail)?, expected);

        // A live reader picks up records written after it reached the end.
        let mut reader = log.reader(from).map_err(fail)?;
        let seen_before = reader.by_ref().count() as u64;
        prop_assert_eq!(seen_before, visible.saturating_sub(from));
        if let Some(last) = count.checked_sub(1) {
            log.write_out(last).map_err(fail)?;
        }
        let rest: Vec<u64> = reader.map(|item| item.map(|(lsn, _)| lsn)).collect::<Result<_, _>>().map_err(fail)?;
        prop_assert_eq!(rest, (from.max(visible)..count).collect::<Vec<_>>());

        prop_assert!(
            matches!(log.reader(count + 1), Err(LogError::NotAppended { .. })),
            "a reader past the next LSN is refused"
        );
        log.close().map_err(fail)?;

        let (reopened, _) = RecordLog::open(dir, options(segment_bytes, FsyncPolicy::Never)).map_err(fail)?;
        let expected: Vec<(u64, Vec<u8>)> = (from..count).map(|lsn| (lsn, payloads[lsn as usize].clone())).collect();
        prop_assert_eq!(read_all(&reopened, from).map_err(fail)?, expected);
    }

    /// Deleting segments before an LSN keeps every record at or after it readable, never
    /// removes the active segment, and survives a reopen.
    #[test]
    fn delete_before_keeps_every_record_at_or_after_the_lsn(
        payloads in prop::collection::vec(payload(), 0..40),
        segment_bytes in segment_bytes(),
        cut in 0u64..48,
    ) {
        let scratch = tempfile::tempdir().expect("temp dir");
        let dir = scratch.path();
        let (log, _) = RecordLog::open(dir, options(segment_bytes, FsyncPolicy::Never)).map_err(fail)?;
        for payload in &payloads {
            log.append(payload).map_err(fail)?;
        }
        let count = payloads.len() as u64;
        if let Some(last) = count.checked_sub(1) {
            log.write_out(last).map_err(fail)?;
        }
        let segments_before = log.stats().segments;
        let size_before = log.size_bytes();
        let deleted = log.delete_segments_before(cut).map_err(fail)?;
        let stats = log.stats();
        prop_assert_eq!(stats.segments, segments_before - deleted);
        prop_assert!(stats.segments >= 1, "the active segment is never deleted");
        prop_assert_eq!(segment_files(dir).len(), stats.segments, "the files on disk match the catalog");
        prop_assert_eq!(segment_files(dir)[0].0, log.first_lsn());
        let on_disk: u64 = segment_files(dir).iter().map(|(_, p)| fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum();
        prop_assert_eq!(log.size_bytes(), on_disk);
        prop_assert!(log.size_bytes() <= size_before);

        let keep_from = cut.min(count);
        prop_assert!(log.first_lsn() <= keep_from, "a record at or after the cut was deleted");
        let expected: Vec<(u64, Vec<u8>)> =
            (keep_from..count).map(|lsn| (lsn, payloads[lsn as usize].clone())).collect();
        prop_assert_eq!(read_all(&log, keep_from).map_err(fail)?, expected);
        if log.first_lsn() > 0 {
            let refused = matches!(log.reader(log.first_lsn() - 1), Err(LogError::Deleted { .. }));
            prop_assert!(refused, "a reader before the first kept LSN is refused");
        }

        // The log goes on, and a reopen finds the same range.
        let lsn = log.append(b"after delete").map_err(fail)?;
        prop_assert_eq!(lsn, count);
        let first = log.first_lsn();
        log.close().map_err(fail)?;
        let (reopened, report) = RecordLog::open(dir, options(segment_bytes, FsyncPolicy::Never)).map_err(fail)?;
        prop_assert_eq!(report.truncated, None);
        prop_assert_eq!((report.first_lsn, report.next_lsn), (first, count + 1));
        let all = read_all(&reopened, first).map_err(fail)?;
        prop_assert_eq!(all.len() as u64, count + 1 - first);
    }
}
