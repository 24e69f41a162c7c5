//! `mini bench cache` end to end, on traces small enough for CI: the JSON lines' shape,
//! the ceiling (no cache above Bélády's optimum), the exact LRU against a replay worked
//! by hand, plain and gzip traces reading the same, and a malformed trace refused with
//! its line number and a non-zero exit. The default suite (the LIRS traces) is not run
//! here; its figures are in the benchmark's own report.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The contenders, in the order every JSON object lists them.
const CONTENDERS: [&str; 8] =
    ["minicache", "minicache-wtinylfu", "minicache-s3fifo", "minicache-lru", "moka", "quick_cache", "lru", "optimal"];

fn mini(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mini")).args(args).output().expect("run mini")
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// The JSON lines of a successful run.
fn json_lines(out: &Output) -> Vec<(String, serde_json::Value)> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mini bench cache failed:\n{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    stdout
        .lines()
        .map(|line| {
            let value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            (line.to_string(), value)
        })
        .collect()
}

/// A gzip file holding `data` in one stored (uncompressed) deflate block, written by
/// hand from RFC 1952 and RFC 1951 §3.2.4, so that the test needs no compressor and the
/// bytes are the same everywhere.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    assert!(data.len() <= 0xffff, "one stored block holds at most 65535 bytes");
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let len = data.len() as u16;
    out.push(1); // BFINAL = 1, BTYPE = 00 (stored)
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// CRC-32 (IEEE, reflected), bit by bit: slow and obviously right.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A skewed trace of `n` requests over 200 keys, from a fixed linear congruential
/// generator (key = the square of a uniform draw, so low keys are hot).
fn skewed_trace(n: usize) -> String {
    let mut state: u64 = 12345;
    let mut text = String::new();
    for _ in 0..n {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let u = (state >> 33) as f64 / (1u64 << 31) as f64;
        text.push_str(&format!("{}\n", (u * u * 200.0) as u64));
    }
    text
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write a trace");
    path
}

#[test]
fn json_lines_have_the_issues_shape_and_nothing_beats_the_optimum() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = skewed_trace(3000);
    let plain = write(dir.path(), "skewed.txt", text.as_bytes());
    let packed = write(dir.path(), "skewed.gz", &gzip_stored(text.as_bytes()));
    let out = mini(&[
        "bench",
        "cache",
        "--trace",
        path_arg(&plain),
        "--trace",
        path_arg(&packed),
        "--capacity",
        "10,50",
        "--repeats",
        "1",
        "--json",
    ]);
    let lines = json_lines(&out);
    let runs: Vec<(&str, u64)> =
        lines.iter().map(|(_, v)| (v["trace"].as_str().unwrap_or("?"), v["capacity"].as_u64().unwrap_or(0))).collect();
    let (p, g) = (path_arg(&plain), path_arg(&packed));
    assert_eq!(runs, [(p, 10), (p, 50), (g, 10), (g, 50)], "one object per trace and capacity, in order");
    for (line, v) in &lines {
        // The fields in the issue's order, and the contenders in theirs.
        let fields: Vec<&String> = v.as_object().expect("an object").keys().collect();
        assert_eq!(fields.len(), 4, "{line}");
        let at = |needle: &str| line.find(&format!("\"{needle}\":")).unwrap_or_else(|| panic!("no {needle}: {line}"));
        assert!(at("trace") < at("capacity") && at("capacity") < at("requests") && at("requests") < at("hit_ratio"));
        let positions: Vec<usize> = CONTENDERS.iter().map(|c| at(c)).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "contenders out of order: {line}");
        assert_eq!(v["requests"], 3000, "{line}");
        let ratios = v["hit_ratio"].as_object().expect("hit_ratio");
        assert_eq!(ratios.len(), CONTENDERS.len(), "{line}");
        let ratio = |c: &str| ratios[c].as_f64().unwrap_or_else(|| panic!("{c} is not a number: {line}"));
        let optimal = ratio("optimal");
        for c in CONTENDERS {
            let r = ratio(c);
            assert!((0.0..=100.0).contains(&r), "{c} = {r}: {line}");
            // Two decimals, as the issue asks.
            assert!((r * 100.0 - (r * 100.0).round()).abs() < 1e-6, "{c} = {r}: {line}");
            assert!(r <= optimal, "{c} {r} above optimal {optimal}: {line}");
        }
        assert!(optimal > ratio("lru"), "a skewed trace leaves room over LRU: {line}");
    }
    // Plain and gzip are the same trace: the deterministic rows agree exactly.
    for (plain, packed) in [(&lines[0].1, &lines[2].1), (&lines[1].1, &lines[3].1)] {
        for c in ["lru", "optimal", "moka", "quick_cache"] {
            assert_eq!(plain["hit_ratio"][c], packed["hit_ratio"][c], "{c}");
        }
    }
    // The bars go to stderr with --json.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("#### Bars:") && stderr.contains("(the ceiling)"), "{stderr}");
}

/// Capacity 2, trace 1 2 1 3 2 1 4 1. Exact LRU: 1 and 2 miss, 1 hits, 3 evicts 2, 2
/// evicts 1, 1 evicts 3, 4 evicts 2, 1 hits: 2 hits of 8, 25%. With 3 entries only 4's
/// arrival evicts (3), so 1, 2, 1 and 1 hit: 50%. The optimum at 2 entries serves 3 and 4
/// without caching them (neither comes back): 1, 2, 1 and 1 hit, 50%.
#[test]
fn exact_lru_and_optimal_match_a_replay_worked_by_hand() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = write(dir.path(), "tiny", b"1\n2\n1\n3\n2\n1\n4\n1\n");
    let lines = json_lines(&mini(&["bench", "cache", "--trace", path_arg(&trace), "--capacity", "2,3", "--json"]));
    assert_eq!(lines.len(), 2);
    let (at2, at3) = (&lines[0].1["hit_ratio"], &lines[1].1["hit_ratio"]);
    assert_eq!(at2["lru"], 25.0, "{}", lines[0].0);
    assert_eq!(at3["lru"], 50.0, "{}", lines[1].0);
    assert_eq!(at2["optimal"], 50.0, "{}", lines[0].0);
    assert_eq!(at3["optimal"], 50.0, "4 misses are compulsory: {}", lines[1].0);
    assert_eq!(lines[0].1["requests"], 8);
}

#[test]
fn markdown_goes_to_stdout_and_to_out() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = write(dir.path(), "t", skewed_trace(500).as_bytes());
    let md_file = dir.path().join("report.md");
    let out = mini(&[
        "bench",
        "cache",
        "--trace",
        path_arg(&trace),
        "--capacity",
        "20",
        "--quick",
        "--out",
        path_arg(&md_file),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let written = std::fs::read_to_string(&md_file).expect("--out writes the markdown");
    assert_eq!(stdout.trim_end(), written.trim_end());
    assert!(written.contains("| capacity | minicache | minicache-wtinylfu |"), "{written}");
    assert!(written.contains("Spread over the 3 replays"), "--quick replays three times: {written}");
    assert!(written.contains("#### Bars:"), "{written}");
}

#[test]
fn a_malformed_trace_is_a_clear_error_with_its_line_number() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = write(dir.path(), "bad.trace", b"1\n2\n\n3x\n4\n");
    let out = mini(&["bench", "cache", "--trace", path_arg(&bad), "--capacity", "2", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing is reported from a trace that did not read");
    let expected = format!("{}:4: expected one integer key per line", bad.display());
    assert!(stderr.contains(&expected), "names the file and line 4 (blank lines count): {stderr}");
    assert!(stderr.contains("\"3x\""), "quotes the line: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // Bad gzip is an error too, not a shorter trace.
    let mut broken = gzip_stored(b"1\n2\n3\n");
    broken.truncate(broken.len() - 6);
    let truncated = write(dir.path(), "cut.gz", &broken);
    let out = mini(&["bench", "cache", "--trace", path_arg(&truncated), "--capacity", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("can't read the trace") && !stderr.contains("panicked"), "{stderr}");

    // A missing suite directory names the flag that fixes it.
    let out = mini(&["bench", "cache", "--traces-dir", path_arg(&dir.path().join("nowhere"))]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("point --traces-dir at the directory"), "{stderr}");
}
