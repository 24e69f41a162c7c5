//! Test support: run the real `minikv` binary as a child process and talk to it.
//!
//! The integration tests check promises that only hold for the whole process: what
//! survives `kill -9`, what a client sees when the server reaches a limit, what the
//! admin endpoint exports. So they start the binary Cargo built for them
//! (`CARGO_BIN_EXE_minikv`), not the library in-process, and they kill it for real.
//!
//! - [`Server`] owns one child process: a free port, a data directory chosen by the
//!   test (so a restart finds the AOF), its stderr captured for assertions on the log,
//!   `kill -9` / SIGTERM by pid, and a kill on drop so a failing test leaves nothing
//!   behind.
//! - [`Raw`] is a plain TCP client with a strict RESP2/RESP3 parser ([`parse`]), for
//!   the tests that send bytes no client library would (protocol errors, fuzz) and
//!   check that every reply is well formed.
//! - `MINIKV_TEST_BINARY=<path>` runs the tests against another build of the server
//!   (a release build, say) instead of the one Cargo built for the test.
//! - [`seed`] gives each randomised test a seed it prints, so a failure replays with
//!   `MINIKV_TEST_SEED=<seed>`; [`env_count`] lets a bounded test run as a soak
//!   (`MINIKV_CRASH_CYCLES`, `MINIKV_FUZZ_CONNECTIONS`, `MINIKV_FUZZ_SECONDS`).
//!
//! Left out: a built-in redis-server mode; the subject here is minikv's own promises
//! (the differential tests compare replies). The expectations of the protocol-level
//! tests were checked by pointing `MINIKV_TEST_BINARY` at a small wrapper that drops
//! `--admin-port` and execs `redis-server --save '' --logfile /dev/stderr`.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a server may take to start answering (an AOF of a few MB replays in well
/// under this even in a debug build; the rest is slack for a loaded CI machine).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// What minikv logs (at the default log level) once it serves clients.
const READY_LINE: &str = "ready to accept connections";
/// How often start-up is retried when the port we picked was taken in the meantime.
const PORT_RETRIES: usize = 8;

/// A free TCP port on 127.0.0.1: bind port 0, note what the kernel chose, release it.
/// Another process may grab it before the server binds; [`Server::try_start`] retries.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// Why a server did not start.
#[derive(Debug)]
pub struct StartError {
    /// The exit status, if the process exited (it is killed on a start-up timeout).
    pub status: Option<ExitStatus>,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

/// A running `minikv` child process.
pub struct Server {
    child: Option<Child>,
    /// The RESP port.
    pub port: u16,
    /// The admin HTTP port, when the test asked for one.
    pub admin_port: Option<u16>,
    /// The data directory (`--dir`); owned by the test so it outlives restarts.
    pub dir: PathBuf,
    /// Extra flags, kept for [`Server::restart`].
    args: Vec<String>,
    with_admin: bool,
    /// stderr of the current process, filled by a reader thread.
    log: Arc<Mutex<Vec<u8>>>,
    log_reader: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts minikv on a free port with `--dir dir` and `args`; panics with its stderr
    /// if it does not come up.
    pub fn start(dir: &Path, args: &[&str]) -> Server {
        Self::try_start(dir, args, false)
            .unwrap_or_else(|e| panic!("minikv did not start (status {:?}); stderr:\n{}", e.status, e.stderr))
    }

    /// Like [`Server::start`], with the admin HTTP endpoint on a free port.
    pub fn start_with_admin(dir: &Path, args: &[&str]) -> Server {
        Self::try_start(dir, args, true)
            .unwrap_or_else(|e| panic!("minikv did not start (status {:?}); stderr:\n{}", e.status, e.stderr))
    }

    /// Starts minikv and waits until it logs that it is ready and answers a PING (any
    /// reply counts: with `requirepass` it is -NOAUTH). Tests must not raise the log
    /// level above `notice`, or the ready line is not logged. Retries with a new port if the one picked was
    /// taken by someone else in the meantime.
    pub fn try_start(dir: &Path, args: &[&str], with_admin: bool) -> Result<Server, StartError> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let mut last = None;
        for _ in 0..PORT_RETRIES {
            match Self::spawn_once(dir, &args, with_admin) {
                Ok(server) => return Ok(server),
                Err(e) if e.stderr.contains("can't bind") => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    fn spawn_once(dir: &Path, args: &[String], with_admin: bool) -> Result<Server, StartError> {
        let port = free_port();
        let admin_port = with_admin.then(free_port);
        let binary = std::env::var_os("MINIKV_TEST_BINARY")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_minikv")));
        let mut cmd = Command::new(binary);
        cmd.arg("--port")
            .arg(port.to_string())
            .arg("--admin-port")
            .arg(admin_port.unwrap_or(0).to_string())
            .arg("--dir")
            .arg(dir)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // If the test process dies without running destructors (a harness timeout
        // kills it), take the server with it instead of leaving it on its port.
        // PR_SET_PDEATHSIG fires when the *thread* that spawned the child exits, so
        // a Server must not outlive the thread that started it; every test here
        // starts and drops its servers on the test's own thread.
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn the minikv binary");
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut stderr = child.stderr.take().expect("piped stderr");
        let sink = log.clone();
        let log_reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match stderr.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => sink.lock().unwrap().extend_from_slice(&chunk[..n]),
                }
            }
        });
        let mut server = Server {
            child: Some(child),
            port,
            admin_port,
            dir: dir.to_path_buf(),
            args: args.to_vec(),
            with_admin,
            log,
            log_reader: Some(log_reader),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = server.try_wait() {
                let stderr = server.finish_log();
                server.child = None;
                return Err(StartError { status: Some(status), stderr });
            }
            // The log line comes after the listener is bound and the AOF loaded, so
            // the PING that follows cannot be answered by some other process that
            // happened to hold the port we picked.
            if server.stderr().to_ascii_lowercase().contains(READY_LINE) && server.answers_ping() {
                return Ok(server);
            }
            if Instant::now() > deadline {
                server.kill9();
                return Err(StartError {
                    status: None,
                    stderr: format!("no answer within {START_TIMEOUT:?}\n{}", server.stderr()),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut line = String::new();
        let ok = BufReader::new(&s).read_line(&mut line).is_ok() && (line.starts_with('+') || line.starts_with('-'));
        // Redis rejects clients over maxclients with an error too; only a reply to
        // PING itself means the server is serving.
        ok && !line.contains("max number of clients")
    }

    /// Starts a new process on the same directory and flags (on a new port), after
    /// the previous one was killed or stopped.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart() needs the previous process to be stopped first");
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let next = Self::try_start(&self.dir, &args, self.with_admin)
            .unwrap_or_else(|e| panic!("minikv did not restart (status {:?}); stderr:\n{}", e.status, e.stderr));
        // Move the new process in; the old (stopped) state is dropped harmlessly.
        *self = next;
    }

    /// Like [`Server::restart`] but returns the failure instead of panicking (for
    /// tests that expect the server to refuse to start).
    pub fn try_restart_with(&self, extra: &[&str]) -> Result<Server, StartError> {
        assert!(self.child.is_none(), "stop the previous process first");
        let mut args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        Self::try_start(&self.dir, &args, self.with_admin)
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// `kill -9`: the process gets no chance to flush or sync anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL on Unix
            let _ = child.wait();
        }
        self.finish_log();
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit; returns its
    /// exit status. Panics (after a kill -9) if it does not exit in time.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("server is running");
        let pid = child.id() as libc::pid_t;
        // SAFETY: plain kill(2) on our own child, which we have not reaped yet, so the
        // pid cannot have been reused.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM) failed");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.finish_log();
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let log = self.finish_log();
                panic!("minikv did not exit within {timeout:?} after SIGTERM; stderr:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the process is still running (false once it exited or was killed).
    pub fn is_running(&mut self) -> bool {
        self.try_wait().is_none() && self.child.is_some()
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().expect("try_wait"))
    }

    /// Waits for the stderr reader (the process has exited) and returns the log.
    fn finish_log(&mut self) -> String {
        if self.child.is_none() || self.try_wait().is_some() {
            if let Some(h) = self.log_reader.take() {
                let _ = h.join();
            }
        }
        self.stderr()
    }

    /// What the server has written to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn url_resp3(&self) -> String {
        format!("redis://127.0.0.1:{}/?protocol=resp3", self.port)
    }

    /// A `redis` crate connection (RESP2).
    pub fn client(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).expect("client");
        client.get_connection_with_timeout(Duration::from_secs(10)).expect("connect")
    }

    /// A `redis` crate connection in RESP3.
    pub fn client_resp3(&self) -> redis::Connection {
        let client = redis::Client::open(self.url_resp3()).expect("client");
        client.get_connection_with_timeout(Duration::from_secs(10)).expect("connect")
    }

    /// A raw TCP client.
    pub fn raw(&self) -> Raw {
        Raw::connect(self.port)
    }

    /// The AOF directory.
    pub fn aof_dir(&self) -> PathBuf {
        self.dir.join("appendonlydir")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One field of `INFO <section>` (via any `redis` connection).
pub fn info_field(con: &mut redis::Connection, section: &str, field: &str) -> Option<String> {
    let text: String = redis::cmd("INFO").arg(section).query(con).expect("INFO works");
    info_lookup(&text, field)
}

/// Finds `field:value` in INFO text.
pub fn info_lookup(text: &str, field: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.trim_end().split_once(':')?;
        (k == field).then(|| v.to_string())
    })
}

/// A numeric INFO field; panics with the field name if it is missing.
pub fn info_u64(con: &mut redis::Connection, section: &str, field: &str) -> u64 {
    let v = info_field(con, section, field).unwrap_or_else(|| panic!("INFO {section} has no field {field}"));
    v.parse().unwrap_or_else(|_| panic!("INFO {field} is not a number: {v}"))
}

/// Polls `check` every `every` until it returns true or `timeout` passes; returns
/// whether it succeeded.
pub fn wait_until(timeout: Duration, every: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// The seed for a randomised test: `MINIKV_TEST_SEED` if set, else fresh. Printed so
/// that a failure can be replayed exactly.
pub fn seed(test: &str) -> u64 {
    let seed = match std::env::var("MINIKV_TEST_SEED") {
        Ok(s) => s.parse().expect("MINIKV_TEST_SEED must be a u64"),
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            nanos ^ (std::process::id() as u64).rotate_left(32)
        }
    };
    eprintln!("{test}: seed = {seed} (replay with MINIKV_TEST_SEED={seed})");
    seed
}

/// A count from the environment, for running a bounded test as a longer soak (e.g.
/// `MINIKV_CRASH_CYCLES=100`); `default` when unset.
pub fn env_count(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}")),
        Err(_) => default,
    }
}

/// Encodes a command as a RESP array of bulk strings.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A RESP2 or RESP3 value, as a strict parser sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    /// `$-1` (RESP2 null bulk).
    NilBulk,
    Array(Vec<Resp>),
    /// `*-1` (RESP2 null array).
    NilArray,
    /// `_` (RESP3 null).
    Null,
    Map(Vec<(Resp, Resp)>),
    Set(Vec<Resp>),
    Push(Vec<Resp>),
    Double(String),
    Bool(bool),
    BigNumber(String),
    Verbatim(String, Vec<u8>),
}

impl Resp {
    pub fn is_error(&self) -> bool {
        matches!(self, Resp::Error(_))
    }
}

/// Deepest nesting we accept in a reply (Redis's own replies nest a few levels).
const MAX_DEPTH: usize = 64;

/// Parses one value from the front of `buf`. `Ok(None)`: incomplete; `Err`: not valid
/// RESP (the message says what and where).
pub fn parse(buf: &[u8]) -> Result<Option<(Resp, usize)>, String> {
    parse_at(buf, 0, 0)
}

fn line_at(buf: &[u8], start: usize) -> Result<Option<(&[u8], usize)>, String> {
    let Some(rel) = buf[start..].iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    let end = start + rel;
    if end == start || buf[end - 1] != b'\r' {
        return Err(format!("line at {start} ends in a bare \\n"));
    }
    let line = &buf[start..end - 1];
    if line.contains(&b'\r') {
        return Err(format!("line at {start} holds a \\r"));
    }
    Ok(Some((line, end + 1)))
}

fn int_of(line: &[u8], at: usize) -> Result<i64, String> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|_| !(line.starts_with(b"+") || (line.len() > 1 && line.starts_with(b"0"))))
        .ok_or_else(|| format!("bad integer {:?} at {at}", String::from_utf8_lossy(line)))
}

fn parse_at(buf: &[u8], at: usize, depth: usize) -> Result<Option<(Resp, usize)>, String> {
    if depth > MAX_DEPTH {
        return Err("nesting too deep".into());
    }
    if at >= buf.len() {
        return Ok(None);
    }
    let kind = buf[at];
    let Some((line, next)) = line_at(buf, at + 1)? else {
        return Ok(None);
    };
    let text = || String::from_utf8_lossy(line).into_owned();
    let value = match kind {
        b'+' => Resp::Simple(text()),
        b'-' => Resp::Error(text()),
        b':' => Resp::Int(int_of(line, at)?),
        b'$' | b'=' => {
            let len = int_of(line, at)?;
            if len == -1 && kind == b'$' {
                return Ok(Some((Resp::NilBulk, next)));
            }
            if len < 0 {
                return Err(format!("negative length {len} at {at}"));
            }
            let len = len as usize;
            if buf.len() < next + len + 2 {
                return Ok(None);
            }
            if &buf[next + len..next + len + 2] != b"\r\n" {
                return Err(format!("bulk at {at} is not followed by CRLF"));
            }
            let data = buf[next..next + len].to_vec();
            let end = next + len + 2;
            if kind == b'=' {
                if data.len() < 4 || data[3] != b':' {
                    return Err(format!("verbatim string at {at} has no format"));
                }
                let format = String::from_utf8_lossy(&data[..3]).into_owned();
                return Ok(Some((Resp::Verbatim(format, data[4..].to_vec()), end)));
            }
            return Ok(Some((Resp::Bulk(data), end)));
        }
        b'*' | b'~' | b'>' | b'%' => {
            let n = int_of(line, at)?;
            if n == -1 && kind == b'*' {
                return Ok(Some((Resp::NilArray, next)));
            }
            if n < 0 {
                return Err(format!("negative count {n} at {at}"));
            }
            let items = if kind == b'%' { 2 * n } else { n } as usize;
            let mut pos = next;
            let mut values = Vec::with_capacity(items.min(1024));
            for _ in 0..items {
                match parse_at(buf, pos, depth + 1)? {
                    None => return Ok(None),
                    Some((v, end)) => {
                        values.push(v);
                        pos = end;
                    }
                }
            }
            let value = match kind {
                b'*' => Resp::Array(values),
                b'~' => Resp::Set(values),
                b'>' => Resp::Push(values),
                _ => {
                    let mut pairs = Vec::with_capacity(values.len() / 2);
                    let mut it = values.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        pairs.push((k, v));
                    }
                    Resp::Map(pairs)
                }
            };
            return Ok(Some((value, pos)));
        }
        b'_' => {
            if !line.is_empty() {
                return Err(format!("null at {at} carries data"));
            }
            Resp::Null
        }
        b'#' => match line {
            b"t" => Resp::Bool(true),
            b"f" => Resp::Bool(false),
            _ => return Err(format!("bad boolean at {at}")),
        },
        b',' => {
            let s = text();
            let ok = matches!(s.as_str(), "inf" | "-inf" | "nan") || s.parse::<f64>().is_ok();
            if !ok {
                return Err(format!("bad double {s:?} at {at}"));
            }
            Resp::Double(s)
        }
        b'(' => {
            let s = text();
            let digits = s.strip_prefix('-').unwrap_or(&s);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("bad big number {s:?} at {at}"));
            }
            Resp::BigNumber(s)
        }
        other => return Err(format!("unknown type byte {other:#04x} at {at}")),
    };
    Ok(Some((value, next)))
}

/// Parses a whole byte stream as a sequence of complete values. Returns them and
/// whether bytes were left over (an incomplete value at the end).
pub fn parse_all(mut buf: &[u8]) -> Result<(Vec<Resp>, usize), String> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        match parse(buf)? {
            Some((v, used)) => {
                out.push(v);
                buf = &buf[used..];
            }
            None => return Ok((out, buf.len())),
        }
    }
    Ok((out, 0))
}

/// How a read of everything the server sends ended.
#[derive(Debug)]
pub struct Drained {
    pub bytes: Vec<u8>,
    /// The server closed the connection (EOF or reset), as opposed to a timeout.
    pub closed: bool,
}

/// A plain TCP client for byte-level tests.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("set_read_timeout");
        let _ = stream.set_nodelay(true);
        Raw { stream, buf: Vec::new() }
    }

    /// Writes bytes; errors (the server closed on us) are returned, not panicked on.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends a command and reads its reply; panics on I/O errors.
    pub fn cmd(&mut self, args: &[&str]) -> Resp {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.send(&encode(&args)).expect("send");
        self.read_reply().expect("read reply")
    }

    /// Reads one reply (waiting up to the read timeout).
    pub fn read_reply(&mut self) -> io::Result<Resp> {
        loop {
            match parse(&self.buf) {
                Ok(Some((v, used))) => {
                    self.buf.drain(..used);
                    return Ok(v);
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("invalid RESP from the server: {e}"),
                    ))
                }
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the connection"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads until the server closes the connection or nothing arrives for `idle`.
    pub fn drain(&mut self, idle: Duration) -> Drained {
        let _ = self.stream.set_read_timeout(Some(idle));
        let mut bytes = std::mem::take(&mut self.buf);
        let mut chunk = [0u8; 64 * 1024];
        let closed = loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => break true,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => break false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break true, // reset
            }
        };
        let _ = self.stream.set_read_timeout(Some(Duration::from_secs(10)));
        Drained { bytes, closed }
    }

    /// Half-closes our side: the server sees end-of-file after what we sent.
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}
