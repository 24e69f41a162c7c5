//! Recovery on open: check every frame of every segment, cut a torn tail, refuse (or, when
//! asked, cut at) corruption, and report exactly what was dropped.
//!
//! The rules, in the order they are applied to segments sorted by base LSN:
//!
//! 1. **Gap check.** Segment k+1 must start where segment k ends (base + records). Anything
//!    else means records are missing or claimed twice.
//! 2. **A bad frame in any segment but the last is corruption.** A segment is fsynced before
//!    the next one is created, so a crash cannot tear it.
//! 3. **A bad frame in the last segment is a torn tail only if nothing after it
//!    validates.** A crash while appending leaves a partial frame, zeros, or garbage at the
//!    end and nothing valid after it. A bad frame *followed* by a valid one is a hole in
//!    data that had been written, so something other than our crash damaged it. So is a
//!    complete frame with a matching CRC whose length is merely over `max_record_bytes`
//!    (the log was written with a larger limit): it is reported, never cut as torn.
//!
//! A torn tail is cut in every mode. Corruption (rules 1–3) is an error in
//! [`RecoveryMode::Strict`]; in [`RecoveryMode::TruncateAtCorruption`] the log keeps the
//! valid prefix, removes every later segment and says so in the report (and in an
//! `error!` trace).
//!
//! The classification is pure ([`scan_segment`], [`find_next_valid_frame`],
//! [`count_frames_walked`]) and the file changes happen at the edge, in [`recover`].
//!
//! Left out: recovery reads one whole segment into memory at a time (bounded by
//! `segment_bytes` plus one record), and the search for a valid frame after a bad one tries
//! every byte offset, which is quadratic for adversarial tails but cheap for real torn tails
//! (a few KiB at most).

use std::fmt;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use super::error::LogError;
use super::frame::{self, FrameProblem, HEADER_BYTES};
use super::options::{LogOptions, RecoveryMode};
use super::segment;
use super::Lsn;

/// What opening the log found and changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files in the log after recovery (at least one).
    pub segments: usize,
    /// Records kept, across all segments.
    pub records: u64,
    /// LSN of the oldest record kept; equal to `next_lsn` when the log is empty.
    pub first_lsn: Lsn,
    /// LSN the next `append` will return.
    pub next_lsn: Lsn,
    /// What was cut, if anything. `None` means the log was clean.
    pub truncated: Option<Truncation>,
}

impl RecoveryReport {
    /// True when recovery dropped something that was not merely a torn tail, that is, data
    /// that may once have been acknowledged as durable. Servers should refuse to start
    /// quietly when this is true.
    pub fn lost_committed_data(&self) -> bool {
        self.truncated.as_ref().is_some_and(|t| !matches!(t.reason, TruncationReason::TornTail { .. }))
    }
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} records in {} segments (LSNs {}..{})",
            self.records, self.segments, self.first_lsn, self.next_lsn
        )?;
        if let Some(truncation) = &self.truncated {
            write!(f, "; {truncation}")?;
        }
        Ok(())
    }
}

/// Where recovery cut the log and how much it dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    /// The segment that now ends the log, cut at `offset`. For a segment gap this is the
    /// first removed segment and `offset` is 0.
    pub file: PathBuf,
    /// Byte offset in `file` where the first bad frame started; the file now ends here.
    pub offset: u64,
    /// Bytes dropped: the rest of `file` plus every removed segment.
    pub bytes_dropped: u64,
    /// Records dropped, counted by walking frame headers through the dropped bytes (a
    /// damaged header can make this an estimate); at least 1 when any byte was dropped.
    pub records_dropped: u64,
    /// Why the log was cut.
    pub reason: TruncationReason,
    /// Segment files removed because they came after the cut. Empty for a torn tail.
    pub removed_segments: Vec<PathBuf>,
}

impl fmt::Display for Truncation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cut {} at offset {} ({}), dropping {} bytes and about {} records",
            self.file.display(),
            self.offset,
            self.reason,
            self.bytes_dropped,
            self.records_dropped
        )?;
        if !self.removed_segments.is_empty() {
            write!(f, " and removing {} later segments", self.removed_segments.len())?;
        }
        Ok(())
    }
}

/// Why recovery cut the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TruncationReason {
    /// The last segment ended in a damaged frame with nothing valid after it: what a crash
    /// in the middle of a write leaves. Only data that was never synced can be here.
    TornTail {
        /// What was wrong with the first dropped frame.
        problem: FrameProblem,
    },
    /// [`RecoveryMode::TruncateAtCorruption`] cut at a bad frame that was not a torn tail.
    /// Data that had been acknowledged as durable may be lost.
    Corruption {
        /// What was wrong with the bad frame.
        problem: FrameProblem,
        /// The later valid frame that made this corruption, when it was in the same file.
        next_valid_offset: Option<u64>,
    },
    /// [`RecoveryMode::TruncateAtCorruption`] removed segments from a gap in base LSNs on.
    SegmentGap {
        /// The base LSN the segment should have had.
        expected: Lsn,
        /// The base LSN it had.
        found: Lsn,
    },
}

impl fmt::Display for TruncationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TruncationReason::TornTail { problem } => write!(f, "torn tail: {problem}"),
            TruncationReason::Corruption { problem, next_valid_offset: Some(next) } => {
                write!(f, "CORRUPTION, valid frame follows at offset {next}: {problem}")
            }
            TruncationReason::Corruption { problem, next_valid_offset: None } => {
                write!(f, "CORRUPTION in a closed segment: {problem}")
            }
            TruncationReason::SegmentGap { expected, found } => {
                write!(f, "SEGMENT GAP: expected base LSN {expected}, found {found}")
            }
        }
    }
}

/// One segment as recovery leaves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecoveredSegment {
    /// LSN of its first record (from its name).
    pub(crate) base_lsn: Lsn,
    /// Its length in bytes after any truncation.
    pub(crate) bytes: u64,
    /// Records in it.
    pub(crate) records: u64,
}

/// The log's state after recovery, handed to the writer.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// Every segment kept, oldest first; the last one becomes the active segment.
    pub(crate) segments: Vec<RecoveredSegment>,
    /// What the caller of `open` gets to see.
    pub(crate) report: RecoveryReport,
}

/// The result of walking a segment's frames from offset 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentScan {
    /// Valid frames before the first bad one (or the end).
    pub(crate) records: u64,
    /// Bytes those frames occupy: the offset of the first bad frame, or the file length.
    pub(crate) valid_bytes: u64,
    /// The first bad frame, if any.
    pub(crate) bad: Option<FrameProblem>,
}

/// Walks frames from offset 0 and stops at the first one that does not validate.
pub(crate) fn scan_segment(bytes: &[u8], max_record_bytes: u32) -> SegmentScan {
    let mut offset = 0usize;
    let mut records = 0u64;
    while offset < bytes.len() {
        match frame::check_frame_at(bytes, offset, max_record_bytes) {
            Ok(payload) => {
                assert!(payload.end > offset, "a valid frame always advances (its header is 8 bytes)");
                offset = payload.end;
                records += 1;
            }
            Err(problem) => {
                return SegmentScan { records, valid_bytes: offset as u64, bad: Some(problem) };
            }
        }
    }
    assert_eq!(offset, bytes.len(), "frames tile the segment exactly");
    SegmentScan { records, valid_bytes: offset as u64, bad: None }
}

/// The first offset at or after `from` where a valid frame starts, if any.
///
/// This is what separates a torn tail (nothing valid after the bad frame) from corruption
/// (a hole followed by good data). Every byte offset is tried, because after a bad length
/// we no longer know where frames start.
pub(crate) fn find_next_valid_frame(bytes: &[u8], from: usize, max_record_bytes: u32) -> Option<u64> {
    (from..bytes.len())
        .find(|&offset| frame::check_frame_at(bytes, offset, max_record_bytes).is_ok())
        .map(|offset| offset as u64)
}

/// How many frame headers can be walked from `from` to the end of `bytes`, trusting each
/// length field. Used to say roughly how many records a cut dropped; a partial header at
/// the end counts as one, so the result is at least 1 whenever `from < bytes.len()`.
pub(crate) fn count_frames_walked(bytes: &[u8], from: usize) -> u64 {
    let mut offset = from as u64;
    let end = bytes.len() as u64;
    let mut frames = 0;
    while offset < end {
        frames += 1;
        let Some(header) = bytes.get(offset as usize..offset as usize + HEADER_BYTES) else {
            break;
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        offset = offset.saturating_add(frame::HEADER_BYTES_U64 + u64::from(len));
    }
    frames
}

/// Opens (creating if needed) the log directory, checks every segment, and applies the
/// recovery rules. On success the directory holds exactly the kept segments.
pub(crate) fn recover(dir: &Path, options: &LogOptions) -> Result<Recovered, LogError> {
    ensure_dir(dir)?;
    let bases = segment::list(dir)?;
    if bases.is_empty() {
        // A brand-new log: one empty segment so there is always an active one.
        drop(segment::create(dir, 0)?);
        let report = RecoveryReport { segments: 1, records: 0, first_lsn: 0, next_lsn: 0, truncated: None };
        let segments = vec![RecoveredSegment { base_lsn: 0, bytes: 0, records: 0 }];
        return Ok(Recovered { segments, report });
    }

    let max = options.max_record_bytes;
    let mut kept: Vec<RecoveredSegment> = Vec::with_capacity(bases.len());
    let mut truncated = None;
    for (index, &base_lsn) in bases.iter().enumerate() {
        let path = segment::path(dir, base_lsn);
        let is_last = index + 1 == bases.len();

        if let Some(previous) = kept.last() {
            let expected = segment_end(dir, previous)?;
            if base_lsn != expected {
                if options.recovery == RecoveryMode::Strict {
                    return Err(LogError::SegmentGap { file: path, expected, found: base_lsn });
                }
                let removed = remove_segments(dir, &bases[index..])?;
                let cut = Truncation {
                    file: path,
                    offset: 0,
                    bytes_dropped: removed.bytes,
                    records_dropped: removed.records,
                    reason: TruncationReason::SegmentGap { expected, found: base_lsn },
                    removed_segments: removed.paths,
                };
                tracing::error!(dir = %dir.display(), "record log recovery DROPPED DATA: {cut}");
                truncated = Some(cut);
                break;
            }
        }

        let bytes = fs::read(&path).map_err(|source| LogError::io("read a segment during recovery", &path, source))?;
        let scan = scan_segment(&bytes, max);
        let Some(problem) = scan.bad else {
            kept.push(RecoveredSegment { base_lsn, bytes: scan.valid_bytes, records: scan.records });
            continue;
        };

        // valid_bytes came from walking `bytes`, so it fits a usize.
        let bad_offset = scan.valid_bytes as usize;
        if is_last && options.preallocate && bytes[bad_offset..].iter().all(|&b| b == 0) {
            // The unused, preallocated end of the active segment: not a torn tail.
            // Trimmed here; the log fills it with zeros again when it opens the segment.
            truncate_file(&path, scan.valid_bytes)?;
            kept.push(RecoveredSegment { base_lsn, bytes: scan.valid_bytes, records: scan.records });
            break;
        }
        let next_valid_offset = if is_last { find_next_valid_frame(&bytes, bad_offset + 1, max) } else { None };
        // A frame over the limit whose CRC matches was written whole, under a larger
        // limit; a crash cannot produce it, so cutting it as a torn tail would silently
        // drop a synced record.
        let intact_over_limit = matches!(problem, FrameProblem::LengthOverLimit { .. })
            && frame::check_frame_at(&bytes, bad_offset, u32::MAX).is_ok();
        let torn_tail = is_last && next_valid_offset.is_none() && !intact_over_limit;
        if !torn_tail && options.recovery == RecoveryMode::Strict {
            return Err(LogError::Corrupt { file: path, offset: scan.valid_bytes, problem, next_valid_offset });
        }

        // Remove later segments before cutting this one, newest first, so a crash part way
        // through still leaves a contiguous prefix (the next open finishes the job).
        let removed = remove_segments(dir, &bases[index + 1..])?;
        truncate_file(&path, scan.valid_bytes)?;
        let reason = if torn_tail {
            TruncationReason::TornTail { problem }
        } else {
            TruncationReason::Corruption { problem, next_valid_offset }
        };
        let cut = Truncation {
            file: path,
            offset: scan.valid_bytes,
            bytes_dropped: (bytes.len() - bad_offset) as u64 + removed.bytes,
            records_dropped: count_frames_walked(&bytes, bad_offset) + removed.records,
            reason,
            removed_segments: removed.paths,
        };
        if torn_tail {
            tracing::warn!(dir = %dir.display(), "record log recovery cut a torn tail: {cut}");
        } else {
            tracing::error!(dir = %dir.display(), "record log recovery DROPPED DATA: {cut}");
        }
        kept.push(RecoveredSegment { base_lsn, bytes: scan.valid_bytes, records: scan.records });
        truncated = Some(cut);
        break;
    }

    let (Some(first), Some(last)) = (kept.first(), kept.last()) else {
        unreachable!("the first segment is never removed: the gap check needs a predecessor");
    };
    let first_lsn = first.base_lsn;
    let next_lsn = segment_end(dir, last)?;
    let records = kept.iter().map(|s| s.records).sum::<u64>();
    assert_eq!(next_lsn - first_lsn, records, "kept segments are contiguous");
    let report = RecoveryReport { segments: kept.len(), records, first_lsn, next_lsn, truncated };
    Ok(Recovered { segments: kept, report })
}

/// The LSN one past a segment's last record, refusing base LSNs so large that the log
/// would run out of LSNs.
fn segment_end(dir: &Path, recovered: &RecoveredSegment) -> Result<Lsn, LogError> {
    recovered
        .base_lsn
        .checked_add(recovered.records)
        .filter(|end| *end < Lsn::MAX)
        .ok_or_else(|| LogError::LsnExhausted { dir: dir.to_path_buf() })
}

/// Creates the log directory if it does not exist, and makes its name durable.
fn ensure_dir(dir: &Path) -> Result<(), LogError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|source| LogError::io("create the log directory", dir, source))?;
    let parent = match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    segment::sync_dir(parent)
}

/// Cuts a segment to `len` bytes and makes the cut durable.
fn truncate_file(path: &Path, len: u64) -> Result<(), LogError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|source| LogError::io("open a segment to cut its tail", path, source))?;
    file.set_len(len).map_err(|source| LogError::io("cut a segment's tail", path, source))?;
    file.sync_all().map_err(|source| LogError::io("fsync a segment after cutting its tail", path, source))
}

/// What removing a run of segments dropped.
struct Removed {
    /// The removed files, oldest first, for the report.
    paths: Vec<PathBuf>,
    /// Their total size, added to the truncation's `bytes_dropped`.
    bytes: u64,
    /// Frame headers walked in them, added to the truncation's `records_dropped`.
    records: u64,
}

/// Removes `bases` (newest first) and fsyncs the directory once.
fn remove_segments(dir: &Path, bases: &[Lsn]) -> Result<Removed, LogError> {
    let mut removed = Removed { paths: Vec::with_capacity(bases.len()), bytes: 0, records: 0 };
    if bases.is_empty() {
        return Ok(removed);
    }
    for &base in bases.iter().rev() {
        let path = segment::path(dir, base);
        let bytes =
            fs::read(&path).map_err(|source| LogError::io("read a segment before removing it", &path, source))?;
        removed.bytes += bytes.len() as u64;
        removed.records += count_frames_walked(&bytes, 0);
        segment::remove(dir, base)?;
        removed.paths.push(path);
    }
    removed.paths.reverse();
    segment::sync_dir(dir)?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for payload in payloads {
            out.extend_from_slice(&frame::encode_header(payload));
            out.extend_from_slice(payload);
        }
        out
    }

    #[test]
    fn a_clean_segment_scans_to_its_end() {
        let bytes = frames(&[b"a", b"", b"ccc"]);
        let scan = scan_segment(&bytes, 16);
        assert_eq!(scan, SegmentScan { records: 3, valid_bytes: bytes.len() as u64, bad: None });
    }

    #[test]
    fn a_cut_frame_stops_the_scan_and_nothing_valid_follows() {
        let bytes = frames(&[b"first", b"second"]);
        let cut = &bytes[..bytes.len() - 2];
        let scan = scan_segment(cut, 16);
        assert_eq!(scan.records, 1);
        assert_eq!(scan.valid_bytes, 13);
        assert!(matches!(scan.bad, Some(FrameProblem::PayloadCutShort { .. })));
        assert_eq!(find_next_valid_frame(cut, 14, 16), None);
        assert_eq!(count_frames_walked(cut, 13), 1);
    }

    #[test]
    fn a_hole_followed_by_a_valid_frame_is_found() {
        let mut bytes = frames(&[b"first", b"second", b"third"]);
        bytes[13 + 8] ^= 0xff; // damage "second"'s payload
        let scan = scan_segment(&bytes, 16);
        assert_eq!(scan.valid_bytes, 13);
        assert_eq!(find_next_valid_frame(&bytes, 14, 16), Some(13 + 14));
        assert_eq!(count_frames_walked(&bytes, 13), 2);
    }

    #[test]
    fn walking_counts_a_partial_header_as_one_frame() {
        assert_eq!(count_frames_walked(&[1, 2, 3], 0), 1);
        assert_eq!(count_frames_walked(&[1, 2, 3], 3), 0);
        // A huge length ends the walk instead of overflowing.
        assert_eq!(count_frames_walked(&[0xff; 20], 0), 1);
    }
}
