//! `mini queue` as a user runs it: against a real beanstalkd 1.12 for the commands
//! every beanstalk server has (put from arguments and stdin, work with --count, --exec
//! and --wait, stats, dlq and replay of buried jobs), and against miniqueue for its dead
//! letter queue (a tube policy, `work --fail-every` failing a job until it is dead,
//! `dlq` through the protocol and through `--admin`, `replay` by id and by tube).
//!
//! The beanstalkd tests skip, with a message, when beanstalkd is not installed; the
//! miniqueue test uses the miniqueue Cargo built next to `mini` and skips when there is
//! none (`cargo build -p miniqueue`).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use minibench::process::find_on_path;
use minibench::queue::client::{Backoff, Client, Policy};

/// A server process, killed by pid when the test ends, however it ends.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `addr` accepts a connection.
fn wait_listening(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A fresh in-memory beanstalkd on a free loopback port, or `None` (and a message) when
/// it is not installed.
fn beanstalkd() -> Option<Server> {
    let Some(binary) = find_on_path("beanstalkd") else {
        eprintln!("skipped: beanstalkd is not on PATH; install it (Debian: apt-get install beanstalkd)");
        return None;
    };
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let child = Command::new(binary)
        .args(["-l", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start beanstalkd");
    let server = Server { child, addr: format!("127.0.0.1:{port}") };
    wait_listening(&server.addr);
    Some(server)
}

/// miniqueue on a port of its own choosing (`-p 0`), with its admin endpoint, both read
/// from the lines it prints once bound; `None` (and a message) when it is not built.
fn miniqueue() -> Option<(Server, String)> {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_mini")).with_file_name("miniqueue");
    if !binary.is_file() {
        eprintln!("skipped: {} is not built (cargo build -p miniqueue)", binary.display());
        return None;
    }
    let mut child = Command::new(&binary)
        .args(["-l", "127.0.0.1", "-p", "0", "--admin-port", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start miniqueue");
    let stderr = child.stderr.take().expect("piped stderr");
    let (lines, seen) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let mut server = Server { child, addr: String::new() };
    let mut admin = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.addr.is_empty() || admin.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = seen.recv_timeout(left).expect("miniqueue prints its listening and admin lines");
        let after = |marker: &str| line.split(marker).nth(1).and_then(|rest| rest.split_whitespace().next());
        if let Some(addr) = after("listening on ") {
            server.addr = addr.to_string();
        }
        if let Some(addr) = after("admin on ") {
            admin = Some(format!("http://{addr}"));
        }
    }
    // Keep draining its log so that it never blocks on a full pipe.
    std::thread::spawn(move || while seen.recv().is_ok() {});
    wait_listening(&server.addr);
    Some((server, admin.expect("the admin line")))
}

/// Runs `mini queue --addr <addr> <args>`, with `stdin` if given.
fn mini(addr: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mini"))
        .args(["queue", "--addr", addr])
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mini");
    if let Some(text) = stdin {
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("mini exits")
}

/// `mini queue ...` that must succeed; its stdout.
fn ok(addr: &str, args: &[&str]) -> String {
    let out = mini(addr, args, None);
    assert!(out.status.success(), "mini queue {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

#[test]
fn put_work_and_stats_against_beanstalkd() {
    let Some(server) = beanstalkd() else { return };
    let addr = server.addr.as_str();

    assert_eq!(ok(addr, &["put", "--tube", "emails", "a", "b", "c d"]), "inserted 1\ninserted 2\ninserted 3\n");
    let out = mini(addr, &["put", "--tube", "emails", "--pri", "5"], Some("from stdin\nsecond line\n"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "inserted 4\ninserted 5\n");
    ok(addr, &["put", "--tube", "emails", "--delay", "100", "later"]);

    let tube = ok(addr, &["stats", "emails"]);
    assert!(tube.starts_with("name: emails\n"), "{tube}");
    assert!(tube.contains("current-jobs-ready: 5\n") && tube.contains("current-jobs-delayed: 1\n"), "{tube}");
    let server_stats = ok(addr, &["stats"]);
    assert!(server_stats.contains("version: 1.12\n") && server_stats.contains("total-jobs: 6\n"), "{server_stats}");

    // Priority 5 runs before 1024: the stdin jobs first.
    assert_eq!(ok(addr, &["work", "--tube", "emails", "--count", "3"]), "4 from stdin\n5 second line\n1 a\n");

    // --exec gets the body on stdin and the id in its environment; exit 0 deletes.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("job");
    let command = format!("printf '%s:' \"$MINI_QUEUE_JOB_ID\" > {0}; cat >> {0}", file.display());
    assert_eq!(ok(addr, &["work", "--tube", "emails", "--count", "1", "--exec", &command]), "2 b\n");
    assert_eq!(std::fs::read_to_string(&file).expect("the command ran"), "2:b");

    // A failing command fails the job; beanstalkd has no `fail`, so it is released.
    let out = mini(addr, &["work", "--tube", "emails", "--count", "1", "--exec", "exit 3"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("job 3 failed (--exec exited with exit status: 3): released"));
    assert!(ok(addr, &["stats", "emails"]).contains("current-jobs-ready: 1\n"), "job 3 is back");

    // --wait stops once the tube is empty (the delayed job is not ready).
    let out = mini(addr, &["work", "--tube", "emails", "--wait", "0"], None);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "3 c d\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("stopping after 1 job(s)"));
    assert!(ok(addr, &["stats", "emails"]).contains("current-jobs-ready: 0\n"));
}

#[test]
fn dlq_and_replay_of_buried_jobs_against_beanstalkd() {
    let Some(server) = beanstalkd() else { return };
    let addr = server.addr.as_str();
    assert_eq!(ok(addr, &["dlq"]), "no buried or dead jobs\n");
    ok(addr, &["put", "--tube", "t", "one", "two"]);
    runtime().block_on(async {
        let mut client = Client::connect(addr).await.expect("connect");
        client.watch("t").await.expect("watch");
        for _ in 0..2 {
            let job = client.reserve().await.expect("reserve");
            client.bury(job.id, 0).await.expect("bury");
        }
    });

    let dlq = ok(addr, &["dlq", "--tube", "t"]);
    assert!(dlq.contains("tube t: 2 buried\n"), "{dlq}");
    assert!(dlq.contains("  job 1: buried (not dead-lettered)\n    one\n"), "{dlq}");
    assert!(dlq.contains("(1 more: the protocol shows the next buried job only"), "{dlq}");
    assert_eq!(ok(addr, &["dlq"]), dlq, "every tube: only t has buried jobs");

    assert_eq!(ok(addr, &["replay", "2"]), "replayed job 2\n");
    assert_eq!(ok(addr, &["replay", "--tube", "t"]), "replayed 1 job(s) from t\n");
    assert_eq!(ok(addr, &["replay", "--tube", "t"]), "nothing to replay in t\n");
    assert!(ok(addr, &["stats", "t"]).contains("current-jobs-ready: 2\n"));

    let missing = mini(addr, &["replay", "99"], None);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("kick-job 99: NOT_FOUND"), "{missing:?}");
}

#[test]
fn errors_say_what_failed() {
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let out = mini(&format!("127.0.0.1:{port}"), &["stats"], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("mini queue: connect: can't connect to 127.0.0.1:"), "{stderr}");

    let Some(server) = beanstalkd() else { return };
    let out = mini(&server.addr, &["put", "--tube=-bad", "x"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a beanstalk name"), "{out:?}");
    let out = mini(&server.addr, &["stats", "nosuchtube"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("stats-tube nosuchtube: NOT_FOUND"), "{out:?}");
}

#[test]
fn dead_letters_on_miniqueue_through_the_protocol_and_the_admin_endpoint() {
    let Some((server, admin)) = miniqueue() else { return };
    let addr = server.addr.as_str();
    let policy = Policy { max_attempts: 2, backoff: Backoff::None, base_ms: 0, cap_ms: 0 };
    runtime().block_on(async {
        let mut client = Client::connect(addr).await.expect("connect");
        client.tube_policy("t", policy).await.expect("tube-policy");
    });
    ok(addr, &["put", "--tube", "t", "doomed"]);

    // Two attempts, two failures: retried at once, then dead.
    let out = mini(addr, &["work", "--tube", "t", "--count", "2", "--fail-every", "1"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1 doomed\n1 doomed\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("job 1 failed (failed by mini queue work --fail-every 1): retrying in 0 ms"), "{stderr}");
    assert!(stderr.contains("job 1 failed (failed by mini queue work --fail-every 1): out of attempts"), "{stderr}");

    let dlq = ok(addr, &["dlq", "--tube", "t"]);
    assert!(dlq.contains("tube t: 1 buried, 1 dead\n"), "{dlq}");
    assert!(dlq.contains("  job 1: dead ("), "{dlq}");
    assert!(dlq.contains(", attempts 2, failures 2, last error \"failed by mini queue work --fail-every 1\""), "{dlq}");
    assert!(dlq.contains("\n    doomed\n"), "{dlq}");
    let listed = ok(addr, &["dlq", "--admin", &admin]);
    assert!(listed.contains("job 1 in t: dead ("), "{listed}");
    assert!(listed.contains("attempts 2, failures 2, last error \"failed by mini queue work --fail-every 1\""));
    assert_eq!(ok(addr, &["dlq", "--admin", &admin, "--tube", "other"]), "no dead jobs in other\n");

    // Replayed by id through the protocol: ready again, attempts reset.
    assert_eq!(ok(addr, &["replay", "1"]), "replayed job 1\n");
    let stats = runtime().block_on(async {
        let mut client = Client::connect(addr).await.expect("connect");
        client.stats_job(1).await.expect("stats-job")
    });
    assert_eq!(stats.get("state"), Some("ready"));
    assert!(!stats.get_bool("dead"), "{stats:?}");
    assert_eq!(ok(addr, &["work", "--tube", "t", "--count", "1"]), "1 doomed\n");

    // A second dead job, replayed by tube through the admin endpoint.
    ok(addr, &["put", "--tube", "t", "again"]);
    ok(addr, &["work", "--tube", "t", "--count", "2", "--fail-every", "1"]);
    assert_eq!(ok(addr, &["replay", "--admin", &admin, "--tube", "t"]), "replayed 1 dead job(s) from t\n");
    assert_eq!(ok(addr, &["dlq", "--admin", &admin]), "no dead jobs\n");
    let missing = mini(addr, &["replay", "--admin", &admin, "12345"], None);
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("HTTP 404"), "{missing:?}");
}
