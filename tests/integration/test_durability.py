"""Durability under faults, against a real broker process: what DeleteRecords answered
survives a SIGKILL, and /metrics reports how late the event loop runs (blocking work on it
would show there)."""

from __future__ import annotations

from confluent_kafka import TopicPartition

from . import ck
from .helpers import unique_topic, wait_until
from .test_tiering_helpers import get_metrics, metric


def test_delete_records_answer_survives_sigkill(broker_factory):
    b = broker_factory()
    topic = unique_topic("dur-delrec")
    ck.create_topic(b.bootstrap, topic, 1, {"segment.bytes": "4096"})
    p = ck.producer(b.bootstrap)
    for i in range(30):
        p.produce(topic, value=b"%03d" % i + b"." * 300, partition=0)
    assert p.flush(15) == 0
    [fut] = ck.admin(b.bootstrap).delete_records([TopicPartition(topic, 0, 21)], request_timeout=10).values()
    assert fut.result(15).low_watermark == 21
    b.kill()  # no clean shutdown: only what was made durable before the answer is left
    b.start()
    assert ck.watermarks(b.bootstrap, topic, 0) == (21, 30)
    got = ck.strip_ts(ck.consume(b.bootstrap, topic, [0]))
    assert [(g[1], g[3][:3]) for g in got] == [(i, b"%03d" % i) for i in range(21, 30)]


def test_metrics_report_event_loop_lag(broker):
    # Every wake-up fires at least a little late: a positive max shows the monitor runs.
    wait_until(lambda: metric(get_metrics(broker), "sediment_event_loop_lag_max_seconds") > 0,
               timeout=15, what="a measured event-loop lag")
    samples = get_metrics(broker)
    current = metric(samples, "sediment_event_loop_lag_seconds")
    worst = metric(samples, "sediment_event_loop_lag_max_seconds")
    assert 0 <= current <= worst
    assert len(samples["sediment_event_loop_lag_seconds"]) == 1
