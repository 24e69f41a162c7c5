//! Everything that can go wrong with the record log, as one typed enum.
//!
//! Every message names the file (and byte offset, where there is one) and says what to do
//! next, because the person reading it is usually an operator looking at a server that will
//! not start.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::frame::FrameProblem;
use super::Lsn;

/// An error from the record log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// `append` was given a payload over the configured limit. Nothing was appended.
    #[error(
        "a record of {len} bytes is over max_record_bytes ({max_record_bytes}); nothing was appended. \
         Split the payload, or raise LogOptions::max_record_bytes (every reader must use the raised limit too)"
    )]
    RecordTooLarge {
        /// The payload's length.
        len: usize,
        /// The configured limit.
        max_record_bytes: u32,
    },

    /// `LogOptions` holds a value the log cannot work with.
    #[error("invalid record log options: {reason}")]
    InvalidOptions {
        /// What is wrong and what to use instead.
        reason: &'static str,
    },

    /// An operating-system call failed. The log did not change state because of it, except
    /// where [`LogError::Failed`] says otherwise.
    #[error("could not {operation} ({path}): {source}")]
    Io {
        /// What the log was trying to do, phrased to follow "could not".
        operation: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A bad frame where the log cannot be torn: in a segment before the last, or in the
    /// last segment but followed by a frame that validates. Opening in
    /// [`RecoveryMode::Strict`](super::RecoveryMode::Strict) refuses to guess; also returned
    /// by a reader that finds a record damaged after it was written.
    #[error(
        "the record log is corrupt in the middle at {file} offset {offset}: {problem}{}. \
         Restore the log from a backup, or open it with RecoveryMode::TruncateAtCorruption to keep \
         the valid prefix and drop everything from this offset on",
        describe_next_valid(*.next_valid_offset)
    )]
    Corrupt {
        /// The segment file holding the bad frame.
        file: PathBuf,
        /// Byte offset of the bad frame's first header byte within `file`.
        offset: u64,
        /// What is wrong with the frame.
        problem: FrameProblem,
        /// Where a later valid frame was found in the same file, which is what makes this
        /// corruption rather than a torn tail. `None` for a bad frame in an earlier segment,
        /// which is corruption no matter what follows it.
        next_valid_offset: Option<u64>,
    },

    /// Segment base LSNs are not contiguous: records are missing or claimed twice.
    #[error(
        "the record log has a gap: {file} starts at LSN {found} but the segment before it ends at LSN {expected}. \
         A segment was removed or copied in by hand; restore the missing segment from a backup, or open with \
         RecoveryMode::TruncateAtCorruption to keep only the records before LSN {expected}"
    )]
    SegmentGap {
        /// The segment whose base LSN does not follow its predecessor.
        file: PathBuf,
        /// The base LSN it should have.
        expected: Lsn,
        /// The base LSN its name says.
        found: Lsn,
    },

    /// A file is named like a segment (20 digits and `.log`) but the number is out of range.
    #[error(
        "{file} is named like a log segment but its number does not fit a 64-bit LSN; move it out of the log directory"
    )]
    BadSegmentName {
        /// The offending file.
        file: PathBuf,
    },

    /// The segment names put the next LSN at `u64::MAX`: no more records fit. Only a file
    /// renamed by hand can cause this.
    #[error(
        "the record log in {dir} has run out of LSNs (a segment name is near u64::MAX); check the segment file names"
    )]
    LsnExhausted {
        /// The log directory.
        dir: PathBuf,
    },

    /// The caller asked about a record that has not been appended.
    #[error("LSN {lsn} has not been appended yet (the next LSN is {next_lsn}); pass an LSN that append() returned")]
    NotAppended {
        /// The LSN asked for.
        lsn: Lsn,
        /// The LSN the next append will get.
        next_lsn: Lsn,
    },

    /// The caller asked for a record in a segment that `delete_segments_before` removed.
    #[error("LSN {lsn} was deleted; the oldest record still in the log is LSN {first_lsn}. Start reading at {first_lsn} or later")]
    Deleted {
        /// The LSN asked for.
        lsn: Lsn,
        /// The oldest LSN still readable.
        first_lsn: Lsn,
    },

    /// An earlier write or fsync failed, so the log refuses further writes: after a failed
    /// fsync the kernel may have dropped the dirty pages, and retrying would report
    /// durability that is not there.
    #[error(
        "the record log in {dir} stopped after an I/O error and accepts no more writes: {cause}. \
         Fix the cause (disk full? read-only filesystem? failing disk?) and reopen the log; \
         recovery truncates any partly written tail"
    )]
    Failed {
        /// The log directory.
        dir: PathBuf,
        /// The first error, as text (it is shared by every later call).
        cause: Arc<str>,
    },
}

impl LogError {
    /// Shorthand for [`LogError::Io`].
    pub(crate) fn io(operation: &'static str, path: &Path, source: io::Error) -> Self {
        LogError::Io { operation, path: path.to_path_buf(), source }
    }
}

fn describe_next_valid(next_valid_offset: Option<u64>) -> String {
    match next_valid_offset {
        Some(offset) => {
            format!(" (a valid frame follows at offset {offset}, so this is not a torn tail)")
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corruption_message_names_file_offset_and_next_step() {
        let err = LogError::Corrupt {
            file: PathBuf::from("/data/00000000000000000042.log"),
            offset: 1234,
            problem: FrameProblem::ChecksumMismatch { stored: 1, computed: 2 },
            next_valid_offset: Some(1300),
        };
        let text = err.to_string();
        assert!(text.contains("/data/00000000000000000042.log offset 1234"), "{text}");
        assert!(text.contains("offset 1300"), "{text}");
        assert!(text.contains("RecoveryMode::TruncateAtCorruption"), "{text}");
    }
}
