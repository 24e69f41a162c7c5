"""The differential harness: run the same steps against redis-server and minikv, compare.

A *step* is one command (or a read of pushed replies) sent on a named connection. Both
servers get every step; their replies must be byte-identical unless the step names a
weaker *check* (unordered sets, TTLs that tick, random picks), and every weaker check
says why. Mismatches are collected rather than raised at once, because the first one
usually explains the rest; `Differ.assert_same()` fails the test with a transcript.

What this leaves out: comparing side effects that no reply shows (the AOF, memory use).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from resp_client import ServerClosed, encode_command, encode_node, is_error, parse, to_bytes

#: Mismatches shown in one failure message; after the first the states may differ anyway.
MAX_MISMATCHES_SHOWN = 8
#: Steps of transcript shown before the first mismatch.
CONTEXT_STEPS = 12


# -- checks: how two replies are compared -----------------------------------------


class Check:
    """Exact byte equality; subclasses relax it for a stated reason."""

    name = "exact"

    def differs(self, real: bytes, kv: bytes, differ: "Differ") -> Optional[str]:
        """None when the replies agree, else a short reason."""
        return None if real == kv else "bytes differ"


EXACT = Check()


def _sorted_node(node):
    """A node whose top-level aggregate is sorted (maps by pair), for unordered replies."""
    kind, value = node
    if kind in "*~>" and value is not None:
        return (kind, tuple(sorted(value, key=repr)))
    if kind == "%" and value is not None:
        return (kind, tuple(sorted(value, key=repr)))
    return node


class Unordered(Check):
    """Redis leaves the order of SMEMBERS, SINTER/SUNION/SDIFF, HKEYS, HVALS, KEYS and
    SPOP-with-count replies unspecified (it follows the hash table), so the elements are
    sorted before the comparison. The types and the element bytes must still be equal."""

    name = "unordered"

    def differs(self, real, kv, differ):
        if real == kv:
            return None
        if is_error(real) or is_error(kv):
            return "bytes differ"
        return None if _sorted_node(parse(real)) == _sorted_node(parse(kv)) else "differ as multisets"


UNORDERED = Unordered()


class UnorderedPairs(Check):
    """HGETALL (and HRANDFIELD ... WITHVALUES over the whole hash) in RESP2 is a flat
    array field, value, field, value in hash-table order: compare the (field, value)
    pairs as a set. In RESP3 the reply is a map, compared as a set of pairs."""

    name = "unordered pairs"

    def differs(self, real, kv, differ):
        if real == kv:
            return None
        if is_error(real) or is_error(kv):
            return "bytes differ"
        return None if _pairs(parse(real)) == _pairs(parse(kv)) else "differ as sets of pairs"


def _pairs(node):
    kind, value = node
    if kind == "*" and value is not None:
        pairs = [(value[i], value[i + 1]) for i in range(0, len(value) - 1, 2)]
        return (kind, len(value), tuple(sorted(pairs, key=repr)))
    if kind in "*~" and value is not None:
        return (kind, len(value), tuple(sorted(value, key=repr)))
    return _sorted_node(node)


UNORDERED_PAIRS = UnorderedPairs()


class Approx(Check):
    """TTL, PTTL, EXPIRETIME and PEXPIRETIME count time that passes between the two
    servers' replies (a millisecond, more on a loaded machine): integers may differ by
    `tolerance`; everything else, including the sign of -1/-2, must be equal."""

    def __init__(self, tolerance: int):
        self.tolerance = tolerance
        self.name = f"integers within {tolerance}"

    def differs(self, real, kv, differ):
        if real == kv:
            return None
        return None if self._close(parse(real), parse(kv)) else "differ beyond tolerance"

    def _close(self, a, b) -> bool:
        if a[0] != b[0]:
            return False
        if a[0] == ":" and a[1] is not None and b[1] is not None:
            x, y = int(a[1]), int(b[1])
            if x < 0 or y < 0:  # -1 (no TTL) and -2 (no key) are answers, not times
                return x == y
            return abs(x - y) <= self.tolerance
        if a[0] in "*~" and a[1] is not None and b[1] is not None:
            return len(a[1]) == len(b[1]) and all(self._close(p, q) for p, q in zip(a[1], b[1]))
        return a == b


SECONDS = Approx(1)
MILLIS = Approx(1000)


class Structural(Check):
    """A reply Redis chooses at random (SRANDMEMBER, HRANDFIELD, ZRANDMEMBER with a
    count): `verify(node, differ, side)` checks each server's reply against that
    server's own data, and the two replies must have the same type and length."""

    def __init__(self, name: str, verify: Callable):
        self.name = name
        self.verify = verify

    def differs(self, real, kv, differ):
        if is_error(real) or is_error(kv) or real == kv:
            return None if real == kv else "bytes differ"
        a, b = parse(real), parse(kv)
        if a[0] != b[0] or (a[1] is None) != (b[1] is None):
            return "reply types differ"
        if isinstance(a[1], tuple) and len(a[1]) != len(b[1]):
            return "reply lengths differ"
        for side, node in (("redis", a), ("minikv", b)):
            problem = self.verify(node, differ, side)
            if problem:
                return f"{side}: {problem}"
        return None


class Masked(Check):
    """A map (or RESP2 flat key/value array) whose listed fields may hold any value:
    the shape and every other field must match. Used for HELLO (see KNOWN_DIFFERENCES
    in test_differential.py)."""

    def __init__(self, fields: tuple, reason: str):
        self.fields = {to_bytes(f) for f in fields}
        self.reason = reason
        self.name = "masked " + ",".join(fields)

    def differs(self, real, kv, differ):
        if real == kv:
            return None
        if is_error(real) or is_error(kv):
            return "bytes differ"
        return None if self._mask(parse(real)) == self._mask(parse(kv)) else "differ outside masked fields"

    def _mask(self, node):
        kind, value = node
        if kind == "%":
            return (kind, tuple((k, ("?", b"masked") if k[1] in self.fields else v) for k, v in value))
        if kind == "*" and value is not None:
            out = list(value)
            for i in range(0, len(out) - 1, 2):
                if out[i][1] in self.fields:
                    out[i + 1] = ("?", b"masked")
            return (kind, tuple(out))
        return node


class UnsubscribeAll(Check):
    """UNSUBSCRIBE / PUNSUBSCRIBE without arguments answers one reply per channel in
    the order of the server's channel dict: the channels are compared as a set, the
    remaining-subscription counts (n-1, ..., 0) in order. Applies to all the step's
    replies together (`whole`)."""

    name = "unordered unsubscribe replies"
    whole = True

    def differs_many(self, real: list, kv: list, differ) -> Optional[str]:
        if real == kv:
            return None
        if len(real) != len(kv):
            return "different number of replies"
        a = [parse(x) for x in real]
        b = [parse(x) for x in kv]
        if [x[0] for x in a] != [x[0] for x in b]:
            return "reply types differ"
        try:
            kinds_a = [(x[1][0], x[1][2]) for x in a]
            kinds_b = [(x[1][0], x[1][2]) for x in b]
            chans_a = sorted(x[1][1] for x in a)
            chans_b = sorted(x[1][1] for x in b)
        except (TypeError, IndexError):
            return "bytes differ"
        return None if kinds_a == kinds_b and chans_a == chans_b else "differ beyond channel order"


UNSUBSCRIBE_ALL = UnsubscribeAll()


class Exec(Check):
    """EXEC's array holds one reply per queued command, each compared with that
    command's own check (so SMEMBERS inside MULTI is still compared unordered)."""

    name = "exec"

    def __init__(self, checks):
        self.checks = checks

    def differs(self, real, kv, differ):
        if real == kv:
            return None
        a, b = parse(real), parse(kv)
        if a[0] != b[0] or a[0] != "*" or a[1] is None or b[1] is None or len(a[1]) != len(b[1]):
            return "bytes differ"
        if len(a[1]) != len(self.checks):
            return "bytes differ"
        for i, (x, y, check) in enumerate(zip(a[1], b[1], self.checks)):
            problem = check.differs(encode_node(x), encode_node(y), differ)
            if problem:
                return f"element {i}: {problem}"
        return None


# -- steps ---------------------------------------------------------------------------


@dataclass
class Step:
    """One command sent to both servers on connection `conn`, and how many replies to
    read back (0: send only, e.g. a blocking pop answered later by a `Read`)."""

    args: tuple
    check: Check = EXACT
    replies: int = 1
    conn: str = "main"
    #: Bytes sent as they are instead of `args` (inline commands).
    raw: Optional[bytes] = None
    #: Seconds to wait before the step (e.g. for a key to expire).
    sleep: float = 0.0
    #: Arguments that differ between the servers, built per side as
    #: `per_side(side, differ)` (e.g. `CLIENT TRACKING on REDIRECT <that server's id>`);
    #: `args` is then only the description.
    per_side: Optional[Callable] = None

    def describe(self) -> str:
        if self.raw is not None:
            return f"raw {self.raw!r}"
        words = []
        for a in self.args:
            b = to_bytes(a)
            s = b.decode("utf-8", "backslashreplace")
            words.append(s if s and s.isprintable() and " " not in s and s.isascii() else repr(b))
        return " ".join(words)


def C(*args, check: Check = EXACT, replies: int = 1, conn: str = "main") -> Step:
    return Step(tuple(args), check=check, replies=replies, conn=conn)


def U(*args, **kw) -> Step:
    """A command whose reply Redis leaves unordered (see `Unordered`)."""
    return C(*args, check=UNORDERED, **kw)


def UP(*args, **kw) -> Step:
    """A command replying field/value pairs in hash order (see `UnorderedPairs`)."""
    return C(*args, check=UNORDERED_PAIRS, **kw)


def T(*args, **kw) -> Step:
    """A time-valued command: seconds or milliseconds by its name (see `Approx`)."""
    name = str(args[0]).upper()
    return C(*args, check=MILLIS if name.startswith("P") else SECONDS, **kw)


def On(conn: str, *args, **kw) -> Step:
    return C(*args, conn=conn, **kw)


def Send(conn: str, *args) -> Step:
    return C(*args, conn=conn, replies=0)


def Read(conn: str, n: int = 1, check: Check = EXACT) -> Step:
    return Step((), check=check, replies=n, conn=conn)


def Raw(data: bytes, replies: int = 1, conn: str = "main") -> Step:
    return Step((), raw=data, replies=replies, conn=conn)


def Sleep(seconds: float) -> Step:
    return Step((), replies=0, conn="main", sleep=seconds)


class Sync(Step):
    """PING on `conn`, reading every reply up to and including its PONG: the pushes the
    connection was sent before it (invalidations, pub/sub messages) are compared as a
    list, without sleeping. Both servers queue a push for a client before they answer
    the command that caused it, and write a client's queued pushes before the reply to
    its next command, so once the causing command has been answered, a PING collects
    them deterministically. A subscribed RESP2 connection's PONG is `pong` in an array."""

    PONGS = (b"+PONG\r\n", b"*2\r\n$4\r\npong\r\n$0\r\n\r\n")
    #: A connection that keeps sending more than this before its PONG is broken.
    MAX_REPLIES = 10_000

    def __init__(self, conn: str = "main", check: "Check" = EXACT):
        super().__init__(("PING",), conn=conn, check=check)

    def describe(self) -> str:
        return f"PING on {self.conn} (pushes up to its PONG)"


class Close(Step):
    """Closes connection `conn` on both servers, then waits until each server has
    noticed (CLIENT LIST no longer lists it), so that the next step sees it gone.
    Needs `Differ(record_ids=True)`."""

    #: How long a server may take to notice a closed connection.
    TIMEOUT_S = 10.0

    def __init__(self, conn: str):
        super().__init__((), conn=conn, replies=0)

    def describe(self) -> str:
        return f"close {self.conn}"


class ScanAll(Step):
    """SCAN/SSCAN/HSCAN/ZSCAN to the end: cursor values are each server's business, so
    the comparison is on the set of everything returned (duplicates removed, as the
    SCAN guarantee allows them). Errors (bad cursor, bad COUNT) compare exactly."""

    def __init__(self, *args, conn: str = "main"):
        super().__init__(tuple(args), conn=conn)


# -- the differ ----------------------------------------------------------------------


@dataclass
class Mismatch:
    index: int
    step: str
    check: str
    reason: str
    real: bytes
    kv: bytes


@dataclass
class Differ:
    """Two servers, the same steps, a transcript, and the mismatches found."""

    real_srv: object
    kv_srv: object
    #: RESP protocol every connection switches to first (HELLO 3 for 3).
    protocol: int = 2
    #: Printed in a failure, e.g. how to replay a random sequence.
    label: str = ""
    #: Check used for the HELLO that switches a connection to RESP3.
    hello_check: Check = EXACT
    conns: dict = field(default_factory=dict)
    transcript: list = field(default_factory=list)
    mismatches: list = field(default_factory=list)
    #: Per connection: the checks of the commands queued since MULTI, or None.
    queued: dict = field(default_factory=dict)
    #: Per connection: the database it selected (for probes of `Structural` checks).
    db: dict = field(default_factory=dict)
    #: Ask each new connection for its CLIENT ID on both servers (kept in `ids`), for
    #: steps and checks that must name a connection (tracking REDIRECT).
    record_ids: bool = False
    #: `(side, connection name)` to that connection's client id on that server.
    ids: dict = field(default_factory=dict)

    def close(self) -> None:
        for real, kv in self.conns.values():
            real.close()
            kv.close()
        self.conns.clear()

    def pair(self, name: str):
        if name not in self.conns:
            self.conns[name] = (self.real_srv.connect(), self.kv_srv.connect())
            self.db[name] = 0
            if self.protocol == 3:
                self.run(Step(("HELLO", "3"), check=self.hello_check, conn=name))
            if self.record_ids:
                for side, c in zip(("redis", "minikv"), self.conns[name]):
                    self.ids[(side, name)] = int(c.call("CLIENT", "ID")[1:-2])
        return self.conns[name]

    def probe(self, side: str, *args):
        """A read-only command on a side connection in the same database as `main`,
        for checks that must look at a server's data (never part of the transcript)."""
        name = "_probe"
        if name not in self.conns:  # plain RESP2, outside the transcript
            self.conns[name] = (self.real_srv.connect(), self.kv_srv.connect())
            self.db[name] = 0
        real, kv = self.conns[name]
        want = self.db.get("main", 0)
        if self.db[name] != want:
            for c in (real, kv):
                c.call("SELECT", want)
            self.db[name] = want
        return parse((real if side == "redis" else kv).call(*args))

    def run(self, step: Step) -> None:
        if step.sleep:
            time.sleep(step.sleep)
        if isinstance(step, Close):
            return self._close(step)
        if step.replies == 0 and not step.args and step.raw is None:
            return
        if isinstance(step, ScanAll):
            return self._scan_all(step)
        real, kv = self.pair(step.conn)
        data = step.raw if step.raw is not None else (encode_command(step.args) if step.args else b"")
        index = len(self.transcript)
        replies = []
        for side, conn, srv in (("redis", real, self.real_srv), ("minikv", kv, self.kv_srv)):
            try:
                if step.per_side is not None:
                    data = encode_command(step.per_side(side, self))
                if data:
                    conn.send_raw(data)
                if isinstance(step, Sync):
                    replies.append(self._until_pong(conn))
                else:
                    replies.append([conn.read_reply() for _ in range(step.replies)])
            except (ServerClosed, TimeoutError, OSError) as e:
                detail = srv.log_tail() if not srv.alive() else ""
                self.transcript.append((index, step.describe(), f"{side} failed: {e}"))
                self.mismatches.append(
                    Mismatch(index, step.describe(), step.check.name, f"{side}: {e}\n{detail}", b"", b"")
                )
                raise _Abort() from None
        check = self._check_for(step, replies[0])
        if isinstance(step, Sync) and len(replies[0]) != len(replies[1]):
            r, k = b"".join(replies[0]), b"".join(replies[1])
            self.transcript.append((index, step.describe(), (r, k)))
            reason = f"{len(replies[0]) - 1} push(es) from redis, {len(replies[1]) - 1} from minikv"
            self.mismatches.append(Mismatch(index, step.describe(), check.name, reason, r, k))
            return
        if getattr(check, "whole", False):
            problem = check.differs_many(replies[0], replies[1], self)
            r, k = b"".join(replies[0]), b"".join(replies[1])
            self.transcript.append((index, step.describe(), r if not problem else (r, k)))
            if problem:
                self.mismatches.append(Mismatch(index, step.describe(), check.name, problem, r, k))
            self._track(step, replies[0])
            return
        for r, k in zip(replies[0], replies[1]):
            try:
                problem = check.differs(r, k, self)
            except Exception as e:  # an unparsable reply is a mismatch, not a crash
                problem = f"comparison failed: {e!r}"
            self.transcript.append((index, step.describe(), r if not problem else (r, k)))
            if problem:
                self.mismatches.append(Mismatch(index, step.describe(), check.name, problem, r, k))
        self._track(step, replies[0])

    def _close(self, step: Close) -> None:
        pair = self.conns.pop(step.conn, None)
        if pair is None:
            return
        for c in pair:
            c.close()
        for side, srv in (("redis", self.real_srv), ("minikv", self.kv_srv)):
            gone_id = self.ids[(side, step.conn)]
            deadline = time.monotonic() + Close.TIMEOUT_S
            with srv.connect() as probe:
                while b"id=" in probe.call("CLIENT", "LIST", "ID", gone_id):
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{side} still lists client {gone_id} {Close.TIMEOUT_S}s after close")
                    time.sleep(0.005)
        self.transcript.append((len(self.transcript), step.describe(), b""))

    @staticmethod
    def _until_pong(conn) -> list:
        out = []
        for _ in range(Sync.MAX_REPLIES):
            reply = conn.read_reply()
            out.append(reply)
            if reply in Sync.PONGS:
                return out
        raise AssertionError(f"no PONG within {Sync.MAX_REPLIES} replies")

    def _check_for(self, step: Step, real_replies) -> Check:
        name = str(step.args[0]).upper() if step.args else ""
        if name == "EXEC" and self.queued.get(step.conn) is not None and step.check is EXACT:
            return Exec(self.queued[step.conn])
        return step.check

    def _track(self, step: Step, real_replies) -> None:
        """Follows MULTI queues and SELECT, from the reference server's replies."""
        if not step.args or not real_replies:
            return
        name = str(step.args[0]).upper()
        reply = real_replies[0]
        q = self.queued.get(step.conn)
        if q is not None and name not in ("EXEC", "DISCARD", "RESET", "MULTI", "WATCH", "QUIT"):
            if reply == b"+QUEUED\r\n":
                q.append(step.check)
            return
        if name == "MULTI" and reply == b"+OK\r\n":
            self.queued[step.conn] = []
        elif name in ("EXEC", "DISCARD", "RESET"):
            self.queued[step.conn] = None
            if name == "RESET":
                self.db[step.conn] = 0
        elif name == "SELECT" and reply == b"+OK\r\n":
            self.db[step.conn] = int(step.args[1])

    def _scan_all(self, step: ScanAll) -> None:
        real, kv = self.pair(step.conn)
        index = len(self.transcript)
        results = []
        for conn in (real, kv):
            seen = set()
            cursor = b"0"
            error = None
            for _ in range(100_000):
                args = list(step.args)
                pos = 2 if str(args[0]).upper() != "SCAN" else 1
                args.insert(pos, cursor)
                raw = conn.call(*args)
                if is_error(raw):
                    error = raw
                    break
                node = parse(raw)
                cursor = node[1][0][1]
                for item in node[1][1][1]:
                    seen.add(item[1])
                if cursor == b"0":
                    break
            results.append(error if error is not None else tuple(sorted(seen)))
        desc = step.describe() + " (full scan)"
        if results[0] != results[1]:
            r, k = (repr(x).encode() for x in results)
            self.transcript.append((index, desc, (r, k)))
            self.mismatches.append(Mismatch(index, desc, "set of scanned items", "differ", r, k))
        else:
            self.transcript.append((index, desc, repr(results[0]).encode()))

    def run_all(self, steps) -> None:
        try:
            for s in steps:
                self.run(s)
        except _Abort:
            pass

    def report(self) -> str:
        first = self.mismatches[0].index
        lines = []
        if self.label:
            lines.append(self.label)
        lines.append(f"{len(self.mismatches)} mismatching repl(y/ies); transcript before the first:")
        for index, desc, reply in self.transcript:
            if first - CONTEXT_STEPS <= index < first:
                lines.append(f"  [{index}] {desc}  ->  {reply!r}")
        for m in self.mismatches[:MAX_MISMATCHES_SHOWN]:
            lines.append(f"MISMATCH at step [{m.index}] {m.step}   (check: {m.check}; {m.reason})")
            lines.append(f"    redis : {m.real!r}")
            lines.append(f"    minikv: {m.kv!r}")
        if len(self.mismatches) > MAX_MISMATCHES_SHOWN:
            lines.append(f"  ... and {len(self.mismatches) - MAX_MISMATCHES_SHOWN} more")
        return "\n".join(lines)

    def assert_same(self) -> None:
        if self.mismatches:
            import pytest

            pytest.fail(self.report(), pytrace=False)


class _Abort(Exception):
    """A connection broke: the rest of the steps cannot run."""
