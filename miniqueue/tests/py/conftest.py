"""Servers and a raw client for miniqueue's Python suites.

Every test talks TCP, on 127.0.0.1 only, to processes these fixtures start on free
loopback ports, with clients we did not write (greenstalk from PyPI) or with the raw
socket client below, which returns each reply's exact bytes:

* `miniqueue` comes from `$MINIQUEUE_BIN` (default `<repo>/target/debug/miniqueue`);
  a missing binary fails the run and says to run `cargo build -p miniqueue`. It is
  started with beanstalkd's own flags: `-l 127.0.0.1 -p PORT`, and on request
  `-b DIR -f MS`, `-z BYTES`, `--admin-port PORT`.
* `beanstalkd` is the real one (1.12, Debian), the oracle of the differential suite;
  its tests are skipped, with a message saying how to install it, when it is missing.

Each test gets its own servers (`start_miniqueue(**flags)`, `start_beanstalkd(**flags)`,
or the `miniqueue` / `beanstalkd` fixtures with default flags), each in a fresh
temporary directory: a server starts in milliseconds, and nothing leaks between tests.
A server is ready when it accepted a connection and answered `list-tube-used` on it;
that first connection stays open as `Server.control`, so every server a test compares
has seen exactly the same connections. Servers are stopped by their own pid (SIGKILL
through the Popen handle) at teardown; `Server.crash_restart()` is kill -9 and a
restart on the same directory and port, as a crash and a supervisor would do.

Checking the checks: `MINIQUEUE_BIN=/usr/bin/beanstalkd` runs every suite that is
beanstalkd-compatible against the real beanstalkd (the tests must pass there); the
`miniqueue_only` tests (extension commands, admin HTTP, drain log lines) are skipped in
that mode, because beanstalkd does not have them.

Run:  cargo build -p miniqueue && .venv-tests/bin/python -m pytest miniqueue/tests/py -q
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional, Union

import pytest

sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[3]
HOST = "127.0.0.1"
#: How long a freshly started server may take to accept a connection and answer. A
#: debug build on a loaded 2-core CI machine needs well under a second; 20 s only
#: bounds a hang.
START_TIMEOUT_S = 20.0
#: How long a SIGTERM'd server may take to exit before it is killed.
STOP_TIMEOUT_S = 10.0
#: Default wait for one reply. Every reply the suites expect comes in milliseconds
#: unless the test itself waits for time to pass (it then passes its own timeout).
REPLY_TIMEOUT_S = 5.0
#: beanstalkd's command line limit, CRLF included (LINE_BUF_SIZE in beanstalkd).
LINE_MAX = 224
#: Replies followed by a body of the size given as their last number.
BODY_REPLIES = (b"OK", b"FOUND", b"RESERVED")


def free_port() -> int:
    """A port nobody listens on right now (the kernel's choice for an ephemeral bind)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# ---- the raw client ------------------------------------------------------------------


class ServerClosed(ConnectionError):
    """The server closed the connection before a whole reply arrived."""


class ReplyTimeout(TimeoutError):
    """No whole reply within the timeout (what arrived so far is in `partial`)."""

    def __init__(self, what: str, partial: bytes):
        super().__init__(f"{what}; received so far: {partial[:300]!r}")
        self.partial = partial


def split_reply(buf: bytes) -> Optional[int]:
    """The length of the first whole reply at the start of `buf`, or None if it is not
    all there yet. A reply is one CRLF-terminated line, and for OK/FOUND/RESERVED the
    body whose size is the line's last number, plus its CRLF."""
    end = buf.find(b"\r\n")
    if end < 0:
        return None
    line = buf[:end]
    words = line.split(b" ")
    if words[0] in BODY_REPLIES and len(words) >= 2 and words[-1].isdigit():
        need = end + 2 + int(words[-1]) + 2
        return need if len(buf) >= need else None
    return end + 2


class Conn:
    """One TCP connection speaking the beanstalk protocol byte for byte.

    `send` writes raw bytes; `reply` reads exactly one reply (line and body) and
    returns its raw bytes; `cmd` does both for a one-line command. Anything the server
    sent past the reply stays buffered for the next read.
    """

    def __init__(self, port: int, timeout: float = REPLY_TIMEOUT_S, host: str = HOST):
        self.port = port
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.eof = False

    def __enter__(self) -> "Conn":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: Union[bytes, str]) -> None:
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        """Reads what is there (waiting at most until `deadline`); False on EOF/timeout."""
        left = deadline - time.monotonic()
        if left <= 0 or self.eof:
            return False
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def reply(self, timeout: Optional[float] = None) -> bytes:
        """The next whole reply's bytes. Raises ServerClosed or ReplyTimeout."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            n = split_reply(self.buf)
            if n is not None:
                out, self.buf = self.buf[:n], self.buf[n:]
                return out
            if not self._fill(deadline):
                if self.eof:
                    raise ServerClosed(f"server closed the connection; partial reply {self.buf[:300]!r}")
                raise ReplyTimeout("no whole reply in time", self.buf)

    def reply_or_none(self, timeout: float) -> Optional[bytes]:
        """The next reply, or None if none arrives within `timeout` (EOF raises)."""
        try:
            return self.reply(timeout)
        except ReplyTimeout:
            return None

    def cmd(self, line: Union[bytes, str], timeout: Optional[float] = None) -> bytes:
        """Sends one command line (CRLF added) and returns its reply's raw bytes."""
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        return self.reply(timeout)

    def put(self, body: Union[bytes, str] = b"x", pri: int = 0, delay: int = 0, ttr: int = 60) -> int:
        """put, and the new job's id (fails the test on any other reply)."""
        if isinstance(body, str):
            body = body.encode()
        self.send(b"put %d %d %d %d\r\n%s\r\n" % (pri, delay, ttr, len(body), body))
        r = self.reply()
        assert r.startswith(b"INSERTED "), f"put: {r!r}"
        return int(r.split()[1])

    def yaml(self, line: Union[bytes, str]) -> dict:
        """A stats command's YAML dictionary (values as str), or raises on NOT_FOUND."""
        r = self.cmd(line)
        return parse_yaml_dict(body_of(r))

    def closed_by_server(self, timeout: float = 2.0) -> bool:
        """Whether the server closes this connection within `timeout` (data discarded)."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            if not self._fill(deadline) and not self.eof:
                return False
        return True


def body_of(reply: bytes) -> bytes:
    """The body of an OK/FOUND/RESERVED reply (checked against its declared size)."""
    end = reply.find(b"\r\n")
    words = reply[:end].split(b" ")
    assert words[0] in BODY_REPLIES, f"expected a reply with a body, got {reply[:200]!r}"
    size = int(words[-1])
    body = reply[end + 2:]
    assert body.endswith(b"\r\n") and len(body) == size + 2, f"body size mismatch in {reply[:300]!r}"
    return body[:-2]


def parse_yaml_dict(body: bytes) -> dict:
    """beanstalkd's YAML dictionaries: '---\\n' then 'key: value\\n' lines."""
    text = body.decode()
    assert text.startswith("---\n"), f"YAML must start with ---: {text[:100]!r}"
    out = {}
    for line in text[4:].splitlines():
        key, sep, value = line.partition(": ")
        assert sep, f"not a 'key: value' line: {line!r}"
        out[key] = value
    return out


def parse_yaml_list(body: bytes) -> list:
    text = body.decode()
    assert text.startswith("---\n"), f"YAML must start with ---: {text[:100]!r}"
    items = []
    for line in text[4:].splitlines():
        assert line.startswith("- "), f"not a list item: {line!r}"
        items.append(line[2:])
    return items


# ---- servers -------------------------------------------------------------------------


class Server:
    """One miniqueue or beanstalkd process: flags, directory, ports, log; restartable."""

    def __init__(self, name: str, exe: Path, workdir: Path, flags: dict):
        self.name = name
        self.exe = exe
        self.workdir = workdir
        #: `binlog` (bool: -b workdir/wal), `fsync` (-f MS), `no_fsync` (-F),
        #: `max_job_size` (-z), `wal_size` (-s), `admin` (bool: --admin-port), `extra`.
        self.flags = flags
        self.data_dir = workdir / "wal" if flags.get("binlog") else None
        if self.data_dir:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{name}.log"
        self.proc: Optional[subprocess.Popen] = None
        self.port = 0
        self.admin_port = 0
        #: The readiness connection, kept open (see the module doc).
        self.control: Optional[Conn] = None
        #: Exit statuses of every stop or kill, in order.
        self.exit_codes: list[int] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not running"
        return self.proc.pid

    def argv(self) -> list[str]:
        f = self.flags
        argv = [str(self.exe), "-l", HOST, "-p", str(self.port)]
        if self.data_dir:
            argv += ["-b", str(self.data_dir)]
        if f.get("fsync") is not None:
            argv += ["-f", str(f["fsync"])]
        if f.get("no_fsync"):
            argv += ["-F"]
        if f.get("max_job_size") is not None:
            argv += ["-z", str(f["max_job_size"])]
        if f.get("wal_size") is not None:
            argv += ["-s", str(f["wal_size"])]
        if f.get("admin"):
            argv += ["--admin-port", str(self.admin_port)]
        argv += [str(a) for a in f.get("extra", ())]
        return argv

    def start(self, same_port: bool = False) -> None:
        """Starts the server and waits until it answers. `same_port` keeps the ports
        it had (a restart); otherwise free ones are picked, retrying if one was taken
        between the probe and the server's bind."""
        assert not self.alive(), f"start() on a running {self.name}"
        last_error = ""
        for _attempt in range(1 if same_port else 3):
            if not same_port or not self.port:
                self.port = free_port()
                self.admin_port = free_port() if self.flags.get("admin") else 0
            env = dict(os.environ, RUST_BACKTRACE="1")
            with open(self.log_path, "ab") as log:
                log.write(f"\n===== start: {' '.join(self.argv())}\n".encode())
                log.flush()
                self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, cwd=self.workdir, env=env)
            ready, last_error = self._wait_ready()
            if ready:
                return
            self.kill()
        raise RuntimeError(f"{self.name} did not start: {last_error}\n{self.log_tail()}")

    def _wait_ready(self) -> tuple[bool, str]:
        deadline = time.monotonic() + START_TIMEOUT_S
        error = "timed out"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False, f"exited with status {self.proc.returncode}"
            try:
                c = Conn(self.port, timeout=2.0)
            except OSError as e:
                error = str(e)
                time.sleep(0.01)
                continue
            try:
                r = c.cmd(b"list-tube-used")
            except (OSError, ReplyTimeout) as e:
                c.close()
                return False, f"accepted a connection but did not answer list-tube-used: {e}"
            if r != b"USING default\r\n":
                c.close()
                return False, f"list-tube-used answered {r!r}"
            self.control = c
            break
        else:
            return False, error
        if self.flags.get("admin"):
            while time.monotonic() < deadline:
                try:
                    status, _ = self.http("GET", "/healthz", timeout=2.0)
                    if status == 200:
                        return True, ""
                except OSError as e:
                    error = f"admin: {e}"
                time.sleep(0.02)
            return False, error
        return True, ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _forget(self) -> None:
        if self.control is not None:
            self.control.close()
            self.control = None
        self.exit_codes.append(self.proc.returncode)
        self.proc = None

    def kill(self) -> None:
        """kill -9 by pid, as a crash would; waits for the process to be gone."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._forget()

    def stop(self) -> int:
        """SIGTERM by pid and wait; killed (SIGKILL) if it does not exit in time."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        code = self.proc.returncode
        self._forget()
        return code

    def crash_restart(self) -> None:
        """kill -9, then start again on the same directory and port."""
        self.kill()
        self.start(same_port=True)

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def conn(self, timeout: float = REPLY_TIMEOUT_S) -> Conn:
        return Conn(self.port, timeout=timeout)

    def client(self, **kw):
        """A greenstalk client (bytes bodies unless `encoding` is given)."""
        import greenstalk

        kw.setdefault("encoding", None)
        return greenstalk.Client((HOST, self.port), **kw)

    def answers(self, timeout: float = 5.0) -> bool:
        """Whether the process is alive and a new connection gets list-tube-used answered."""
        if not self.alive():
            return False
        try:
            with Conn(self.port, timeout=timeout) as c:
                return c.cmd(b"list-tube-used") == b"USING default\r\n"
        except (OSError, ReplyTimeout):
            return False

    def http(self, method: str, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """(status, body) of one admin HTTP request; 4xx/5xx are returned, not raised."""
        assert self.admin_port, f"{self.name} was started without admin=True"
        url = f"http://{HOST}:{self.admin_port}{path}"
        req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def http_json(self, method: str, path: str) -> tuple[int, object]:
        status, body = self.http(method, path)
        try:
            return status, json.loads(body)
        except ValueError:
            pytest.fail(f"{method} {path}: status {status}, body is not JSON: {body[:300]!r}", pytrace=False)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_text().splitlines()
        return f"--- last lines of {self.log_path} ---\n" + "\n".join(text[-lines:])


def miniqueue_binary() -> Path:
    return Path(os.environ.get("MINIQUEUE_BIN", REPO / "target" / "debug" / "miniqueue"))


def binary_is_real_beanstalkd(exe: Path) -> bool:
    """Whether MINIQUEUE_BIN points at beanstalkd itself (`-v` prints 'beanstalkd 1.x')."""
    try:
        out = subprocess.run([str(exe), "-v"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return (out.stdout + out.stderr).decode(errors="replace").strip().startswith("beanstalkd")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Adds the logs of the servers a failed test started to its report."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for server in getattr(item, "_mq_servers", []):
            rep.sections.append((f"{server.name} log ({rep.when})", server.log_tail(40)))


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "miniqueue_only: uses miniqueue's extensions; skipped when MINIQUEUE_BIN is beanstalkd")


def pytest_collection_modifyitems(config, items):
    exe = miniqueue_binary()
    if exe.is_file() and binary_is_real_beanstalkd(exe):
        skip = pytest.mark.skip(reason="MINIQUEUE_BIN is the real beanstalkd, which has no miniqueue extensions")
        for item in items:
            if "miniqueue_only" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def miniqueue_exe() -> Path:
    exe = miniqueue_binary()
    if not exe.is_file():
        pytest.fail(f"miniqueue binary not found at {exe}: run `cargo build -p miniqueue` in {REPO} "
                    "(or point MINIQUEUE_BIN at a built binary)", pytrace=False)
    return exe


@pytest.fixture(scope="session")
def beanstalkd_exe() -> Path:
    exe = shutil.which("beanstalkd")
    if exe is None:
        pytest.skip("beanstalkd is not installed (Debian: apt-get install beanstalkd, which ships 1.12); "
                    "./test.sh installs it")
    return Path(exe)


def _factory(request, tmp_path, exe: Path, name: str):
    """A `start(**flags)` function, and the list of servers it started (to kill them)."""
    reported: list[Server] = getattr(request.node, "_mq_servers", [])
    request.node._mq_servers = reported
    own: list[Server] = []

    def start(**flags) -> Server:
        server = Server(f"{name}{len(own)}", exe, tmp_path / f"{name}{len(own)}", flags)
        server.workdir.mkdir(parents=True, exist_ok=True)
        own.append(server)
        reported.append(server)
        server.start()
        return server

    return start, own


@pytest.fixture
def start_miniqueue(miniqueue_exe, tmp_path, request):
    """A factory: `start_miniqueue(binlog=True, fsync=0, admin=True)` starts a miniqueue."""
    start, started = _factory(request, tmp_path, miniqueue_exe, "miniqueue")
    yield start
    for s in started:
        s.kill()


@pytest.fixture
def start_beanstalkd(beanstalkd_exe, tmp_path, request):
    """A factory for real beanstalkd processes, with the same flags as start_miniqueue."""
    start, started = _factory(request, tmp_path, beanstalkd_exe, "beanstalkd")
    yield start
    for s in started:
        s.kill()


@pytest.fixture
def miniqueue(start_miniqueue) -> Server:
    """A miniqueue with default flags (in memory only)."""
    return start_miniqueue()


@pytest.fixture
def beanstalkd(start_beanstalkd) -> Server:
    return start_beanstalkd()


def wait_until(predicate, timeout: float, what: str, interval: float = 0.02):
    """Polls `predicate()` until it returns something truthy; fails the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.1f} s waiting for {what}", pytrace=False)
        time.sleep(interval)


#: beanstalkd 1.12's key order in stats-job and stats-tube replies (what greenstalk users
#: see); shared by the suites that check it.
STATS_JOB_KEYS = ["id", "tube", "state", "pri", "age", "delay", "ttr", "time-left", "file", "reserves",
                  "timeouts", "releases", "buries", "kicks"]
STATS_TUBE_KEYS = ["name", "current-jobs-urgent", "current-jobs-ready", "current-jobs-reserved",
                   "current-jobs-delayed", "current-jobs-buried", "total-jobs", "current-using",
                   "current-watching", "current-waiting", "cmd-delete", "cmd-pause-tube", "pause",
                   "pause-time-left"]
