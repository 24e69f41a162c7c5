"""The admin endpoint's /metrics after traffic from kcat and confluent-kafka."""

from __future__ import annotations

from conftest import run_tool, wait_until


def value(samples, name, **labels) -> float | None:
    """The sum of the samples of `name` whose labels include `labels` (None if there are none)."""
    matching = [v for n, lab, v in samples if n == name and all(lab.get(k) == str(w) for k, w in labels.items())]
    return sum(matching) if matching else None


def test_traffic_and_lag_are_reported(broker, kcat, confluent_kafka):
    ck = confluent_kafka
    topic = "metered"
    data = "".join(f"record-{i}\n" for i in range(100)).encode()
    run_tool([kcat, "-b", broker.bootstrap, "-P", "-t", topic, "-p", "0"], input=data)
    out = run_tool([kcat, "-b", broker.bootstrap, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e", "-q"])
    assert len(out.stdout.splitlines()) == 100

    c = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "metered-group", "socket.timeout.ms": 10000})
    try:
        c.commit(offsets=[ck.TopicPartition(topic, 0, 40)], asynchronous=False)
    finally:
        c.close()

    samples = broker.metrics()
    names = sorted({n for n, _l, _v in samples if n.startswith("minilog_")})
    assert value(samples, "minilog_log_end_offset", topic=topic, partition=0) == 100, names
    assert value(samples, "minilog_records_in_total", topic=topic) == 100, names
    assert (value(samples, "minilog_bytes_in_total", topic=topic) or 0) >= len(data), names
    assert (value(samples, "minilog_records_out_total") or 0) >= 100, names
    assert (value(samples, "minilog_bytes_out_total") or 0) >= len(data), names
    wait_until(lambda: value(broker.metrics(), "minilog_consumer_group_lag", group="metered-group", topic=topic,
                             partition=0) == 60, 5, "consumer_group_lag 60 (end offset 100, committed 40)")
