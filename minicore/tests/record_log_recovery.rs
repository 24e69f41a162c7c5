//! Hand-built recovery scenarios for `minicore::record_log`: each torn-tail and corruption
//! rule with exact offsets and counts, segment gaps and overlaps, the opt-in truncating
//! mode, and the directory edge cases. The property tests in `record_log_props.rs` cover
//! the same rules over random logs; these pin down the numbers in the report.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use minicore::record_log::{
    FrameProblem, FsyncPolicy, LogError, LogOptions, RecordLog, RecoveryMode, TruncationReason,
};

fn options() -> LogOptions {
    LogOptions { fsync: FsyncPolicy::Always, ..LogOptions::default() }
}

fn lenient() -> LogOptions {
    LogOptions { recovery: RecoveryMode::TruncateAtCorruption, ..options() }
}

fn segment(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// Appends `payloads` to the log in `dir` (opened with `segment_bytes`), syncs and closes.
fn write_records(dir: &Path, segment_bytes: u64, payloads: &[&[u8]]) {
    let options = LogOptions { segment_bytes, ..options() };
    let (log, _) = RecordLog::open(dir, options).expect("open");
    for payload in payloads {
        log.append(payload).expect("append");
    }
    log.close().expect("close");
}

/// The frame for `payload`, built by hand from the documented format.
fn frame(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len);
    crc.update(payload);
    let mut out = len.to_vec();
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    let mut file = OpenOptions::new().append(true).open(path).expect("open segment");
    file.write_all(bytes).expect("append bytes");
}

fn payloads_of(log: &RecordLog) -> Vec<Vec<u8>> {
    log.reader(log.first_lsn()).expect("reader").map(|item| item.expect("record").1).collect()
}

#[test]
fn a_new_directory_opens_as_an_empty_log_with_one_segment() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let dir = scratch.path().join("nested").join("wal");
    let (log, report) = RecordLog::open(&dir, options()).expect("open");
    assert_eq!((report.segments, report.records, report.first_lsn, report.next_lsn), (1, 0, 0, 0));
    assert_eq!(report.truncated, None);
    assert!(segment(&dir, 0).is_file());
    assert_eq!((log.next_lsn(), log.written_lsn(), log.durable_lsn()), (0, 0, 0));
    assert_eq!(log.dir(), dir.as_path());
}

#[test]
fn a_torn_tail_is_cut_and_reported_exactly() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let dir = scratch.path();
    write_records(dir, 1 << 20, &[b"one", b"two", b"three"]);
    let file = segment(dir, 0);
    let valid_len = fs::metadata(&file).expect("metadata").len();
    assert_eq!(valid_len, 3 * 8 + 3 + 3 + 5);
    // A crash half way through a fourth frame.
    let torn = frame(b"four, never finished");
    append_bytes(&file, &torn[..13]);

    let (log, report) = RecordLog::open(dir, options()).expect("a torn tail opens in strict mode");
    let cut = report.truncated.clone().expect("the cut is reported");
    assert_eq!(cut.file, file);
    assert_eq!(cut.offset, valid_len);
    assert_eq!(cut.bytes_dropped, 13);
    assert_eq!(cut.records_dropped, 1);
    assert!(cut.removed_segments.is_empty());
    assert!(matches!(cut.reason, TruncationReason::TornTail { problem: FrameProblem::PayloadCutShort { .. } }));
    assert!(!report.lost_committed_data(), "a torn tail held nothing synced");
    assert_eq!(report.records, 3);
    assert_eq!(fs::metadata(&file).expect("metadata").len(), valid_len, "the file was cut on disk");
    assert_eq!(payloads_of(&log), vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
    assert!(report.to_string().contains("torn tail"), "{report}");
}

#[test]
fn a_torn_tail_counts_every_header_it_can_walk() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let dir = scratch.path();
    write_records(dir, 1 << 20, &[b"kept"]);
    let file = segment(dir, 0);
    // Two frames from the crashed write: the first with a damaged payload, the second cut
    // short. Nothing after the first bad frame validates, so this is a torn tail.
    let mut damaged = frame(b"damaged");
    damaged[10] ^= 0x01;
    let cut_short = frame(b"cut short");
    append_bytes(&file, &damaged);
    append_bytes(&file, &cut_short[..cut_short.len() - 1]);

    let (_, report) = RecordLog::open(dir, options()).expect("open");
    let cut = report.truncated.expect("cut");
    assert_eq!(cut.records_dropped, 2);
    assert_eq!(cut.bytes_dropped, (damaged.len() + cut_short.len() - 1) as u64);
    assert!(matches!(cut.reason, TruncationReason::TornTail { problem: FrameProblem::ChecksumMismatch { .. } }));
    assert_eq!(report.records, 1);
}

#[test]
fn zeros_after_the_last_frame_are_a_torn_tail() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let dir = scratch.path();
    write_records(dir, 1 << 20, &[b"a", b"b"]);
    let file = segment(dir, 0);
    append_bytes(&file, &[0; 4096]);
    let (_, report) = RecordLog::open(dir, options()).expect("open");
    let cut = report.truncated.expect("cut");
    assert_eq!((cut.offset, cut.bytes_dropped), (18, 4096));
    assert_eq!(report.records, 2);
}

#[test]
fn a_hole_followed_by_a_valid_frame_is_corruption_not_a_torn_tail() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let dir = scratch.path();
    write_records(dir, 1 << 20, &[b"first", b"second", b"third"]);
    let file = segment(dir, 0);
    let mut bytes = fs::read(&file).expect("read");
    // Zero the whole second frame, as a lost page would.
    bytes[13..27].fill(0);
    fs::write(&file, &bytes).expect("write");

    let error = RecordLog::open(dir, options()).expect_err("strict refuses");
    match &error {
        LogError::Corrupt { file: named, offset, next_valid_offset, .. } => {
            assert_eq!(named, &file);
            assert_eq!(*offset, 13);
            assert_eq!(*next_valid_offset, Some(27));
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains(&format!("{} offset 13", file.display())), "{message}");
    assert!(message.contains("RecoveryMode::TruncateAtCorruption"), "{message}");

    let (log, report) = RecordLog::open(dir, lenient()).expect("lenient open");
    let cut = report.truncated.clone().expect("cut");
    assert!(matches!(cut.reason, TruncationReason::Corruption { next_valid_offset: Some(27), .. }));
    assert_eq!((cut.offset, cut.bytes_dropped), (13, 27));
    // Walking the zeroed frame reads its zero header as an empty frame, so the count is
    // the documented estimate: at least the two records really dropped.
    assert!(cut.records_dropped >= 2, "{cut:?}");
    assert!(report.lost_committed_data());
    assert!(report.to_string().contains("CORRUPTION"), "{report}");
    assert_eq!(payloads_of(&log), vec![b"first".to_vec()]);
}

#[test]
fn a_bad_last_frame_of_an_earlier_segment_is_corruption() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let dir = scratch.path();
    // 20-byte frames in 40-byte segments: two records per segment.
    write_records(dir, 40, &[b"aaaaaaaaaaaa", b"bbbbbbbbbbbb", b"cccccccccccc", b"dddddddddddd", b"e"]);
    let first = segment(dir, 0);
    let mut bytes = fs::read(&first).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff; // the last byte of record 1: nothing in this file follows it
    fs::write(&first, &bytes).expect("write");

    match RecordLog::open(dir, options()) {
        Err(LogError::Corrupt { file, offset, next_valid_offset, problem }) => {
            assert_eq!((file, offset, next_valid_offset), (first.clone(), 20, None));
            assert!(matches!(problem, FrameProblem::ChecksumMismatch { .. }));
        }
        other => panic!("expected corruption, got {:?}", other.map(|(_, report)| report)),
    }

    let (log, report) = RecordLog::open(dir, lenient()).expect("lenient open");
    let cut = report.truncated.expect("cut");
    assert_eq!(cut.removed_segments, vec![segment(dir, 2), segment(dir, 4)]);
    assert_eq!(cut.records_dropped, 4, "record 1 plus the three records in removed segments");
    assert!(!segment(dir, 2).exists() && !segment(dir, 4).exists());
    assert_eq!(payloads_of(&log), vec![b"aaaaaaaaaaaa".to_vec()]);
    assert_eq!(log.append(b"next").expect("append"), 1, "appends continue in the cut segment");
}

#[test]
fn a_missing_segment_is_a_gap_naming_the_file() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let dir = scratch.path();
    write_records(dir, 40, &[b"aaaaaaaaaaaa", b"bbbbbbbbbbbb", b"cccccccccccc", b"dddddddddddd", b"e"]);
    fs::remove_file(segment(dir, 2)).expect("remove the middle segment");

    match RecordLog::open(dir, options()) {
        Err(LogError::SegmentGap { file, expected, found }) => {
            assert_eq!((file, expected, found), (segment(dir, 4), 2, 4));
        }
        other => panic!("expected a gap, got {:?}", other.map(|(_, report)| report)),
    }
    let (log, report) = RecordLog::open(dir, lenient()).expect("lenient open");
    let cut = report.truncated.expect("cut");
    assert_eq!(cut.reason, TruncationReason::SegmentGap { expected: 2, found: 4 });
    assert_eq!(cut.removed_segments, vec![segment(dir, 4)]);
    assert_eq!(log.next_lsn(), 2);
}

#[test]
fn overlapping_segments_are_a_gap_too() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let dir = scratch.path();
    write_records(dir, 40, &[b"aaaaaaaaaaaa", b"bbbbbbbbbbbb", b"cccccccccccc"]);
    fs::rename(segment(dir, 2), segment(dir, 1)).expect("rename");
    let error = RecordLog::open(dir, options()).expect_err("overlap");
    assert!(matches!(error, LogError::SegmentGap { expected: 2, found: 1, .. }), "{error}");
}

#[test]
fn a_record_over_a_lowered_limit_is_reported_not_cut_as_torn() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let dir = scratch.path();
    write_records(dir, 1 << 20, &[b"small", &[9; 100]]);
    let lowered = LogOptions { max_record_bytes: 50, ..options() };
    let error = RecordLog::open(dir, lowered).expect_err("the synced record must not be dropped");
    assert!(
        matches!(error, LogError::Corrupt { offset: 13, problem: FrameProblem::LengthOverLimit { len: 100, .. }, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("reopen it with that limit"), "{error}");
    // With the old limit, nothing was lost.
    let (_, report) = RecordLog::open(dir, options()).expect("open with the original limit");
    assert_eq!((report.records, report.truncated), (2, None));
}

#[test]
fn foreign_files_are_ignored_and_damaged_segment_names_refused() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let dir = scratch.path();
    write_records(dir, 1 << 20, &[b"x"]);
    fs::write(dir.join("README"), b"not a segment").expect("write");
    fs::write(dir.join("42.log"), b"not ours either").expect("write");
    let (_, report) = RecordLog::open(dir, options()).expect("foreign files are ignored");
    assert_eq!(report.records, 1);

    fs::write(dir.join("99999999999999999999.log"), b"").expect("write");
    let error = RecordLog::open(dir, options()).expect_err("a damaged segment name");
    assert!(matches!(error, LogError::BadSegmentName { .. }), "{error}");
}

#[test]
fn invalid_options_are_refused_before_touching_the_disk() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let dir = scratch.path().join("never-created");
    let zero_segments = LogOptions { segment_bytes: 0, ..options() };
    assert!(matches!(RecordLog::open(&dir, zero_segments), Err(LogError::InvalidOptions { .. })));
    let busy_loop = LogOptions { fsync: FsyncPolicy::EveryMillis(0), ..options() };
    assert!(matches!(RecordLog::open(&dir, busy_loop), Err(LogError::InvalidOptions { .. })));
    assert!(!dir.exists());
}

#[test]
fn a_reopened_log_starts_fully_durable_and_continues_its_lsns() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let dir = scratch.path();
    write_records(dir, 64, &[b"0123456789", b"0123456789", b"0123456789", b"0123456789"]);
    let (log, report) = RecordLog::open(dir, options()).expect("reopen");
    assert_eq!((report.segments, report.records, report.next_lsn), (2, 4, 4));
    assert_eq!((log.next_lsn(), log.written_lsn(), log.durable_lsn()), (4, 4, 4));
    assert_eq!(log.append(b"more").expect("append"), 4);
    assert_eq!(log.delete_segments_before(4).expect("delete"), 1);
    assert_eq!(log.first_lsn(), 3);
    drop(log);
    let (log, report) = RecordLog::open(dir, options()).expect("reopen after delete");
    assert_eq!((report.first_lsn, report.next_lsn), (3, 5));
    assert!(matches!(log.reader(2), Err(LogError::Deleted { lsn: 2, first_lsn: 3 })));
    assert_eq!(payloads_of(&log).len(), 2);
}

/// `roll_segment` puts every record so far into closed segments, so that deleting up to
/// the returned LSN reclaims all of them (what minikv's AOF rewrite relies on), and an
/// empty active segment is not rolled again.
#[test]
fn roll_segment_lets_delete_reclaim_everything_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let options = minicore::record_log::LogOptions { segment_bytes: 1 << 20, ..Default::default() };
    let (log, _) = minicore::record_log::RecordLog::open(dir.path(), options.clone()).unwrap();
    for i in 0..3u8 {
        log.append(&[i; 10]).unwrap();
    }
    let start = log.roll_segment().unwrap();
    assert_eq!(start, 3);
    assert_eq!(log.roll_segment().unwrap(), 3, "an empty active segment is not rolled");
    log.append(b"after").unwrap();
    log.commit(3).unwrap();
    assert_eq!(log.stats().segments, 2);
    assert_eq!(log.delete_segments_before(start).unwrap(), 1);
    let left: Vec<(u64, Vec<u8>)> = log.reader(start).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(left, vec![(3, b"after".to_vec())]);
    drop(log);
    let (log, report) = minicore::record_log::RecordLog::open(dir.path(), options).unwrap();
    assert_eq!((report.truncated.is_none(), log.first_lsn(), log.next_lsn()), (true, 3, 4));
}

/// `preallocate`: segments are created full of zeros and written over; the zero end of
/// the active segment is unused space on reopen, not a torn tail; a closed segment is
/// trimmed to its records; and a real torn tail before the zeros is still cut.
#[test]
fn preallocated_segments_recover_cleanly_and_are_trimmed_when_closed() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions { segment_bytes: 4096, preallocate: true, ..options() };
    let (log, _) = RecordLog::open(dir.path(), options.clone()).unwrap();
    let mut last = 0;
    for i in 0..300u32 {
        last = log.append(format!("record {i:04}").as_bytes()).unwrap();
    }
    log.commit(last).unwrap();
    let segments = log.stats().segments;
    assert!(segments > 1, "4 KiB segments roll");
    drop(log);
    let mut files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let active = files.last().unwrap().clone();
    assert_eq!(std::fs::metadata(&active).unwrap().len(), 4096, "the active segment keeps its full size");
    for closed in &files[..files.len() - 1] {
        let len = std::fs::metadata(closed).unwrap().len();
        assert!(len < 4096 && len > 0, "closed segments are trimmed to their records: {len}");
    }

    let (log, report) = RecordLog::open(dir.path(), options.clone()).unwrap();
    assert_eq!((report.records, report.truncated.is_none()), (300, true), "{report:?}");
    let records: Vec<(u64, Vec<u8>)> = log.reader(0).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(records.len(), 300);
    assert_eq!(records[299].1, b"record 0299");
    let next = log.append(b"after reopen").unwrap();
    log.commit(next).unwrap();
    drop(log);

    // A torn frame in front of the zeros is still a torn tail, cut and reported.
    let written = {
        let (log, _) = RecordLog::open(dir.path(), options.clone()).unwrap();
        log.stats().size_bytes
    };
    let active_len_before = std::fs::metadata(&active).unwrap().len();
    assert_eq!(active_len_before, 4096);
    let closed_bytes: u64 = files[..files.len() - 1].iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
    let offset = written - closed_bytes;
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().write(true).open(&active).unwrap();
        file.write_all_at(&[7, 0, 0, 0, 1, 2], offset).unwrap();
    }
    let (log, report) = RecordLog::open(dir.path(), options).unwrap();
    assert_eq!(report.records, 301);
    assert!(
        matches!(report.truncated.as_ref().map(|t| &t.reason), Some(TruncationReason::TornTail { .. })),
        "{report:?}"
    );
    drop(log);
}
