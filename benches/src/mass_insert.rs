//! Loading a million keys the way Redis's documentation recommends: a file of RESP
//! commands piped through `redis-cli --pipe`, which streams them without waiting for
//! each reply. Used for the memory comparison, where how the keys got in must not
//! matter, only what they cost once they are in.
//!
//! The keys are `key:0` ... `key:<n-1>`, each with a 100-byte value, so the test says
//! what a typical small-value cache costs per key. Values differ from key to key (a
//! repeated value could be shared or compressed by a clever server; neither server
//! does, but the benchmark should not depend on it).

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{Guarded, Stopped};
use crate::{interrupt, BenchError};

/// The value stored under key `n`: `value_bytes` printable bytes derived from `n`.
pub fn value_for(n: u64, value_bytes: usize) -> Vec<u8> {
    // A cheap xorshift stream seeded by n: different per key, the same on every run.
    let mut state = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..value_bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            b'a' + (state % 26) as u8
        })
        .collect()
}

/// Writes `SET key:<n> <value>` for n in `0..keys` as RESP multibulk commands.
/// Returns the number of bytes written.
pub fn write_set_commands(out: impl Write, keys: u64, value_bytes: usize) -> Result<u64, BenchError> {
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let mut written = 0u64;
    let mut buf = Vec::with_capacity(64 + value_bytes);
    for n in 0..keys {
        if n % 65_536 == 0 {
            interrupt::check()?;
        }
        buf.clear();
        let key = format!("key:{n}");
        let value = value_for(n, value_bytes);
        buf.extend_from_slice(b"*3\r\n$3\r\nSET\r\n");
        for arg in [key.as_bytes(), &value] {
            buf.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            buf.extend_from_slice(arg);
            buf.extend_from_slice(b"\r\n");
        }
        out.write_all(&buf).map_err(BenchError::io("can't write the mass-insert file"))?;
        written += buf.len() as u64;
    }
    out.flush().map_err(BenchError::io("can't write the mass-insert file"))?;
    Ok(written)
}

/// What `redis-cli --pipe` reports at the end: `errors: 0, replies: 1000000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipeSummary {
    pub errors: u64,
    pub replies: u64,
}

/// Finds redis-cli's closing summary line.
pub fn parse_pipe_summary(output: &str) -> Option<PipeSummary> {
    let line = output.lines().rev().find(|l| l.trim_start().starts_with("errors:"))?;
    let mut errors = None;
    let mut replies = None;
    for part in line.split(',') {
        let (name, value) = part.split_once(':')?;
        let value: u64 = value.trim().parse().ok()?;
        match name.trim() {
            "errors" => errors = Some(value),
            "replies" => replies = Some(value),
            _ => {}
        }
    }
    Some(PipeSummary { errors: errors?, replies: replies? })
}

/// Pipes `file` into the server on `port` with `redis-cli --pipe`. `Ok(Err(..))` is a
/// failed load, recorded in the report; `Err` stops the benchmark (Ctrl-C).
pub fn pipe(
    redis_cli: &Path,
    port: u16,
    file: &Path,
    timeout: Duration,
    scratch: &Path,
) -> Result<Result<PipeSummary, String>, BenchError> {
    let input = std::fs::File::open(file).map_err(BenchError::io("can't open the mass-insert file"))?;
    let out_path = scratch.join("redis-cli-pipe.out");
    let out = std::fs::File::create(&out_path).map_err(BenchError::io("can't create a scratch file"))?;
    let err = out.try_clone().map_err(BenchError::io("can't create a scratch file"))?;
    let mut command = Command::new(redis_cli);
    command
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--pipe", "--pipe-timeout", "60"])
        .stdin(Stdio::from(input))
        .stdout(out)
        .stderr(err);
    let mut child = Guarded::spawn("redis-cli", command)?;
    let status = match child.wait_bounded(timeout) {
        Ok(status) => status,
        Err(Stopped::Interrupted) => return Err(BenchError::Interrupted),
        Err(Stopped::TimedOut(d)) => {
            return Ok(Err(format!("redis-cli --pipe did not finish in {} s and was killed", d.as_secs())))
        }
        Err(Stopped::Lost(e)) => return Ok(Err(format!("lost track of redis-cli: {e}"))),
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    match parse_pipe_summary(&output) {
        Some(summary) if summary.errors == 0 => Ok(Ok(summary)),
        Some(summary) => Ok(Err(format!(
            "{} of {} commands failed: {}",
            summary.errors,
            summary.replies,
            crate::redis_benchmark::last_lines(&output, 3)
        ))),
        None => Ok(Err(format!(
            "redis-cli --pipe exited with {status}: {}",
            crate::redis_benchmark::last_lines(&output, 3)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_resp_set_commands() {
        let mut out = Vec::new();
        let n = write_set_commands(&mut out, 2, 5).expect("writes");
        assert_eq!(n as usize, out.len());
        let v0 = String::from_utf8(value_for(0, 5)).unwrap_or_default();
        let v1 = String::from_utf8(value_for(1, 5)).unwrap_or_default();
        let expected =
            format!("*3\r\n$3\r\nSET\r\n$5\r\nkey:0\r\n$5\r\n{v0}\r\n*3\r\n$3\r\nSET\r\n$5\r\nkey:1\r\n$5\r\n{v1}\r\n");
        assert_eq!(String::from_utf8(out).unwrap_or_default(), expected);
    }

    #[test]
    fn values_are_printable_sized_and_differ_by_key() {
        let a = value_for(7, 100);
        assert_eq!(a.len(), 100);
        assert!(a.iter().all(u8::is_ascii_lowercase));
        assert_eq!(a, value_for(7, 100));
        assert_ne!(a, value_for(8, 100));
    }

    #[test]
    fn parses_the_pipe_summary() {
        let out = "All data transferred. Waiting for the last reply...\nLast reply received from server.\nerrors: 0, replies: 1000000\n";
        assert_eq!(parse_pipe_summary(out), Some(PipeSummary { errors: 0, replies: 1_000_000 }));
        assert_eq!(
            parse_pipe_summary("ERR something\nerrors: 3, replies: 10"),
            Some(PipeSummary { errors: 3, replies: 10 })
        );
        assert_eq!(parse_pipe_summary("Could not connect"), None);
    }
}
