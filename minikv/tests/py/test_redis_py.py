"""redis-py (the `redis` package) against minikv: what an application sees.

redis-py parses replies into Python values and has its own rules for pipelines,
WATCH, pub/sub and RESP3, so these tests check that minikv's replies survive a real
client, not only a byte comparison. redis-py 8 speaks RESP3 by default; the tests
that depend on the protocol run with `protocol=2` and `protocol=3`.

To check the tests themselves, run them against the real redis-server instead:
`REDISPY_TARGET=redis python3 -m pytest minikv/tests/py/test_redis_py.py`.

Left out: connection pools under concurrency and cluster mode (minikv has none).
"""

from __future__ import annotations

import threading
import time

import pytest

redis = pytest.importorskip("redis", reason="redis-py is not installed (pip install redis)")

import os  # noqa: E402

from conftest import HOST  # noqa: E402

#: A reply slower than this is a hang; every client gets it as its socket timeout.
SOCKET_TIMEOUT_S = 10


def client(server, protocol=3, **kw) -> "redis.Redis":
    return redis.Redis(host=HOST, port=server.port, protocol=protocol, decode_responses=True,
                       socket_timeout=SOCKET_TIMEOUT_S, **kw)


@pytest.fixture
def server(request):
    """The server under test: minikv, or redis-server when REDISPY_TARGET=redis."""
    name = "real_redis" if os.environ.get("REDISPY_TARGET") == "redis" else "minikv"
    return request.getfixturevalue(name)


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def r(server, request):
    c = client(server, protocol=request.param)
    yield c
    c.close()


@pytest.fixture
def r3(server):
    c = client(server, protocol=3)
    yield c
    c.close()


def score_pairs(reply):
    """(member, score) tuples from what redis-py 8 returns for WITHSCORES and ZPOPMIN:
    tuples in RESP2, [member, score] lists in RESP3, a flat [member, score] for a RESP3
    ZPOPMIN without count (Redis's own reply shape)."""
    if reply and not isinstance(reply[0], (list, tuple)):
        return list(zip(reply[0::2], reply[1::2]))
    return [tuple(x) for x in reply]


# -- plain commands ---------------------------------------------------------------------


def test_strings_and_keys(r):
    assert r.ping() is True
    assert r.set("k", "v") is True
    assert r.get("k") == "v"
    assert r.get("missing") is None
    assert r.set("k", "w", nx=True) is None
    assert r.set("k", "w", xx=True, get=True) == "v"
    assert r.incr("n") == 1 and r.incrby("n", 41) == 42 and r.decr("n") == 41
    assert r.incrbyfloat("f", 1.5) == 1.5
    assert r.mset({"a": "1", "b": "2"}) is True
    assert r.mget("a", "b", "nope") == ["1", "2", None]
    assert r.append("a", "x") == 2 and r.strlen("a") == 2
    assert r.getrange("k", 0, 0) == "w"
    assert r.exists("a", "b", "nope") == 2
    assert r.type("a") == "string"
    assert r.expire("a", 100) is True
    assert 98 <= r.ttl("a") <= 100
    assert r.persist("a") is True and r.ttl("a") == -1
    assert r.ttl("nope") == -2
    assert r.rename("a", "c") is True and r.get("c") == "1x"
    assert sorted(r.keys("*")) == ["b", "c", "f", "k", "n"]
    assert r.dbsize() == 5
    assert r.delete("b", "c", "nope") == 2
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        r.lpush("k", "x")
    with pytest.raises(redis.ResponseError, match="not an integer"):
        r.incr("k")


def test_collections(r):
    assert r.hset("h", mapping={"f1": "v1", "f2": "v2"}) == 2
    assert r.hgetall("h") == {"f1": "v1", "f2": "v2"}
    assert r.hget("h", "f1") == "v1" and r.hlen("h") == 2
    assert r.hincrby("h", "n", 5) == 5 and r.hincrbyfloat("h", "x", 0.5) == 0.5
    assert r.rpush("l", "a", "b", "c") == 3
    assert r.lrange("l", 0, -1) == ["a", "b", "c"]
    assert r.lpop("l") == "a" and r.rpop("l", 2) == ["c", "b"]
    assert r.lpos("l", "x") is None
    assert r.exists("l") == 0  # the last pop deleted the empty list
    r.rpush("l", "again")
    assert r.sadd("s", "x", "y", "z") == 3
    assert r.smembers("s") == {"x", "y", "z"}
    assert r.sismember("s", "x") in (True, 1)
    assert r.sinter("s", "nope") == set()
    assert r.zadd("z", {"a": 1, "b": 2.5, "c": 3}) == 3
    assert score_pairs(r.zrange("z", 0, -1, withscores=True)) == [("a", 1.0), ("b", 2.5), ("c", 3.0)]
    assert r.zscore("z", "b") == 2.5
    assert r.zrangebyscore("z", "(1", "+inf") == ["b", "c"]
    assert score_pairs(r.zpopmin("z")) == [("a", 1.0)]
    assert r.zrank("z", "c") == 1
    assert r.zincrby("z", 1.5, "b") == 4.0
    assert [r.type(k) for k in ("h", "l", "s", "z")] == ["hash", "list", "set", "zset"]


# -- pipelines and transactions ------------------------------------------------------------


def test_pipeline_without_transaction(r):
    with r.pipeline(transaction=False) as p:
        p.set("a", "1").incr("a").get("a").lpush("a", "x").rpush("l", "y")
        results = p.execute(raise_on_error=False)
    assert results[:3] == [True, 2, "2"]
    assert isinstance(results[3], redis.ResponseError) and "WRONGTYPE" in str(results[3])
    assert results[4] == 1


def test_pipeline_with_transaction(r):
    with r.pipeline(transaction=True) as p:
        p.set("a", "1").incr("a").hset("h", "f", "v").hgetall("h")
        assert p.execute() == [True, 2, 1, {"f": "v"}]
    with r.pipeline() as p:  # a runtime error inside EXEC does not abort the others
        p.set("s", "abc").incr("s").set("t", "ok")
        with pytest.raises(redis.ResponseError):
            p.execute()
    assert r.get("t") == "ok"


def test_watch_conflicting_write_aborts(server, r):
    other = client(server)
    r.set("balance", "10")
    with r.pipeline() as p:
        p.watch("balance")
        assert p.get("balance") == "10"
        other.set("balance", "999")  # another client changes the watched key
        p.multi()
        p.set("balance", "11")
        with pytest.raises(redis.WatchError):
            p.execute()
    assert r.get("balance") == "999"
    other.close()


def test_watch_unrelated_write_commits(server, r):
    other = client(server)
    r.set("balance", "10")
    with r.pipeline() as p:
        p.watch("balance")
        other.set("unrelated", "x")
        p.multi()
        p.incr("balance")
        assert p.execute() == [11]


def test_watch_expiry_breaks_transaction(r):
    r.set("lease", "1", px=100)
    with r.pipeline() as p:
        p.watch("lease")
        time.sleep(0.3)  # the key expires while watched: Redis 7.0 aborts the EXEC
        p.multi()
        p.set("lease", "2")
        with pytest.raises(redis.WatchError):
            p.execute()


def test_transaction_helper_retries(server, r):
    """redis-py's `transaction()` re-runs the function after a WatchError."""
    other = client(server)
    r.set("counter", "0")
    attempts = []

    def bump(pipe):
        value = int(pipe.get("counter"))
        if not attempts:
            other.incr("counter")  # conflict on the first attempt only
        attempts.append(value)
        pipe.multi()
        pipe.set("counter", value + 1)

    r.transaction(bump, "counter")
    assert attempts == [0, 1]
    assert r.get("counter") == "2"
    other.close()


# -- pub/sub ---------------------------------------------------------------------------------


def next_message(pubsub, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = pubsub.get_message(timeout=0.1)
        if m is not None:
            return m
    raise AssertionError("no pub/sub message within the timeout")


def test_pubsub_subscribe_publish_in_order(server, r):
    sub_client = client(server, protocol=r.get_connection_kwargs().get("protocol") or 3)
    p = sub_client.pubsub()
    p.subscribe("news", "sport")
    assert next_message(p) == {"type": "subscribe", "pattern": None, "channel": "news", "data": 1}
    assert next_message(p) == {"type": "subscribe", "pattern": None, "channel": "sport", "data": 2}
    assert r.pubsub_numsub("news", "sport", "none") == [("news", 1), ("sport", 1), ("none", 0)]
    assert sorted(r.pubsub_channels()) == ["news", "sport"]
    for i in range(20):
        assert r.publish("news" if i % 2 else "sport", f"m{i}") == 1
    got = [next_message(p) for _ in range(20)]
    assert [m["data"] for m in got] == [f"m{i}" for i in range(20)]
    assert [m["channel"] for m in got] == ["news" if i % 2 else "sport" for i in range(20)]
    assert all(m["type"] == "message" for m in got)
    p.unsubscribe("news")
    assert next_message(p) == {"type": "unsubscribe", "pattern": None, "channel": "news", "data": 1}
    assert r.publish("news", "nobody") == 0
    p.close()
    sub_client.close()


def test_pubsub_patterns(server, r):
    sub_client = client(server)
    p = sub_client.pubsub()
    p.psubscribe("user.*")
    assert next_message(p)["type"] == "psubscribe"
    p.subscribe("user.1")
    assert next_message(p)["type"] == "subscribe"
    assert r.pubsub_numpat() == 1
    assert r.publish("user.1", "hi") == 2  # one channel and one pattern subscriber
    first, second = next_message(p), next_message(p)
    assert first == {"type": "message", "pattern": None, "channel": "user.1", "data": "hi"}
    assert second == {"type": "pmessage", "pattern": "user.*", "channel": "user.1", "data": "hi"}
    assert r.publish("user.2", "x") == 1
    assert next_message(p) == {"type": "pmessage", "pattern": "user.*", "channel": "user.2", "data": "x"}
    p.punsubscribe("user.*")
    assert next_message(p)["type"] == "punsubscribe"
    assert r.pubsub_numpat() == 0
    p.close()
    sub_client.close()


def test_pubsub_thread_handler(server, r):
    """run_in_thread: the way applications usually consume messages."""
    received = []
    sub_client = client(server)
    p = sub_client.pubsub()
    p.subscribe(**{"events": lambda m: received.append(m["data"])})
    worker = p.run_in_thread(sleep_time=0.01)
    try:
        deadline = time.monotonic() + 5
        while r.pubsub_numsub("events") != [("events", 1)] and time.monotonic() < deadline:
            time.sleep(0.01)
        for i in range(5):
            r.publish("events", str(i))
        while len(received) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        worker.stop()
        worker.join(timeout=5)
        sub_client.close()
    assert received == ["0", "1", "2", "3", "4"]


# -- RESP3 -------------------------------------------------------------------------------------


def test_resp3_types(r3):
    hello = r3.execute_command("HELLO", "3")
    assert isinstance(hello, dict)
    assert hello["proto"] == 3 and hello["server"] == "redis" and hello["mode"] == "standalone"
    assert set(hello) == {"server", "version", "proto", "id", "mode", "role", "modules"}
    r3.hset("h", mapping={"a": "1", "b": "2"})
    assert r3.hgetall("h") == {"a": "1", "b": "2"}
    r3.sadd("s", "x", "y")
    assert r3.smembers("s") == {"x", "y"}
    r3.zadd("z", {"m": 1.25})
    assert r3.zscore("z", "m") == 1.25
    assert [tuple(x) for x in r3.zrange("z", 0, -1, withscores=True)] == [("m", 1.25)]
    assert r3.config_get("maxmemory") == {"maxmemory": "0"}


def test_hello_2(server):
    raw = client(server, protocol=2)
    hello = raw.execute_command("HELLO", "2")
    assert isinstance(hello, list), hello  # RESP2: a flat field, value array
    fields = dict(zip(hello[0::2], hello[1::2]))
    assert fields["proto"] == 2 and fields["server"] == "redis"
    assert set(fields) == {"server", "version", "proto", "id", "mode", "role", "modules"}
    raw.close()


# -- blocking ----------------------------------------------------------------------------------


def test_blpop_timeout_and_wakeup(server, r):
    started = time.monotonic()
    assert r.blpop(["empty"], timeout=0.2) is None
    assert 0.15 <= time.monotonic() - started < 5

    pusher = client(server)
    timer = threading.Timer(0.2, lambda: pusher.rpush("jobs", "job-1"))
    timer.start()
    try:
        result = r.blpop(["other", "jobs"], timeout=5)
    finally:
        timer.join()
        pusher.close()
    assert tuple(result) == ("jobs", "job-1")
    r.rpush("ready", "x")
    assert tuple(r.brpop(["ready"], timeout=1)) == ("ready", "x")


# -- client and server commands ----------------------------------------------------------------


def test_client_name_list_info(r):
    assert r.client_setname("worker-1") is True
    assert r.client_getname() == "worker-1"
    clients = r.client_list()
    assert isinstance(clients, list) and clients
    mine = [c for c in clients if c.get("name") == "worker-1"]
    assert len(mine) == 1 and {"id", "addr", "db", "cmd"} <= set(mine[0])
    assert isinstance(r.client_id(), int)
    info = r.info()
    assert isinstance(info, dict) and info["redis_version"].startswith("7.0")
    assert "connected_clients" in info and "used_memory" in info
    r.set("k", "v")
    assert r.info("keyspace")["db0"]["keys"] == 1
    assert "uptime_in_seconds" in r.info("server")
