//! `mini bench queue --quick`, the bounded slice of the queue benchmark that CI runs:
//! a fresh beanstalkd (and miniqueue, when Cargo has built it next to `mini`) for every
//! setting, in memory and with `-b DIR -f 0`, at 1, 16 and 64 clients, each client
//! doing put → reserve → delete with every job checked, and the server's own count
//! checked after the run. The speed of a run this small means nothing and is not
//! asserted; what this proves is that the harness works end to end and that every
//! server takes every job and gives each one back exactly once.

use std::path::PathBuf;
use std::process::Command;

use minibench::process::find_on_path;

/// The miniqueue Cargo built next to `mini`, if any.
fn miniqueue_binary() -> Option<PathBuf> {
    let miniqueue = PathBuf::from(env!("CARGO_BIN_EXE_mini")).with_file_name("miniqueue");
    miniqueue.is_file().then_some(miniqueue)
}

#[test]
fn quick_run_puts_reserves_and_deletes_every_job_on_every_server() {
    if find_on_path("beanstalkd").is_none() {
        eprintln!("skipped: `beanstalkd` is not on PATH; install it (Debian: apt-get install beanstalkd)");
        return;
    }
    let miniqueue = miniqueue_binary();
    let mut command = Command::new(env!("CARGO_BIN_EXE_mini"));
    command.args(["bench", "queue", "--quick", "--jobs", "256", "--seconds", "0.3", "--json"]);
    let systems: &[&str] = match &miniqueue {
        Some(binary) => {
            command.arg("--miniqueue-bin").arg(binary);
            &["beanstalkd", "miniqueue"]
        }
        None => {
            eprintln!("miniqueue is not built (cargo build -p miniqueue): running beanstalkd only");
            command.args(["--systems", "beanstalkd"]);
            &["beanstalkd"]
        }
    };
    let out = command.output().expect("run mini bench queue");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "mini bench queue --quick failed:\n{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json prints JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout)));

    assert_eq!(report["settings"]["rounds"], 1, "--quick runs one round");
    assert_eq!(report["settings"]["job_bytes"], 100);
    assert_eq!(report["settings"]["jobs_per_run"], 256);
    let comparisons = report["comparisons"].as_array().expect("comparisons");
    let settings: Vec<(String, u64)> = comparisons
        .iter()
        .map(|c| (c["durability"].as_str().unwrap_or("?").to_string(), c["clients"].as_u64().unwrap_or(0)))
        .collect();
    let expected: Vec<(String, u64)> =
        ["memory", "durable"].iter().flat_map(|d| [1, 16, 64].map(|c| (d.to_string(), c))).collect();
    assert_eq!(settings, expected);
    for c in comparisons {
        let names: Vec<&str> =
            c["systems"].as_array().expect("systems").iter().filter_map(|s| s["system"].as_str()).collect();
        assert_eq!(names, systems);
        for side in c["systems"].as_array().expect("systems") {
            let what = format!("{} at {} with {} clients", side["system"], c["durability"], c["clients"]);
            assert!(side["error"].is_null(), "{what} failed: {}", side["error"]);
            let run = &side["rounds"][0]["figures"];
            let jobs = run["jobs"].as_u64().expect("jobs");
            assert!(jobs > 0, "{what}: {run}");
            if run["stopped_by"] == "count" {
                assert_eq!(jobs, 256, "{what}: the count bound is every job");
            }
            assert!(run["p99_ms"].as_f64().is_some_and(|p| p > 0.0), "{what}: {run}");
            assert!(side["median"]["jobs_per_s"].as_f64().is_some_and(|r| r > 0.0), "{what}");
        }
        assert_eq!(c["jobs_ratio"].is_number(), miniqueue.is_some(), "{c}");
    }
    // The durability of each setting is stated, and the four bars are checked (not their outcome).
    let promises: Vec<&str> =
        report["durability"].as_array().expect("durability").iter().filter_map(|d| d["promise"].as_str()).collect();
    assert!(promises.len() == 2 && promises[1].contains("-b DIR -f 0"), "{promises:?}");
    assert_eq!(report["bars"].as_array().map(Vec::len), Some(4), "{}", report["bars"]);
}
