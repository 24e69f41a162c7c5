"""Bad input: beanstalkd's error replies, and a server that keeps serving.

* malformed command lines get the exact reply beanstalkd 1.12 sends (the expected
  bytes below were taken from it; MINIQUEUE_BIN=/usr/bin/beanstalkd checks them), and
  the connection stays usable;
* oversized jobs (JOB_TOO_BIG after the body is read and thrown away), a body without
  its CRLF (EXPECTED_CRLF), a line without CRLF (no reply until the line ends);
* 32 MiB without a newline on one connection: the server discards it as it comes
  (its memory does not grow with it), answers BAD_FORMAT at the CRLF, and serves other
  connections meanwhile;
* half-sent commands and bodies, then a close, on hundreds of connections: nothing is
  created, no connection is leaked, no job is swallowed by a closed waiter;
* a few hundred seeded random byte strings (raw bytes, and shuffled protocol tokens
  with bad numbers and stray CR/LF), each on its own connection and some pipelined:
  every reply line is one of beanstalkd's reply forms, and the server answers a new
  connection after every batch. `MQ_FUZZ_SEED=<n>` replays a run (the seed is in
  every failure message); `MQ_FUZZ_CASES=<n>` sets the number of strings.
"""

from __future__ import annotations

import os
import random
import re
import socket
import threading
import time

import pytest

from conftest import Conn, body_of, parse_yaml_dict, wait_until

# (bytes sent, exact reply from beanstalkd 1.12)
MALFORMED = [
    (b"foo\r\n", b"UNKNOWN_COMMAND\r\n"),
    (b"\r\n", b"UNKNOWN_COMMAND\r\n"),
    (b" \r\n", b"UNKNOWN_COMMAND\r\n"),
    (b"PUT 0 0 60 1\r\n", b"UNKNOWN_COMMAND\r\n"),
    (b"Stats\r\n", b"UNKNOWN_COMMAND\r\n"),
    (b"reserv\r\n", b"UNKNOWN_COMMAND\r\n"),
    (b"peek\r\n", b"UNKNOWN_COMMAND\r\n"),
    (b"kick\r\n", b"UNKNOWN_COMMAND\r\n"),
    (b"delete\r\n", b"UNKNOWN_COMMAND\r\n"),
    (b"\x01\x02\r\n", b"UNKNOWN_COMMAND\r\n"),
    (b"\xff\r\n", b"UNKNOWN_COMMAND\r\n"),
    # A NUL byte anywhere in a line is BAD_FORMAT, even in an unknown command.
    (b"\x00\r\n", b"BAD_FORMAT\r\n"),
    (b"foo\x00\r\n", b"BAD_FORMAT\r\n"),
    (b"stats\x00\r\n", b"BAD_FORMAT\r\n"),
    (b"put\r\n", b"UNKNOWN_COMMAND\r\n"),
    (b"put 1 0 1\r\n", b"BAD_FORMAT\r\n"),
    (b"put 0 0 60 1 2\r\n", b"BAD_FORMAT\r\n"),
    (b"put a 0 60 1\r\n", b"BAD_FORMAT\r\n"),
    (b"put -1 0 60 1\r\n", b"BAD_FORMAT\r\n"),
    (b"put 4294967296 0 60 1\r\n", b"BAD_FORMAT\r\n"),
    (b"put 0 0 60 1 \r\n", b"BAD_FORMAT\r\n"),
    (b"use -abc\r\n", b"BAD_FORMAT\r\n"),
    (b"use a b\r\n", b"BAD_FORMAT\r\n"),
    (b"use a!\r\n", b"BAD_FORMAT\r\n"),
    (b"use " + b"a" * 201 + b"\r\n", b"BAD_FORMAT\r\n"),
    (b"watch \r\n", b"BAD_FORMAT\r\n"),
    (b"delete abc\r\n", b"BAD_FORMAT\r\n"),
    (b"delete -1\r\n", b"BAD_FORMAT\r\n"),
    (b"delete 18446744073709551616\r\n", b"BAD_FORMAT\r\n"),
    (b"delete 18446744073709551615\r\n", b"NOT_FOUND\r\n"),
    (b"release 1 0\r\n", b"BAD_FORMAT\r\n"),
    (b"bury 1\r\n", b"BAD_FORMAT\r\n"),
    (b"peek-ready \r\n", b"BAD_FORMAT\r\n"),
    (b"stats \r\n", b"BAD_FORMAT\r\n"),
    (b"statsx\r\n", b"BAD_FORMAT\r\n"),
    (b"list-tubesx\r\n", b"BAD_FORMAT\r\n"),
    (b"reserve \r\n", b"BAD_FORMAT\r\n"),
    (b"pause-tube default\r\n", b"BAD_FORMAT\r\n"),
    (b"pause-tube nope 1\r\n", b"NOT_FOUND\r\n"),
    (b"kick -1\r\n", b"KICKED 0\r\n"),
    (b"ignore default\r\n", b"NOT_IGNORED\r\n"),
    (b"x" * 222 + b"\r\n", b"UNKNOWN_COMMAND\r\n"),
]


@pytest.mark.parametrize("data,reply", MALFORMED, ids=[repr(d[:30]) for d, _ in MALFORMED])
def test_malformed_line_gets_beanstalkds_error(miniqueue, data, reply):
    with miniqueue.conn() as c:
        c.send(data)
        assert c.reply() == reply
        assert c.cmd(b"list-tube-used") == b"USING default\r\n", "the connection is still in step"


def test_put_line_error_then_body_is_a_command(miniqueue):
    """After BAD_FORMAT on a put line, beanstalkd reads the body as the next command."""
    with miniqueue.conn() as c:
        c.send(b"put -1 0 60 5\r\nhello\r\n")
        assert c.reply() == b"BAD_FORMAT\r\n"
        assert c.reply() == b"UNKNOWN_COMMAND\r\n"


def test_oversized_jobs(start_miniqueue):
    with start_miniqueue().conn() as c:
        c.send(b"put 0 0 60 70000\r\n" + b"z" * 70000 + b"\r\n")
        assert c.reply() == b"JOB_TOO_BIG\r\n", "JOB_TOO_BIG once the body has been read and discarded"
        assert c.put(b"z" * 65535) > 0
    small = start_miniqueue(max_job_size=100)
    with small.conn() as c:
        assert parse_yaml_dict(body_of(c.cmd(b"stats")))["max-job-size"] == "100"
        assert c.put(b"y" * 100) > 0
        c.send(b"put 0 0 60 101\r\n" + b"y" * 101 + b"\r\n")
        assert c.reply() == b"JOB_TOO_BIG\r\n"
        assert c.cmd(b"list-tube-used") == b"USING default\r\n"


def test_body_without_crlf(miniqueue):
    with miniqueue.conn() as c:
        c.send(b"put 0 0 60 3\r\nabcXY")
        assert c.reply() == b"EXPECTED_CRLF\r\n"
        j = c.put(b"fine")
        assert body_of(c.cmd(b"peek %d" % j)) == b"fine"


def test_line_without_crlf_waits_and_others_are_served(miniqueue):
    with miniqueue.conn() as c, miniqueue.conn() as other:
        c.send(b"stats\n")
        assert c.reply_or_none(0.3) is None, "a line is not complete without CRLF"
        assert other.cmd(b"list-tube-used") == b"USING default\r\n"
        c.send(b"\r\n")
        assert c.reply() == b"BAD_FORMAT\r\n"  # the line was 'stats\n'
        assert c.cmd(b"list-tube-used") == b"USING default\r\n"


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_huge_line_without_newline_is_discarded(miniqueue):
    chunk = b"a" * (1 << 20)
    base = rss_kib(miniqueue.pid)
    served = []
    stop = threading.Event()

    def bystander():
        with miniqueue.conn() as o:
            while not stop.is_set():
                t0 = time.monotonic()
                assert o.cmd(b"list-tube-used") == b"USING default\r\n"
                served.append(time.monotonic() - t0)
                time.sleep(0.01)

    t = threading.Thread(target=bystander, daemon=True)
    t.start()
    try:
        with miniqueue.conn(timeout=20) as c:
            for _ in range(32):
                c.sock.sendall(chunk)
            grown = rss_kib(miniqueue.pid) - base
            c.send(b"\r\n")
            assert c.reply(timeout=20) == b"BAD_FORMAT\r\n"
            assert c.cmd(b"list-tube-used") == b"USING default\r\n"
    finally:
        stop.set()
        t.join(10)
    assert grown < 16 * 1024, f"RSS grew by {grown} KiB while 32 MiB of one line arrived: it is being kept"
    assert served and max(served) < 2.0, f"a bystander waited {max(served or [0]):.2f} s for a reply"


def test_half_sent_commands_then_close(miniqueue):
    base = parse_yaml_dict(body_of(miniqueue.control.cmd(b"stats")))
    partials = [b"put 0 0 60 100\r\nabc", b"put 0 0 60 5\r\nhello", b"put 0 0 60 5\r\nhello\r", b"put 0 0 60",
                b"use abc", b"stats-job", b"reserve-with-timeout 10\r\n", b"reserve\r\n", b"p", b"\r",
                b"put 0 0 60 70000\r\n" + b"q" * 500, b"x" * 5000]
    for _round in range(10):
        for data in partials:
            s = socket.create_connection(("127.0.0.1", miniqueue.port))
            s.sendall(data)
            s.close()
    assert miniqueue.answers()
    want = base["current-connections"]
    wait_until(lambda: parse_yaml_dict(body_of(miniqueue.control.cmd(b"stats")))["current-connections"] == want,
               10, f"current-connections back to {want} after 120 abandoned connections")
    st = parse_yaml_dict(body_of(miniqueue.control.cmd(b"stats")))
    assert (st["current-jobs-ready"], st["total-jobs"], st["current-waiting"]) == ("0", "0", "0"), st
    # A waiter that went away must not swallow the next job.
    with miniqueue.conn() as p, miniqueue.conn() as w:
        j = p.put(b"for a live worker")
        assert w.cmd(b"reserve-with-timeout 2").startswith(b"RESERVED %d " % j)


def test_many_open_connections_with_partial_lines(miniqueue):
    conns = [Conn(miniqueue.port) for _ in range(200)]
    try:
        for i, c in enumerate(conns):
            c.send(b"list-tube-us" if i % 2 else b"put 0 0 60 10\r\n12345")
        assert miniqueue.answers()
        for i, c in enumerate(conns[:20]):  # the rest of the line completes each command
            c.send(b"ed\r\n" if i % 2 else b"67890\r\n")
            r = c.reply()
            assert r == b"USING default\r\n" if i % 2 else r.startswith(b"INSERTED "), r
    finally:
        for c in conns:
            c.close()
    assert miniqueue.answers()


# ---- seeded random bytes -------------------------------------------------------------

REPLY_LINE = re.compile(
    rb"(OUT_OF_MEMORY|INTERNAL_ERROR|BAD_FORMAT|UNKNOWN_COMMAND|EXPECTED_CRLF|JOB_TOO_BIG|DRAINING"
    rb"|NOT_FOUND|DELETED|RELEASED|BURIED|TOUCHED|NOT_IGNORED|KICKED|PAUSED|TIMED_OUT|DEADLINE_SOON"
    rb"|POLICY_SET|DEAD"
    rb"|(INSERTED|BURIED|KICKED|WATCHING|RETRYING|PURGED|DUPLICATE) \d+"
    rb"|USING [A-Za-z0-9+/;.$_()-]+)\r\n")
BODY_LINE = re.compile(rb"(OK \d+|(RESERVED|FOUND) \d+ \d+)\r\n")

VOCAB = [b"put", b"reserve", b"reserve-with-timeout", b"reserve-job", b"delete", b"release", b"bury", b"touch",
         b"watch", b"ignore", b"use", b"peek", b"peek-ready", b"peek-delayed", b"peek-buried", b"kick",
         b"kick-job", b"stats", b"stats-job", b"stats-tube", b"list-tubes", b"list-tube-used",
         b"list-tubes-watched", b"pause-tube", b"tube-policy", b"fail", b"purge-dead", b"put-unique",
         b"default", b"a", b"b(1)", b"-x", b"exponential", b"none", b"polynomial"]
NUMBERS = [b"0", b"1", b"2", b"60", b"-1", b"+1", b"4294967295", b"4294967296", b"18446744073709551616",
           b"99999999999999999999999", b"01", b"1a", b"", b"65535", b"65536"]
SEPS = [b" ", b" ", b" ", b"  ", b"\t", b"\r\n", b"\r\n", b"\n", b"\r", b"\x00"]


def random_input(rng: random.Random) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 600)))
    if kind == 1:
        return bytes(rng.choice(b"abcdeprsuty-0123456789 \r\n") for _ in range(rng.randrange(1, 300)))
    if kind == 2:  # shuffled protocol tokens
        parts = []
        for _ in range(rng.randrange(1, 12)):
            parts.append(rng.choice(VOCAB) if rng.random() < 0.6 else rng.choice(NUMBERS))
            parts.append(rng.choice(SEPS))
        return b"".join(parts)
    if kind == 3:  # a put whose size does not match its body
        size = rng.choice([0, 1, 5, 100, 65535, 65536])
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 120)))
        return b"put %d 0 60 %d\r\n" % (rng.randrange(3), size) + body + rng.choice([b"\r\n", b"", b"\n", b"\r"])
    # valid commands with one byte flipped
    line = bytearray(rng.choice([b"put 0 0 60 5\r\nhello\r\n", b"use tube\r\n", b"stats-tube default\r\n",
                                 b"release 1 0 0\r\n", b"pause-tube default 0\r\n", b"watch x\r\n"]))
    line[rng.randrange(len(line))] = rng.randrange(256)
    return bytes(line)


def check_replies(data: bytes) -> str:
    """'' if `data` is a sequence of well-formed beanstalk replies (a partial last one
    allowed: we stopped reading), else what is wrong."""
    i = 0
    while i < len(data):
        end = data.find(b"\r\n", i)
        if end < 0:
            return "" if len(data) - i < 64 else f"{len(data) - i} bytes without CRLF at {i}"
        line = data[i:end + 2]
        if REPLY_LINE.fullmatch(line):
            i = end + 2
            continue
        m = BODY_LINE.fullmatch(line)
        if not m:
            return f"not a beanstalk reply line: {line[:80]!r}"
        size = int(line[:-2].split()[-1])
        stop = end + 2 + size
        if stop + 2 <= len(data) and data[stop:stop + 2] != b"\r\n":
            return f"body of {line[:60]!r} not followed by CRLF"
        i = stop + 2
    return ""


FUZZ_SEED = int(os.environ.get("MQ_FUZZ_SEED", "1234567"))
FUZZ_CASES = int(os.environ.get("MQ_FUZZ_CASES", "400"))


def drain(s: socket.socket, wait: float) -> bytes:
    s.settimeout(wait)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
            s.settimeout(0.005)
    except (socket.timeout, ConnectionResetError):
        pass
    return out


def test_random_bytes_never_crash(miniqueue):
    rng = random.Random(FUZZ_SEED)
    replay = f"replay: MQ_FUZZ_SEED={FUZZ_SEED} MQ_FUZZ_CASES={FUZZ_CASES}"
    base = parse_yaml_dict(body_of(miniqueue.control.cmd(b"stats")))["current-connections"]
    for i in range(FUZZ_CASES):
        pipelined = i % 8 == 7
        data = b"".join(random_input(rng) for _ in range(rng.randrange(2, 6))) if pipelined else random_input(rng)
        s = socket.create_connection(("127.0.0.1", miniqueue.port))
        try:
            s.sendall(data)
            got = drain(s, 0.02)
        except (ConnectionResetError, BrokenPipeError):
            got = b""
        finally:
            s.close()
        problem = check_replies(got)
        assert not problem, f"case {i} {replay}: sent {data[:200]!r}: {problem}; replies {got[:300]!r}"
        if i % 50 == 49:
            assert miniqueue.answers(), f"miniqueue stopped answering after case {i} ({replay}): {data[:200]!r}"
    assert miniqueue.answers(), f"miniqueue stopped answering ({replay})"
    wait_until(lambda: parse_yaml_dict(body_of(miniqueue.control.cmd(b"stats")))["current-connections"] == base,
               10, f"every fuzz connection to be closed ({replay})")
    with miniqueue.conn() as c:  # still a working queue
        c.cmd(b"use after-fuzz")
        c.cmd(b"watch after-fuzz")
        j = c.put(b"still works")
        r = c.cmd(b"reserve-job %d" % j)
        assert r == b"RESERVED %d 11\r\nstill works\r\n" % j, r
        assert c.cmd(b"delete %d" % j) == b"DELETED\r\n"
