//! `mini bench log --quick`, the bounded slice of the log benchmark that CI runs: a
//! fresh minilog, redis-server and nats-server started for each record size, each
//! driven by its own client (librdkafka, redis-rs, async-nats), every record produced,
//! acknowledged, read back and checked in order. The speed of a run this small means
//! nothing and is not asserted (a measured run belongs in docs/minilog.md); what this
//! proves is that the harness works end to end on a clean machine and that minilog
//! takes every record librdkafka sends and gives each one back.

use std::path::PathBuf;
use std::process::Command;

use minibench::process::find_on_path;

/// The minilog binary the harness benchmarks: the one Cargo built next to `mini`.
fn minilog_binary() -> PathBuf {
    let mini = PathBuf::from(env!("CARGO_BIN_EXE_mini"));
    let minilog = mini.with_file_name("minilog");
    assert!(
        minilog.is_file(),
        "{} is missing: build it first (cargo build -p minilog; ./test.sh builds the workspace)",
        minilog.display()
    );
    minilog
}

/// The servers the comparison needs besides minilog; the test skips without them.
const SERVERS: [&str; 2] = ["redis-server", "nats-server"];

#[test]
fn quick_run_produces_and_consumes_every_record_on_every_system() {
    for server in SERVERS {
        if find_on_path(server).is_none() {
            eprintln!(
                "skipped: `{server}` is not on PATH; install it (Debian: apt-get install {server}) to run this test"
            );
            return;
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_mini"))
        .args(["bench", "log", "--quick", "--json"])
        .env("MINILOG_BIN", minilog_binary())
        .output()
        .expect("run mini bench log");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mini bench log --quick failed:\n{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json prints JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout)));

    assert_eq!(report["settings"]["rounds"], 1, "--quick runs one round");
    let sizes = report["sizes"].as_array().expect("sizes");
    let record_bytes: Vec<u64> = sizes.iter().filter_map(|s| s["record_bytes"].as_u64()).collect();
    assert_eq!(record_bytes, [100, 1024]);
    for size in sizes {
        let records = size["records"].as_u64().expect("records per run");
        assert!(records > 0, "{size}");
        let systems = size["systems"].as_array().expect("systems");
        let names: Vec<&str> = systems.iter().filter_map(|s| s["system"].as_str()).collect();
        assert_eq!(names, ["minilog", "redis-streams", "jetstream"], "every system ran");
        for system in systems {
            let what = format!("{} with {}-byte records", system["system"], size["record_bytes"]);
            assert!(system["error"].is_null(), "{what} failed: {}", system["error"]);
            let rounds = system["rounds"].as_array().expect("rounds");
            assert_eq!(rounds.len(), 1, "{what}");
            for run in rounds {
                assert_eq!(run["produce"]["records"].as_u64(), Some(records), "{what}: every record acknowledged");
                assert_eq!(run["consume"]["records"].as_u64(), Some(records), "{what}: every record read back");
                assert!(run["produce"]["p99_ms"].as_f64().is_some_and(|p| p > 0.0), "{what}: {run}");
            }
        }
        let others: Vec<&str> =
            size["ratios"].as_array().expect("ratios").iter().filter_map(|r| r["other"].as_str()).collect();
        assert_eq!(others, ["redis-streams", "jetstream"]);
    }

    // The durability of each system is stated, and the bars are checked (not their outcome).
    let promises: Vec<&str> =
        report["durability"].as_array().expect("durability").iter().filter_map(|d| d["promise"].as_str()).collect();
    assert_eq!(promises.len(), 3);
    assert!(promises[0].contains("--flush os") && promises[1].contains("appendfsync no"), "{promises:?}");
    assert!(promises[2].contains("file storage"), "{promises:?}");
    assert!(report["bars"].as_array().is_some_and(|b| b.len() == 10), "{}", report["bars"]);
}
