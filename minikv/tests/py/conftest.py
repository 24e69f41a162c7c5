"""Servers for the Python compatibility suites: a real redis-server and a minikv.

Each suite talks TCP to processes these fixtures start on free loopback ports:

* `redis-server` (7.0.15 from Debian) with no persistence, in a temporary directory;
  the suites that need it are skipped, with a message saying how to install it, when it
  is not on PATH;
* `minikv` from `$MINIKV_BIN` (default `<repo>/target/debug/minikv`); a missing binary
  fails the run and says to run `cargo build -p minikv`.

The processes live for the whole session (starting a debug minikv per test would cost
more than the tests). Between tests the function-scoped fixtures `real_redis` and
`minikv` FLUSHALL them; a server that died (a panic in a command handler) or that
cannot FLUSHALL is restarted, so one crash fails one test, not all that follow.
Every process is killed through its own Popen handle at teardown.

Run:  cargo build -p minikv && python3 -m pytest minikv/tests/py -q
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from resp_client import RespConnection  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
HOST = "127.0.0.1"
#: How long a freshly started server may take to accept connections. A debug build on
#: a loaded 2-core CI machine needs well under a second; 30 s only bounds a hang.
START_TIMEOUT_S = 30.0
#: Redis version the differential expectations were written against.
EXPECTED_REDIS = "7.0."


def free_port() -> int:
    """A port nobody listens on right now (the kernel's choice for an ephemeral bind)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server subprocess on a free port, restartable, with its log kept for messages."""

    def __init__(self, name: str, argv_for_port, workdir: Path):
        self.name = name
        #: Builds the command line for a port, so a restart can pick a new one if the
        #: old port was taken in the meantime.
        self.argv_for_port = argv_for_port
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0
        #: How many times the server was found dead and restarted (reported at exit).
        self.restarts = 0

    def start(self) -> None:
        last_error = ""
        for _attempt in range(3):  # a free port can be taken between probe and bind
            self.port = free_port()
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                self.argv_for_port(self.port),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
            )
            log.close()
            ready, last_error = self._wait_ready()
            if ready:
                return
            self.stop()
        raise RuntimeError(f"{self.name} did not start: {last_error}\n{self.log_tail()}")

    def _wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT_S
        error = "timed out"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False, f"exited with status {self.proc.returncode}"
            try:
                with RespConnection(HOST, self.port, timeout=2) as c:
                    if c.call("PING") == b"+PONG\r\n":
                        return True, ""
            except OSError as e:
                error = str(e)
            time.sleep(0.02)
        return False, error

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return f"({self.name}: no log)"
        return f"--- last lines of {self.log_path} ---\n" + "\n".join(text[-lines:])

    def connect(self, timeout: float = 10.0) -> RespConnection:
        return RespConnection(HOST, self.port, timeout=timeout)

    def clean(self) -> None:
        """Make the server alive and empty: FLUSHALL, or restart if that fails."""
        if not self.alive():
            self.restarts += 1
            self.start()
            return
        try:
            with self.connect() as c:
                ok = c.call("FLUSHALL") == b"+OK\r\n"
        except OSError:
            ok = False
        if not ok:
            # Dead, hung, or FLUSHALL not implemented yet: a new process is empty.
            self.restarts += 1
            self.stop()
            self.start()


def minikv_binary() -> Path:
    # Resolved now: the servers run with their own working directory, where a relative
    # MINIKV_BIN (`MINIKV_BIN=target/debug/minikv`) would name nothing.
    return Path(os.environ.get("MINIKV_BIN", REPO / "target" / "debug" / "minikv")).resolve()


@pytest.fixture(scope="session")
def workdir():
    with tempfile.TemporaryDirectory(prefix="minikv-pytests-") as d:
        yield Path(d)


@pytest.fixture(scope="session")
def redis_process(workdir):
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip(
            "redis-server is not installed (Debian: apt-get install redis-server, "
            "which ships 7.0.15); the suites compare minikv against it"
        )
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    if f"v={EXPECTED_REDIS}" not in version:
        print(f"warning: expected redis-server {EXPECTED_REDIS}x, found: {version.strip()}")
    d = workdir / "redis"
    d.mkdir()
    srv = ServerProcess(
        "redis-server",
        lambda port: [exe, "--port", str(port), "--bind", HOST, "--save", "",
                      "--appendonly", "no", "--dir", str(d)],
        d,
    )
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def minikv_process(workdir):
    exe = minikv_binary()
    if not exe.is_file():
        pytest.fail(
            f"minikv binary not found at {exe}: run `cargo build -p minikv` in {REPO} "
            "(or point MINIKV_BIN at a built binary)",
            pytrace=False,
        )
    d = workdir / "minikv"
    d.mkdir()
    srv = ServerProcess(
        "minikv",
        lambda port: [str(exe), "--port", str(port), "--admin-port", "0", "--dir", str(d)],
        d,
    )
    srv.start()
    yield srv
    srv.stop()
    if srv.restarts:
        print(f"\nminikv was restarted {srv.restarts} time(s) (crash or FLUSHALL failure)")


@pytest.fixture
def real_redis(redis_process) -> ServerProcess:
    """The reference redis-server, alive and empty."""
    redis_process.clean()
    return redis_process


@pytest.fixture
def minikv(minikv_process) -> ServerProcess:
    """minikv, alive and empty."""
    minikv_process.clean()
    return minikv_process
