"""The differential harness: the same raw bytes to beanstalkd 1.12 and to miniqueue.

A *script* is a list of steps on named connections. Both servers (a fresh pair per
script) run the script at the same time, in two threads, so time-dependent steps (a
TTR, a delay, reserve-with-timeout) see the same clock. Each side records, per step,
the exact replies it got; the two transcripts must be equal after the normalisations
below, and nothing else is relaxed.

Normalisations (the complete list; each is here because the value is not a function
of the bytes sent):

* **job ids**: each side's ids are renamed `#1, #2, ...` in order of first appearance
  (INSERTED, BURIED <id>, RESERVED, FOUND, DUPLICATE, stats-job `id:`). Both servers
  start empty, so the scripts' literal ids (`delete 1`) refer to the same jobs anyway;
  the renaming only keeps one early difference from cascading through every later
  reply. An id a server burns (beanstalkd gives a put that fails EXPECTED_CRLF an id)
  still shows, through scripts that name the next id literally.
* **process facts** in `stats`: `pid`, `version`, `rusage-utime`, `rusage-stime`, `id`
  (random per process), `hostname`, `os`, `platform` are masked.
* **seconds that tick**: `uptime` (stats), `age` and `time-left` (stats-job),
  `pause-time-left` (stats-tube) are masked in the bytes and compared as integers
  within 1 s (the two servers' clocks are read a few milliseconds apart, which can
  straddle a second boundary).
* the byte count in `OK <bytes>` is recomputed after masking (a masked value's length
  may differ); each side's own count was checked against its body when it was read.

Not normalised, on purpose: `binlog-*` (the scripts run without -b, where both
servers report constants: 0, and 10485760 for binlog-max-size), and the connection
counters (`current-connections`, `total-connections`, `current-producers`, ...). They
are deterministic here: both servers see the same connections in the same order (the
readiness connection is kept open as the first one, see conftest.py), and a step that
closes a connection waits `CLOSE_SETTLE_S` before the next one.

A step's `replies` is how many replies beanstalkd sends to it (estimated from the
bytes by `expected_replies`, or given). The harness reads that many (or times out),
so a server that sends more, fewer, or sends them late shows a difference. If the
oracle itself does not match the count, the script is wrong and the test says so.
"""

from __future__ import annotations

import difflib
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from conftest import LINE_MAX, Conn, ReplyTimeout, ServerClosed

#: How long a step that expects no reply listens for one anyway.
QUIET_S = 0.1
#: How long a step that got its replies waits for unexpected extra ones.
EXTRA_S = 0.002
#: Pause after a client closes a connection, so both servers have noticed.
CLOSE_SETTLE_S = 0.1
#: Default time to wait for the replies of a step.
STEP_TIMEOUT_S = 2.0
#: After a side timed out once on a connection, later waits on it are this short, so a
#: broken server costs seconds, not minutes.
DEGRADED_TIMEOUT_S = 0.3

# ---- steps ---------------------------------------------------------------------------


@dataclass
class Send:
    """Send raw bytes on a connection and read `replies` replies (None: estimated)."""

    data: bytes
    replies: Optional[int] = None
    conn: str = "a"
    timeout: float = STEP_TIMEOUT_S


@dataclass
class Read:
    """Read replies that arrive without a new command (a blocked reserve woken up)."""

    replies: int = 1
    conn: str = "a"
    timeout: float = 3.0


@dataclass
class Sleep:
    seconds: float


@dataclass
class Close:
    """The client closes its side of the connection."""

    conn: str = "a"


@dataclass
class Script:
    name: str
    steps: list
    #: Server flags, the same for both servers (e.g. max_job_size=10 for -z 10).
    flags: dict = field(default_factory=dict)
    #: Append stats, list-tubes and stats-tube default on a fresh connection.
    final_stats: bool = True


def describe(step) -> str:
    if isinstance(step, Send):
        data = step.data if len(step.data) <= 160 else step.data[:120] + b"...(%d bytes)" % len(step.data)
        return f"[{step.conn}] send {data!r}"
    if isinstance(step, Read):
        return f"[{step.conn}] read {step.replies} more"
    if isinstance(step, Sleep):
        return f"sleep {step.seconds}s"
    if isinstance(step, Close):
        return f"[{step.conn}] client closes"
    return repr(step)


# ---- how many replies beanstalkd sends ----------------------------------------------

#: strtoul skips the spaces before each number, so "put  1 0 60 1" is a valid put.
_PUT = re.compile(rb"put +(\d+) +(\d+) +(\d+) +(\d+)")


def expected_replies(data: bytes, max_job_size: int = 65535) -> int:
    """Replies beanstalkd 1.12 sends to `data` (sent at once on an idle connection).

    Mirrors its framing only as far as the scripts need: lines end at CRLF; a valid
    put line is followed by <bytes>+2 body bytes (one reply once they are all there,
    whether INSERTED, EXPECTED_CRLF or JOB_TOO_BIG); a line longer than LINE_MAX gets
    BAD_FORMAT at its CRLF; quit ends everything (the close counts as one reply).
    Scripts whose framing is subtler pass `replies` themselves.
    """
    n, i = 0, 0
    while True:
        j = data.find(b"\r\n", i)
        if j < 0:
            return n
        line = data[i:j]
        if len(line) + 2 > LINE_MAX:
            n += 1
            i = j + 2
            continue
        if line.startswith(b"quit"):
            return n + 1
        m = _PUT.fullmatch(line)
        if m and all(len(g.lstrip(b"0")) <= 20 for g in m.groups()):
            pri, delay, ttr, size = (int(g) for g in m.groups())
            if pri < 2**32 and delay < 2**32 and ttr < 2**32 and size < 2**63:
                end = j + 2 + size + 2
                if end > len(data):
                    return n  # the body is not all there: no reply yet
                n += 1
                i = end
                continue
        n += 1
        i = j + 2


# ---- one side ------------------------------------------------------------------------

CLOSED = b"<closed by server>"


class Side:
    """Runs a script against one server and records the replies of every step."""

    def __init__(self, name: str, port: int, max_job_size: int):
        self.name = name
        self.port = port
        self.max_job_size = max_job_size
        self.conns: dict[str, Conn] = {}
        self.degraded: set[str] = set()
        #: Per step: the list of replies (raw bytes, or <...> markers).
        self.transcript: list[list[bytes]] = []
        self.error: Optional[str] = None

    def _conn(self, name: str) -> Conn:
        if name not in self.conns:
            self.conns[name] = Conn(self.port, timeout=STEP_TIMEOUT_S)
        return self.conns[name]

    def _read(self, name: str, n: int, timeout: float) -> list[bytes]:
        c = self._conn(name)
        if name in self.degraded:
            timeout = min(timeout, DEGRADED_TIMEOUT_S)
        out: list[bytes] = []
        deadline = time.monotonic() + (timeout if n else QUIET_S)
        while len(out) < n or n == 0:
            left = deadline - time.monotonic()
            try:
                out.append(c.reply(timeout=max(left, 0.001)))
            except ServerClosed:
                out.append(CLOSED + (b" partial=%r" % c.buf if c.buf else b""))
                c.buf = b""
                c.eof_reported = True
                break
            except ReplyTimeout:
                if n:
                    out.append(b"<no reply within %.1fs>" % timeout)
                    self.degraded.add(name)
                break
            if n == 0:
                continue  # a step that expects nothing keeps listening for QUIET_S
        if n and len(out) == n and not out[-1].startswith(b"<"):
            # Replies beyond the expected ones that are already here belong to this step
            # too (the oracle check below catches a script that expects too few).
            while True:
                try:
                    out.append(c.reply(timeout=EXTRA_S))
                except (ReplyTimeout, ServerClosed):
                    break
        return out

    def _leftover(self, c: Conn) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(c.reply(timeout=0.01))
            except ServerClosed:
                if not getattr(c, "eof_reported", False):
                    out.append(CLOSED)
                break
            except ReplyTimeout:
                break
        if c.buf:
            out.append(b"<unparsed bytes %r>" % c.buf)
        return out

    def run(self, steps: list) -> None:
        try:
            for step in steps:
                self.transcript.append(self._step(step))
            # Anything left unread: one shared quiet window, then what each connection has.
            time.sleep(QUIET_S)
            for name in sorted(self.conns):
                self.transcript.append(self._leftover(self.conns[name]))
        except Exception as e:  # a harness error is reported, not raised in the thread
            self.error = f"{type(e).__name__}: {e}"
        finally:
            for c in self.conns.values():
                c.close()

    def _step(self, step) -> list[bytes]:
        if isinstance(step, Sleep):
            time.sleep(step.seconds)
            return []
        if isinstance(step, Close):
            c = self.conns.pop(step.conn, None)
            if c is not None:
                c.close()
            time.sleep(CLOSE_SETTLE_S)
            return []
        if isinstance(step, Read):
            c = self._conn(step.conn)
            if c.eof and not c.buf:
                return [CLOSED]
            return self._read(step.conn, step.replies, step.timeout)
        assert isinstance(step, Send)
        c = self._conn(step.conn)
        if c.eof:
            return [CLOSED]
        n = step.replies if step.replies is not None else expected_replies(step.data, self.max_job_size)
        try:
            c.send(step.data)
        except OSError as e:
            return [b"<send failed: %s>" % type(e).__name__.encode()]
        return self._read(step.conn, n, step.timeout)


# ---- normalisation -------------------------------------------------------------------

MASKED_STATS = {"pid", "version", "rusage-utime", "rusage-stime", "id", "hostname", "os", "platform"}
TICKING = {"stats": {"uptime"}, "stats-job": {"age", "time-left"}, "stats-tube": {"pause-time-left"}}
_ID_REPLY = re.compile(rb"(INSERTED|BURIED|DUPLICATE) (\d+)\r\n")
_JOB_REPLY = re.compile(rb"(RESERVED|FOUND) (\d+) (\d+)\r\n")


@dataclass
class Norm:
    text: bytes
    #: Ticking seconds, compared within 1: [(key, value)].
    ticks: list = field(default_factory=list)


class Normaliser:
    def __init__(self):
        self.ids: dict[bytes, bytes] = {}

    def job_id(self, raw: bytes) -> bytes:
        if raw not in self.ids:
            self.ids[raw] = b"#%d" % (len(self.ids) + 1)
        return self.ids[raw]

    def unit(self, reply: bytes) -> Norm:
        if reply.startswith(b"<"):
            return Norm(reply)
        m = _ID_REPLY.fullmatch(reply)
        if m:
            return Norm(m.group(1) + b" " + self.job_id(m.group(2)) + b"\r\n")
        end = reply.find(b"\r\n")
        head = reply[:end + 2]
        m = _JOB_REPLY.fullmatch(head)
        if m:
            return Norm(m.group(1) + b" " + self.job_id(m.group(2)) + b" " + m.group(3) + b"\r\n" + reply[end + 2:])
        if head.startswith(b"OK ") and reply.endswith(b"\r\n"):
            body, ticks = self.yaml(reply[end + 2:-2])
            return Norm(b"OK <%d>\r\n" % len(body) + body + b"\r\n", ticks)
        return Norm(reply)

    def yaml(self, body: bytes) -> tuple[bytes, list]:
        lines = body.split(b"\n")
        keys = [ln.split(b": ", 1)[0].decode(errors="replace") for ln in lines if b": " in ln]
        if "tube" in keys and "state" in keys:
            kind = "stats-job"
        elif keys[:1] == ["name"]:
            kind = "stats-tube"
        elif "pid" in keys and "uptime" in keys:
            kind = "stats"
        else:
            return body, []  # a list (list-tubes), compared as is
        out, ticks = [], []
        for ln in lines:
            key, sep, value = ln.partition(b": ")
            k = key.decode(errors="replace")
            if not sep:
                out.append(ln)
            elif kind == "stats-job" and k == "id":
                out.append(b"id: " + self.job_id(value))
            elif kind == "stats" and k in MASKED_STATS:
                out.append(key + b": <masked>")
            elif k in TICKING[kind]:
                out.append(key + b": <seconds>")
                ticks.append((k, value))
            else:
                out.append(ln)
        return b"\n".join(out), ticks


def _ticks_differ(a: list, b: list) -> Optional[str]:
    for (ka, va), (kb, vb) in zip(a, b):
        try:
            if abs(int(va) - int(vb)) > 1:
                return f"{ka}: {va.decode()} vs {vb.decode()} (more than 1 s apart)"
        except ValueError:
            if va != vb:
                return f"{ka}: {va!r} vs {vb!r}"
    return None


# ---- running and comparing -----------------------------------------------------------


@dataclass
class Mismatch:
    step: int
    what: str
    expected: list
    got: list
    detail: str = ""


def final_steps() -> list:
    return [Send(b"stats\r\n", 1, conn="zz-final"), Send(b"list-tubes\r\n", 1, conn="zz-final"),
            Send(b"stats-tube default\r\n", 1, conn="zz-final")]


def run_pair(script: Script, oracle_port: int, subject_port: int) -> tuple[Side, Side, list]:
    steps = list(script.steps) + (final_steps() if script.final_stats else [])
    mjs = script.flags.get("max_job_size", 65535)
    oracle = Side("beanstalkd", oracle_port, mjs)
    subject = Side("miniqueue", subject_port, mjs)
    threads = [threading.Thread(target=s.run, args=(steps,), daemon=True) for s in (oracle, subject)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return oracle, subject, steps


def compare(oracle: Side, subject: Side, steps: list) -> list[Mismatch]:
    out: list[Mismatch] = []
    no, ns = Normaliser(), Normaliser()
    names = [describe(s) for s in steps] + ["(output left on the connections at the end)"] * 64
    for i, (a, b) in enumerate(zip(oracle.transcript, subject.transcript)):
        na = [no.unit(u) for u in a]
        nb = [ns.unit(u) for u in b]
        if [x.text for x in na] != [x.text for x in nb]:
            detail = ""
            if len(na) == len(nb):
                for x, y in zip(na, nb):
                    if x.text != y.text and x.text.startswith(b"OK") and y.text.startswith(b"OK"):
                        detail = "\n".join(difflib.unified_diff(
                            x.text.decode(errors="replace").splitlines(),
                            y.text.decode(errors="replace").splitlines(),
                            "beanstalkd", "miniqueue", lineterm="", n=1))
            out.append(Mismatch(i, names[i], [x.text for x in na], [x.text for x in nb], detail))
            continue
        for x, y in zip(na, nb):
            why = _ticks_differ(x.ticks, y.ticks)
            if why:
                out.append(Mismatch(i, names[i], [x.text for x in na], [x.text for x in nb], why))
    if len(oracle.transcript) != len(subject.transcript):
        out.append(Mismatch(min(len(oracle.transcript), len(subject.transcript)), "transcript length",
                            [b"%d steps" % len(oracle.transcript)], [b"%d steps" % len(subject.transcript)]))
    return out


def oracle_count_problems(oracle: Side, steps: list) -> list[str]:
    """Steps where beanstalkd sent a different number of replies than the script says:
    the script is wrong, not the server under test."""
    problems = []
    for i, (step, got) in enumerate(zip(steps, oracle.transcript)):
        if isinstance(step, (Send, Read)):
            want = step.replies
            if want is None:
                want = expected_replies(step.data, oracle.max_job_size)
            if any(u.startswith(b"<no reply") for u in got) or len(got) != want:
                problems.append(f"step {i} {describe(step)}: beanstalkd sent {got!r}, script expects {want}")
    return problems


def _show(units: list, limit: int = 700) -> str:
    s = repr(b"".join(units)) if units else "(nothing)"
    return s if len(s) <= limit else s[:limit] + f"... ({len(s)} chars)"


def report(script: Script, mismatches: list[Mismatch], limit: int = 8) -> str:
    lines = [f"script {script.name!r}: {len(mismatches)} step(s) differ from beanstalkd 1.12"]
    for m in mismatches[:limit]:
        lines.append(f"  step {m.step}: {m.what}")
        lines.append(f"    beanstalkd: {_show(m.expected)}")
        lines.append(f"    miniqueue:  {_show(m.got)}")
        if m.detail:
            lines.extend("      " + d for d in m.detail.splitlines())
    if len(mismatches) > limit:
        lines.append(f"  ... and {len(mismatches) - limit} more")
    return "\n".join(lines)
