"""greenstalk (PyPI), a beanstalk client we did not write, drives every protocol command.

Covers: put, use, reserve, reserve-with-timeout, reserve-job, delete, release, bury,
touch, watch, ignore, peek, peek-ready, peek-delayed, peek-buried, kick, kick-job,
stats-job, stats-tube, stats, list-tubes, list-tube-used, list-tubes-watched,
pause-tube and quit (greenstalk has no quit(), so that one goes through its socket);
priorities (the whole u32 range, lower first, FIFO within a priority), delays, TTR
expiry returning a job to ready, DEADLINE_SOON, TIMED_OUT, pause-tube holding reserves
back, and drain mode (SIGUSR1, then put answers DRAINING).

Timing checks use generous upper bounds (a debug build on a loaded 2-core machine) and
tight lower bounds where the protocol promises a wait (a delay is never cut short).
Runs against the real beanstalkd too: MINIQUEUE_BIN=/usr/bin/beanstalkd.
"""

from __future__ import annotations

import random
import signal
import threading
import time

import pytest

from conftest import HOST, STATS_JOB_KEYS, STATS_TUBE_KEYS, wait_until

greenstalk = pytest.importorskip("greenstalk", reason="pip install greenstalk (./test.sh installs it)")

#: beanstalkd 1.12's key order in the stats reply (what greenstalk users see).
STATS_KEYS = ["current-jobs-urgent", "current-jobs-ready", "current-jobs-reserved", "current-jobs-delayed",
              "current-jobs-buried", "cmd-put", "cmd-peek", "cmd-peek-ready", "cmd-peek-delayed",
              "cmd-peek-buried", "cmd-reserve", "cmd-reserve-with-timeout", "cmd-delete", "cmd-release",
              "cmd-use", "cmd-watch", "cmd-ignore", "cmd-bury", "cmd-kick", "cmd-touch", "cmd-stats",
              "cmd-stats-job", "cmd-stats-tube", "cmd-list-tubes", "cmd-list-tube-used",
              "cmd-list-tubes-watched", "cmd-pause-tube", "job-timeouts", "total-jobs", "max-job-size",
              "current-tubes", "current-connections", "current-producers", "current-workers",
              "current-waiting", "total-connections", "pid", "version", "rusage-utime", "rusage-stime",
              "uptime", "binlog-oldest-index", "binlog-current-index", "binlog-records-migrated",
              "binlog-records-written", "binlog-max-size", "draining", "id", "hostname", "os", "platform"]

U32_MAX = 2**32 - 1


@pytest.fixture
def mq(miniqueue):
    return miniqueue


def client(server, **kw):
    return server.client(**kw)


# ---- the basic cycle -----------------------------------------------------------------


def test_put_reserve_delete_roundtrip(mq):
    with client(mq) as c:
        ids = [c.put(b"job %d" % i) for i in range(5)]
        assert ids == sorted(ids) and len(set(ids)) == 5, f"ids must increase: {ids}"
        for i, jid in enumerate(ids):
            job = c.reserve(timeout=0)
            assert (job.id, job.body) == (jid, b"job %d" % i)
            c.delete(job)
        with pytest.raises(greenstalk.TimedOutError):
            c.reserve(timeout=0)
        for jid in ids:
            with pytest.raises(greenstalk.NotFoundError):
                c.stats_job(jid)
            with pytest.raises(greenstalk.NotFoundError):
                c.delete(jid)


def test_binary_bodies_and_size_limit(mq):
    bodies = [b"", b"\r\n", b"a\r\nb\r\n", bytes(range(256)), b"\x00" * 1000, b"z" * 65535]
    with client(mq) as c:
        ids = [c.put(b) for b in bodies]
        for jid, b in zip(ids, bodies):
            assert c.peek(jid).body == b
            job = c.reserve(timeout=0)
            assert (job.id, job.body) == (jid, b)
            c.delete(job)
        with pytest.raises(greenstalk.JobTooBigError):
            c.put(b"z" * 65536)
        # The connection is still in sync after JOB_TOO_BIG (the body was consumed).
        assert c.put(b"after") > ids[-1]


def test_text_bodies_with_encoding(mq):
    with client(mq, encoding="utf-8") as c:
        jid = c.put("ключ 🎉")
        job = c.reserve(timeout=0)
        assert (job.id, job.body) == (jid, "ключ 🎉")


# ---- tubes ---------------------------------------------------------------------------


def test_use_watch_ignore_and_lists(mq):
    with client(mq) as c:
        assert c.using() == "default"
        assert c.watching() == ["default"]
        c.use("jobs.a")
        assert c.using() == "jobs.a"
        assert c.watch("jobs.a") == 2
        assert c.watch("jobs.a") == 2, "watching a watched tube again does not count twice"
        assert c.watch("b-(1)$_;+/") == 3
        assert c.watching() == ["default", "jobs.a", "b-(1)$_;+/"]
        assert c.ignore("default") == 2
        # The order after an ignore is beanstalkd's (swap-remove); test_differential
        # compares it byte for byte, this suite only the set.
        assert sorted(c.watching()) == sorted(["jobs.a", "b-(1)$_;+/"])
        assert c.ignore("b-(1)$_;+/") == 1
        with pytest.raises(greenstalk.NotIgnoredError):
            c.ignore("jobs.a")
        assert set(c.tubes()) >= {"default", "jobs.a"}
        with pytest.raises(greenstalk.BadFormatError):
            c.use("-leading-hyphen")
        with pytest.raises(greenstalk.BadFormatError):
            c.use("x" * 201)
        c.use("y" * 200)
        assert c.using() == "y" * 200


def test_jobs_stay_in_their_tube(mq):
    with client(mq, use="t1") as p1, client(mq, use="t2") as p2, client(mq, watch="t2") as w2:
        a = p1.put(b"for t1")
        b = p2.put(b"for t2")
        job = w2.reserve(timeout=0)
        assert job.id == b
        with pytest.raises(greenstalk.TimedOutError):
            w2.reserve(timeout=0)
        w2.watch("t1")
        assert w2.reserve(timeout=0).id == a
        assert w2.stats_job(a)["tube"] == "t1"


def test_empty_tubes_disappear(mq):
    with client(mq) as c:
        c.use("ephemeral")
        assert "ephemeral" in c.tubes()
        c.use("default")
        assert "ephemeral" not in c.tubes(), "an empty tube nobody uses or watches is deleted"
        with pytest.raises(greenstalk.NotFoundError):
            c.stats_tube("ephemeral")


# ---- priorities and order ------------------------------------------------------------


def test_priorities_lower_first_fifo_within(mq):
    pris = [5, 0, U32_MAX, 5, 1024, 0, 1023, U32_MAX, 5]
    with client(mq) as c:
        ids = [c.put(b"p%d" % p, priority=p) for p in pris]
        order = [c.reserve(timeout=0).id for _ in pris]
    want = [jid for _, jid in sorted(zip(pris, ids))]  # by priority, then by id (FIFO)
    assert order == want


def test_priority_random_mix(mq):
    rng = random.Random(4242)
    pris = [rng.choice([0, 1, 2, 1023, 1024, 65536, U32_MAX - 1, U32_MAX]) for _ in range(200)]
    with client(mq) as c:
        ids = [c.put(b"%d" % i, priority=p) for i, p in enumerate(pris)]
        got = []
        for _ in pris:
            job = c.reserve(timeout=0)
            got.append(job.id)
            c.delete(job)
    assert got == [jid for _, jid in sorted(zip(pris, ids))]


def test_priority_out_of_range_is_bad_format(mq):
    with client(mq) as c:
        with pytest.raises(greenstalk.BadFormatError):
            c.put(b"x", priority=2**32)
    # After BAD_FORMAT on a put line the body is read as a command (UNKNOWN_COMMAND),
    # so that connection is out of step with greenstalk: a new one is used.
    with client(mq) as c:
        assert c.put(b"ok", priority=U32_MAX) > 0


def test_urgent_counts(mq):
    with client(mq) as c:
        c.put(b"a", priority=1023)
        c.put(b"b", priority=1024)
        c.put(b"c", priority=0)
        st = c.stats_tube("default")
        assert (st["current-jobs-urgent"], st["current-jobs-ready"]) == (2, 3)
        assert c.stats()["current-jobs-urgent"] == 2


# ---- reserve variants ----------------------------------------------------------------


def test_reserve_with_timeout_times_out(mq):
    with client(mq) as c:
        t0 = time.monotonic()
        with pytest.raises(greenstalk.TimedOutError):
            c.reserve(timeout=0)
        assert time.monotonic() - t0 < 0.5
        t0 = time.monotonic()
        with pytest.raises(greenstalk.TimedOutError):
            c.reserve(timeout=1)
        waited = time.monotonic() - t0
        assert 0.9 <= waited < 3.0, f"reserve-with-timeout 1 answered TIMED_OUT after {waited:.2f} s"


def test_blocking_reserve_woken_by_put(mq):
    got = {}
    with client(mq) as worker, client(mq) as producer:
        def work():
            t0 = time.monotonic()
            job = worker.reserve()
            got["job"], got["after"] = job, time.monotonic() - t0

        t = threading.Thread(target=work, daemon=True)
        t.start()
        wait_until(lambda: producer.stats()["current-waiting"] == 1, 5, "the worker to be waiting")
        assert producer.stats_tube("default")["current-waiting"] == 1
        time.sleep(0.2)
        jid = producer.put(b"wake up")
        t.join(5)
        assert not t.is_alive(), "reserve was not woken by a put"
        assert (got["job"].id, got["job"].body) == (jid, b"wake up")
        assert producer.stats()["current-waiting"] == 0


def test_waiting_workers_served_in_arrival_order(mq):
    workers = [client(mq) for _ in range(3)]
    results: dict[int, int] = {}
    try:
        threads = []
        for i, w in enumerate(workers):
            def work(i=i, w=w):
                results[i] = w.reserve(timeout=10).id
            t = threading.Thread(target=work, daemon=True)
            t.start()
            threads.append(t)
            wait_until(lambda: mq.control.yaml(b"stats")["current-waiting"] == str(i + 1), 5,
                       f"worker {i} to wait")
        with client(mq) as p:
            ids = [p.put(b"%d" % i) for i in range(3)]
        for t in threads:
            t.join(5)
        assert [results.get(i) for i in range(3)] == ids, "the longest-waiting worker gets the first job"
    finally:
        for w in workers:
            w.close()


def test_reserve_job_by_id(mq):
    with client(mq) as c, client(mq) as other:
        ready = c.put(b"ready")
        delayed = c.put(b"delayed", delay=100)
        buried = c.put(b"to bury")
        j = c.reserve_job(buried)
        c.bury(j)
        for jid in (delayed, buried, ready):
            job = c.reserve_job(jid)
            assert job.id == jid
            assert c.stats_job(jid)["state"] == "reserved"
        with pytest.raises(greenstalk.NotFoundError):
            other.reserve_job(ready)  # reserved by another connection
        with pytest.raises(greenstalk.NotFoundError):
            c.reserve_job(99999)


# ---- release, bury, kick, touch ------------------------------------------------------


def test_release_with_priority_and_delay(mq):
    with client(mq) as c:
        jid = c.put(b"r", priority=10)
        job = c.reserve(timeout=0)
        c.release(job, priority=3, delay=1)
        st = c.stats_job(jid)
        assert (st["state"], st["pri"], st["delay"], st["releases"], st["reserves"]) == ("delayed", 3, 1, 1, 1)
        with pytest.raises(greenstalk.TimedOutError):
            c.reserve(timeout=0)
        t0 = time.monotonic()
        again = c.reserve(timeout=4)
        waited = time.monotonic() - t0
        assert again.id == jid and waited < 3.0
        c.release(again)  # no delay: ready at once
        assert c.stats_job(jid)["state"] == "ready"
        with pytest.raises(greenstalk.NotFoundError):
            c.release(again)  # not reserved any more


def test_bury_peek_buried_kick_and_kick_job(mq):
    with client(mq) as c:
        ids = [c.put(b"b%d" % i) for i in range(4)]
        for _ in ids:
            c.bury(c.reserve(timeout=0), priority=7)
        st = c.stats_job(ids[0])
        assert (st["state"], st["pri"], st["buries"]) == ("buried", 7, 1)
        assert c.peek_buried().id == ids[0], "peek-buried shows the oldest buried job"
        assert c.stats_tube("default")["current-jobs-buried"] == 4
        delayed = c.put(b"d", delay=100)
        assert c.kick(2) == 2, "kick moves buried jobs first"
        assert [c.stats_job(j)["state"] for j in ids] == ["ready", "ready", "buried", "buried"]
        assert c.stats_job(delayed)["state"] == "delayed"
        c.kick_job(ids[3])
        assert c.stats_job(ids[3])["state"] == "ready"
        assert c.stats_job(ids[3])["kicks"] == 1
        assert c.kick(10) == 1  # the last buried one; the delayed job waits for the next kick
        assert c.stats_job(delayed)["state"] == "delayed"
        assert c.kick(10) == 1  # now delayed jobs
        assert c.stats_job(delayed)["state"] == "ready"
        assert c.kick(10) == 0
        with pytest.raises(greenstalk.NotFoundError):
            c.kick_job(ids[0])  # ready: not kickable
        with pytest.raises(greenstalk.NotFoundError):
            c.peek_buried()


def test_kick_only_the_used_tube(mq):
    with client(mq, use="k1") as a, client(mq, use="k2", watch="k2") as b:
        ja = a.put(b"a", delay=100)
        jb = b.put(b"b", delay=100)
        assert b.kick(5) == 1
        assert b.stats_job(jb)["state"] == "ready"
        assert a.stats_job(ja)["state"] == "delayed"


def test_touch_extends_ttr(mq):
    with client(mq) as c:
        jid = c.put(b"t", ttr=3)
        job = c.reserve(timeout=0)
        time.sleep(1.1)
        left = c.stats_job(jid)["time-left"]
        assert left <= 2
        c.touch(job)
        assert c.stats_job(jid)["time-left"] >= 2, "touch restarts the TTR"
        c.delete(job)
        with pytest.raises(greenstalk.NotFoundError):
            c.touch(job)


# ---- peek ----------------------------------------------------------------------------


def test_peek_variants(mq):
    with client(mq) as c:
        for peek in (c.peek_ready, c.peek_delayed, c.peek_buried):
            with pytest.raises(greenstalk.NotFoundError):
                peek()
        r1 = c.put(b"r1", priority=5)
        r2 = c.put(b"r2", priority=1)
        d_long = c.put(b"dl", delay=200)
        d_short = c.put(b"ds", delay=100)
        assert c.peek_ready().id == r2, "peek-ready shows the job reserve would take"
        assert c.peek_delayed().id == d_short, "peek-delayed shows the shortest delay left"
        assert c.peek(d_long).body == b"dl"
        assert c.peek(r1).body == b"r1"
        with pytest.raises(greenstalk.NotFoundError):
            c.peek(424242)
        c.use("elsewhere")
        for peek in (c.peek_ready, c.peek_delayed):
            with pytest.raises(greenstalk.NotFoundError):
                peek()  # the peek-* commands look at the used tube only
        assert c.peek(r1).id == r1  # peek <id> sees every tube


# ---- time: delays, TTR, DEADLINE_SOON, pause ----------------------------------------


def test_delayed_job_becomes_ready(mq):
    with client(mq) as c:
        t0 = time.monotonic()
        jid = c.put(b"later", delay=1)
        st = c.stats_job(jid)
        assert (st["state"], st["delay"]) == ("delayed", 1)
        assert c.stats_tube("default")["current-jobs-delayed"] == 1
        with pytest.raises(greenstalk.TimedOutError):
            c.reserve(timeout=0)
        job = c.reserve(timeout=5)
        waited = time.monotonic() - t0
        assert job.id == jid
        assert 0.5 <= waited < 3.0, f"a 1 s delay took {waited:.2f} s"


def test_ttr_expiry_returns_job_to_ready(mq):
    # TTR 2: with TTR 1 the real beanstalkd 1.12 sometimes never times the job out,
    # and this suite must pass against it too.
    with client(mq) as a, client(mq) as b:
        jid = a.put(b"slow", ttr=2)
        assert a.reserve(timeout=0).id == jid
        t0 = time.monotonic()
        job = b.reserve(timeout=6)
        waited = time.monotonic() - t0
        assert job.id == jid
        assert 1.5 <= waited < 4.0, f"TTR 2 s expired after {waited:.2f} s"
        st = b.stats_job(jid)
        assert (st["state"], st["timeouts"], st["reserves"]) == ("reserved", 1, 2)
        assert b.stats()["job-timeouts"] == 1
        with pytest.raises(greenstalk.NotFoundError):
            a.delete(jid)  # a lost the job when it timed out
        b.delete(job)


def test_deadline_soon_immediately_and_while_waiting(mq):
    with client(mq) as c:
        first = c.put(b"a", ttr=1)
        c.reserve(timeout=0)
        # TTR 1 s: the job is inside the last-second safety margin at once.
        with pytest.raises(greenstalk.DeadlineSoonError):
            c.reserve(timeout=0)
        with pytest.raises(greenstalk.DeadlineSoonError):
            c.reserve(timeout=5)
        c.delete(first)
    with client(mq) as c:
        jid = c.put(b"b", ttr=3)
        c.reserve(timeout=0)
        t0 = time.monotonic()
        with pytest.raises(greenstalk.DeadlineSoonError):
            c.reserve(timeout=10)
        waited = time.monotonic() - t0
        assert 1.0 <= waited < 3.0, f"DEADLINE_SOON came after {waited:.2f} s (margin starts at 2 s)"
        c.delete(jid)  # still ours


def test_pause_tube_holds_reserves(mq):
    with client(mq, use="p", watch="p") as c:
        jid = c.put(b"paused")
        t0 = time.monotonic()
        c.pause_tube("p", 1)
        st = c.stats_tube("p")
        assert (st["pause"], st["cmd-pause-tube"]) == (1, 1)
        assert st["pause-time-left"] in (0, 1)
        with pytest.raises(greenstalk.TimedOutError):
            c.reserve(timeout=0)
        job = c.reserve(timeout=5)
        waited = time.monotonic() - t0
        assert job.id == jid
        assert 0.9 <= waited < 3.0, f"a 1 s pause released the job after {waited:.2f} s"
        assert c.stats()["cmd-pause-tube"] == 1
        with pytest.raises(greenstalk.NotFoundError):
            c.pause_tube("no-such-tube", 1)


# ---- stats ---------------------------------------------------------------------------


def test_stats_job_fields(mq):
    with client(mq, use="s") as c:
        jid = c.put(b"s", priority=9, delay=0, ttr=30)
        st = c.stats_job(jid)
        assert list(st) == STATS_JOB_KEYS
        assert st["id"] == jid and st["tube"] == "s" and st["state"] == "ready"
        assert (st["pri"], st["delay"], st["ttr"], st["time-left"], st["file"]) == (9, 0, 30, 0, 0)
        assert (st["reserves"], st["timeouts"], st["releases"], st["buries"], st["kicks"]) == (0, 0, 0, 0, 0)
        c.watch("s")
        c.reserve(timeout=0)
        st = c.stats_job(jid)
        assert st["state"] == "reserved" and 28 <= st["time-left"] <= 30 and st["reserves"] == 1
        jz = c.put(b"z", ttr=0)
        assert c.stats_job(jz)["ttr"] == 1, "TTR 0 is raised to 1 s"


def test_stats_tube_fields(mq):
    with client(mq, use="st") as c, client(mq, watch="st") as w:
        c.put(b"1")
        c.put(b"2", delay=100)
        c.put(b"3")
        w.bury(w.reserve(timeout=0))
        w.reserve(timeout=0)
        c.delete(c.peek_delayed())
        st = c.stats_tube("st")
        assert list(st) == STATS_TUBE_KEYS
        assert st["name"] == "st"
        assert (st["current-jobs-ready"], st["current-jobs-reserved"], st["current-jobs-delayed"],
                st["current-jobs-buried"], st["total-jobs"]) == (0, 1, 0, 1, 3)
        assert (st["current-using"], st["current-watching"], st["current-waiting"]) == (1, 1, 0)
        assert (st["cmd-delete"], st["cmd-pause-tube"], st["pause"], st["pause-time-left"]) == (1, 0, 0, 0)


def test_stats_counters(mq):
    with client(mq) as c:
        before = c.stats()
        assert list(before) == STATS_KEYS
        assert before["max-job-size"] == 65535 and before["draining"] == "false"
        assert before["pid"] == mq.pid
        jid = c.put(b"x")
        c.peek(jid)
        c.peek_ready()
        c.release(c.reserve(timeout=0))
        c.bury(c.reserve(timeout=0))
        c.kick(1)
        c.delete(jid)
        c.watch("w")
        c.ignore("w")
        c.use("default")
        c.tubes()
        c.watching()
        c.using()
        c.stats_tube("default")
        after = c.stats()
        for key, n in [("cmd-put", 1), ("cmd-peek", 1), ("cmd-peek-ready", 1), ("cmd-reserve-with-timeout", 2),
                       ("cmd-release", 1), ("cmd-bury", 1), ("cmd-kick", 1), ("cmd-delete", 1),
                       ("cmd-watch", 1), ("cmd-ignore", 1), ("cmd-use", 1), ("cmd-list-tubes", 1),
                       ("cmd-list-tubes-watched", 1), ("cmd-list-tube-used", 1), ("cmd-stats-tube", 1),
                       ("cmd-stats", 1), ("total-jobs", 1)]:
            assert after[key] - before[key] == n, f"{key}: {before[key]} -> {after[key]}, expected +{n}"
        assert after["current-producers"] >= 1 and after["current-workers"] >= 1
        assert after["current-jobs-ready"] == 0


def test_connection_counts(mq):
    base = mq.control.yaml(b"stats")
    clients = [client(mq) for _ in range(3)]
    try:
        # A client's connect returns once the kernel has the connection, which can be
        # before the server's accept loop counts it: wait for the count, then check it.
        want = int(base["current-connections"]) + 3
        wait_until(lambda: int(mq.control.yaml(b"stats")["current-connections"]) == want, 5,
                   "three new connections to be counted")
        st = clients[0].stats()
        assert st["current-connections"] == int(base["current-connections"]) + 3
        assert st["total-connections"] == int(base["total-connections"]) + 3
    finally:
        for c in clients:
            c.close()
    wait_until(lambda: mq.control.yaml(b"stats")["current-connections"] == base["current-connections"], 5,
               "closed connections to be counted out")


# ---- connection end, drain -----------------------------------------------------------


def test_quit_closes_and_releases_reserved_jobs(mq):
    with client(mq) as a, client(mq) as b:
        jid = a.put(b"q")
        assert a.reserve(timeout=0).id == jid
        a._sock.sendall(b"quit\r\n")
        a._sock.settimeout(5)
        assert a._sock.recv(100) == b"", "the server closes the connection on quit"
        job = b.reserve(timeout=2)
        assert job.id == jid, "a closed connection's reserved jobs are ready again at once"


def test_drain_mode_on_sigusr1(mq):
    with client(mq) as c:
        jid = c.put(b"before drain")
        mq.signal(signal.SIGUSR1)
        wait_until(lambda: c.stats()["draining"] == "true", 5, "draining: true after SIGUSR1")
        with pytest.raises(greenstalk.DrainingError):
            c.put(b"refused")
        # Draining refuses new jobs only: work already queued is still served.
        job = c.reserve(timeout=0)
        assert job.id == jid
        c.delete(job)
        assert c.stats()["cmd-put"] >= 1
        with client(mq) as fresh:
            with pytest.raises(greenstalk.DrainingError):
                fresh.put(b"refused too")


@pytest.mark.miniqueue_only
def test_startup_line_names_the_address(mq):
    assert f"listening on {HOST}:{mq.port}" in mq.log_text()


def test_many_jobs_through_two_tubes(mq):
    with client(mq, use="bulk") as p, client(mq, watch="bulk") as w:
        ids = [p.put(b"%d" % i) for i in range(2000)]
        seen = []
        for _ in ids:
            job = w.reserve(timeout=2)
            seen.append(job.id)
            w.delete(job)
    assert seen == ids
