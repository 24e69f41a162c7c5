"""kcat (Debian's, librdkafka 2.0.2) against minilog.

librdkafka 2.0.2 uses record batches only if the broker advertises Produce 3 and
Fetch 4, consumer groups only with the group APIs at v0, OffsetCommit 1-2 and
OffsetFetch 1, and offset lookups only with ListOffsets 1. So each test here also
proves that ApiVersions advertises those: without them kcat falls back to message
sets (which minilog does not store) or refuses `-G` outright.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from conftest import HOST, run_tool
from log_segment import partition_batches

#: Options every kcat run gets: a short socket timeout so a broker that stops answering
#: fails a test in seconds, not minutes.
COMMON = ["-X", "socket.timeout.ms=10000", "-X", "message.timeout.ms=20000"]


def kcat_produce(kcat, broker, topic, lines, *extra) -> str:
    """Produces one record a line; returns kcat's stderr."""
    data = ("\n".join(lines) + "\n").encode()
    done = run_tool([kcat, "-b", broker.bootstrap, "-P", "-t", topic, *COMMON, *extra], input=data)
    return done.stderr.decode(errors="replace")


def kcat_consume(kcat, broker, topic, fmt, *extra) -> list[str]:
    """Reads partition 0 (or what `extra` says) to its end, one formatted line a record."""
    done = run_tool([kcat, "-b", broker.bootstrap, "-C", "-t", topic, "-e", "-q", "-f", fmt, *COMMON, *extra])
    return done.stdout.decode().splitlines()


def test_metadata_lists_broker_and_topics(start_broker, kcat):
    broker = start_broker(num_partitions=3)
    kcat_produce(kcat, broker, "alpha", ["a"])
    kcat_produce(kcat, broker, "beta", ["b"])

    text = run_tool([kcat, "-b", broker.bootstrap, "-L", *COMMON]).stdout.decode()
    assert re.search(r"^\s*1 brokers:\s*$", text, re.M), text
    assert re.search(rf"^\s*broker 1 at {re.escape(HOST)}:{broker.port}\b", text, re.M), text
    for topic in ("alpha", "beta"):
        assert re.search(rf'^\s*topic "{topic}" with 3 partitions:', text, re.M), text
    assert "Error" not in text and "error" not in text, text

    doc = json.loads(run_tool([kcat, "-b", broker.bootstrap, "-L", "-J", *COMMON]).stdout)
    assert doc["brokers"] == [{"id": 1, "name": f"{HOST}:{broker.port}"}], doc
    topics = {t["topic"]: t for t in doc["topics"]}
    assert {"alpha", "beta"} <= set(topics), doc
    for topic in ("alpha", "beta"):
        assert "error" not in topics[topic], topics[topic]
        partitions = sorted(topics[topic]["partitions"], key=lambda p: p["partition"])
        assert [p["partition"] for p in partitions] == [0, 1, 2], partitions
        for p in partitions:
            assert p["leader"] == 1 and p["replicas"] == [{"id": 1}] and p["isrs"] == [{"id": 1}], p
            assert "error" not in p, p

    # One topic by name, including one that does not exist yet and gets auto-created.
    one = json.loads(run_tool([kcat, "-b", broker.bootstrap, "-L", "-J", "-t", "alpha", *COMMON]).stdout)
    assert [t["topic"] for t in one["topics"]] == ["alpha"], one


def _value(i: int) -> str:
    return f"value-{i:05d}-" + "x" * (i % 37)


def test_produce_and_consume_10000_with_keys_and_headers(broker, kcat):
    topic = "tenk"
    first = [f"key-{i}:{_value(i)}" for i in range(5000)]
    second = [f"key-{i}:{_value(i)}" for i in range(5000, 10000)]
    kcat_produce(kcat, broker, topic, first, "-p", "0", "-K:", "-H", "run=first", "-H", "tool=kcat")
    kcat_produce(kcat, broker, topic, second, "-p", "0", "-K:", "-H", "run=second")

    fmt = "%o|%k|%h|%s\\n"
    lines = kcat_consume(kcat, broker, topic, fmt, "-p", "0", "-o", "beginning")
    assert len(lines) == 10000, f"read {len(lines)} records, expected 10000; last: {lines[-3:]}"
    for i, line in enumerate(lines):
        headers = "run=first,tool=kcat" if i < 5000 else "run=second"
        expected = f"{i}|key-{i}|{headers}|{_value(i)}"
        assert line == expected, f"record {i}: got {line!r}, expected {expected!r}"

    tail = kcat_consume(kcat, broker, topic, fmt, "-p", "0", "-o", "9990")
    assert [int(line.split("|")[0]) for line in tail] == list(range(9990, 10000)), tail
    assert tail[-1] == f"9999|key-9999|run=second|{_value(9999)}"

    # An offset relative to the end (ListOffsets latest, then Fetch from end - 3).
    last3 = kcat_consume(kcat, broker, topic, "%o\\n", "-p", "0", "-o", "-3")
    assert last3 == ["9997", "9998", "9999"], last3


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_batches_are_stored_and_served_untouched(broker, kcat, codec):
    topic = f"z-{codec}"
    values = [f"record {i:05d} " + "abcdefgh" * 16 for i in range(2000)]
    payload = sum(len(v) for v in values)
    # debug=msg makes librdkafka say, once a batch, how it encoded it (and why it did not
    # compress, if it did not).
    said = kcat_produce(kcat, broker, topic, values, "-p", "0", "-z", codec, "-X", "linger.ms=50", "-X", "debug=msg")
    said = [line for line in said.splitlines() if "compress" in line.lower() or "MessageSet with" in line]

    lines = kcat_consume(kcat, broker, topic, "%o %s\\n", "-p", "0", "-o", "beginning")
    assert lines == [f"{i} {v}" for i, v in enumerate(values)], f"{len(lines)} records read back; first {lines[:2]}"

    batches = partition_batches(broker.partition_dir(topic, 0))
    summary = [(b.base_offset, b.last_offset, b.compression, b.record_count) for b in batches]
    assert batches, "no batch on disk"
    assert all(b.magic == 2 for b in batches), summary
    assert all(b.crc_ok for b in batches), f"stored batches with a bad CRC-32C: {summary}"
    if codec != "zstd":
        # librdkafka before 2.11 (Debian's kcat has 2.0.2) only uses gzip, snappy and lz4
        # when the broker's Produce range reaches down to v0. minilog serves Produce 3+,
        # as Kafka 4.0 does, so this kcat sends those batches uncompressed and says so;
        # the same kcat behaves the same against Kafka 4.0. Newer librdkafka compresses
        # all four (test_confluent_kafka.py checks the bytes on disk for each codec).
        assert any("does not support compression type" in line for line in said), said[:4]
        assert {b.compression for b in batches} == {"none"}, summary
        return
    assert {b.compression for b in batches} == {codec}, \
        f"stored batches are not all {codec}: {summary}; kcat said: {said[:4]}"
    assert sum(b.record_count for b in batches) == len(values), summary
    expected_base = 0
    for b in batches:
        assert b.base_offset == expected_base, f"offsets not contiguous on disk: {summary}"
        assert b.last_offset - b.base_offset + 1 == b.record_count, summary
        expected_base = b.last_offset + 1
    on_disk = sum(f.stat().st_size for f in broker.partition_dir(topic, 0).glob("*.log"))
    assert on_disk < payload / 4, f"{on_disk} bytes of .log for {payload} bytes of very compressible values"


_ASSIGNED = re.compile(r"\[(\d+)\]")


def latest_assignment(lines: list[str]):
    """The partitions of kcat's last "Group ... rebalanced ... assigned: t [0], t [1]" line."""
    for line in reversed(lines):
        if "rebalanced" in line and "assigned:" in line:
            return frozenset(int(p) for p in _ASSIGNED.findall(line.split("assigned:", 1)[1]))
        if "rebalanced" in line and "revoked:" in line:
            return frozenset()
    return None


def test_consumer_group_splits_partitions_and_survivor_takes_all(start_broker, kcat, tools):
    broker = start_broker(num_partitions=4)
    topic = "grouped"
    for p in range(4):
        kcat_produce(kcat, broker, topic, [f"before-{p}"], "-p", str(p))

    def member(name: str):
        return tools([kcat, "-b", broker.bootstrap, "-G", "g1", topic, "-u", "-f", "%p %o %s\\n",
                      "-X", "auto.offset.reset=earliest", "-X", "session.timeout.ms=6000",
                      "-X", "heartbeat.interval.ms=300", *COMMON], name)

    everything = frozenset(range(4))
    a = member("kcat A")
    a.stderr.wait_for(lambda lines: latest_assignment(lines) == everything, 20, "A to be assigned all 4 partitions")
    a.stdout.wait_for(lambda lines: len({line.split()[0] for line in lines}) == 4, 20,
                      "A to consume the first record of every partition")

    b = member("kcat B")

    def split():
        mine, theirs = latest_assignment(a.stderr.snapshot()), latest_assignment(b.stderr.snapshot())
        if mine and theirs and not (mine & theirs) and (mine | theirs) == everything:
            return mine, theirs
        return None

    start = time.monotonic()
    while (got := split()) is None:
        if time.monotonic() - start > 20:
            pytest.fail("the two members did not split the 4 partitions within 20 s\n"
                        f"A stderr: {a.stderr.snapshot()[-10:]}\nB stderr: {b.stderr.snapshot()[-10:]}",
                        pytrace=False)
        time.sleep(0.1)
    a_parts, b_parts = got

    for p in range(4):
        kcat_produce(kcat, broker, topic, [f"middle-{p}"], "-p", str(p))
    for tool, parts in ((a, a_parts), (b, b_parts)):
        want = {f"middle-{p}" for p in parts}
        tool.stdout.wait_for(lambda lines, want=want: want <= {line.split()[-1] for line in lines}, 20,
                             f"{tool.name} to consume {sorted(want)}")
    assert not any(line.endswith(tuple(f"middle-{p}" for p in b_parts)) for line in a.stdout.snapshot()), \
        "A consumed a record of a partition assigned to B"

    b.terminate()
    a.stderr.wait_for(lambda lines: latest_assignment(lines) == everything, 20,
                      "A to take over all 4 partitions after B left")
    for p in range(4):
        kcat_produce(kcat, broker, topic, [f"after-{p}"], "-p", str(p))
    want = {f"after-{p}" for p in range(4)}
    a.stdout.wait_for(lambda lines: want <= {line.split()[-1] for line in lines}, 20,
                      "the survivor to consume a new record from every partition")
