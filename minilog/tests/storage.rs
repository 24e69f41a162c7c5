//! Integration tests for `minilog::storage`: the partition log as the broker uses it,
//! with real v2 batches built by `kafka-protocol` (a client library, so the format is
//! checked against code we did not write), crashes simulated by dropping the log without
//! `close` and then damaging its files, and random workloads from a printed seed.
//!
//! Replay a failure with `MINILOG_TEST_SEED=<seed> cargo test -p minilog --test storage <name>`.

mod support;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::records::RecordBatchDecoder;
use minilog::storage::{
    validate_batches, AppendError, BatchError, BatchHeader, Compression, LogConfig, PartitionLog, ReadError,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Captures the log's tracing output so a failing test shows what recovery said.
fn logging() {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("minilog=debug").try_init();
}

/// A seeded generator; the seed is printed so that a failure can be replayed.
fn rng(test: &str) -> fastrand::Rng {
    let seed = std::env::var("MINILOG_TEST_SEED").ok().and_then(|seed| seed.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |elapsed| elapsed.as_nanos() as u64)
    });
    eprintln!("{test}: MINILOG_TEST_SEED={seed}");
    fastrand::Rng::with_seed(seed)
}

/// A config that rolls and indexes often, so small tests cover many segments and entries.
fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 4_096,
        segment_ms: i64::MAX,
        retention_ms: None,
        retention_bytes: None,
        index_interval_bytes: 512,
        max_index_bytes: 4_096,
        ..LogConfig::default()
    }
}

/// [`support::sized_batch`]: `records` uncompressed records with `value_len`-byte values
/// and timestamps `timestamp, timestamp + 1, ...`, as the mutable bytes that
/// [`PartitionLog::append`] gives offsets in place.
fn batch(records: usize, value_len: usize, timestamp: i64) -> Vec<u8> {
    support::sized_batch(records, value_len, timestamp).to_vec()
}

/// A batch whose attributes say gzip and whose body is noise, with a correct CRC: the
/// broker must store and serve it without looking inside.
fn fake_compressed_batch(offsets: i32, body_len: usize, timestamp: i64) -> Vec<u8> {
    let mut batch = vec![0u8; 61];
    batch[8..12].copy_from_slice(&((49 + body_len) as i32).to_be_bytes());
    batch[16] = 2;
    batch[21..23].copy_from_slice(&1i16.to_be_bytes()); // gzip
    batch[23..27].copy_from_slice(&(offsets - 1).to_be_bytes());
    batch[27..35].copy_from_slice(&timestamp.to_be_bytes());
    batch[35..43].copy_from_slice(&timestamp.to_be_bytes());
    batch[43..51].copy_from_slice(&(-1i64).to_be_bytes());
    batch[51..53].copy_from_slice(&(-1i16).to_be_bytes());
    batch[53..57].copy_from_slice(&(-1i32).to_be_bytes());
    batch[57..61].copy_from_slice(&offsets.to_be_bytes());
    batch.extend((0..body_len).map(|i| (i * 131 % 256) as u8));
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch
}

/// A batch as stored: its offsets and its bytes after offset assignment.
#[derive(Debug, Clone)]
struct Stored {
    base_offset: i64,
    last_offset: i64,
    max_timestamp: i64,
    bytes: Vec<u8>,
}

/// Appends `bytes` as one produce and remembers what was stored.
fn append(log: &mut PartitionLog, mut bytes: Vec<u8>, now_ms: i64, stored: &mut Vec<Stored>) {
    let info = log.append(&mut bytes, now_ms).expect("append");
    let header = headers(&bytes)[0];
    assert_eq!(header.base_offset, info.base_offset, "the caller's buffer carries the assigned offsets");
    stored.push(Stored {
        base_offset: info.base_offset,
        last_offset: info.last_offset,
        max_timestamp: info.max_timestamp,
        bytes,
    });
}

/// The headers of whole batches; panics if `bytes` is not whole, valid batches.
fn headers(bytes: &[u8]) -> Vec<BatchHeader> {
    validate_batches(bytes, usize::MAX).expect("whole, valid batches")
}

/// Paths of the segment files with `extension` in `dir`, in offset order.
fn segment_files(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|found| found == extension))
        .collect();
    files.sort();
    files
}

/// Reads the whole log as a consumer would: fetch, advance past the last batch, repeat.
fn consume_all(log: &PartitionLog, from: i64, max_bytes: usize) -> Vec<u8> {
    let mut offset = from;
    let mut all = Vec::new();
    while offset < log.log_end_offset() {
        let bytes = log.read(offset, max_bytes).expect("read");
        let batches = headers(&bytes);
        assert!(!batches.is_empty(), "a read below the log end returns at least one batch");
        offset = batches.last().map(BatchHeader::last_offset).expect("non-empty") + 1;
        all.extend_from_slice(&bytes);
    }
    all
}

/// Everything stored from `from_offset` on, concatenated.
fn stored_bytes(stored: &[Stored], from_offset: i64) -> Vec<u8> {
    stored.iter().filter(|batch| batch.base_offset >= from_offset).flat_map(|batch| batch.bytes.clone()).collect()
}

/// The contract of `PartitionLog::read(target, max_bytes)`, checked against the batches
/// that were appended: the result is whole batches, byte for byte as stored, starting with
/// the one that holds `target`, contiguous, and within `max_bytes` unless it is one batch.
fn check_read(bytes: &[u8], target: i64, max_bytes: usize, stored: &[Stored]) -> Result<(), String> {
    let batches = validate_batches(bytes, usize::MAX).map_err(|error| format!("not whole batches: {error}"))?;
    let first = batches.first().ok_or("empty read below the log end")?;
    if !(first.base_offset <= target && target <= first.last_offset()) {
        return Err(format!(
            "first batch {}..={} does not hold offset {target}",
            first.base_offset,
            first.last_offset()
        ));
    }
    if batches.len() > 1 && bytes.len() > max_bytes {
        return Err(format!("{} bytes in {} batches is over max_bytes {max_bytes}", bytes.len(), batches.len()));
    }
    let start = stored.iter().position(|batch| batch.base_offset == first.base_offset).ok_or("no such stored batch")?;
    let mut position = 0;
    for (header, expected) in batches.iter().zip(&stored[start..]) {
        if bytes[position..position + header.batch_len] != expected.bytes[..] {
            return Err(format!("batch at offset {} differs from what was stored", header.base_offset));
        }
        position += header.batch_len;
    }
    if start + batches.len() > stored.len() {
        return Err("more batches than were stored".to_string());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Append and read
// ---------------------------------------------------------------------------------------

#[test]
fn round_trip_across_many_segment_rolls() {
    logging();
    let mut rng = rng("round_trip_across_many_segment_rolls");
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = PartitionLog::open(dir.path(), small_config(), 0).expect("open");
    let mut stored = Vec::new();
    for produce in 0..300 {
        let bytes = batch(rng.usize(1..10), rng.usize(0..200), 1_000 * produce);
        append(&mut log, bytes, 0, &mut stored);
    }
    assert!(log.segment_count() > 20, "tiny segments roll often: {}", log.segment_count());
    assert_eq!(log.log_end_offset(), stored.last().map_or(0, |batch| batch.last_offset + 1));
    assert_eq!(segment_files(dir.path(), "log").len(), log.segment_count());
    assert_eq!(
        segment_files(dir.path(), "log")[0].file_name().and_then(|name| name.to_str()),
        Some("00000000000000000000.log")
    );

    // Byte for byte, with reads of several sizes: 0 (one batch per read), small, large.
    for max_bytes in [0, 700, 1 << 20] {
        assert_eq!(consume_all(&log, 0, max_bytes), stored_bytes(&stored, 0), "max_bytes {max_bytes}");
    }

    // And the records themselves, decoded by a different implementation.
    let mut all = Bytes::from(consume_all(&log, 0, 1 << 20));
    let sets = RecordBatchDecoder::decode_all(&mut all).expect("kafka-protocol decodes what the log serves");
    let offsets: Vec<i64> = sets.iter().flat_map(|set| set.records.iter().map(|record| record.offset)).collect();
    assert_eq!(offsets, (0..log.log_end_offset()).collect::<Vec<_>>(), "every offset once, in order");
}

#[test]
fn reads_return_one_segment_and_at_least_one_whole_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = PartitionLog::open(dir.path(), small_config(), 0).expect("open");
    let mut stored = Vec::new();
    append(&mut log, batch(3, 100, 0), 0, &mut stored);
    append(&mut log, batch(2, 1_500, 0), 0, &mut stored); // bigger than what we ask for below
    append(&mut log, batch(1, 1_000, 0), 0, &mut stored); // would pass segment_bytes: rolls
    assert_eq!(log.segment_count(), 2);

    let big = log.read(3, 100).expect("read");
    assert_eq!(&big[..], &stored[1].bytes[..], "KIP-74: a batch over max_bytes still comes back whole");
    let segment_one = log.read(0, 1 << 20).expect("read");
    assert_eq!(headers(&segment_one).len(), 2, "a read stops at the end of its segment");
    let middle = log.read(4, 1 << 20).expect("read");
    assert_eq!(headers(&middle)[0].base_offset, 3, "the batch holding offset 4 starts at 3");
}

#[test]
fn offsets_outside_the_log_are_out_of_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = PartitionLog::open(dir.path(), small_config(), 0).expect("open");
    let mut stored = Vec::new();
    append(&mut log, batch(5, 10, 0), 0, &mut stored);
    assert!(log.read(5, 1024).expect("read at the log end").is_empty());
    let error = log.read(6, 1024).expect_err("past the end");
    assert!(matches!(error, ReadError::OffsetOutOfRange { requested: 6, log_start: 0, log_end: 5 }));
    assert!(error.to_string().contains("auto.offset.reset"), "{error}");
    assert!(matches!(log.read(-1, 1024), Err(ReadError::OffsetOutOfRange { .. })));
}

#[test]
fn compressed_batches_are_stored_and_served_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = PartitionLog::open(dir.path(), small_config(), 0).expect("open");
    let mut stored = Vec::new();
    append(&mut log, batch(2, 10, 0), 0, &mut stored);
    let original = fake_compressed_batch(50, 700, 123);
    append(&mut log, original.clone(), 0, &mut stored);
    append(&mut log, batch(2, 10, 0), 0, &mut stored);
    assert_eq!(log.log_end_offset(), 54, "the compressed batch takes lastOffsetDelta + 1 offsets");

    let served = log.read(30, 1).expect("read");
    assert_eq!(headers(&served)[0].compression(), Compression::Gzip);
    assert_eq!(&served[..8], &2i64.to_be_bytes(), "only the base offset was rewritten");
    assert_eq!(&served[8..], &original[8..]);
}

#[test]
fn refused_produces_leave_the_log_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig { max_batch_bytes: 2_000, ..small_config() };
    let (mut log, _) = PartitionLog::open(dir.path(), config, 0).expect("open");
    let mut stored = Vec::new();
    append(&mut log, batch(2, 10, 0), 0, &mut stored);

    let mut too_large = batch(1, 3_000, 0);
    let error = log.append(&mut too_large, 0).expect_err("too large");
    assert!(matches!(error, AppendError::TooLarge { max: 2_000, .. }), "{error}");

    let mut torn = [batch(1, 10, 0), batch(1, 10, 0)].concat();
    torn.truncate(torn.len() - 1);
    let error = log.append(&mut torn, 0).expect_err("torn");
    assert!(matches!(error, AppendError::Corrupt(BatchError::Truncated { .. })), "{error}");

    let mut old_format = batch(1, 10, 0);
    old_format[16] = 1;
    assert!(matches!(log.append(&mut old_format, 0), Err(AppendError::Corrupt(BatchError::BadMagic(1)))));

    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(consume_all(&log, 0, 1 << 20), stored_bytes(&stored, 0));
}

/// The log is `Send + Sync` and its flush protocol works as group commit: producers append
/// under the lock while one flusher fsyncs outside it, and in the end everything is flushed.
#[test]
fn group_commit_from_several_threads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = PartitionLog::open(dir.path(), small_config(), 0).expect("open");
    let log = Arc::new(parking_lot::Mutex::new(log));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producers: Vec<_> = (0..3)
        .map(|_| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for _ in 0..100 {
                    let mut bytes = batch(4, 50, 0);
                    log.lock().append(&mut bytes, 0).expect("append");
                }
            })
        })
        .collect();
    let flusher = {
        let (log, done) = (Arc::clone(&log), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut flushes = 0;
            loop {
                let finished = done.load(std::sync::atomic::Ordering::Acquire);
                let target = log.lock().flush_target();
                target.sync().expect("fsync outside the lock");
                let mut guard = log.lock();
                let before = guard.flushed_offset();
                guard.mark_flushed(target.end_offset);
                assert!(guard.flushed_offset() >= before, "the flushed offset never goes back");
                flushes += 1;
                if finished {
                    return flushes;
                }
            }
        })
    };
    for producer in producers {
        producer.join().expect("producer");
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    let flushes = flusher.join().expect("flusher");
    let log = log.lock();
    assert_eq!(log.log_end_offset(), 1_200);
    assert_eq!(log.flushed_offset(), 1_200, "after {flushes} flushes everything is on disk");
    assert!(log.flush_target().is_empty());
}

// ---------------------------------------------------------------------------------------
// Index lookups: a property test over random batch sizes and read offsets
// ---------------------------------------------------------------------------------------

/// Appends batches of the given (records, value_len) shapes, one produce each.
fn fill(log: &mut PartitionLog, shapes: &[(usize, usize)]) -> Vec<Stored> {
    let mut stored = Vec::new();
    for (index, &(records, value_len)) in shapes.iter().enumerate() {
        append(log, batch(records, value_len, 10 * index as i64), 0, &mut stored);
    }
    stored
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Every read, at any offset and any max_bytes, honours the read contract, also after
    /// a reopen (indexes from disk) and after the indexes were deleted (rebuilt).
    #[test]
    fn every_offset_is_found_through_the_index(
        shapes in proptest::collection::vec((1usize..8, 0usize..400), 1..60),
        reads in proptest::collection::vec((any::<prop::sample::Index>(), 0usize..3_000), 1..40),
        interval in prop::sample::select(vec![0usize, 1, 300, 4_096]),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig { index_interval_bytes: interval, ..small_config() };
        let (mut log, _) = PartitionLog::open(dir.path(), config.clone(), 0).expect("open");
        let stored = fill(&mut log, &shapes);
        let log_end = log.log_end_offset();
        let check_all = |log: &PartitionLog| -> Result<(), TestCaseError> {
            for (index, max_bytes) in &reads {
                let target = index.index(log_end as usize) as i64;
                let bytes = log.read(target, *max_bytes).expect("read");
                if let Err(problem) = check_read(&bytes, target, *max_bytes, &stored) {
                    return Err(TestCaseError::fail(format!("read({target}, {max_bytes}): {problem}")));
                }
            }
            Ok(())
        };
        check_all(&log)?;

        drop(log); // a crash: indexes still preallocated
        let (log, report) = PartitionLog::open(dir.path(), config.clone(), 0).expect("reopen");
        prop_assert!(report.rebuilt_indexes.is_empty(), "{:?}", report.rebuilt_indexes);
        check_all(&log)?;

        drop(log);
        for index in segment_files(dir.path(), "index") {
            fs::remove_file(index).expect("remove");
        }
        let (log, report) = PartitionLog::open(dir.path(), config, 0).expect("reopen");
        prop_assert_eq!(report.rebuilt_indexes.len(), 2 * log.segment_count());
        check_all(&log)?;
    }
}

/// The deliberately broken variant: `check_read` is what the property test relies on, so
/// show it rejecting reads that a broken log could return.
#[test]
fn the_read_check_catches_broken_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = PartitionLog::open(dir.path(), small_config(), 0).expect("open");
    let stored = fill(&mut log, &[(3, 10), (3, 10), (3, 10)]);
    let good = log.read(4, 1 << 20).expect("read");
    assert_eq!(check_read(&good, 4, 1 << 20, &stored), Ok(()));

    // Starting one batch early (as if the scan stopped at the index entry).
    let early = log.read(0, 1 << 20).expect("read");
    assert!(check_read(&early, 4, 1 << 20, &stored).is_err());
    // A batch cut short (as if max_bytes were applied to bytes, not batches).
    assert!(check_read(&good[..good.len() - 1], 4, 1 << 20, &stored).is_err());
    // Over max_bytes with more than one batch.
    assert!(check_read(&good, 4, good.len() - 1, &stored).is_err());
    // Right shape, wrong bytes.
    let mut altered = good.to_vec();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    let altered_crc = crc32c::crc32c(&altered[stored[1].bytes.len() + 21..]);
    let crc_at = stored[1].bytes.len() + 17;
    altered[crc_at..crc_at + 4].copy_from_slice(&altered_crc.to_be_bytes());
    assert!(check_read(&altered, 4, 1 << 20, &stored).is_err());
}

// ---------------------------------------------------------------------------------------
// Time lookups
// ---------------------------------------------------------------------------------------

/// The brute-force answer to ListOffsets by time.
///
/// The first batch whose max timestamp reaches `timestamp`, then inside it (these test
/// batches are uncompressed) the first record that does. `batch()` gives record `i` the
/// timestamp `first + i`, so the batch's records run up to its max timestamp.
fn expected_for_timestamp(stored: &[Stored], timestamp: i64) -> Option<(i64, i64)> {
    stored.iter().find(|batch| batch.max_timestamp >= timestamp).map(|batch| {
        let records = batch.last_offset - batch.base_offset + 1;
        let first = batch.max_timestamp - (records - 1);
        let i = timestamp.saturating_sub(first).clamp(0, records - 1);
        (batch.base_offset + i, first + i)
    })
}

#[test]
fn offset_for_timestamp_matches_a_brute_force_scan() {
    logging();
    let mut rng = rng("offset_for_timestamp_matches_a_brute_force_scan");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config();
    let (mut log, _) = PartitionLog::open(dir.path(), config.clone(), 0).expect("open");
    let mut stored = Vec::new();
    let mut clock = 1_000_000;
    for _ in 0..200 {
        // Mostly increasing, with producers whose clocks run behind now and then.
        clock += rng.i64(0..50);
        let timestamp = if rng.u8(0..5) == 0 { clock - rng.i64(0..500) } else { clock };
        append(&mut log, batch(rng.usize(1..5), rng.usize(0..300), timestamp), 0, &mut stored);
    }
    assert!(log.segment_count() > 5);
    let probes: Vec<i64> =
        (0..300).map(|_| rng.i64(999_000..clock + 100)).chain([i64::MIN, 0, clock + 10, i64::MAX]).collect();
    let check = |log: &PartitionLog, stage: &str| {
        for &probe in &probes {
            let found = log.offset_for_timestamp(probe).expect("lookup");
            assert_eq!(found, expected_for_timestamp(&stored, probe), "{stage}: timestamp {probe}");
        }
    };
    check(&log, "live");
    log.close().expect("close");

    let (log, _) = PartitionLog::open(dir.path(), config.clone(), 0).expect("reopen");
    check(&log, "reopened");
    drop(log);
    for time_index in segment_files(dir.path(), "timeindex") {
        fs::write(time_index, [0xab; 36]).expect("corrupt");
    }
    let (log, report) = PartitionLog::open(dir.path(), config, 0).expect("reopen");
    assert!(report.rebuilt_indexes.iter().any(|path| path.extension().is_some_and(|ext| ext == "timeindex")));
    check(&log, "rebuilt");
}

// ---------------------------------------------------------------------------------------
// Retention
// ---------------------------------------------------------------------------------------

#[test]
fn retention_by_size_deletes_whole_oldest_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = PartitionLog::open(dir.path(), small_config(), 0).expect("open");
    let mut stored = Vec::new();
    for _ in 0..60 {
        append(&mut log, batch(3, 300, 0), 0, &mut stored);
    }
    let segments_before = log.segment_count();
    let size_before = log.size_bytes();
    let retention_bytes = size_before / 3;
    drop(log);

    let config = LogConfig { retention_bytes: Some(retention_bytes), ..small_config() };
    let (mut log, _) = PartitionLog::open(dir.path(), config, 0).expect("reopen");
    let deleted = log.enforce_retention(0).expect("retention");
    assert!(deleted > 0 && log.segment_count() == segments_before - deleted);
    assert!(log.size_bytes() >= retention_bytes, "Kafka's rule keeps at least retention_bytes");
    let oldest = segment_files(dir.path(), "log")[0].clone();
    let oldest_bytes = fs::metadata(&oldest).expect("stat").len();
    assert!(log.size_bytes() - oldest_bytes < retention_bytes, "and deletes while the rest would still hold it");
    assert_eq!(segment_files(dir.path(), "log").len(), log.segment_count(), "the files are gone");
    assert_eq!(segment_files(dir.path(), "index").len(), log.segment_count());

    let log_start = log.log_start_offset();
    assert!(stored.iter().any(|batch| batch.base_offset == log_start), "the log starts at a batch boundary");
    assert!(matches!(log.read(log_start - 1, 1024), Err(ReadError::OffsetOutOfRange { .. })));
    assert_eq!(consume_all(&log, log_start, 1 << 20), stored_bytes(&stored, log_start));
    assert_eq!(log.enforce_retention(0).expect("retention"), 0, "idempotent");

    drop(log);
    let (log, report) = PartitionLog::open(dir.path(), small_config(), 0).expect("reopen");
    assert_eq!(report.log_start_offset, log_start, "the log start survives a restart");
    assert_eq!(log.log_start_offset(), log_start);
}

#[test]
fn retention_by_age_deletes_old_segments_but_never_the_active_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    // segment_bytes 1: every produce after the first goes into a fresh segment.
    let config = LogConfig { segment_bytes: 1, retention_ms: Some(6_000), ..small_config() };
    let (mut log, _) = PartitionLog::open(dir.path(), config, 0).expect("open");
    let mut stored = Vec::new();
    for timestamp in [1_000, 2_000, 5_000, 9_000] {
        append(&mut log, batch(2, 10, timestamp), 0, &mut stored);
    }
    assert_eq!(log.segment_count(), 4);
    // Largest timestamps are 1_001, 2_001, 5_001, 9_001; at 10_000 the first two are older than 6 s.
    assert_eq!(log.enforce_retention(10_000).expect("retention"), 2);
    assert_eq!((log.segment_count(), log.log_start_offset()), (2, 4));
    assert_eq!(log.offset_for_timestamp(0).expect("lookup"), Some((4, 5_000)), "deleted batches are not found");
    // Far in the future, everything but the active segment goes.
    assert_eq!(log.enforce_retention(1_000_000).expect("retention"), 1);
    assert_eq!((log.segment_count(), log.log_start_offset(), log.log_end_offset()), (1, 6, 8));
    assert_eq!(log.read(6, 1 << 20).expect("read"), Bytes::from(stored[3].bytes.clone()));
}

// ---------------------------------------------------------------------------------------
// Recovery
// ---------------------------------------------------------------------------------------

/// A log with several segments and `batches` produces; dropped without `close`, like a crash.
fn crashed_log(dir: &Path, batches: usize) -> Vec<Stored> {
    let (mut log, _) = PartitionLog::open(dir, small_config(), 0).expect("open");
    let mut stored = Vec::new();
    for index in 0..batches {
        append(&mut log, batch(2, 150, index as i64), 0, &mut stored);
    }
    assert!(log.segment_count() > 1);
    stored
}

/// The active segment's `.log`, and the batches stored in it.
fn active_segment(dir: &Path, stored: &[Stored]) -> (PathBuf, Vec<Stored>) {
    let active = segment_files(dir, "log").pop().expect("a segment");
    let name = active.file_stem().and_then(|stem| stem.to_str()).expect("name");
    let base: i64 = name.parse().expect("20 digits");
    (active, stored.iter().filter(|batch| batch.base_offset >= base).cloned().collect())
}

/// After recovery cut the active segment back to `kept` batches: the log ends there, reads
/// return exactly what was kept, and appends continue at the next offset.
fn assert_recovered_to(dir: &Path, stored: &[Stored], kept: usize, expected_truncated: u64) {
    let (mut log, report) = PartitionLog::open(dir, small_config(), 0).expect("reopen");
    assert_eq!(report.truncated_bytes, expected_truncated);
    let expected_end = stored[..kept].last().map_or(0, |batch| batch.last_offset + 1);
    assert_eq!((report.log_end_offset, log.log_end_offset()), (expected_end, expected_end));
    assert_eq!(consume_all(&log, 0, 1 << 20), stored_bytes(&stored[..kept], 0));

    let mut more = stored[..kept].to_vec();
    append(&mut log, batch(3, 10, 0), 0, &mut more);
    assert_eq!(more.last().map(|batch| batch.base_offset), Some(expected_end), "appends continue contiguously");
    assert_eq!(consume_all(&log, 0, 1 << 20), stored_bytes(&more, 0));
}

/// [`assert_recovered_to`] after damage to batch `damaged` of the active segment
/// (`in_active`, from [`active_segment`]): the batches before it are kept, it and every
/// batch after it are cut.
fn assert_cut_at(dir: &Path, stored: &[Stored], in_active: &[Stored], damaged: usize) {
    let first_cut = in_active[damaged].base_offset;
    let kept = stored.iter().position(|batch| batch.base_offset == first_cut).expect("the damaged batch was stored");
    let cut: u64 = in_active[damaged..].iter().map(|batch| batch.bytes.len() as u64).sum();
    assert_recovered_to(dir, stored, kept, cut);
}

/// Flips the bits of `mask` in the byte at `position` of the file at `path`, as a bad disk would.
fn flip_bits(path: &Path, position: u64, mask: u8) {
    let file = fs::OpenOptions::new().read(true).write(true).open(path).expect("open");
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, position).expect("read");
    file.write_all_at(&[byte[0] ^ mask], position).expect("flip");
}

#[test]
fn recovery_cuts_a_batch_torn_in_the_middle() {
    logging();
    let dir = tempfile::tempdir().expect("tempdir");
    let stored = crashed_log(dir.path(), 40);
    let (active, in_active) = active_segment(dir.path(), &stored);
    let length = fs::metadata(&active).expect("stat").len();
    let last_batch = in_active.last().expect("the active segment has batches").bytes.len() as u64;
    let cut = last_batch / 2;
    fs::OpenOptions::new().write(true).open(&active).expect("open").set_len(length - cut).expect("cut");
    assert_recovered_to(dir.path(), &stored, stored.len() - 1, last_batch - cut);
}

#[test]
fn recovery_cuts_garbage_and_zeroes_after_the_last_batch() {
    logging();
    let mut rng = rng("recovery_cuts_garbage_and_zeroes_after_the_last_batch");
    for tail in [vec![0u8; 4_096], (0..777).map(|_| rng.u8(..)).collect::<Vec<u8>>(), vec![0u8; 5]] {
        let dir = tempfile::tempdir().expect("tempdir");
        let stored = crashed_log(dir.path(), 30);
        let (active, _) = active_segment(dir.path(), &stored);
        let file = fs::OpenOptions::new().append(true).open(&active).expect("open");
        file.write_all_at(&tail, fs::metadata(&active).expect("stat").len()).expect("write");
        assert_recovered_to(dir.path(), &stored, stored.len(), tail.len() as u64);
    }
}

/// The deliberately broken batch: one flipped bit in the middle of the active segment.
/// Reads do not check CRCs (consumers do), so before the reopen the damage is served;
/// recovery must cut at exactly the damaged batch.
#[test]
fn recovery_cuts_at_a_flipped_byte() {
    logging();
    let dir = tempfile::tempdir().expect("tempdir");
    let stored = crashed_log(dir.path(), 40);
    let (active, in_active) = active_segment(dir.path(), &stored);
    assert!(in_active.len() >= 3, "the damage lands mid-segment: {}", in_active.len());
    flip_bits(&active, in_active[0].bytes.len() as u64 + 100, 0x10); // inside batch 1's records
    assert_cut_at(dir.path(), &stored, &in_active, 1);
}

/// Base offsets are not covered by the CRC, so recovery also checks that each batch
/// continues the previous one; a flipped base offset is cut like a bad CRC.
#[test]
fn recovery_cuts_at_a_base_offset_that_does_not_follow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stored = crashed_log(dir.path(), 40);
    let (active, in_active) = active_segment(dir.path(), &stored);
    flip_bits(&active, in_active[0].bytes.len() as u64 + 7, 0x01); // batch 1's baseOffset, low byte
    assert_cut_at(dir.path(), &stored, &in_active, 1);
}

/// Where the checks end: the leader epoch is covered by neither the CRC nor any rule, so
/// damage there is kept. (If this test ever fails, recovery started checking the epoch.)
#[test]
fn recovery_cannot_see_damage_outside_what_the_crc_covers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stored = crashed_log(dir.path(), 40);
    let (active, in_active) = active_segment(dir.path(), &stored);
    let file = fs::OpenOptions::new().read(true).write(true).open(&active).expect("open");
    file.write_all_at(&[0x7f], in_active[0].bytes.len() as u64 + 12).expect("flip");
    let (log, report) = PartitionLog::open(dir.path(), small_config(), 0).expect("reopen");
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(log.log_end_offset(), stored.last().map_or(0, |batch| batch.last_offset + 1));
}

#[test]
fn a_crashed_log_reopens_without_rebuilding_its_preallocated_indexes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stored = crashed_log(dir.path(), 40);
    let active_index = segment_files(dir.path(), "index").pop().expect("index");
    assert_eq!(fs::metadata(&active_index).expect("stat").len(), 4_096, "still preallocated");
    let (log, report) = PartitionLog::open(dir.path(), small_config(), 0).expect("reopen");
    assert!(report.rebuilt_indexes.is_empty(), "trailing zero entries are empty slots: {:?}", report.rebuilt_indexes);
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(consume_all(&log, 0, 0), stored_bytes(&stored, 0));
}

#[test]
fn a_deleted_index_is_rebuilt_and_lookups_still_work() {
    logging();
    let dir = tempfile::tempdir().expect("tempdir");
    let stored = crashed_log(dir.path(), 60);
    let indexes = segment_files(dir.path(), "index");
    let (sealed, active) = (indexes[0].clone(), indexes[indexes.len() - 1].clone());
    let sealed_length = fs::metadata(&sealed).expect("stat").len();
    assert!(sealed_length > 0, "the sealed segment has entries to lose");
    fs::remove_file(&sealed).expect("remove");
    fs::remove_file(&active).expect("remove");

    let (log, report) = PartitionLog::open(dir.path(), small_config(), 0).expect("reopen");
    assert!(report.rebuilt_indexes.contains(&sealed) && report.rebuilt_indexes.contains(&active), "{report:?}");
    assert_eq!(fs::metadata(&sealed).expect("rebuilt").len(), sealed_length, "the same entries as before");
    for batch in &stored {
        for target in [batch.base_offset, batch.last_offset] {
            assert_eq!(check_read(&log.read(target, 1).expect("read"), target, 1, &stored), Ok(()));
        }
    }
}

#[test]
fn a_corrupted_index_is_rebuilt_and_lookups_still_work() {
    logging();
    for damage in ["reversed entries", "odd length", "entry past the log"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let stored = crashed_log(dir.path(), 60);
        let mut log = PartitionLog::open(dir.path(), small_config(), 0).expect("reopen").0;
        log.enforce_retention(0).expect("noop"); // nothing to delete; the log stays as is
        log.close().expect("close"); // every index trimmed to its entries
        let index = segment_files(dir.path(), "index")[1].clone();
        let mut bytes = fs::read(&index).expect("read");
        assert!(bytes.len() >= 16, "the segment has at least two entries");
        match damage {
            "reversed entries" => {
                let entries: Vec<Vec<u8>> = bytes.chunks(8).rev().map(<[u8]>::to_vec).collect();
                bytes = entries.concat();
            }
            "odd length" => bytes.truncate(bytes.len() - 3),
            _ => {
                let last_position = bytes.len() - 4;
                bytes[last_position..].copy_from_slice(&u32::MAX.to_be_bytes());
            }
        }
        fs::write(&index, &bytes).expect("write");

        let (log, report) = PartitionLog::open(dir.path(), small_config(), 0).expect("reopen");
        assert!(report.rebuilt_indexes.contains(&index), "{damage}: {report:?}");
        for batch in &stored {
            let bytes = log.read(batch.last_offset, 1).expect("read");
            assert_eq!(check_read(&bytes, batch.last_offset, 1, &stored), Ok(()), "{damage}");
        }
    }
}

/// Damage the sanity check cannot see (an entry moved, still increasing, still inside the
/// log) is caught when a read lands on it, and the read still returns the right batch.
/// Two ways: one byte forward (no batch header there), and onto the next batch (a real
/// header, but not the offset the entry names: only the offset comparison catches that).
#[test]
fn an_index_that_passes_the_check_but_lies_is_caught_at_read_time() {
    logging();
    for damage in ["one byte forward", "onto the next batch"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let stored = crashed_log(dir.path(), 60);
        PartitionLog::open(dir.path(), small_config(), 0).expect("reopen").0.close().expect("close");
        let index = segment_files(dir.path(), "index")[0].clone();
        let mut bytes = fs::read(&index).expect("read");
        assert!(bytes.len() >= 24, "three entries, so the middle one can move");
        let relative = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        let position = u32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
        let moved = match damage {
            "one byte forward" => position + 1,
            _ => {
                let batch =
                    stored.iter().find(|batch| batch.base_offset == i64::from(relative)).expect("indexed batch");
                position + batch.bytes.len() as u32
            }
        };
        bytes[12..16].copy_from_slice(&moved.to_be_bytes());
        fs::write(&index, &bytes).expect("write");

        let (log, report) = PartitionLog::open(dir.path(), small_config(), 0).expect("reopen");
        assert!(
            !report.rebuilt_indexes.contains(&index),
            "{damage}: the open-time check only sees order and the last entry"
        );
        for batch in &stored {
            let bytes = log.read(batch.base_offset, 1).expect("read");
            assert_eq!(check_read(&bytes, batch.base_offset, 1, &stored), Ok(()), "{damage}");
        }
    }
}

#[test]
fn orphan_index_files_are_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    crashed_log(dir.path(), 20);
    let orphan = dir.path().join("00000000000000099999.index");
    let orphan_time = dir.path().join("00000000000000099999.timeindex");
    let unrelated = dir.path().join("partition.metadata");
    for path in [&orphan, &orphan_time, &unrelated] {
        fs::write(path, b"x").expect("write");
    }
    let (_, report) = PartitionLog::open(dir.path(), small_config(), 0).expect("reopen");
    assert_eq!(report.removed_orphans.len(), 2, "{report:?}");
    assert!(!orphan.exists() && !orphan_time.exists());
    assert!(unrelated.exists(), "files that are not segment files are left alone");
}

#[test]
fn reopening_after_close_keeps_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config();
    let (mut log, _) = PartitionLog::open(dir.path(), config.clone(), 0).expect("open");
    let mut stored = Vec::new();
    for index in 0..80 {
        append(&mut log, batch(3, 120, 1_000 + index), 0, &mut stored);
    }
    append(&mut log, fake_compressed_batch(10, 200, 5_000), 0, &mut stored);
    let (segments, start, end, size) =
        (log.segment_count(), log.log_start_offset(), log.log_end_offset(), log.size_bytes());
    let time_answer = log.offset_for_timestamp(1_040).expect("lookup");
    log.close().expect("close");
    for index in segment_files(dir.path(), "index") {
        let length = fs::metadata(&index).expect("stat").len();
        assert!(length % 8 == 0 && length < 4_096, "{} trimmed to its entries: {length}", index.display());
    }

    let (mut log, report) = PartitionLog::open(dir.path(), config, 0).expect("reopen");
    assert_eq!((report.truncated_bytes, report.rebuilt_indexes.len(), report.segments), (0, 0, segments));
    assert_eq!((log.log_start_offset(), log.log_end_offset(), log.size_bytes()), (start, end, size));
    assert_eq!(log.flushed_offset(), end, "everything recovered is on disk");
    assert_eq!(log.offset_for_timestamp(1_040).expect("lookup"), time_answer);
    assert_eq!(consume_all(&log, 0, 1 << 20), stored_bytes(&stored, 0));
    append(&mut log, batch(1, 10, 0), 0, &mut stored);
    assert_eq!(stored.last().map(|batch| batch.base_offset), Some(end));
}

#[test]
fn delete_removes_the_partition_directory() {
    let parent = tempfile::tempdir().expect("tempdir");
    let dir = parent.path().join("orders-3");
    let (mut log, _) = PartitionLog::open(&dir, small_config(), 0).expect("open creates the directory");
    let mut stored = Vec::new();
    append(&mut log, batch(1, 10, 0), 0, &mut stored);
    log.delete().expect("delete");
    assert!(!dir.exists());
}
