//! `mini demo` as a user runs it: the real binary, its catalogue, its exit codes, and one
//! scenario end to end, against the in-process minikv and, where `redis-server` is
//! installed, against a real Redis given with `--kv`.
//!
//! The scenarios' invariants are asserted by the exercises crate's own tests; this file
//! checks what the CLI adds: the catalogue's format, a passing run exiting 0, and
//! mistakes (an unknown name, a backend the exercise does not use, an endpoint nothing
//! listens on) exiting 2 with a line that says what to do.

use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long one quick demo may take in a debug build on a loaded machine.
const DEMO_TIMEOUT: Duration = Duration::from_secs(120);

/// The exercises of the first wave, as the issue names them (plus `payment`, which the
/// issue puts inside idempotency-keys and which runs as its own demo).
const FIRST_WAVE: &[&str] = &[
    "token-bucket",
    "sliding-window",
    "distributed-limiter",
    "idempotency-keys",
    "payment",
    "cache-aside",
    "retry-dlq",
    "snowflake-ids",
    "circuit-breaker",
];

fn mini(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mini"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mini starts");
    wait_bounded(&mut child, args);
    child.wait_with_output().expect("mini's output")
}

/// Waits for `child` to exit, killing it (by its pid) if it overruns [`DEMO_TIMEOUT`].
fn wait_bounded(child: &mut Child, args: &[&str]) {
    let deadline = Instant::now() + DEMO_TIMEOUT;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("mini {args:?} did not finish within {DEMO_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_list_has_one_line_per_exercise_with_a_description() {
    let out = mini(&["demo", "--list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let names: Vec<&str> = stdout.lines().map(|line| line.split_whitespace().next().unwrap_or("")).collect();
    for expected in FIRST_WAVE {
        assert!(names.contains(expected), "{expected} missing from:\n{stdout}");
    }
    for line in stdout.lines() {
        let mut words = line.split_whitespace();
        words.next();
        assert!(words.count() >= 3, "a line without a description: {line:?}");
    }
}

#[test]
fn a_quick_run_prints_its_report_and_exits_zero() {
    let out = mini(&["demo", "token-bucket", "--quick", "--seed", "7"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "exit {:?}\n{stdout}\n{}", out.status, text(&out.stderr));
    assert!(stdout.starts_with("== token-bucket:"), "{stdout}");
    assert!(stdout.contains("(minikv, in-process)"), "{stdout}");
    assert!(stdout.contains("seed") && stdout.contains(" 7\n"), "{stdout}");
    assert!(stdout.lines().last().unwrap_or("").starts_with("verdict: PASS"), "{stdout}");
}

#[test]
fn a_real_redis_given_with_kv_is_used() {
    let Some(redis) = RealRedis::start() else {
        eprintln!("redis-server is not installed: the run against a real Redis was skipped");
        return;
    };
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let out = mini(&["demo", "token-bucket", "--quick", "--kv", &url]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "exit {:?}\n{stdout}\n{}", out.status, text(&out.stderr));
    assert!(stdout.contains(&url) && !stdout.contains("in-process"), "{stdout}");
}

#[test]
fn mistakes_exit_two_with_a_reason() {
    let out = mini(&["demo", "no-such-exercise"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("token-bucket"), "the error lists the exercises: {}", text(&out.stderr));

    let out = mini(&["demo", "token-bucket", "--queue", "beanstalk://127.0.0.1:11300"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("does not use a queue"), "{}", text(&out.stderr));

    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let out = mini(&["demo", "token-bucket", "--kv", &format!("redis://127.0.0.1:{port}")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("can't reach"), "{}", text(&out.stderr));
}

/// A real `redis-server`, in memory, killed (by its pid) on drop.
struct RealRedis {
    child: Child,
    port: u16,
}

impl RealRedis {
    fn start() -> Option<RealRedis> {
        let port = TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let redis = RealRedis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start listening on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(redis)
    }
}

impl Drop for RealRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
