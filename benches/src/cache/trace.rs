//! Reading a cache trace: one integer key per line, plain text or gzip.
//!
//! The LIRS traces (loop, glimpse, multi1) come as gzip; a trace someone writes by hand
//! is plain text. Which one a file is, is told by its first two bytes (gzip's magic
//! number, `1f 8b`), never by its name, so `trace.txt` holding gzip still reads.
//!
//! Lines are trimmed of ASCII whitespace, so CRLF traces (loop's lines end in `\r\n`)
//! read like LF ones, and a blank line is skipped (glimpse ends in one). Anything else
//! that is not a non-negative integer below 2^64 is an error naming its line, because a
//! trace silently cut short at a bad line would report a hit ratio for a different
//! workload.
//!
//! Left out: the LIRS format's `*` markers and traces with sizes or timestamps per line
//! (the replayer counts entries, not bytes, so it has no use for them).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

/// The first two bytes of every gzip member.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Requests one trace may hold: 100M keys are 800 MB in memory, more than any trace
/// here needs (loop, the largest, has 505,500) and less than the machine has.
pub const MAX_TRACE_REQUESTS: usize = 100_000_000;

/// Bytes one line may hold before the reader gives up on it: a key is at most 20
/// digits, so anything longer is not a trace (a binary file, say) and is refused
/// without reading it all into one string.
const MAX_LINE_BYTES: u64 = 256;

/// How much of a bad line an error message quotes.
const QUOTED_BYTES: usize = 40;

/// Why a trace could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("can't read the trace {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}:{line}: expected one integer key per line (0 to 2^64-1), found {text:?}; fix or remove that line", .path.display())]
    BadLine { path: PathBuf, line: usize, text: String },

    #[error("{}: holds more than {MAX_TRACE_REQUESTS} requests; replay a prefix of it (e.g. `head -n {MAX_TRACE_REQUESTS}`)", .path.display())]
    TooLong { path: PathBuf },

    #[error("{}: holds no keys; a trace has one integer key per line", .path.display())]
    Empty { path: PathBuf },
}

/// Every key of the trace at `path`, in order.
pub fn read(path: &Path) -> Result<Vec<u64>, TraceError> {
    let io = |source| TraceError::Io { path: path.to_path_buf(), source };
    let mut file = BufReader::new(File::open(path).map_err(io)?);
    let is_gzip = file.fill_buf().map_err(io)?.starts_with(&GZIP_MAGIC);
    let keys = if is_gzip { parse(BufReader::new(MultiGzDecoder::new(file)), path)? } else { parse(file, path)? };
    if keys.is_empty() {
        return Err(TraceError::Empty { path: path.to_path_buf() });
    }
    Ok(keys)
}

/// The keys of a trace read from `reader`; `path` only names it in errors.
pub fn parse(mut reader: impl BufRead, path: &Path) -> Result<Vec<u64>, TraceError> {
    let mut keys = Vec::new();
    let mut line = Vec::with_capacity(32);
    for number in 1.. {
        line.clear();
        let read = (&mut reader)
            .take(MAX_LINE_BYTES + 1)
            .read_until(b'\n', &mut line)
            .map_err(|source| TraceError::Io { path: path.to_path_buf(), source })?;
        if read == 0 {
            break;
        }
        let bad = |line: &[u8]| TraceError::BadLine { path: path.to_path_buf(), line: number, text: quote(line) };
        if line.len() as u64 > MAX_LINE_BYTES {
            return Err(bad(&line));
        }
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        let key = std::str::from_utf8(text).ok().and_then(|t| t.parse::<u64>().ok()).ok_or_else(|| bad(text))?;
        if keys.len() == MAX_TRACE_REQUESTS {
            return Err(TraceError::TooLong { path: path.to_path_buf() });
        }
        keys.push(key);
    }
    Ok(keys)
}

/// The start of a bad line, readable in a message whatever bytes it holds.
fn quote(line: &[u8]) -> String {
    let shown = &line[..line.len().min(QUOTED_BYTES)];
    let mut text = String::from_utf8_lossy(shown).into_owned();
    if line.len() > QUOTED_BYTES {
        text.push_str("...");
    }
    text
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::write::GzEncoder;
    use flate2::Compression;

    use super::*;

    fn parse_text(text: &str) -> Result<Vec<u64>, TraceError> {
        parse(text.as_bytes(), Path::new("t"))
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).expect("in memory");
        encoder.finish().expect("in memory")
    }

    #[test]
    fn reads_lf_crlf_blank_lines_and_a_missing_final_newline() {
        assert_eq!(parse_text("1\n2\r\n\n 3 \n18446744073709551615").ok(), Some(vec![1, 2, 3, u64::MAX]));
    }

    #[test]
    fn a_bad_line_is_named_by_its_number() {
        let err = parse_text("1\n2\nthree\n4\n").expect_err("refused");
        assert!(matches!(err, TraceError::BadLine { line: 3, .. }), "{err:?}");
        assert!(err.to_string().starts_with("t:3: expected one integer key"), "{err}");
        for bad in ["-1", "1 2", "1.5", "18446744073709551616", "*", "0x10"] {
            let err = parse_text(&format!("7\n{bad}\n")).expect_err(bad);
            assert!(matches!(&err, TraceError::BadLine { line: 2, text, .. } if text == bad), "{bad}: {err:?}");
        }
    }

    #[test]
    fn binary_garbage_and_endless_lines_are_refused_without_reading_them_whole() {
        let err = parse(&[0xff, 0xfe, b'\n'][..], Path::new("t")).expect_err("not UTF-8");
        assert!(matches!(err, TraceError::BadLine { line: 1, .. }), "{err:?}");
        let long = "9".repeat(10_000);
        let err = parse_text(&long).expect_err("too long");
        match err {
            TraceError::BadLine { line: 1, text, .. } => assert_eq!(text.len(), QUOTED_BYTES + 3),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn plain_and_gzip_files_read_the_same_whatever_their_names() {
        let dir = tempfile::tempdir().expect("temp dir");
        let text = b"5\n6\n5\n";
        let plain = dir.path().join("a.gz");
        std::fs::write(&plain, text).expect("write");
        let packed = dir.path().join("b.txt");
        std::fs::write(&packed, gzip(text)).expect("write");
        assert_eq!(read(&plain).ok(), Some(vec![5, 6, 5]));
        assert_eq!(read(&packed).ok(), Some(vec![5, 6, 5]));
        // Two gzip members back to back are one trace, as `cat a.gz b.gz` makes.
        let joined = dir.path().join("c");
        std::fs::write(&joined, [gzip(b"1\n"), gzip(b"2\n")].concat()).expect("write");
        assert_eq!(read(&joined).ok(), Some(vec![1, 2]));
    }

    #[test]
    fn empty_missing_and_corrupt_files_are_errors() {
        let dir = tempfile::tempdir().expect("temp dir");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n\n").expect("write");
        assert!(matches!(read(&empty), Err(TraceError::Empty { .. })));
        assert!(matches!(read(&dir.path().join("missing")), Err(TraceError::Io { .. })));
        let corrupt = dir.path().join("corrupt");
        let mut bytes = gzip(b"1\n2\n3\n");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        bytes.truncate(bytes.len() - 2);
        std::fs::write(&corrupt, bytes).expect("write");
        assert!(read(&corrupt).is_err(), "a damaged gzip stream is an error, not a shorter trace");
    }

    /// The real traces, when the shared directory is there: the counts the LIRS paper
    /// gives for glimpse and multi1, and loop's.
    #[test]
    fn the_shared_lirs_traces_read_whole() {
        let dir = super::super::default_traces_dir();
        let expected =
            [("gli.trace.gz", 6015, 2529), ("multi1.trace.gz", 15858, 2606), ("loop.trace.gz", 505_500, 1011)];
        for (file, requests, distinct) in expected {
            let path = dir.join(file);
            if !path.is_file() {
                eprintln!("skipped: {} is not there", path.display());
                continue;
            }
            let keys = read(&path).unwrap_or_else(|e| panic!("{e}"));
            let unique: std::collections::HashSet<u64> = keys.iter().copied().collect();
            assert_eq!((keys.len(), unique.len()), (requests, distinct), "{file}");
        }
    }
}
