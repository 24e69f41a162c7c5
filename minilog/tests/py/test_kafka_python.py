"""kafka-python (PyPI, pure Python: it shares no code with librdkafka) against minilog.

Its defaults since 3.0 follow the Java client's: the producer is idempotent, so it
needs InitProducerId. Each test says which configuration it uses, so a failure names
the broker API that is missing rather than hiding it.
"""

from __future__ import annotations

import pytest

#: Keep a broker that stops answering from stalling a test for kafka-python's defaults.
TIMEOUTS = {"request_timeout_ms": 10000}


def test_default_producer_send_get(broker, kafka_python):
    kafka = kafka_python
    p = kafka.KafkaProducer(bootstrap_servers=broker.bootstrap, **TIMEOUTS)
    try:
        offsets = [p.send("kp-default", key=f"k{i}".encode(), value=f"v{i}".encode()).get(timeout=15).offset
                   for i in range(20)]
    finally:
        p.close(timeout=5)
    assert offsets == list(range(20)), offsets


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_produce_and_consume_from_earliest(broker, kafka_python, compression):
    kafka = kafka_python
    topic = f"kp-{compression or 'plain'}"
    p = kafka.KafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False,
                            compression_type=compression, **TIMEOUTS)
    try:
        metadata = [p.send(topic, key=f"key-{i}".encode(), value=f"value-{i}".encode(),
                           headers=[("n", str(i).encode())]).get(timeout=15) for i in range(100)]
    finally:
        p.close(timeout=5)
    assert [(m.topic, m.partition, m.offset) for m in metadata] == [(topic, 0, i) for i in range(100)]

    c = kafka.KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=None,
                            auto_offset_reset="earliest", consumer_timeout_ms=3000, **TIMEOUTS)
    try:
        got = [(m.offset, m.key, m.value, list(m.headers)) for m in c]
    finally:
        c.close()
    expected = [(i, f"key-{i}".encode(), f"value-{i}".encode(), [("n", str(i).encode())]) for i in range(100)]
    assert got == expected, f"read {len(got)} records; first differences: {[g for g in got if g not in expected][:3]}"


def test_consumer_group_commits_and_a_new_member_resumes(broker, kafka_python):
    kafka = kafka_python
    topic, group = "kp-group", "kp-resumers"
    p = kafka.KafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False, **TIMEOUTS)
    try:
        for i in range(50):
            p.send(topic, value=f"r{i}".encode())
        p.flush(timeout=15)
    finally:
        p.close(timeout=5)

    def member():
        return kafka.KafkaConsumer(topic, bootstrap_servers=broker.bootstrap, group_id=group,
                                   auto_offset_reset="earliest", enable_auto_commit=False,
                                   consumer_timeout_ms=5000, session_timeout_ms=6000,
                                   heartbeat_interval_ms=300, **TIMEOUTS)

    c = member()
    try:
        first = []
        for m in c:
            first.append(m.offset)
            if len(first) == 30:
                break
        c.commit()
        tp = kafka.TopicPartition(topic, 0)
        assert c.committed(tp) == 30, c.committed(tp)
    finally:
        c.close()
    assert first == list(range(30)), first

    c = member()
    try:
        rest = [m.offset for m in c]
    finally:
        c.close()
    assert rest == list(range(30, 50)), rest
