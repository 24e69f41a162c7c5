//! `mini bench kv --quick`, the bounded slice of the side-by-side benchmark that CI
//! runs: both real servers started, every redis-benchmark test run against each, the
//! memory test loaded through `redis-cli --pipe`, the JSON report well formed. The
//! numbers of a run this small mean nothing (see docs/minikv.md for a measured run);
//! what this proves is that the harness works end to end on a clean machine and that
//! minikv passes every test redis-benchmark throws at it, with and without an AOF.

use std::path::PathBuf;
use std::process::Command;

/// The minikv binary the harness benchmarks: the one Cargo built next to `mini`.
fn minikv_binary() -> PathBuf {
    let mini = PathBuf::from(env!("CARGO_BIN_EXE_mini"));
    let minikv = mini.with_file_name("minikv");
    assert!(
        minikv.is_file(),
        "{} is missing: build it first (cargo build -p minikv; ./test.sh builds the workspace)",
        minikv.display()
    );
    minikv
}

#[test]
fn quick_side_by_side_run_completes_with_every_test_passing_on_both_servers() {
    let out = Command::new(env!("CARGO_BIN_EXE_mini"))
        .args(["bench", "kv", "--quick", "--json"])
        .env("MINIKV_BIN", minikv_binary())
        .output()
        .expect("run mini bench kv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mini bench kv --quick failed:\n{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json prints JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout)));

    let settings = &report["settings"];
    assert_eq!(settings["clients"], 50);
    assert_eq!(settings["threads"], 2, "the issue's command line: -c 50 --threads 2");
    let tests: Vec<&str> = settings["tests"].as_array().expect("tests").iter().filter_map(|t| t.as_str()).collect();
    assert_eq!(tests, ["set", "get", "incr", "lpush", "lpop", "sadd", "zadd", "hset"]);

    // Persistence off and AOF everysec, each at -P 1 and -P 16.
    let comparisons = report["comparisons"].as_array().expect("comparisons");
    let combos: Vec<(String, u64)> = comparisons
        .iter()
        .map(|c| (c["durability"].as_str().unwrap_or("?").to_string(), c["pipeline"].as_u64().unwrap_or(0)))
        .collect();
    assert_eq!(
        combos,
        [("off".into(), 1), ("off".into(), 16), ("aof_everysec".into(), 1), ("aof_everysec".into(), 16)]
    );
    for comparison in comparisons {
        for test in comparison["tests"].as_array().expect("tests") {
            for server in ["redis", "minikv"] {
                let side = &test[server];
                assert!(
                    side["error"].is_null() && side["median"]["rps"].as_f64().is_some_and(|r| r > 0.0),
                    "{server} {} at -P {} ({}): {}",
                    test["test"],
                    comparison["pipeline"],
                    comparison["durability"],
                    side
                );
            }
            assert!(test["ops_ratio"].as_f64().is_some(), "{test}");
        }
    }

    let memory = &report["memory"];
    let keys = memory["keys"].as_u64().expect("memory.keys");
    for server in ["redis", "minikv"] {
        let side = &memory[server];
        assert!(side["error"].is_null(), "memory test on {server}: {side}");
        assert_eq!(side["keys_loaded"].as_u64(), Some(keys), "{server} holds every loaded key");
        assert!(side["rss_loaded_bytes"].as_u64().is_some_and(|b| b > 0), "{server}: {side}");
    }
}
