"""At-least-once delivery, from the workers' side (greenstalk clients).

* A worker that reserves a job and goes silent (socket open, no touch) loses it when
  its TTR runs out: the job goes to another worker then, and not before.
* A worker process killed with kill -9 (a subprocess running greenstalk) gives its job
  back at once, long before the TTR: the server sees the connection close.
* A worker that keeps touching a job for several TTRs keeps it: a second worker that
  asks the whole time never gets it. This is the duplicate delivery Celery users meet
  with Redis's visibility timeout, where a long job is handed to a second worker
  while the first still runs it.
* Under normal work (reserve, delete), each of many jobs is delivered exactly once
  across competing workers.

Runs against the real beanstalkd too (MINIQUEUE_BIN=/usr/bin/beanstalkd).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import body_of, parse_yaml_dict, wait_until

greenstalk = pytest.importorskip("greenstalk", reason="pip install greenstalk (./test.sh installs it)")


def job_stats(server, jid: int) -> dict:
    with server.conn() as c:
        return parse_yaml_dict(body_of(c.cmd(b"stats-job %d" % jid)))


def test_silent_worker_loses_the_job_after_its_ttr(miniqueue):
    ttr = 2
    with miniqueue.client() as producer, miniqueue.client() as silent, miniqueue.client() as other:
        jid = producer.put(b"work", ttr=ttr)
        assert silent.reserve(timeout=0).id == jid
        t0 = time.monotonic()
        # The silent worker keeps its connection open and says nothing.
        job = other.reserve(timeout=ttr + 4)
        waited = time.monotonic() - t0
        assert job.id == jid and job.body == b"work"
        assert ttr - 0.5 <= waited < ttr + 2.5, f"redelivered after {waited:.2f} s with TTR {ttr} s"
        st = job_stats(miniqueue, jid)
        assert (st["state"], st["reserves"], st["timeouts"]) == ("reserved", "2", "1")
        with pytest.raises(greenstalk.NotFoundError):
            silent.delete(jid)  # too late: the job is someone else's now
        with pytest.raises(greenstalk.NotFoundError):
            silent.touch(job)
        other.delete(job)


def test_no_redelivery_before_the_ttr(miniqueue):
    with miniqueue.client() as producer, miniqueue.client() as holder, miniqueue.client() as other:
        jid = producer.put(b"long", ttr=3)
        assert holder.reserve(timeout=0).id == jid
        with pytest.raises(greenstalk.TimedOutError):
            other.reserve(timeout=1)  # 1 s of a 3 s TTR: still the holder's
        assert job_stats(miniqueue, jid)["state"] == "reserved"
        holder.delete(jid)


WORKER = r"""
import sys, time, greenstalk
c = greenstalk.Client(("127.0.0.1", int(sys.argv[1])), encoding=None, watch=sys.argv[2])
job = c.reserve(timeout=10)
print("RESERVED", job.id, flush=True)
time.sleep(120)
"""


def test_killed_worker_process_gives_its_job_back(miniqueue):
    with miniqueue.client(use="k") as producer:
        jid = producer.put(b"crashy", ttr=60)
    child = subprocess.Popen([sys.executable, "-c", WORKER, str(miniqueue.port), "k"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        line = child.stdout.readline().decode().split()
        assert line == ["RESERVED", str(jid)], f"worker said {line}; stderr: {child.stderr.read()[-2000:]!r}"
        assert job_stats(miniqueue, jid)["state"] == "reserved"
        t0 = time.monotonic()
        child.send_signal(signal.SIGKILL)  # kill -9 of the worker, by its pid
        child.wait(10)
        with miniqueue.client(watch="k") as survivor:
            job = survivor.reserve(timeout=5)
            waited = time.monotonic() - t0
            assert job.id == jid and job.body == b"crashy"
            assert waited < 2.0, f"the job came back {waited:.2f} s after the worker died (TTR is 60 s)"
            st = job_stats(miniqueue, jid)
            assert (st["reserves"], st["timeouts"]) == ("2", "0"), "a closed connection is not a TTR timeout"
            survivor.delete(job)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)


def test_closed_connection_returns_every_reserved_job(miniqueue):
    with miniqueue.client() as producer:
        ids = [producer.put(b"%d" % i) for i in range(3)]
        worker = miniqueue.client()
        assert sorted(worker.reserve(timeout=0).id for _ in ids) == ids
        worker.close()
        wait_until(lambda: producer.stats_tube("default")["current-jobs-ready"] == 3, 5,
                   "the closed worker's three jobs to be ready")
        assert producer.stats_tube("default")["current-jobs-reserved"] == 0


def test_touching_worker_keeps_the_job_for_many_ttrs(miniqueue):
    ttr, hold_s = 2, 6.5
    got: list = []
    stop = threading.Event()
    with miniqueue.client() as producer, miniqueue.client() as holder:
        jid = producer.put(b"long job", ttr=ttr)
        assert holder.reserve(timeout=0).id == jid

        def competitor():
            with miniqueue.client() as c:
                while not stop.is_set():
                    try:
                        got.append(c.reserve(timeout=1))
                    except greenstalk.TimedOutError:
                        pass

        t = threading.Thread(target=competitor, daemon=True)
        t.start()
        t0 = time.monotonic()
        touches = 0
        while time.monotonic() - t0 < hold_s:
            time.sleep(0.5)
            holder.touch(greenstalk.Job(jid, b""))
            touches += 1
        st = job_stats(miniqueue, jid)
        stop.set()
        t.join(5)
        assert not got, f"a second worker got the job while the first kept touching it: {got}"
        assert (st["state"], st["reserves"], st["timeouts"]) == ("reserved", "1", "0"), st
        assert touches >= 10
        holder.delete(jid)  # still the holder's, after three TTRs


def test_each_job_delivered_once_across_competing_workers(miniqueue):
    n_jobs, n_workers = 300, 4
    seen: list[int] = []
    lock = threading.Lock()
    with miniqueue.client(use="many") as producer:
        ids = [producer.put(b"%d" % i) for i in range(n_jobs)]

    def work():
        with miniqueue.client(watch="many") as c:
            while True:
                try:
                    job = c.reserve(timeout=1)
                except greenstalk.TimedOutError:
                    return
                with lock:
                    seen.append(job.id)
                c.delete(job)

    threads = [threading.Thread(target=work, daemon=True) for _ in range(n_workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(seen) == ids, (f"{len(seen)} deliveries for {n_jobs} jobs; "
                                 f"duplicates: {sorted({j for j in seen if seen.count(j) > 1})[:10]}")
