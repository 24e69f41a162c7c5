//! Reading records back: an iterator from any LSN over everything written to the OS.
//!
//! A reader finds the segment holding its start LSN from the in-memory catalog, then walks
//! frame headers from the start of that segment to skip to the LSN. When a segment runs
//! out, the next record is by construction the first of the next segment, whose name is
//! that record's LSN, so no directory listing is needed.
//!
//! Every record's CRC is checked again on the way out: the writer checked the frame when it
//! built it, the reader checks it after the disk had its chance to damage it.
//!
//! A reader is live: it stops (returns `None`) when it reaches the written watermark, and a
//! later `next()` picks up records written since. Records that are appended but still only
//! buffered are never returned; call `write_out` first if you need them.
//!
//! Left out: an index. Starting a reader in the middle of a segment walks headers from the
//! segment's start (reading 8 bytes and seeking per skipped record). A broker would keep a
//! sparse offset index per segment, as Kafka does.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::error::LogError;
use super::frame::{self, FrameProblem, HEADER_BYTES};
use super::segment;
use super::writer::LogCore;
use super::Lsn;

/// Buffer size for reading a segment: large enough that small records cost one syscall
/// per many records, small enough to keep many readers cheap.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// An iterator over `(lsn, payload)` from a starting LSN, over records written to the OS.
///
/// Yields `Err` once (and then `None` forever) if a record fails its CRC or a segment it
/// needs was deleted.
pub struct LogReader {
    /// The log's shared state: the written watermark bounds the iteration and the catalog
    /// says where records live.
    core: Arc<LogCore>,
    /// The LSN `next()` returns next.
    next_lsn: Lsn,
    /// The segment being read, opened lazily so that a reader made before its records are
    /// written does not trip over a missing file.
    segment: Option<SegmentCursor>,
    /// Set after an error so the iterator stops instead of repeating it.
    stopped: bool,
}

/// An open segment file and the byte offset of the next frame in it.
struct SegmentCursor {
    /// LSN of the segment's first record.
    base_lsn: Lsn,
    /// Where the segment lives, for error messages.
    path: PathBuf,
    /// Buffered reads over the file.
    file: BufReader<File>,
    /// Byte offset of the next frame.
    offset: u64,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("dir", &self.core.dir)
            .field("next_lsn", &self.next_lsn)
            .field("segment", &self.segment.as_ref().map(|cursor| (&cursor.path, cursor.offset)))
            .finish()
    }
}

impl LogReader {
    /// A reader whose first record is `from`. Errors if `from` was deleted or is beyond the
    /// next LSN to be appended (`from == next_lsn` is allowed: it waits for the next record).
    pub(crate) fn new(core: Arc<LogCore>, from: Lsn) -> Result<LogReader, LogError> {
        let next_lsn = core.next_lsn.load(Ordering::Acquire);
        if from > next_lsn {
            return Err(LogError::NotAppended { lsn: from, next_lsn });
        }
        let first_lsn = core.first_lsn();
        if from < first_lsn {
            return Err(LogError::Deleted { lsn: from, first_lsn });
        }
        Ok(LogReader { core, next_lsn: from, segment: None, stopped: false })
    }

    /// The LSN the next record will have.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    fn read_next(&mut self) -> Result<Vec<u8>, LogError> {
        let max_record_bytes = self.core.options.max_record_bytes;
        let cursor = match self.segment.take() {
            Some(cursor) => cursor,
            None => self.open_segment_containing(self.next_lsn)?,
        };
        let cursor = self.segment.insert(cursor);
        if let Some(payload) = cursor.read_record(max_record_bytes)? {
            return Ok(payload);
        }
        // A clean end of file at a frame boundary: the record is the first of the next
        // segment. If this segment *started* at our LSN, the record is missing instead.
        if cursor.base_lsn == self.next_lsn {
            return Err(cursor.corrupt(FrameProblem::HeaderCutShort { available: 0 }));
        }
        let cursor = self.segment.insert(self.open_segment(self.next_lsn)?);
        match cursor.read_record(max_record_bytes)? {
            Some(payload) => Ok(payload),
            None => Err(cursor.corrupt(FrameProblem::HeaderCutShort { available: 0 })),
        }
    }

    /// Opens the segment that holds `lsn` and skips to it.
    fn open_segment_containing(&self, lsn: Lsn) -> Result<SegmentCursor, LogError> {
        let base_lsn = {
            let catalog = self.core.catalog.lock();
            let holding = catalog.partition_point(|entry| entry.base_lsn <= lsn);
            match holding.checked_sub(1).and_then(|index| catalog.get(index)) {
                Some(entry) => entry.base_lsn,
                None => {
                    let first_lsn = catalog.first().map_or(0, |entry| entry.base_lsn);
                    return Err(LogError::Deleted { lsn, first_lsn });
                }
            }
        };
        let mut cursor = self.open_segment(base_lsn)?;
        for _ in base_lsn..lsn {
            cursor.skip_record(self.core.options.max_record_bytes)?;
        }
        Ok(cursor)
    }

    /// Opens the segment whose first record is `base_lsn`, at its start.
    fn open_segment(&self, base_lsn: Lsn) -> Result<SegmentCursor, LogError> {
        let path = segment::path(&self.core.dir, base_lsn);
        match File::open(&path) {
            Ok(file) => {
                Ok(SegmentCursor { base_lsn, path, file: BufReader::with_capacity(READ_BUFFER_BYTES, file), offset: 0 })
            }
            Err(source) if source.kind() == io::ErrorKind::NotFound => {
                Err(LogError::Deleted { lsn: self.next_lsn, first_lsn: self.core.first_lsn() })
            }
            Err(source) => Err(LogError::io("open a segment for reading", &path, source)),
        }
    }
}

impl Iterator for LogReader {
    type Item = Result<(Lsn, Vec<u8>), LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.stopped {
            return None;
        }
        // Only records wholly written to the OS are visible; the Acquire pairs with the
        // writer's Release after write(2) returned, so the bytes are in the page cache.
        if self.next_lsn >= self.core.written_lsn.load(Ordering::Acquire) {
            return None;
        }
        match self.read_next() {
            Ok(payload) => {
                let lsn = self.next_lsn;
                self.next_lsn += 1;
                Some(Ok((lsn, payload)))
            }
            Err(error) => {
                self.stopped = true;
                Some(Err(error))
            }
        }
    }
}

impl SegmentCursor {
    fn corrupt(&self, problem: FrameProblem) -> LogError {
        LogError::Corrupt { file: self.path.clone(), offset: self.offset, problem, next_valid_offset: None }
    }

    /// Reads the next header, or `None` at a clean end of file.
    fn read_header(&mut self, max_record_bytes: u32) -> Result<Option<frame::Header>, LogError> {
        let mut header = [0u8; HEADER_BYTES];
        let got = read_up_to(&mut self.file, &mut header)
            .map_err(|source| LogError::io("read a segment", &self.path, source))?;
        if got == 0 {
            return Ok(None);
        }
        if got < HEADER_BYTES {
            return Err(self.corrupt(FrameProblem::HeaderCutShort { available: got as u64 }));
        }
        frame::decode_header(header, max_record_bytes).map(Some).map_err(|problem| self.corrupt(problem))
    }

    /// Reads and CRC-checks the next record, or `None` at a clean end of file.
    fn read_record(&mut self, max_record_bytes: u32) -> Result<Option<Vec<u8>>, LogError> {
        let Some(header) = self.read_header(max_record_bytes)? else {
            return Ok(None);
        };
        // `len` is at most max_record_bytes, so this allocation is bounded.
        let mut payload = vec![0u8; header.len as usize];
        let got = read_up_to(&mut self.file, &mut payload)
            .map_err(|source| LogError::io("read a segment", &self.path, source))?;
        if got < payload.len() {
            return Err(self.corrupt(FrameProblem::PayloadCutShort { len: header.len, available: got as u64 }));
        }
        frame::verify_payload(header, &payload).map_err(|problem| self.corrupt(problem))?;
        self.offset += header.frame_bytes();
        Ok(Some(payload))
    }

    /// Steps over one record without reading its payload.
    fn skip_record(&mut self, max_record_bytes: u32) -> Result<(), LogError> {
        let Some(header) = self.read_header(max_record_bytes)? else {
            return Err(self.corrupt(FrameProblem::HeaderCutShort { available: 0 }));
        };
        self.file
            .seek_relative(i64::from(header.len))
            .map_err(|source| LogError::io("seek in a segment", &self.path, source))?;
        self.offset += header.frame_bytes();
        Ok(())
    }
}

/// Fills `buf` as far as the file allows; returns how many bytes it got (less than
/// `buf.len()` only at end of file).
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}
