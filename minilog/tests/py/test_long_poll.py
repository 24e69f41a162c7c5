"""Fetch long polling (max_wait_ms, min_bytes), seen through confluent-kafka.

A Fetch that finds nothing to return must be held until `max_wait_ms` passes (not
answered at once, which makes every idle consumer spin, and not held forever), and must
be answered as soon as a record arrives. librdkafka sends `fetch.wait.max.ms` as
max_wait_ms and `fetch.min.bytes` as min_bytes. How long the broker held each Fetch is
read from its own `minilog_request_duration_seconds{api}` histogram; arrival latency is
timed at the client. The bounds are loose on purpose: they tell "held about max_wait"
from "instant" and "forever", and are no speed figures.
"""

from __future__ import annotations

import threading
import time

from conftest import wait_until
from test_confluent_kafka import FAST, create_topic, producer


def fetch_histogram(broker) -> tuple[float, float]:
    """(count, sum) of the broker's Fetch request-duration histogram; (0, 0) before any Fetch."""
    samples = broker.metrics()
    count = total = None
    for name, labels, value in samples:
        if labels.get("api", "").lower() != "fetch":
            continue
        if name == "minilog_request_duration_seconds_count":
            count = value
        elif name == "minilog_request_duration_seconds_sum":
            total = value
    if count is None or total is None:
        assert any(n.startswith("minilog_request_duration_seconds") for n, _l, _v in samples), \
            f"no minilog_request_duration_seconds histogram in /metrics: {sorted({n for n, _l, _v in samples})}"
        return 0.0, 0.0
    return count, total


def test_fetch_on_an_empty_partition_is_held_for_about_max_wait(broker, confluent_kafka):
    ck = confluent_kafka
    topic = "idle"
    create_topic(ck, broker, topic)
    c = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "idle-poller", "enable.auto.commit": False,
                     "fetch.wait.max.ms": 1000, "fetch.min.bytes": 1, **FAST})
    try:
        c.assign([ck.TopicPartition(topic, 0, 0)])
        # Let the first Fetch go out, then measure whole ones.
        wait_until(lambda: fetch_histogram(broker)[0] >= 1, 10, "a first Fetch to complete")
        count0, sum0 = fetch_histogram(broker)
        deadline = time.monotonic() + 4.5
        while time.monotonic() < deadline:
            msg = c.poll(0.2)
            assert msg is None or msg.error() is not None, f"a record in an empty topic: {msg.value()!r}"
        count1, sum1 = fetch_histogram(broker)
    finally:
        c.close()
    fetches = count1 - count0
    assert fetches >= 2, f"only {fetches:.0f} Fetch answered in 4.5 s with max_wait 1 s: held longer than max_wait?"
    assert fetches <= 8, f"{fetches:.0f} Fetches answered in 4.5 s with max_wait 1 s: not held at all?"
    mean = (sum1 - sum0) / fetches
    assert 0.7 <= mean <= 2.0, f"an empty Fetch was held {mean:.3f} s on average; max_wait was 1 s"


def test_a_held_fetch_returns_promptly_when_a_record_arrives(broker, confluent_kafka):
    ck = confluent_kafka
    topic = "wakeup"
    create_topic(ck, broker, topic)
    c = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "waker", "enable.auto.commit": False,
                     "fetch.wait.max.ms": 10000, "fetch.min.bytes": 1, **FAST})
    arrived: list[tuple[float, bytes]] = []
    stop = threading.Event()

    def poll():
        while not stop.is_set() and not arrived:
            msg = c.poll(0.1)
            if msg is not None and msg.error() is None:
                arrived.append((time.monotonic(), msg.value()))

    c.assign([ck.TopicPartition(topic, 0, 0)])
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        time.sleep(1.5)  # the first Fetch is now parked on the broker for up to 10 s
        p = producer(ck, broker, **{"linger.ms": 0})
        p.produce(topic, value=b"wake up", partition=0)
        assert p.flush(10) == 0
        acked = time.monotonic()
        poller.join(timeout=12)
        assert arrived, "the record never reached the consumer"
        when, value = arrived[0]
        assert value == b"wake up"
        assert when - acked < 2.0, \
            f"the record reached the consumer {when - acked:.2f} s after it was acknowledged; max_wait was 10 s"
    finally:
        stop.set()
        poller.join(timeout=12)
        c.close()
