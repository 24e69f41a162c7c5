"""kill -9 under load, with `-b DIR -f 0`: every acknowledged change survives.

Seven greenstalk clients work for `LOAD_S` seconds, each in its own tube, recording
what the server acknowledged (and what was in flight when the server died):

* three producers put jobs (tube `p`);
* a deleter puts jobs and deletes each one (tube `del`);
* a burier puts, reserves and buries (tube `bury`);
* a delayer puts jobs with a one-hour delay (tube `delay`);
* a reserver puts and reserves, and holds what it reserved (tube `res`);
* a releaser puts, reserves and releases with a new priority and a one-hour delay
  (tube `rel`);
* a kicker puts with a one-hour delay and kick-jobs it (tube `kick`).

Producers use random priorities; every job's priority is checked after the restart.

Then the server is killed with SIGKILL, mid-load, and restarted on the same directory
and port. Checked, over the jobs of every round so far:

* no acknowledged put is lost (stats-job finds it, peek returns the same body), unless
  its delete was acknowledged; no acknowledged delete comes back;
* acknowledged buries are still buried; delayed jobs (put or released with a delay)
  are still delayed, with their deadline kept (time-left within 2 s of what was asked);
  acknowledged kicks stay kicked; jobs that were reserved when the server died are
  ready; priorities are the ones acknowledged; nothing is in a state no acknowledged
  command could have put it in;
* new ids are above every id the server had acknowledged.

That is repeated `ROUNDS` times on the same directory (the log of one crash is
recovered, then written on and crashed again). With -f 0 a reply comes after the
fsync, so even a power loss would keep all of this; kill -9 only needs the write.
Runs against the real beanstalkd too (MINIQUEUE_BIN=/usr/bin/beanstalkd).
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict

import pytest

from conftest import body_of, parse_yaml_dict

greenstalk = pytest.importorskip("greenstalk", reason="pip install greenstalk (./test.sh installs it)")

ROUNDS = 3
LOAD_S = 2.0
DELAY_S = 3600
#: time-left is whole seconds, read a moment after a put whose clock we read: 2 s slack.
DEADLINE_SLACK_S = 2


class Model:
    """What the server acknowledged, across all rounds."""

    def __init__(self):
        self.lock = threading.Lock()
        self.body: dict[int, bytes] = {}
        self.tube: dict[int, str] = {}
        #: id -> wall-clock deadline of a delayed put.
        self.deadline: dict[int, float] = {}
        self.deleted: set[int] = set()
        self.delete_in_flight: set[int] = set()
        self.buried: set[int] = set()
        self.bury_in_flight: set[int] = set()
        self.reserved: set[int] = set()
        #: id -> priority the server acknowledged (put, or release).
        self.pri: dict[int, int] = {}
        self.release_in_flight: set[int] = set()
        self.released: set[int] = set()
        self.kick_in_flight: set[int] = set()
        self.kicked: set[int] = set()
        self.errors: list[str] = []

    def acked_put(self, jid: int, tube: str, body: bytes, deadline: float = 0.0, pri: int = 0) -> None:
        with self.lock:
            assert jid not in self.body, f"id {jid} acknowledged twice"
            self.body[jid] = body
            self.tube[jid] = tube
            self.pri[jid] = pri
            if deadline:
                self.deadline[jid] = deadline


def worker(kind: str, n: int, port: int, model: Model, stop: threading.Event, dying: threading.Event) -> None:
    """One client's loop until `stop`; errors once `dying` is set are the kill's doing."""
    seq = 0
    rng = random.Random(hash((kind, n)))
    try:
        tube = {"producer": "p", "deleter": "del", "burier": "bury", "delayer": "delay", "reserver": "res",
                "releaser": "rel", "kicker": "kick"}[kind]
        with greenstalk.Client(("127.0.0.1", port), encoding=None, use=tube, watch=tube) as c:
            while not stop.is_set():
                seq += 1
                body = b"%s-%d-%d-%d" % (kind.encode(), n, seq, int(time.time() * 1000))
                if kind in ("delayer", "kicker"):
                    t = time.time()
                    jid = c.put(body, priority=0, delay=DELAY_S)
                    model.acked_put(jid, tube, body, t + DELAY_S)
                    if kind == "kicker":
                        with model.lock:
                            model.kick_in_flight.add(jid)
                        c.kick_job(jid)
                        with model.lock:
                            model.kicked.add(jid)
                    continue
                pri = rng.choice([0, 1, 1024, 2**31, 2**32 - 1]) if kind == "producer" else 0
                jid = c.put(body, priority=pri)
                model.acked_put(jid, tube, body, pri=pri)
                if kind == "deleter":
                    with model.lock:
                        model.delete_in_flight.add(jid)
                    c.delete(jid)
                    with model.lock:
                        model.deleted.add(jid)
                elif kind == "burier":
                    job = c.reserve(timeout=5)
                    with model.lock:
                        model.bury_in_flight.add(job.id)
                    c.bury(job, priority=3)
                    with model.lock:
                        model.buried.add(job.id)
                        model.pri[job.id] = 3
                elif kind == "reserver":
                    job = c.reserve(timeout=5)
                    with model.lock:
                        model.reserved.add(job.id)
                elif kind == "releaser":
                    job = c.reserve(timeout=5)
                    with model.lock:
                        model.release_in_flight.add(job.id)
                    t = time.time()
                    c.release(job, priority=7, delay=DELAY_S)
                    with model.lock:
                        model.released.add(job.id)
                        model.deadline[job.id] = t + DELAY_S
                        model.pri[job.id] = 7
    except (ConnectionError, OSError, greenstalk.Error, AssertionError) as e:
        if not dying.is_set():
            with model.lock:
                model.errors.append(f"{kind}{n}: {type(e).__name__}: {e}")


KINDS = [("producer", 0), ("producer", 1), ("producer", 2), ("deleter", 0), ("burier", 0), ("delayer", 0),
         ("reserver", 0), ("releaser", 0), ("kicker", 0)]


def load_then_kill(server, model: Model) -> None:
    stop, dying = threading.Event(), threading.Event()
    threads = [threading.Thread(target=worker, args=(k, n, server.port, model, stop, dying), daemon=True)
               for k, n in KINDS]
    for t in threads:
        t.start()
    time.sleep(LOAD_S)
    dying.set()
    with model.lock:
        errors, model.errors = list(model.errors), []
    server.kill()  # SIGKILL by pid, while every client is mid-command
    stop.set()
    for t in threads:
        t.join(10)
    assert not errors, f"a client failed before the kill: {errors}"
    assert not any(t.is_alive() for t in threads), "a client thread did not stop after the kill"


def pipelined(c, requests: list[bytes], per_request: int, batch: int = 500) -> list[list[bytes]]:
    """Sends requests in batches without waiting, and returns each one's replies."""
    out = []
    for i in range(0, len(requests), batch):
        chunk = requests[i:i + batch]
        c.send(b"".join(chunk))
        out.extend([c.reply() for _ in range(per_request)] for _ in chunk)
    return out


def check(server, model: Model, round_no: int) -> None:
    problems: list[str] = []
    counts = defaultdict(int)
    with server.conn(timeout=10) as c:
        replies = pipelined(c, [b"stats-job %d\r\npeek %d\r\n" % (j, j) for j in sorted(model.body)], 2)
        for jid, (r, peeked) in zip(sorted(model.body), replies):
            tube = model.tube[jid]
            if jid in model.deleted:
                if r != b"NOT_FOUND\r\n":
                    problems.append(f"job {jid} ({tube}): delete was acknowledged, but it came back: {r[:80]!r}")
                continue
            if r == b"NOT_FOUND\r\n":
                if jid in model.delete_in_flight:
                    continue  # its delete was sent; it may have been applied
                problems.append(f"job {jid} ({tube}): acknowledged put lost (stats-job NOT_FOUND)")
                continue
            st = parse_yaml_dict(body_of(r))
            state = st["state"]
            counts[(tube, state)] += 1
            if st["tube"] != tube:
                problems.append(f"job {jid}: tube {st['tube']!r}, put into {tube!r}")
            want = {"p": {"ready"}, "del": {"ready"}, "res": {"ready"}, "delay": {"delayed"},
                    "bury": {"buried"} if jid in model.buried else
                    ({"ready", "buried"} if jid in model.bury_in_flight else {"ready"}),
                    "rel": {"delayed"} if jid in model.released else
                    ({"ready", "delayed"} if jid in model.release_in_flight else {"ready"}),
                    "kick": {"ready"} if jid in model.kicked else
                    ({"ready", "delayed"} if jid in model.kick_in_flight else {"delayed"})}[tube]
            if state not in want:
                problems.append(f"job {jid} ({tube}): state {state}, expected {' or '.join(sorted(want))}"
                                + (" (it was reserved when the server died)" if jid in model.reserved else ""))
            in_flight = (jid in model.release_in_flight and jid not in model.released) or (
                jid in model.bury_in_flight and jid not in model.buried)
            if not in_flight and int(st["pri"]) != model.pri[jid]:
                problems.append(f"job {jid} ({tube}): priority {st['pri']}, acknowledged {model.pri[jid]}")
            if tube in ("delay", "rel", "kick") and state == "delayed" and jid in model.deadline:
                expect = model.deadline[jid] - time.time()
                left = int(st["time-left"])
                if not expect - DEADLINE_SLACK_S <= left <= expect + 1:
                    problems.append(f"job {jid}: time-left {left} s, the put's deadline is {expect:.1f} s away")
            body = body_of(peeked)
            if body != model.body[jid]:
                problems.append(f"job {jid}: body {body[:60]!r}, put {model.body[jid][:60]!r}")
        top = max(model.body)
        fresh = c.cmd(b"put 0 0 60 5\r\nfresh")  # the CRLF after the body completes the command
        assert fresh.startswith(b"INSERTED "), fresh
        new_id = int(fresh.split()[1])
        if new_id <= top:
            problems.append(f"after restart the next id is {new_id}, not above the highest acknowledged id {top}")
        assert c.cmd(b"delete %d" % new_id) == b"DELETED\r\n"
    summary = (f"round {round_no}: {len(model.body)} acknowledged puts, {len(model.deleted)} acknowledged "
               f"deletes, {len(model.buried)} buries, {len(model.reserved)} reserved at some point; "
               f"states found: {dict(counts)}")
    assert not problems, summary + "\n" + "\n".join(problems[:30]) + (
        f"\n... {len(problems) - 30} more" if len(problems) > 30 else "")
    assert len(model.body) > 50 and model.deleted and model.buried and model.reserved and model.released \
        and model.kicked, "the load was too small to test anything: " + summary


def test_kill9_under_load_keeps_every_acknowledged_change(start_miniqueue):
    server = start_miniqueue(binlog=True, fsync=0)
    model = Model()
    for round_no in range(1, ROUNDS + 1):
        load_then_kill(server, model)
        server.start(same_port=True)
        check(server, model, round_no)


def test_kill9_idle_recovers_every_state_and_new_ids(start_miniqueue):
    """The same promises without load: one job in each state, exact values checked."""
    server = start_miniqueue(binlog=True, fsync=0)
    with server.conn() as c:
        ready = c.put(b"ready", pri=7, ttr=30)
        delayed = c.put(b"delayed", delay=100)
        buried = c.put(b"buried")
        reserved = c.put(b"reserved")
        deleted = c.put(b"deleted")
        assert c.cmd(b"reserve-job %d" % buried).startswith(b"RESERVED")
        assert c.cmd(b"bury %d 3" % buried) == b"BURIED\r\n"
        assert c.cmd(b"delete %d" % deleted) == b"DELETED\r\n"
        assert c.cmd(b"reserve-job %d" % reserved).startswith(b"RESERVED")
        c.send(b"use other\r\n")
        assert c.reply() == b"USING other\r\n"
        other = c.put(b"in other tube")
        t_put = time.time()
    server.crash_restart()
    with server.conn() as c:
        def st(jid):
            return parse_yaml_dict(body_of(c.cmd(b"stats-job %d" % jid)))

        assert (st(ready)["state"], st(ready)["pri"], st(ready)["ttr"]) == ("ready", "7", "30")
        d = st(delayed)
        assert d["state"] == "delayed" and 100 - (time.time() - t_put) - 2 <= int(d["time-left"]) <= 100
        b = st(buried)
        assert (b["state"], b["pri"]) == ("buried", "3")
        assert st(reserved)["state"] == "ready", "a job reserved at the crash is ready after restart"
        assert st(other)["tube"] == "other"
        assert c.cmd(b"stats-job %d" % deleted) == b"NOT_FOUND\r\n"
        assert body_of(c.cmd(b"peek %d" % ready)) == b"ready"
        new_id = c.put(b"new")
        assert new_id > other
        # The recovered queue works: the ready jobs come out in priority order (the
        # formerly reserved job has priority 0, the ready one 7).
        first = c.cmd(b"reserve-with-timeout 0")
        assert first.startswith(b"RESERVED %d " % reserved), first
