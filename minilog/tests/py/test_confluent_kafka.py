"""confluent-kafka (PyPI; it bundles a recent librdkafka) against minilog.

Producer delivery reports, a two-member consumer group that commits and survives a
broker restart (SIGTERM, and kill -9 under `--flush always`), the AdminClient calls
this broker serves, and offset lookups by timestamp through the time index.
"""

from __future__ import annotations

import threading
import time

import pytest

from conftest import wait_until
from log_segment import partition_batches

#: librdkafka settings that keep a dead or silent broker from stalling a test for its
#: default 60 s socket timeout (and, for producers, 5 min message timeout).
FAST = {"socket.timeout.ms": 10000}
#: Small group timers, so joins, leaves and rebalances take a fraction of a second.
GROUP = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 300}


def producer(ck, broker, **extra):
    return ck.Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5,
                        "message.timeout.ms": 20000, **FAST, **extra})


def admin(ck, broker):
    from confluent_kafka.admin import AdminClient
    return AdminClient({"bootstrap.servers": broker.bootstrap, "socket.timeout.ms": 10000})


def create_topic(ck, broker, name, partitions=1, config=None):
    from confluent_kafka.admin import NewTopic
    a = admin(ck, broker)  # kept alive until the result is in: dropping it cancels the request
    futures = a.create_topics([NewTopic(name, partitions, 1, config=config or {})],
                              operation_timeout=10, request_timeout=15)
    futures[name].result(timeout=15)


def test_producer_delivery_reports_have_no_error_and_contiguous_offsets(start_broker, confluent_kafka):
    ck = confluent_kafka
    broker = start_broker(num_partitions=3)
    topic = "reports"
    create_topic(ck, broker, topic, partitions=3)
    reports = []

    def on_delivery(err, msg):
        reports.append((err, msg.partition(), msg.offset(), msg.key()))

    p = producer(ck, broker)
    for i in range(3000):
        p.produce(topic, key=f"key-{i}".encode(), value=f"value-{i}".encode(), on_delivery=on_delivery)
        if i % 500 == 0:
            p.poll(0)
    left = p.flush(30)
    assert left == 0, f"{left} messages still undelivered after 30 s"
    assert len(reports) == 3000, f"{len(reports)} delivery reports for 3000 messages"
    errors = [r for r in reports if r[0] is not None]
    assert not errors, f"{len(errors)} failed deliveries, first: {errors[:3]}"

    by_partition: dict[int, list[int]] = {}
    key_partition: dict[bytes, int] = {}
    for _err, partition, offset, key in reports:
        by_partition.setdefault(partition, []).append(offset)
        key_partition[key] = partition
    assert set(by_partition) == {0, 1, 2}, f"keys hashed to partitions {sorted(by_partition)} only"
    for partition, offsets in by_partition.items():
        assert offsets == list(range(len(offsets))), \
            f"partition {partition}: delivery offsets are not 0, 1, 2, ... in order: {offsets[:20]}..."

    c = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "watermarks", **FAST})
    try:
        for partition, offsets in by_partition.items():
            low, high = c.get_watermark_offsets(ck.TopicPartition(topic, partition), timeout=10)
            assert (low, high) == (0, len(offsets)), f"partition {partition} watermarks {(low, high)}"
    finally:
        c.close()


# ---- a consumer group across a broker restart --------------------------------


class Member:
    """One group member in its own thread: consumes, and commits after each batch.

    Every assignment starts a new segment of what it received, so a check can ask of
    each one: did it start exactly at the committed offset, and go on without gaps?
    """

    def __init__(self, ck, broker, group: str, topic: str, name: str, commit: bool, stop_when=None):
        self.ck = ck
        self.name = name
        self.topic = topic
        self.commit = commit
        #: `stop_when(member)` says when this member has done its share; it then reads one
        #: more batch without committing it (the batch a crash would redeliver) and stops.
        self.stop_when = stop_when
        self.consumer = ck.Consumer({
            "bootstrap.servers": broker.bootstrap, "group.id": group, "client.id": name,
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
            # Small fetches, so that both partitions of a member interleave and each gets a
            # commit before the member stops.
            "max.partition.fetch.bytes": 2048,
            **GROUP, **FAST})
        self.assigned: frozenset[int] = frozenset()
        self.segments: list[dict[int, list[tuple[int, bytes]]]] = []
        self.committed: dict[int, int] = {}
        self.uncommitted: list[tuple[int, int]] = []
        self.problems: list[str] = []
        self.done = threading.Event()
        self._quit = threading.Event()
        self.consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _on_assign(self, _consumer, partitions):
        self.assigned = frozenset(p.partition for p in partitions)
        self.segments.append({})

    def _on_revoke(self, _consumer, _partitions):
        self.assigned = frozenset()

    def received(self) -> int:
        return sum(len(v) for seg in self.segments for v in seg.values())

    def _run(self):
        try:
            while not self._quit.is_set():
                batch = self.consumer.consume(num_messages=25, timeout=0.2)
                if self._record(batch) and self.commit:
                    self._commit(batch)
                if self.stop_when is not None and self.stop_when(self):
                    tail = self.consumer.consume(num_messages=25, timeout=1.0)
                    self._record(tail)
                    self.uncommitted = [(m.partition(), m.offset()) for m in tail if m.error() is None]
                    break
        except Exception as e:  # reported by the test, not lost in a thread
            self.problems.append(f"{self.name}: {type(e).__name__}: {e}")
        finally:
            self.done.set()

    def _record(self, batch) -> bool:
        got = False
        for m in batch:
            if m.error() is not None:
                if m.error().code() != self.ck.KafkaError._PARTITION_EOF:
                    self.problems.append(f"{self.name}: consume error {m.error()}")
                continue
            if not self.segments:
                self.problems.append(f"{self.name}: a record before any assignment")
                self.segments.append({})
            self.segments[-1].setdefault(m.partition(), []).append((m.offset(), m.value()))
            got = True
        return got

    def _commit(self, batch):
        last: dict[int, int] = {}
        for m in batch:
            if m.error() is None:
                last[m.partition()] = max(last.get(m.partition(), -1), m.offset())
        offsets = [self.ck.TopicPartition(self.topic, p, o + 1) for p, o in last.items()]
        try:
            result = self.consumer.commit(offsets=offsets, asynchronous=False)
        except self.ck.KafkaException as e:
            # A commit can lose a race with a rebalance; it is then not counted as committed.
            self.problems.append(f"{self.name}: commit of {last} failed: {e}")
            return
        for tp in result:
            if tp.error is None:
                self.committed[tp.partition] = tp.offset
            else:
                self.problems.append(f"{self.name}: commit of partition {tp.partition} failed: {tp.error}")

    def close(self):
        self._quit.set()
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), f"{self.name} did not stop"
        self.consumer.close()


def check_segments(members, start: dict[int, int], end: dict[int, int], phase: str) -> None:
    """Every assignment's records of a partition begin at `start[p]` and have no gaps or
    repeats; together they cover `start[p]..end[p]` (no loss); values match offsets."""
    covered: dict[int, set[int]] = {p: set() for p in end}
    for m in members:
        for n, segment in enumerate(m.segments):
            for p, records in segment.items():
                offsets = [o for o, _v in records]
                where = f"{phase}, {m.name}, assignment {n}, partition {p}"
                assert offsets[0] == start[p], \
                    f"{where}: first offset received {offsets[0]}, committed offset was {start[p]}"
                assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), \
                    f"{where}: offsets not contiguous: {offsets[:10]}...{offsets[-5:]}"
                for o, v in records:
                    assert v == f"{p}:{o}".encode(), f"{where}: offset {o} holds {v!r}, expected {p}:{o}"
                covered[p].update(offsets)
    for p in end:
        missing = sorted(set(range(start[p], end[p])) - covered[p])
        assert not missing, f"{phase}: partition {p} never delivered offsets {missing[:20]} (of {len(missing)})"


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_consumer_group_resumes_at_committed_offsets_after_restart(start_broker, confluent_kafka, how):
    ck = confluent_kafka
    broker = start_broker(flush="always")
    topic, group, partitions, per_partition = "orders", "resumers", 4, 300
    create_topic(ck, broker, topic, partitions=partitions)
    everything = frozenset(range(partitions))

    # Phase 1: two members; records are produced only once the group is stable, so no
    # rebalance interleaves with the commits.
    def did_share(m: Member) -> bool:
        return bool(m.assigned) and all(m.committed.get(p, 0) >= 40 for p in m.assigned)

    first = [Member(ck, broker, group, topic, f"first-{i}", commit=True, stop_when=did_share) for i in range(2)]
    try:
        wait_until(lambda: (first[0].assigned and first[1].assigned
                            and not (first[0].assigned & first[1].assigned)
                            and (first[0].assigned | first[1].assigned) == everything),
                   20, "the two members to split the 4 partitions")
        p = producer(ck, broker, **{"linger.ms": 0})
        for i in range(0, per_partition, 20):  # many small batches
            for part in range(partitions):
                for j in range(i, i + 20):
                    p.produce(topic, value=f"{part}:{j}".encode(), partition=part)
            assert p.flush(15) == 0, "produce did not complete"
        for m in first:
            assert m.done.wait(30), f"{m.name} did not reach its stop point; got {m.received()} records"
    finally:
        for m in first:
            m.close()
    problems = [pr for m in first for pr in m.problems]
    assert not problems, problems
    committed = {p: o for m in first for p, o in m.committed.items()}
    assert set(committed) == set(everything), f"not every partition got a commit: {committed}"
    end = {p: per_partition for p in everything}
    check_segments(first, {p: 0 for p in everything}, {p: committed[p] for p in everything}, "before restart")
    uncommitted = [pair for m in first for pair in m.uncommitted]
    # The point of the test: records were read past the last commit, so a restart must
    # redeliver exactly those and nothing before them.
    assert uncommitted, "test setup: the members read nothing past their last commit"
    print(f"committed before the {how} restart: {committed}; read but not committed: {len(uncommitted)} records")

    broker.restart(kill=(how == "kill9"))

    # What the broker remembers, asked directly (OffsetFetch) before anyone joins.
    probe = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, **FAST})
    try:
        stored = probe.committed([ck.TopicPartition(topic, p) for p in everything], timeout=10)
    finally:
        probe.close()
    assert {tp.partition: tp.offset for tp in stored} == committed, \
        f"committed offsets after the restart differ from the acknowledged commits {committed}"

    # Phase 2: two new members, no commits: each assignment must start at the commit.
    second = [Member(ck, broker, group, topic, f"second-{i}", commit=False) for i in range(2)]
    try:
        def covered():
            got = {p: set() for p in everything}
            for m in second:
                for seg in list(m.segments):
                    for p, records in list(seg.items()):
                        got[p].update(o for o, _v in records)
            return all(got[p] >= set(range(committed[p], end[p])) for p in everything)

        wait_until(covered, 30, "the restarted members to read every partition to its end")
        wait_until(lambda: all(m.assigned for m in second), 20, "both restarted members to get partitions")
    finally:
        for m in second:
            m.close()
    problems = [pr for m in second for pr in m.problems]
    assert not problems, problems
    check_segments(second, committed, end, f"after {how} restart (uncommitted tail was {len(uncommitted)} records)")


# ---- AdminClient -------------------------------------------------------------


def test_admin_create_describe_list_delete_topics(broker, confluent_kafka):
    ck = confluent_kafka
    from confluent_kafka.admin import ConfigResource, NewTopic, ResourceType

    a = admin(ck, broker)
    name = "managed"
    futures = a.create_topics([NewTopic(name, 3, 1, config={"retention.ms": "3600000", "segment.bytes": "1048576"})],
                              operation_timeout=10, request_timeout=15)
    futures[name].result(timeout=15)

    meta = a.list_topics(timeout=10)
    assert name in meta.topics, sorted(meta.topics)
    assert meta.topics[name].error is None, meta.topics[name].error
    assert sorted(meta.topics[name].partitions) == [0, 1, 2]
    assert list(meta.brokers) == [1], meta.brokers
    assert (broker.data_dir / "topics" / f"{name}.properties").is_file()
    assert all(broker.partition_dir(name, p).is_dir() for p in range(3))

    resource = ConfigResource(ResourceType.TOPIC, name)
    configs = a.describe_configs([resource], request_timeout=15)[resource].result(timeout=15)
    assert configs["retention.ms"].value == "3600000", configs["retention.ms"]
    assert configs["segment.bytes"].value == "1048576", configs["segment.bytes"]
    assert "cleanup.policy" in configs, sorted(configs)

    again = a.create_topics([NewTopic(name, 1, 1)], request_timeout=15)[name]
    with pytest.raises(ck.KafkaException) as exists:
        again.result(timeout=15)
    assert exists.value.args[0].code() == ck.KafkaError.TOPIC_ALREADY_EXISTS, exists.value

    bad = a.create_topics([NewTopic("compacted", 1, 1, config={"cleanup.policy": "compact"})],
                          request_timeout=15)["compacted"]
    with pytest.raises(ck.KafkaException) as invalid:
        bad.result(timeout=15)
    assert invalid.value.args[0].code() == ck.KafkaError.INVALID_CONFIG, invalid.value

    a.delete_topics([name], operation_timeout=10, request_timeout=15)[name].result(timeout=15)
    wait_until(lambda: name not in a.list_topics(timeout=10).topics, 5, f"{name} to leave the metadata")
    wait_until(lambda: not (broker.data_dir / "topics" / f"{name}.properties").exists()
               and not any(broker.partition_dir(name, p).exists() for p in range(3)),
               5, f"{name}'s files to be removed from {broker.data_dir}")


def test_admin_lists_and_describes_consumer_groups(broker, confluent_kafka):
    ck = confluent_kafka
    a = admin(ck, broker)
    if not hasattr(a, "list_consumer_groups") or not hasattr(a, "describe_consumer_groups"):
        pytest.skip(f"confluent-kafka {ck.version()[0]} has no list/describe_consumer_groups")
    topic, group = "listed", "describers"
    create_topic(ck, broker, topic, partitions=2)
    p = producer(ck, broker)
    for i in range(10):
        p.produce(topic, value=b"x", partition=i % 2)
    assert p.flush(15) == 0

    c = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "client.id": "describer-1",
                     "auto.offset.reset": "earliest", "enable.auto.commit": False, **GROUP, **FAST})
    try:
        c.subscribe([topic])
        got = []
        deadline = time.monotonic() + 20
        while len(got) < 10 and time.monotonic() < deadline:
            got += [m for m in c.consume(10, timeout=0.5) if m.error() is None]
        assert len(got) == 10, f"consumed {len(got)} of 10"
        c.commit(offsets=[ck.TopicPartition(topic, 0, 3), ck.TopicPartition(topic, 1, 5)], asynchronous=False)

        listed = a.list_consumer_groups(request_timeout=15).result(timeout=15)
        assert not listed.errors, listed.errors
        assert group in [g.group_id for g in listed.valid], [g.group_id for g in listed.valid]

        desc = a.describe_consumer_groups([group], request_timeout=15)[group].result(timeout=15)
        assert desc.group_id == group
        assert desc.state == ck.ConsumerGroupState.STABLE, desc.state
        assert len(desc.members) == 1, desc.members
        assert desc.members[0].client_id == "describer-1", desc.members[0]
        assigned = {(tp.topic, tp.partition) for tp in desc.members[0].assignment.topic_partitions}
        assert assigned == {(topic, 0), (topic, 1)}, assigned
        assert desc.coordinator.id == 1, desc.coordinator

        if hasattr(a, "list_consumer_group_offsets"):
            from confluent_kafka import ConsumerGroupTopicPartitions
            result = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=15)
            offsets = result[group].result(timeout=15)
            assert {(tp.partition, tp.offset) for tp in offsets.topic_partitions} == {(0, 3), (1, 5)}, offsets
    finally:
        c.close()


def test_offsets_by_timestamp_use_the_time_index(broker, confluent_kafka):
    ck = confluent_kafka
    topic = "timed"
    # Small segments, so the lookup has to pick the right segment, then the right batch.
    create_topic(ck, broker, topic, config={"segment.bytes": "4096"})
    t0 = (int(time.time() * 1000) // 1000 - 3600) * 1000  # an hour ago, whole seconds
    p = producer(ck, broker, **{"linger.ms": 0})
    for i in range(200):
        p.produce(topic, value=f"ts-{i:03d}-{'.' * 30}".encode(), partition=0, timestamp=t0 + i * 1000)
        if i % 20 == 19:
            assert p.flush(15) == 0
    segments = sorted(broker.partition_dir(topic, 0).glob("*.log"))
    assert len(segments) >= 2, f"expected several segments with segment.bytes=4096, found {segments}"
    assert all(len(s.stem) == 20 and s.stem.isdigit() for s in segments), segments

    tp = lambda ts: ck.TopicPartition(topic, 0, ts)  # noqa: E731
    c = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "timed-lookups", **FAST})
    try:
        # Kafka answers with the first *record* whose timestamp is >= the target, wherever
        # it sits in its batch; so every record's own timestamp, and half a second before
        # it, must find that record. Before the first record: offset 0; after the last: -1.
        cases = {t0 - 5000: 0, t0 + 10**6: -1}
        for i in range(200):
            cases[t0 + i * 1000] = i
            cases[t0 + i * 1000 - 500] = i
        # One lookup a request: a ListOffsets naming one partition twice is invalid.
        got = {ts: c.offsets_for_times([tp(ts)], timeout=10)[0].offset for ts in cases}
        wrong = [f"t0{ts - t0:+d} ms -> {got[ts]} (expected {want})" for ts, want in cases.items() if got[ts] != want]
        batches = [(b.base_offset, b.last_offset) for b in partition_batches(broker.partition_dir(topic, 0))]
        assert not wrong, (f"offsets_for_times is wrong for {len(wrong)} of {len(cases)} timestamps, e.g. "
                           f"{wrong[:6]}; stored batches (base, last): {batches}")

        c.assign([ck.TopicPartition(topic, 0, 100)])
        msg = None
        deadline = time.monotonic() + 10
        while msg is None and time.monotonic() < deadline:
            msg = c.poll(0.5)
        assert msg is not None and msg.error() is None, msg and msg.error()
        assert msg.offset() == 100 and msg.value().startswith(b"ts-100-"), (msg.offset(), msg.value())
        assert msg.timestamp() == (ck.TIMESTAMP_CREATE_TIME, t0 + 100_000), msg.timestamp()
    finally:
        c.close()

    a = admin(ck, broker)
    if not hasattr(a, "list_offsets"):
        return
    from confluent_kafka.admin import OffsetSpec
    specs = {"earliest": (OffsetSpec.earliest(), 0), "latest": (OffsetSpec.latest(), 200)}
    for i in (0, 57, 100, 101, 133, 199):
        specs[f"timestamp t0+{i} s"] = (OffsetSpec.for_timestamp(t0 + i * 1000), i)
    got = {}
    for what, (spec, _expected) in specs.items():
        result = a.list_offsets({ck.TopicPartition(topic, 0): spec}, request_timeout=15)
        (info,) = [f.result(timeout=15) for f in result.values()]
        got[what] = info.offset
    assert got == {what: expected for what, (_s, expected) in specs.items()}, f"list_offsets: {got}"


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_produce_is_stored_compressed(broker, confluent_kafka, codec):
    ck = confluent_kafka
    topic = f"cz-{codec}"
    create_topic(ck, broker, topic)
    p = producer(ck, broker, **{"compression.type": codec, "linger.ms": 20})
    values = [f"event {i:05d} ".encode() + b"0123456789" * 12 for i in range(1000)]
    for v in values:
        p.produce(topic, value=v, partition=0)
    assert p.flush(15) == 0
    batches = partition_batches(broker.partition_dir(topic, 0))
    summary = [(b.base_offset, b.last_offset, b.compression) for b in batches]
    assert all(b.crc_ok for b in batches), summary
    assert {b.compression for b in batches} == {codec}, f"stored batches are not all {codec}: {summary}"

    c = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"cz-{codec}", **FAST})
    try:
        c.assign([ck.TopicPartition(topic, 0, 0)])
        got = []
        deadline = time.monotonic() + 15
        while len(got) < len(values) and time.monotonic() < deadline:
            got += [(m.offset(), m.value()) for m in c.consume(500, timeout=0.5) if m.error() is None]
    finally:
        c.close()
    assert got == list(enumerate(values)), f"read back {len(got)} of {len(values)}"
