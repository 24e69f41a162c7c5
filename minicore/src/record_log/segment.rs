//! Segment files: their names, how to find them in the directory, and the fsyncs that make
//! creating and removing them durable.
//!
//! A segment is named by the LSN of its first record, zero-padded to 20 digits (enough for
//! any `u64`), so `ls` lists segments in log order and a reader that runs off the end of one
//! segment knows the exact name of the next: `{next_lsn:020}.log`.
//!
//! Left out: segment headers, preallocation (`fallocate`) and memory mapping. A real broker
//! preallocates to avoid a metadata update per append; we keep files plain so a torn tail is
//! simply "the file ends early".

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use super::error::LogError;
use super::Lsn;

/// Digits in a segment file name: `u64::MAX` has 20.
const NAME_DIGITS: usize = 20;

/// The extension every segment file carries.
const EXTENSION: &str = ".log";

/// The file name of the segment whose first record is `base_lsn`.
pub(crate) fn file_name(base_lsn: Lsn) -> String {
    format!("{base_lsn:0width$}{EXTENSION}", width = NAME_DIGITS)
}

/// The path of the segment whose first record is `base_lsn`.
pub(crate) fn path(dir: &Path, base_lsn: Lsn) -> PathBuf {
    dir.join(file_name(base_lsn))
}

/// What a directory entry's name says about it.
#[derive(Debug, PartialEq, Eq)]
enum NameKind {
    /// A well-formed segment name and the base LSN it encodes.
    Segment(Lsn),
    /// Twenty digits and `.log`, but the number does not fit a `u64`: ours, but damaged.
    Unparseable,
    /// Anything else: not ours, ignored.
    Foreign,
}

fn classify_name(name: &str) -> NameKind {
    let Some(digits) = name.strip_suffix(EXTENSION) else {
        return NameKind::Foreign;
    };
    if digits.len() != NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return NameKind::Foreign;
    }
    match digits.parse::<u64>() {
        Ok(base) => NameKind::Segment(base),
        Err(_) => NameKind::Unparseable,
    }
}

/// Lists the segments in `dir`, sorted by base LSN.
///
/// Files that do not look like segments are ignored (with a warning), so an editor's swap
/// file or a `README` next to the log does not stop it from opening. A file that looks like
/// a segment but whose number overflows a `u64` is an error: it is ours and it is damaged.
pub(crate) fn list(dir: &Path) -> Result<Vec<Lsn>, LogError> {
    let entries = fs::read_dir(dir).map_err(|source| LogError::io("list the log directory", dir, source))?;
    let mut bases = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| LogError::io("list the log directory", dir, source))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            tracing::warn!(dir = %dir.display(), name = ?name, "ignoring a non-UTF-8 file name in the log directory");
            continue;
        };
        match classify_name(name) {
            NameKind::Segment(base) => bases.push(base),
            NameKind::Unparseable => {
                return Err(LogError::BadSegmentName { file: entry.path() });
            }
            NameKind::Foreign => {
                tracing::warn!(dir = %dir.display(), name, "ignoring a file that is not a log segment");
            }
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Creates a new, empty segment and makes its directory entry durable.
///
/// `create_new` refuses to reuse an existing name: a leftover file with our name would mean
/// two segments claim the same LSNs, which recovery should have caught.
pub(crate) fn create(dir: &Path, base_lsn: Lsn) -> Result<File, LogError> {
    let path = path(dir, base_lsn);
    // Not O_APPEND: records are written at the offset the writer tracks, so that a
    // preallocated segment is overwritten in place (see `LogOptions::preallocate`).
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|source| LogError::io("create a segment", &path, source))?;
    sync_dir(dir)?;
    Ok(file)
}

/// Opens an existing segment for appending.
pub(crate) fn open_for_append(dir: &Path, base_lsn: Lsn) -> Result<File, LogError> {
    let path = path(dir, base_lsn);
    OpenOptions::new().write(true).open(&path).map_err(|source| LogError::io("open the active segment", &path, source))
}

/// Fills `file` with zeros from byte `from` up to `to` and fsyncs it, so that later
/// writes below `to` overwrite allocated blocks without changing the file's size.
pub(crate) fn preallocate(dir: &Path, base_lsn: Lsn, file: &File, from: u64, to: u64) -> Result<(), LogError> {
    use std::os::unix::fs::FileExt;
    const CHUNK: usize = 1 << 20;
    let zeros = vec![0u8; CHUNK];
    let mut offset = from;
    while offset < to {
        let n = ((to - offset) as usize).min(CHUNK);
        file.write_all_at(&zeros[..n], offset)
            .map_err(|source| LogError::io("preallocate a segment", &path(dir, base_lsn), source))?;
        offset += n as u64;
    }
    file.sync_all().map_err(|source| LogError::io("fsync a preallocated segment", &path(dir, base_lsn), source))
}

/// Fsyncs the directory itself, so that files created or removed in it stay created or
/// removed after a power loss. Without it, a new segment's data can be durable while its
/// name is not.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    let handle = File::open(dir).map_err(|source| LogError::io("open the log directory for fsync", dir, source))?;
    handle.sync_all().map_err(|source| LogError::io("fsync the log directory", dir, source))
}

/// Removes a segment file; the caller fsyncs the directory once after a batch of removals.
pub(crate) fn remove(dir: &Path, base_lsn: Lsn) -> Result<(), LogError> {
    let path = path(dir, base_lsn);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        // Already gone is the state we wanted.
        Err(source) if source.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LogError::io("remove a segment", &path, source)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_twenty_digits_and_sort_in_log_order() {
        assert_eq!(file_name(42), "00000000000000000042.log");
        assert_eq!(file_name(u64::MAX), "18446744073709551615.log");
        assert!(file_name(9) < file_name(10));
    }

    #[test]
    fn names_are_classified() {
        assert_eq!(classify_name("00000000000000000042.log"), NameKind::Segment(42));
        assert_eq!(classify_name("99999999999999999999.log"), NameKind::Unparseable);
        assert_eq!(classify_name("42.log"), NameKind::Foreign);
        assert_eq!(classify_name("0000000000000000004x.log"), NameKind::Foreign);
        assert_eq!(classify_name("00000000000000000042.log.swp"), NameKind::Foreign);
        assert_eq!(classify_name("README"), NameKind::Foreign);
    }
}
