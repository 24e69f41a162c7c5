//! Running `redis-benchmark` and reading its `--csv` output.
//!
//! The harness runs one redis-benchmark process per test (`-t set`, then `-t get`,
//! ...) rather than one for the whole list, because redis-benchmark 7.0 exits at the
//! first error reply ("Error from server: ERR unknown command ..."), which would throw
//! away every test after the one that failed. Splitting also tells us which test got
//! the error. It changes nothing in what is measured: redis-benchmark connects its
//! clients again for each test anyway, outside the timed part. The tests still run in
//! the usual order against one keyspace, so GET reads what SET wrote and LPOP pops
//! what LPUSH pushed.
//!
//! Output with `--csv` is one header line and one line per test:
//!
//! ```text
//! "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
//! "SET","39682.54","0.825","0.080","0.567","2.743","5.263","9.591"
//! ```

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::Serialize;

use crate::process::{Guarded, Stopped};
use crate::BenchError;

/// One line of redis-benchmark's CSV: a test's throughput and latencies.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The test name as redis-benchmark prints it ("SET", "LPUSH").
    pub test: String,
    /// Requests per second.
    pub rps: f64,
    pub avg_ms: f64,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The columns we read, in redis-benchmark 7.0's order. Checked against the header so
/// that a future redis-benchmark with other columns is an error, not wrong numbers.
const COLUMNS: [&str; 8] = [
    "test",
    "rps",
    "avg_latency_ms",
    "min_latency_ms",
    "p50_latency_ms",
    "p95_latency_ms",
    "p99_latency_ms",
    "max_latency_ms",
];

/// Parses the `--csv` output: the header, then one row per test. Lines that are not
/// CSV (there should be none on stdout) are ignored.
pub fn parse_csv(text: &str) -> Result<Vec<Row>, String> {
    let mut lines = text.lines().map(str::trim).filter(|l| l.starts_with('"'));
    let header = lines.next().ok_or("no CSV header in redis-benchmark's output")?;
    let header = split_csv_line(header)?;
    if header != COLUMNS {
        return Err(format!("unexpected CSV columns {header:?}; expected {COLUMNS:?} (redis-benchmark 7.0)"));
    }
    let mut rows = Vec::new();
    for line in lines {
        let fields = split_csv_line(line)?;
        if fields.len() != COLUMNS.len() {
            return Err(format!("CSV row with {} fields, expected {}: {line}", fields.len(), COLUMNS.len()));
        }
        let number = |i: usize| -> Result<f64, String> {
            fields[i].parse::<f64>().map_err(|_| format!("column {} is not a number: {:?}", COLUMNS[i], fields[i]))
        };
        rows.push(Row {
            test: fields[0].clone(),
            rps: number(1)?,
            avg_ms: number(2)?,
            min_ms: number(3)?,
            p50_ms: number(4)?,
            p95_ms: number(5)?,
            p99_ms: number(6)?,
            max_ms: number(7)?,
        });
    }
    Ok(rows)
}

/// Splits one CSV line into fields: comma separated, optionally double-quoted, with
/// `""` for a quote inside quotes (custom test names can contain commas).
fn split_csv_line(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err(format!("unterminated quote in CSV line: {line}")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                field.push(c);
                chars.next();
            }
        }
        fields.push(field);
        match chars.next() {
            Some(',') => continue,
            None => return Ok(fields),
            Some(c) => return Err(format!("unexpected {c:?} after a quoted CSV field: {line}")),
        }
    }
}

/// What one redis-benchmark invocation measures.
#[derive(Debug, Clone, Copy)]
pub struct Load<'a> {
    /// The `-t` name ("set", "lpush").
    pub test: &'a str,
    pub requests: u64,
    pub pipeline: u32,
    pub clients: u32,
    /// Client threads; 1 runs redis-benchmark without `--threads` (see [`args`]).
    pub threads: u32,
}

/// redis-benchmark's arguments for `load` against 127.0.0.1:`port`. The same for both
/// servers; only the port differs.
///
/// With `threads` above 1 the client runs in its multi-threaded mode (`--threads`),
/// which has two side effects worth knowing when reading its numbers (redis-benchmark
/// 7.0): a test's duration is rounded up to a multiple of 250 ms (its threads notice
/// the end of the test on a 250 ms timer), and its threads busy-poll, using CPU the
/// servers could use on a small machine. With 1 the flag is left out: the classic
/// single-threaded client, whose timing is exact.
pub fn args(port: u16, load: &Load<'_>) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "-t".into(),
        load.test.into(),
        "-c".into(),
        load.clients.to_string(),
    ];
    if load.threads > 1 {
        args.extend(["--threads".into(), load.threads.to_string()]);
    }
    args.extend(["-n".into(), load.requests.to_string(), "-P".into(), load.pipeline.to_string(), "--csv".into()]);
    args
}

/// The longest a run may take before it is considered hung: 30 s of slack plus the
/// time the requests take at a rate far below any healthy server's (2,000 requests/s
/// per pipelined request). redis-benchmark never gives up by itself: it waits forever
/// for a reply that does not come, and spins forever on a refused connection.
pub fn deadline(load: &Load<'_>) -> Duration {
    let floor_rate = 2_000 * u64::from(load.pipeline.max(1));
    Duration::from_secs(30 + load.requests / floor_rate)
}

/// How a run went wrong. Each is recorded as that test's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server answered with an error (redis-benchmark quits on the first one).
    ServerError(String),
    /// No result within the deadline; redis-benchmark was killed.
    TimedOut(Duration),
    /// redis-benchmark failed for another reason (it could not connect, the server
    /// closed the connection, the output made no sense).
    Failed(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::ServerError(msg) => write!(f, "server replied with an error: {msg}"),
            Failure::TimedOut(d) => write!(f, "no result after {} s; redis-benchmark was killed", d.as_secs()),
            Failure::Failed(msg) => write!(f, "{msg}"),
        }
    }
}

/// Runs redis-benchmark once. `Err` is reserved for what stops the whole benchmark
/// (Ctrl-C, a missing binary); a failed test is `Ok(Err(failure))`.
pub fn run(
    redis_benchmark: &Path,
    port: u16,
    load: &Load<'_>,
    scratch: &Path,
) -> Result<Result<Row, Failure>, BenchError> {
    // Output goes to files rather than pipes: a pipe nobody reads while we poll for the
    // exit would block the child once it fills.
    let stdout_path = scratch.join("redis-benchmark.out");
    let stderr_path = scratch.join("redis-benchmark.err");
    let stdout = std::fs::File::create(&stdout_path).map_err(BenchError::io("can't create a scratch file"))?;
    let stderr = std::fs::File::create(&stderr_path).map_err(BenchError::io("can't create a scratch file"))?;
    let mut command = Command::new(redis_benchmark);
    command.args(args(port, load)).stdin(Stdio::null()).stdout(stdout).stderr(stderr);
    let mut child = Guarded::spawn("redis-benchmark", command)?;
    let status = match child.wait_bounded(deadline(load)) {
        Ok(status) => status,
        Err(Stopped::Interrupted) => return Err(BenchError::Interrupted),
        Err(Stopped::TimedOut(d)) => return Ok(Err(Failure::TimedOut(d))),
        Err(Stopped::Lost(e)) => return Ok(Err(Failure::Failed(format!("lost track of redis-benchmark: {e}")))),
    };
    let out = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    Ok(interpret(status.success(), status.code(), &out, &err, load.test))
}

/// Turns redis-benchmark's exit status and output into the test's result.
fn interpret(success: bool, code: Option<i32>, stdout: &str, stderr: &str, test: &str) -> Result<Row, Failure> {
    if let Some(msg) = stderr.lines().find_map(|l| l.strip_prefix("Error from server: ")) {
        return Err(Failure::ServerError(msg.trim().to_string()));
    }
    if !success {
        let code = code.map_or("a signal".to_string(), |c| format!("status {c}"));
        let said = last_lines(stderr, 3);
        return Err(Failure::Failed(format!("redis-benchmark exited with {code}: {said}")));
    }
    let rows = parse_csv(stdout).map_err(Failure::Failed)?;
    match rows.as_slice() {
        [row] => Ok(row.clone()),
        _ => Err(Failure::Failed(format!("expected one CSV row for {test}, found {}", rows.len()))),
    }
}

/// The last `n` non-empty lines of `text`, joined with " / ", for one-line messages.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    if lines.is_empty() {
        "(no output)".to_string()
    } else {
        lines[start..].join(" / ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL_OUTPUT: &str = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\"SET\",\"39682.54\",\"0.825\",\"0.080\",\"0.567\",\"2.743\",\"5.263\",\"9.591\"\n\"GET\",\"39682.54\",\"0.723\",\"0.064\",\"0.399\",\"2.911\",\"5.127\",\"8.599\"\n";

    #[test]
    fn parses_redis_benchmark_7_csv() {
        let rows = parse_csv(REAL_OUTPUT).expect("parses");
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0],
            Row {
                test: "SET".into(),
                rps: 39682.54,
                avg_ms: 0.825,
                min_ms: 0.080,
                p50_ms: 0.567,
                p95_ms: 2.743,
                p99_ms: 5.263,
                max_ms: 9.591
            }
        );
        assert_eq!(rows[1].test, "GET");
        assert_eq!(rows[1].p99_ms, 5.127);
    }

    #[test]
    fn header_only_is_no_rows() {
        let header = REAL_OUTPUT.lines().next().unwrap_or_default();
        assert_eq!(parse_csv(header), Ok(vec![]));
    }

    #[test]
    fn rejects_missing_header_other_columns_and_bad_numbers() {
        assert!(parse_csv("").is_err());
        assert!(parse_csv("\"test\",\"rps\"\n\"SET\",\"1\"\n").is_err());
        let bad = REAL_OUTPUT.replace("39682.54", "fast");
        assert!(parse_csv(&bad).unwrap_err().contains("rps"));
        let short = format!("{}\"SET\",\"1\"\n", REAL_OUTPUT.lines().next().unwrap_or_default());
        assert!(parse_csv(&short).is_err());
    }

    #[test]
    fn csv_fields_may_hold_commas_and_quotes() {
        assert_eq!(
            split_csv_line("\"a,b\",\"say \"\"hi\"\"\",3"),
            Ok(vec!["a,b".into(), "say \"hi\"".into(), "3".into()])
        );
        assert_eq!(split_csv_line("x,"), Ok(vec!["x".into(), "".into()]));
        assert!(split_csv_line("\"open").is_err());
        assert!(split_csv_line("\"a\"b").is_err());
    }

    #[test]
    fn an_error_reply_is_a_server_error_even_with_a_row() {
        let stderr = "Error from server: ERR unknown command 'lpush', with args beginning with: 'mylist' 'xxx' \n";
        let header = REAL_OUTPUT.lines().next().unwrap_or_default();
        let result = interpret(false, Some(1), header, stderr, "lpush");
        assert_eq!(
            result,
            Err(Failure::ServerError("ERR unknown command 'lpush', with args beginning with: 'mylist' 'xxx'".into()))
        );
        let result = interpret(true, Some(0), REAL_OUTPUT, stderr, "set");
        assert!(matches!(result, Err(Failure::ServerError(_))));
    }

    #[test]
    fn a_clean_run_yields_its_one_row_and_warnings_are_not_errors() {
        let one = REAL_OUTPUT.lines().take(2).collect::<Vec<_>>().join("\n");
        let row = interpret(true, Some(0), &one, "WARNING: Could not fetch server CONFIG\n", "set").expect("row");
        assert_eq!(row.test, "SET");
        // Two rows for one test means we misread the output.
        assert!(interpret(true, Some(0), REAL_OUTPUT, "", "set").is_err());
    }

    #[test]
    fn a_crash_reports_its_last_words() {
        let result = interpret(false, Some(1), "", "Error: Connection reset by peer\n", "set");
        match result {
            Err(Failure::Failed(msg)) => {
                assert!(msg.contains("status 1") && msg.contains("Connection reset by peer"), "{msg}")
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn same_arguments_for_both_servers_but_the_port() {
        let load = Load { test: "set", requests: 1000, pipeline: 16, clients: 50, threads: 2 };
        let a = args(7001, &load).join(" ");
        let b = args(7002, &load).join(" ");
        assert_eq!(a.replace("7001", "PORT"), b.replace("7002", "PORT"));
        assert_eq!(a, "-h 127.0.0.1 -p 7001 -t set -c 50 --threads 2 -n 1000 -P 16 --csv");
        let single = args(7001, &Load { threads: 1, ..load }).join(" ");
        assert_eq!(single, "-h 127.0.0.1 -p 7001 -t set -c 50 -n 1000 -P 16 --csv");
    }

    #[test]
    fn deadlines_grow_with_requests_and_shrink_with_pipelining() {
        let p1 = Load { test: "set", requests: 100_000, pipeline: 1, clients: 50, threads: 2 };
        let p16 = Load { pipeline: 16, requests: 1_000_000, ..p1 };
        assert_eq!(deadline(&p1), Duration::from_secs(80));
        assert_eq!(deadline(&p16), Duration::from_secs(61));
    }
}
