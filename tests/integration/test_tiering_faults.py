"""Store faults between the broker and S3 (moto behind a fault-injecting proxy): throttling,
server errors and a slow store delay uploads but lose or duplicate nothing; readers of remote
data get retries, errors or an empty answer in time, never wrong bytes."""

from __future__ import annotations

import datetime
import time

import pytest
from confluent_kafka import KafkaError, TopicPartition
from kio.schema.errors import ErrorCode
from kio.schema.fetch.v12.request import FetchPartition, FetchRequest, FetchTopic
from kio.schema.types import TopicName
from kio.static.primitive import i32, i32Timedelta, i64

from tests.moto_server import ThreadedFaultProxy

from . import ck
from .helpers import kio_call, unique_topic, wait_until
from .test_tiering_helpers import (
    EARLIEST,
    TIERED_TOPIC,
    RemoteView,
    clear_cache,
    expected_by_partition,
    list_offset,
    metric,
    moto,
    new_keyring,
    offsets,
    produce,
    text_plan,
    tiered_factory,  # noqa: F401 - fixture
    wait_offloaded,
    wait_settled,
)


@pytest.fixture
def proxy():
    p = ThreadedFaultProxy(moto().port).start_in_thread()
    yield p
    p.stop_thread()


@pytest.fixture
def remote():
    return RemoteView.s3()


def _broker(tiered_factory, remote, proxy, tmp_path, **settings):
    ring = tmp_path / "keys" / "ring.json"
    new_keyring(ring)
    return tiered_factory(remote, ring, settings=settings, endpoint=proxy.url)


def _poll_window(b, assignments, seconds: float, done=None):
    """Consume for `seconds`, or with `done` until done(got) holds (then `seconds` only bounds a
    failing test); returns ({partition: [(offset, key, value, headers, arrival s)]}, [errors])
    with arrival times measured from the start."""
    c = ck.consumer(b.bootstrap, **{"fetch.error.backoff.ms": 100})
    got: dict[int, list] = {}
    errors = []
    started = time.monotonic()
    try:
        c.assign([TopicPartition(t, p, off) for t, p, off in assignments])
        while time.monotonic() - started < seconds and not (done is not None and done(got)):
            msg = c.poll(0.2)
            if msg is None:
                continue
            err = msg.error()
            if err:
                if err.code() != KafkaError._PARTITION_EOF:
                    errors.append(err)
                continue
            got.setdefault(ck.partition_of(msg), []).append(
                (msg.offset(), msg.key(), msg.value(), ck.headers_of(msg), time.monotonic() - started))
    finally:
        c.close()
    return got, errors


@pytest.mark.parametrize("fault", ["slowdown-503", "internal-500", "slow-puts"])
def test_upload_faults_delay_but_lose_nothing(tiered_factory, tmp_path, remote, proxy, fault):
    b = _broker(tiered_factory, remote, proxy, tmp_path)
    topic = unique_topic("tier-upfault")
    ck.create_topic(b.bootstrap, topic, 1, TIERED_TOPIC)
    if fault == "slow-puts":
        proxy.delay_s = 0.5
        proxy.delay_when = lambda line: line.startswith(b"PUT")
    else:
        proxy.fail_status = 503 if fault == "slowdown-503" else 500
        proxy.fail_every = 3
    plan = text_plan(b"UPFAULT", 1, 300)
    produce(b, topic, plan)
    n = plan.count(0)
    wait_offloaded(b, remote, topic, 0, at_least=int(n * 0.7), local_start_at_least=int(n * 0.7), timeout=90)
    assert proxy.failed + proxy.delayed > 5, "the faults never hit the uploads"
    proxy.clear_faults()

    m = wait_settled(b, remote, topic, 0)
    committed = m.committed()
    assert committed[0].base_offset == 0
    for a, c in zip(committed, committed[1:]):
        assert c.base_offset == a.last_offset + 1, f"gap or overlap: {a} then {c}"
    got = ck.strip_ts(ck.consume(b.bootstrap, topic, [0], start=0, timeout=60))
    assert got == plan.expected()


def test_reads_retry_through_errors_and_never_return_wrong_bytes(tiered_factory, tmp_path, remote, proxy):
    b = _broker(tiered_factory, remote, proxy, tmp_path)
    topic = unique_topic("tier-readfault")
    ck.create_topic(b.bootstrap, topic, 2, TIERED_TOPIC)
    plan = text_plan(b"READFAULT", 1, 300)
    produce(b, topic, plan)
    n = plan.count(0)
    o = wait_offloaded(b, remote, topic, 0, at_least=int(n * 0.7), local_start_at_least=int(n * 0.7))
    expected = expected_by_partition(plan)[0]
    p = ck.producer(b.bootstrap)
    for i in range(5):
        p.produce(topic, value=b"local-%d" % i, partition=1)
    assert p.flush(15) == 0

    # Every other request to the store fails: retries get everything through, exactly.
    b.stop()
    clear_cache(b)
    b.start(30)
    proxy.fail_status = 503
    proxy.fail_every = 2
    got = ck.strip_ts(ck.consume(b.bootstrap, topic, [0], start=0, timeout=90))
    assert got == expected
    assert proxy.failed > 0

    # The store fails everything: no remote record arrives, and certainly no wrong one.
    b.stop()
    proxy.clear_faults()
    clear_cache(b)
    b.start(30)
    proxy.fail_status = 500
    proxy.fail_next = -1
    failed_before = proxy.failed
    got, _ = _poll_window(b, [(topic, 0, 0), (topic, 1, 0)], 60,
                          done=lambda got: len(got.get(1, [])) == 5 and proxy.failed > failed_before)
    for off, key, value, headers, _ in got.get(0, []):
        assert (0, off, key, value, headers) == expected[off], f"wrong record at offset {off}"
    assert proxy.failed > failed_before, "the reads never reached the store"
    assert b.running
    # The failing store costs partition 0 its remote records, not partition 1 (local, same
    # fetch) its records: the failure is that partition's, not the connection's.
    assert [r[2] for r in got.get(1, [])] == [b"local-%d" % i for i in range(5)]

    # The store is back: everything, exactly.
    proxy.clear_faults()
    got = ck.strip_ts(ck.consume(b.bootstrap, topic, [0], start=0, timeout=90))
    assert got == expected
    assert offsets(b.bootstrap, topic, 0)["earliest_local"] >= o["earliest_local"]


def test_slow_store_does_not_hold_up_local_partitions(tiered_factory, tmp_path, remote, proxy):
    b = _broker(tiered_factory, remote, proxy, tmp_path, **{"remote.fetch.max.wait.ms": 1000})
    topic = unique_topic("tier-slow")
    ck.create_topic(b.bootstrap, topic, 2, TIERED_TOPIC)
    plan = text_plan(b"SLOW", 1, 300)
    produce(b, topic, plan)
    n = plan.count(0)
    wait_offloaded(b, remote, topic, 0, at_least=int(n * 0.7), local_start_at_least=int(n * 0.7))
    p = ck.producer(b.bootstrap)
    for i in range(5):
        p.produce(topic, value=b"local-%d" % i, partition=1)
    assert p.flush(15) == 0
    expected = expected_by_partition(plan)[0]

    b.stop()
    clear_cache(b)
    b.start(30)
    proxy.delay_s = 10
    proxy.delay_when = lambda line: line.startswith(b"GET")
    # A remote read past remote.fetch.max.wait.ms answers the retriable error, not an empty
    # answer that a replay would take for the end of the data.
    part = _fetch_one(b.bootstrap, topic, 0, 0)
    assert (part.error_code, part.records) == (ErrorCode.kafka_storage_error, b"")
    # One consumer, one fetch for both partitions: partition 1 is local and must keep flowing
    # while partition 0's store reads hang (the broker answers within remote.fetch.max.wait.ms).
    got, _ = _poll_window(b, [(topic, 0, 0), (topic, 1, 0)], 6)
    assert [r[2] for r in got.get(1, [])] == [b"local-%d" % i for i in range(5)]
    assert got[1][-1][4] < 5, f"local records waited {got[1][-1][4]:.1f}s behind the slow store"
    assert proxy.delayed > 0, "the remote reads never reached the store"
    for off, key, value, headers, _ in got.get(0, []):
        assert (0, off, key, value, headers) == expected[off], f"wrong record at offset {off}"

    proxy.clear_faults()
    got = ck.strip_ts(ck.consume(b.bootstrap, topic, [0], start=0, timeout=90))
    assert got == expected


def _mostly_remote(b, remote, marker: bytes):
    """A one-partition tiered topic with 300 records, most of them only in the bucket; returns
    (topic, plan, local log start)."""
    topic = unique_topic("tier-" + marker.decode().lower())
    ck.create_topic(b.bootstrap, topic, 1, TIERED_TOPIC)
    plan = text_plan(marker, 1, 300)
    produce(b, topic, plan)
    n = plan.count(0)
    o = wait_offloaded(b, remote, topic, 0, at_least=int(n * 0.7), local_start_at_least=int(n * 0.7))
    assert o["earliest"] == 0 and o["earliest_local"] > 0
    return topic, plan, o["earliest_local"]


def _fetch_one(bootstrap: str, topic: str, partition: int, offset: int):
    """One raw Fetch v12 of one partition; returns its PartitionData."""
    fp = FetchPartition(partition=i32(partition), fetch_offset=i64(offset), partition_max_bytes=i32(1 << 20))
    req = FetchRequest(max_wait=i32Timedelta.parse(datetime.timedelta(milliseconds=500)), min_bytes=i32(1),
                       topics=(FetchTopic(topic=TopicName(topic), partitions=(fp,)),), forgotten_topics_data=())
    resp = kio_call(bootstrap, req, 1, 12, timeout=30)
    assert resp.error_code == ErrorCode.none
    [t] = resp.responses
    [p] = t.partitions
    return p


def test_store_outage_after_failed_upload_hides_no_remote_data(tiered_factory, tmp_path, remote, proxy):
    """A failed upload while the store is down must not drop the partition's remote view:
    the earliest offset stays the remote start, a remote fetch answers a retriable error, and
    a new consumer reset to earliest waits for the store instead of skipping to the local start."""
    b = _broker(tiered_factory, remote, proxy, tmp_path, **{"remote.fetch.max.wait.ms": 1000})
    topic, plan, _ = _mostly_remote(b, remote, b"OUTAGE")
    n = plan.count(0)

    # The store goes down; the next sealed segment's upload fails, and so does every re-read
    # of the manifest after it.
    proxy.fail_status = 500
    proxy.fail_next = -1
    failures = metric(b.metrics(), "sediment_remote_upload_failures_total")
    p = ck.producer(b.bootstrap, **{"acks": "all"})
    late = [b"late-%03d-" % i + b"x" * 900 for i in range(60)]
    for value in late:
        p.produce(topic, value=value, partition=0)
    assert p.flush(30) == 0
    wait_until(lambda: metric(b.metrics(), "sediment_remote_upload_failures_total") > failures, 60,
               interval=0.2, what="an upload failing against the down store")

    # (a) the earliest offset is still the remote start
    err, off, _ = list_offset(b.bootstrap, topic, 0, EARLIEST)
    assert (err, off) == (ErrorCode.none, 0)
    # ... and a timestamp that only the bucket can resolve gets the retriable error, not the
    # local log's answer
    ts = plan.records[5].timestamp
    assert list_offset(b.bootstrap, topic, 0, ts)[:2] == (ErrorCode.kafka_storage_error, -1)

    # (b) a fetch at a remote offset answers the retriable KAFKA_STORAGE_ERROR, no records
    part = _fetch_one(b.bootstrap, topic, 0, 0)
    assert part.error_code == ErrorCode.kafka_storage_error
    assert not part.records
    assert part.log_start_offset == 0

    # (c) a new consumer reset to earliest during the outage starts at 0 and, once the store
    # is back, receives every record in order
    expected = [(off, value) for _, off, _, value, _ in plan.expected()]
    expected += [(n + i, value) for i, value in enumerate(late)]
    reads = metric(b.metrics(), "sediment_remote_reads_total")
    c = ck.consumer(b.bootstrap, **{"auto.offset.reset": "earliest", "enable.partition.eof": False,
                                    "fetch.error.backoff.ms": 100})
    got: list[tuple[int, bytes | None]] = []

    def poll_until(predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}; got {len(got)} records"
            msg = c.poll(0.2)
            if msg is not None and not msg.error():
                got.append((ck.offset_of(msg), msg.value()))

    try:
        c.subscribe([topic])
        poll_until(lambda: metric(b.metrics(), "sediment_remote_reads_total") > reads + 2, 60,
                   "the new consumer's fetches reaching the bucket")
        assert got == [], "records arrived while the store was down"
        proxy.clear_faults()
        poll_until(lambda: bool(got) and got[-1][0] >= expected[-1][0], 90, "every record")
    finally:
        c.close()
    assert got == expected


def test_restart_during_store_outage_hides_no_remote_data(tiered_factory, tmp_path, remote, proxy):
    """A broker restarted while the store is down starts and serves its local data, but until
    the bucket answers it cannot know the partition's first offset: earliest and fetches below
    the local start answer the retriable KAFKA_STORAGE_ERROR (never the local start, which
    would send consumers past remote records); once the store is back, everything reads."""
    b = _broker(tiered_factory, remote, proxy, tmp_path, **{"remote.fetch.max.wait.ms": 1000})
    topic, plan, local_start = _mostly_remote(b, remote, b"RESTART")
    n = plan.count(0)

    b.stop()
    proxy.fail_status = 500
    proxy.fail_next = -1
    b.start(60)

    assert list_offset(b.bootstrap, topic, 0, EARLIEST)[:2] == (ErrorCode.kafka_storage_error, -1)
    part = _fetch_one(b.bootstrap, topic, 0, 0)
    assert (part.error_code, part.records) == (ErrorCode.kafka_storage_error, b"")
    local = _fetch_one(b.bootstrap, topic, 0, local_start)
    assert local.error_code == ErrorCode.none and local.records
    expected = [(off, value) for _, off, _, value, _ in plan.expected()]
    p = ck.producer(b.bootstrap, **{"acks": "all"})
    p.produce(topic, value=b"after-restart", partition=0)
    assert p.flush(30) == 0
    expected.append((n, b"after-restart"))

    proxy.clear_faults()
    wait_until(lambda: list_offset(b.bootstrap, topic, 0, EARLIEST)[:2] == (ErrorCode.none, 0), 60,
               interval=0.2, what="the remote view opened once the store answers")
    got = ck.consume(b.bootstrap, topic, [0], start=0, timeout=90)
    assert [(g[1], g[3]) for g in got] == expected
