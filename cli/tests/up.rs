//! `mini up` as a user runs it: the real binary, talked to with redis-cli (a client we
//! did not write), stopped with Ctrl-C (SIGINT) and SIGTERM, started again on the same
//! data.
//!
//! What it checks, in order:
//! - with no `--dir`, data goes under `./.mini/` of the working directory;
//! - the endpoints and the line to try are printed, and the line works as printed;
//! - the admin endpoint answers `/healthz` and `/readyz`;
//! - Ctrl-C shuts down gracefully: exit status 0, "stopped" printed;
//! - a second `mini up` (this time with `--dir` and no admin endpoint, stopped by
//!   SIGTERM) serves the data the first one was given;
//! - a port already taken is an error that names it, with exit status 1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long `mini up` may take to print its endpoints (a debug build on a loaded CI
/// machine is slow; an empty data directory loads in milliseconds).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a graceful shutdown may take: draining idle clients and syncing an AOF of
/// a few bytes.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// The last line `mini up` prints once everything is up.
const READY_LINE: &str = "Ctrl-C stops everything";

/// A free TCP port on 127.0.0.1: bind port 0, note what the kernel chose, release it.
/// Another process may take it before `mini up` binds it; that shows as a start-up
/// failure with the reason in its output.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// A running `mini up`, killed on drop so that a failing test leaves nothing behind.
struct MiniUp {
    child: Child,
    /// Every stdout line so far, sent by a reader thread.
    lines: mpsc::Receiver<String>,
    stdout: Vec<String>,
}

impl MiniUp {
    fn start(cwd: &Path, args: &[&str]) -> MiniUp {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mini"))
            .arg("up")
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn mini up");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut up = MiniUp { child, lines, stdout: Vec::new() };
        up.wait_for_line(READY_LINE, START_TIMEOUT);
        up
    }

    /// Collects stdout until a line containing `needle`; panics with what was printed
    /// if it does not come in time.
    fn wait_for_line(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.stdout.iter().any(|l| l.contains(needle)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.stdout.push(line),
                Err(_) => {
                    panic!("mini up did not print {needle:?} within {timeout:?}; it printed:\n{}", self.printed())
                }
            }
        }
    }

    fn printed(&self) -> String {
        self.stdout.join("\n")
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }

    /// Sends `signal` and waits for the process to exit; returns its status.
    fn stop_with(&mut self, signal: libc::c_int) -> ExitStatus {
        self.signal(signal);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // The reader thread ends with the pipe; take what it has left.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(1)) {
                    self.stdout.push(line);
                }
                return status;
            }
            assert!(Instant::now() < deadline, "mini up did not exit within {STOP_TIMEOUT:?} of signal {signal}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for MiniUp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the `mini` binary with `args`; returns its stdout, failing the test on an error.
fn mini(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mini")).args(args).stdin(Stdio::null()).output().expect("run mini");
    assert!(out.status.success(), "mini {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs kcat (Debian's, librdkafka 2.0.2) with `args`; returns its trimmed stdout.
fn kcat(args: &[&str]) -> String {
    let out = Command::new("kcat").args(args).stdin(Stdio::null()).output().expect("run kcat (apt-get install kcat)");
    assert!(out.status.success(), "kcat {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Sends one beanstalk command to 127.0.0.1:`port` and returns the reply, read until the
/// server has been quiet for a moment (the replies here are one short line or one job).
fn beanstalk(port: u16, command: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to miniqueue");
    stream.write_all(command).expect("send");
    stream.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
    let mut reply = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&reply).into_owned()
}

/// Runs redis-cli with `args` against 127.0.0.1:`port`; returns its trimmed stdout.
fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli (Debian: apt-get install redis-tools; ./test.sh installs it)");
    assert!(out.status.success(), "redis-cli {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `GET path` over plain HTTP/1.1; returns the status line.
fn http_status(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the admin port");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    response.lines().next().unwrap_or_default().to_string()
}

#[test]
fn mini_up_serves_redis_clients_and_stops_gracefully_on_ctrl_c_and_sigterm() {
    let cwd = tempfile::tempdir().expect("temp dir");
    let (port, admin, kafka, kafka_admin) = (free_port(), free_port(), free_port(), free_port());
    let (port_arg, admin_arg) = (port.to_string(), admin.to_string());
    let (kafka_arg, kafka_admin_arg) = (kafka.to_string(), kafka_admin.to_string());
    let (queue, queue_admin) = (free_port(), free_port());
    let (queue_arg, queue_admin_arg) = (queue.to_string(), queue_admin.to_string());

    // First run: default data directory, stopped by Ctrl-C.
    let mut up = MiniUp::start(
        cwd.path(),
        &[
            "--port",
            &port_arg,
            "--admin-port",
            &admin_arg,
            "--kafka-port",
            &kafka_arg,
            "--kafka-admin-port",
            &kafka_admin_arg,
            "--queue-port",
            &queue_arg,
            "--queue-admin-port",
            &queue_admin_arg,
        ],
    );
    let printed = up.printed();
    assert!(printed.contains(&format!("redis://127.0.0.1:{port}")), "{printed}");
    assert!(printed.contains(&format!("http://127.0.0.1:{admin}/metrics")), "{printed}");
    let try_line = format!("try: redis-cli -p {port} set hello world");
    assert!(printed.contains(&try_line), "{printed}");
    assert!(printed.contains("appendfsync everysec"), "the durability promise is printed:\n{printed}");
    assert!(cwd.path().join(".mini/minikv").is_dir(), "data goes to ./.mini/ by default");

    // The line to try, as printed.
    assert_eq!(redis_cli(port, &["set", "hello", "world"]), "OK");
    assert_eq!(redis_cli(port, &["get", "hello"]), "world");
    assert_eq!(http_status(admin, "/healthz"), "HTTP/1.1 200 OK");
    assert_eq!(http_status(admin, "/readyz"), "HTTP/1.1 200 OK");

    // minilog: the printed line to try, run as printed (mini log, then kcat).
    let bootstrap = format!("127.0.0.1:{kafka}");
    let try_line = format!("try: mini log -b {bootstrap} produce demo hello && kcat -b {bootstrap} -C -t demo -e");
    assert!(printed.contains(&try_line), "{printed}");
    assert!(printed.contains("--flush os"), "the broker's durability promise is printed:\n{printed}");
    let produced = mini(&["log", "-b", &bootstrap, "produce", "demo", "hello"]);
    assert!(produced.contains("partition 0 offset 0"), "{produced}");
    assert_eq!(kcat(&["-b", &bootstrap, "-C", "-t", "demo", "-e", "-q"]), "hello");
    assert_eq!(http_status(kafka_admin, "/readyz"), "HTTP/1.1 200 OK");
    assert!(cwd.path().join(".mini/minilog/demo-0/00000000000000000000.log").is_file(), "minilog data under ./.mini/");

    // miniqueue: a beanstalk put, acknowledged before Ctrl-C, is there after the restart.
    assert!(printed.contains(&format!("beanstalk://127.0.0.1:{queue}")), "{printed}");
    assert!(printed.contains("-f 50"), "the queue's durability promise is printed:\n{printed}");
    assert_eq!(beanstalk(queue, b"put 0 0 60 5\r\nhello\r\n"), "INSERTED 1\r\n");
    assert_eq!(http_status(queue_admin, "/healthz"), "HTTP/1.1 200 OK");
    assert!(cwd.path().join(".mini/miniqueue").is_dir(), "miniqueue's log under ./.mini/");

    let status = up.stop_with(libc::SIGINT);
    assert!(status.success(), "Ctrl-C is a clean exit, got {status}; it printed:\n{}", up.printed());
    assert!(up.stdout.iter().any(|l| l == "stopped"), "{}", up.printed());

    // Second run on the same data, named with --dir, stopped by SIGTERM.
    let dir = cwd.path().join(".mini");
    let dir_arg = dir.to_str().expect("utf-8 temp path");
    let mut up = MiniUp::start(
        Path::new("/"),
        &[
            "--port",
            &port_arg,
            "--admin-port",
            "0",
            "--kafka-port",
            &kafka_arg,
            "--kafka-admin-port",
            "0",
            "--queue-port",
            &queue_arg,
            "--queue-admin-port",
            "0",
            "--dir",
            dir_arg,
        ],
    );
    assert_eq!(redis_cli(port, &["get", "hello"]), "world", "the second mini up serves the first one's data");
    let consumed = mini(&["log", "-b", &bootstrap, "consume", "demo", "--from-beginning", "--exit"]);
    assert_eq!(consumed.trim(), "0 0  hello", "the broker kept its log across the restart");
    assert_eq!(
        beanstalk(queue, b"peek-ready\r\n"),
        "FOUND 1 5\r\nhello\r\n",
        "the queue kept its job across the restart"
    );
    assert!(!up.printed().contains("/metrics"), "--admin-port 0 turns the admin endpoint off:\n{}", up.printed());
    let status = up.stop_with(libc::SIGTERM);
    assert!(status.success(), "SIGTERM is a clean exit, got {status}; it printed:\n{}", up.printed());
}

#[test]
fn a_taken_port_is_a_clear_error_not_a_hang() {
    let cwd = tempfile::tempdir().expect("temp dir");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("local_addr").port();
    let out = Command::new(env!("CARGO_BIN_EXE_mini"))
        .args(["up", "--port", &port.to_string(), "--admin-port", "0", "--kafka-port", &free_port().to_string()])
        .current_dir(cwd.path())
        .stdin(Stdio::null())
        .output()
        .expect("run mini up");
    assert_eq!(out.status.code(), Some(1), "a start-up failure exits 1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("minikv did not start"), "{stderr}");
    assert!(stderr.contains(&port.to_string()), "the error names the port: {stderr}");
}
