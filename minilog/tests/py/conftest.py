"""Brokers and client tools for minilog's Python compatibility suites.

Every test talks TCP, on 127.0.0.1, to a `minilog` process these fixtures start, with
clients we did not write: `kcat` (Debian, librdkafka 2.0.2), `confluent-kafka` (PyPI, a
recent librdkafka) and `kafka-python` (PyPI, pure Python).

* `minilog` comes from `$MINILOG_BIN` (default `<repo>/target/debug/minilog`); a missing
  binary fails the run and says to run `cargo build -p minilog`.
* Each test gets its own broker (`broker`, or `start_broker(**flags)` for other flags) in
  a fresh temporary directory on free ports: a debug broker starts in milliseconds, and
  a fresh directory means no test sees another's topics or groups. Brokers are stopped
  through their own Popen handle at teardown (SIGTERM, then SIGKILL after a timeout).
* A broker logs to a file with `RUST_LOG=debug` (override with `MINILOG_RUST_LOG`); when
  a test fails, the last lines of every broker it started are added to the report.
* A missing client (kcat, confluent-kafka, kafka-python) skips its tests with a message
  saying how to install it; `./test.sh` installs all of them.

Run:  cargo build -p minilog && MINILOG_BIN=$PWD/target/debug/minilog \
      .venv-tests/bin/python -m pytest minilog/tests/py -q
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[3]
HOST = "127.0.0.1"
#: How long a freshly started broker may take to answer ApiVersions. A debug build on a
#: loaded 2-core CI machine needs well under a second; 30 s only bounds a hang.
START_TIMEOUT_S = 30.0
#: How long a SIGTERM'd broker may take to drain and fsync before it is killed and the
#: test fails.
STOP_TIMEOUT_S = 15.0
#: Upper bound for one client tool run (kcat producing or reading 10,000 records takes
#: about a second).
TOOL_TIMEOUT_S = 60.0


def free_port() -> int:
    """A port nobody listens on right now (the kernel's choice for an ephemeral bind)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def api_versions_answers(port: int, timeout: float = 2.0) -> bool:
    """Whether something on `port` answers a Kafka ApiVersions v0 request.

    Used only to know when a broker is ready; every check of behaviour goes through a
    client we did not write.
    """
    client_id = b"minilog-pytests"
    correlation_id = 0x5EED
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(struct.pack(">i", len(body)) + body)
        header = _recv_exact(s, 4)
        (size,) = struct.unpack(">i", header)
        if not 6 <= size <= 1 << 20:
            return False
        reply = _recv_exact(s, size)
    got_id, error = struct.unpack(">ih", reply[:6])
    return got_id == correlation_id and error == 0


def _recv_exact(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError("connection closed before the reply was complete")
        out += chunk
    return out


class Broker:
    """One minilog process: its flags, directory, ports and log; restartable."""

    def __init__(self, exe: Path, data_dir: Path, log_path: Path, flags: dict[str, object]):
        self.exe = exe
        self.data_dir = data_dir
        self.log_path = log_path
        #: Extra `--name value` flags (underscores become dashes), kept for restarts.
        self.flags = flags
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.admin_port = 0
        #: Exit status of every stop, in order, so a test can assert on clean shutdowns.
        self.exit_codes: list[int] = []

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    def argv(self) -> list[str]:
        argv = [str(self.exe), "--listen", self.bootstrap, "--dir", str(self.data_dir),
                "--admin-port", str(self.admin_port)]
        for name, value in self.flags.items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            argv += ["--" + name.replace("_", "-"), str(value)]
        return argv

    def start(self, same_port: bool = False) -> None:
        """Starts the broker and waits until it answers ApiVersions.

        `same_port` restarts on the port it had (so clients that remember it reconnect);
        otherwise fresh free ports are picked, retrying if one was taken in between.
        """
        assert not self.alive(), "start() on a running broker"
        last_error = ""
        for _attempt in range(3 if not same_port else 1):
            if not same_port or not self.port:
                self.port = free_port()
                self.admin_port = free_port()
            env = dict(os.environ)
            env["RUST_LOG"] = os.environ.get("MINILOG_RUST_LOG", "debug")
            env["RUST_BACKTRACE"] = "1"
            with open(self.log_path, "ab") as log:
                log.write(f"\n===== start: {' '.join(self.argv())}\n".encode())
                log.flush()
                self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, env=env)
            ready, last_error = self._wait_ready()
            if ready:
                return
            self.kill()
        raise RuntimeError(f"minilog did not start: {last_error}\n{self.log_tail()}")

    def _wait_ready(self) -> tuple[bool, str]:
        deadline = time.monotonic() + START_TIMEOUT_S
        error = "timed out"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False, f"exited with status {self.proc.returncode}"
            try:
                if api_versions_answers(self.port):
                    return True, ""
                error = "ApiVersions v0 got an unexpected answer"
            except OSError as e:
                error = str(e)
            time.sleep(0.02)
        return False, error

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int:
        """SIGTERM and wait; a broker that does not exit in time is killed and the test fails."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                pytest.fail(f"minilog ignored SIGTERM for {STOP_TIMEOUT_S:.0f} s and was killed\n"
                            + self.log_tail(), pytrace=False)
        code = self.proc.returncode
        self.exit_codes.append(code)
        self.proc = None
        return code

    def kill(self) -> None:
        """kill -9, as a crash would."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=10)
            self.exit_codes.append(self.proc.returncode)
            self.proc = None

    def restart(self, kill: bool = False) -> None:
        """Stops (SIGTERM, or kill -9 with `kill=True`) and starts again on the same port."""
        if kill:
            self.kill()
        else:
            code = self.stop()
            assert code == 0, f"minilog exited with status {code} on SIGTERM\n{self.log_tail()}"
        self.start(same_port=True)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_text().splitlines()
        return f"--- last lines of {self.log_path} ---\n" + "\n".join(text[-lines:])

    def partition_dir(self, topic: str, partition: int) -> Path:
        return self.data_dir / f"{topic}-{partition}"

    def metrics(self) -> list[tuple[str, dict[str, str], float]]:
        """The admin endpoint's /metrics as (name, labels, value) samples."""
        url = f"http://{HOST}:{self.admin_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        return parse_prometheus(text)


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> list[tuple[str, dict[str, str], float]]:
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m:
            labels = dict(_LABEL.findall(m.group(2) or ""))
            samples.append((m.group(1), labels, float(m.group(3))))
    return samples


def minilog_binary() -> Path:
    return Path(os.environ.get("MINILOG_BIN", REPO / "target" / "debug" / "minilog"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Adds the broker logs of a failed test to its report."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for broker in getattr(item, "_minilog_brokers", []):
            rep.sections.append((f"minilog log ({rep.when})", broker.log_tail(60)))


@pytest.fixture(scope="session")
def minilog_exe() -> Path:
    exe = minilog_binary()
    if not exe.is_file():
        pytest.fail(
            f"minilog binary not found at {exe}: run `cargo build -p minilog` in {REPO} "
            "(or point MINILOG_BIN at a built binary)",
            pytrace=False,
        )
    return exe


@pytest.fixture
def start_broker(minilog_exe, tmp_path, request):
    """A factory: `start_broker(num_partitions=4, flush="always")` starts a broker."""
    started: list[Broker] = []
    request.node._minilog_brokers = started

    def start(**flags) -> Broker:
        n = len(started)
        data_dir = tmp_path / f"broker{n}"
        data_dir.mkdir()
        broker = Broker(minilog_exe, data_dir, tmp_path / f"broker{n}.log", flags)
        started.append(broker)
        broker.start()
        return broker

    yield start
    for broker in started:
        broker.kill()


@pytest.fixture
def broker(start_broker) -> Broker:
    """A broker with default flags (one partition per auto-created topic)."""
    return start_broker()


# ---- client tools -----------------------------------------------------------


@pytest.fixture(scope="session")
def kcat() -> str:
    exe = shutil.which("kcat")
    if exe is None:
        pytest.skip("kcat is not installed (Debian: apt-get install kcat, which bundles librdkafka 2.0.2); "
                    "./test.sh installs it")
    return exe


@pytest.fixture(scope="session")
def confluent_kafka():
    return pytest.importorskip(
        "confluent_kafka",
        reason="confluent-kafka is not installed: pip install confluent-kafka (./test.sh installs it into "
               ".venv-tests)")


@pytest.fixture(scope="session")
def kafka_python():
    return pytest.importorskip(
        "kafka",
        reason="kafka-python is not installed: pip install kafka-python (./test.sh installs it into .venv-tests)")


def run_tool(argv: list[str], input: bytes | None = None, timeout: float = TOOL_TIMEOUT_S,
             check: bool = True) -> subprocess.CompletedProcess:
    """Runs a client tool to completion; a non-zero exit fails the test with its stderr."""
    try:
        done = subprocess.run(argv, input=input, capture_output=True, timeout=timeout,
                              stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{argv[0]} did not finish in {timeout:.0f} s: {' '.join(argv)}\n"
                    f"stderr: {(e.stderr or b'').decode(errors='replace')[-3000:]}", pytrace=False)
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(argv)} exited with {done.returncode}\n"
                    f"stderr: {done.stderr.decode(errors='replace')[-3000:]}", pytrace=False)
    return done


class LineReader:
    """Drains a pipe in a thread, so a test can wait for a line without blocking forever."""

    def __init__(self, pipe, name: str):
        self.name = name
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, args=(pipe,), daemon=True)
        self._thread.start()

    def _run(self, pipe) -> None:
        for raw in iter(pipe.readline, b""):
            with self._cond:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wait_for(self, predicate, timeout: float, what: str):
        """Waits until `predicate(lines)` returns something truthy, and returns it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = predicate(self.lines)
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    state = "closed its output" if self._closed else f"did not within {timeout:.0f} s"
                    tail = "\n".join(self.lines[-30:])
                    pytest.fail(f"waiting for {what}: {self.name} {state}; last lines:\n{tail}", pytrace=False)
                self._cond.wait(min(left, 0.2))

    def snapshot(self) -> list[str]:
        with self._cond:
            return list(self.lines)


class Tool:
    """A long-running client process (a `kcat -G` consumer) with both pipes drained."""

    def __init__(self, argv: list[str], name: str):
        self.argv = argv
        self.name = name
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL)
        self.stdout = LineReader(self.proc.stdout, f"{name} stdout")
        self.stderr = LineReader(self.proc.stderr, f"{name} stderr")

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit in time; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def tools():
    """Starts long-running client processes and kills whatever is left at teardown."""
    started: list[Tool] = []

    def start(argv: list[str], name: str) -> Tool:
        tool = Tool(argv, name)
        started.append(tool)
        return tool

    yield start
    for tool in started:
        tool.kill()


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Polls `predicate()` until it returns something truthy; fails the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}", pytrace=False)
        time.sleep(interval)
