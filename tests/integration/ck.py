"""confluent-kafka (librdkafka) helpers shared by several test modules."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from .helpers import Plan


def producer(bootstrap: str, **conf) -> Producer:
    base = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": False,
        "linger.ms": 5,
        "message.timeout.ms": 30000,
    }
    base.update(conf)
    return Producer(base)


def consumer(bootstrap: str, **conf) -> Consumer:
    # librdkafka insists on a group.id even for assign()-only consumers; nothing is committed.
    base = {
        "bootstrap.servers": bootstrap,
        "group.id": f"it-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "error",
    }
    base.update(conf)
    return Consumer(base)


_ADMINS: dict[str, AdminClient] = {}


def admin(bootstrap: str) -> AdminClient:
    """One admin client per broker address, kept alive: the futures of a client that is
    garbage-collected fail with _DESTROY."""
    if bootstrap not in _ADMINS:
        _ADMINS[bootstrap] = AdminClient({"bootstrap.servers": bootstrap})
    return _ADMINS[bootstrap]


def forget_admins(addresses) -> None:
    """Drop the cached admin clients of a stopped broker: they would keep reconnecting to it."""
    for a in addresses:
        _ADMINS.pop(a, None)


def error_code(exc: BaseException) -> int:
    assert isinstance(exc, KafkaException), f"expected a KafkaException, got {exc!r}"
    err = exc.args[0]
    assert isinstance(err, KafkaError), repr(exc)
    return err.code()


def future_error_code(fut, timeout: float = 15) -> int:
    try:
        fut.result(timeout)
    except KafkaException as e:
        return error_code(e)
    raise AssertionError("the request succeeded but an error was expected")


def create_topic(bootstrap: str, topic: str, partitions: int = 1, config: dict | None = None) -> None:
    fs = admin(bootstrap).create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=10,
    )
    fs[topic].result(15)


def produce_plan(p: Producer, topic: str, plan: Plan) -> list[tuple[int, int]]:
    """Produce round by round (a flush per round), with the records' keys, values, headers and
    timestamps. Returns the (partition, offset) of each delivery report in produce order."""
    reports: dict[int, tuple] = {}

    def on_delivery(idx):
        def cb(err, msg):
            reports[idx] = (err, None if err else (msg.partition(), msg.offset()))
        return cb

    idx = 0
    for rnd in plan.rounds:
        for r in rnd:
            p.produce(
                topic,
                value=r.value,
                key=r.key,
                partition=r.partition,
                headers=list(r.headers) if r.headers else None,
                timestamp=r.timestamp or 0,
                on_delivery=on_delivery(idx),
            )
            idx += 1
        left = p.flush(30)
        assert left == 0, f"{left} messages not delivered within 30s"
    errors = [e for e, _ in reports.values() if e is not None]
    assert not errors, f"delivery errors: {errors[:5]}"
    return [reports[i][1] for i in range(idx)]


def partition_of(msg: Message) -> int:
    """The partition of a consumed message or partition event (only a message not yet
    produced has none)."""
    part = msg.partition()
    assert part is not None, f"a consumed message without a partition: {msg!r}"
    return part


def offset_of(msg: Message) -> int:
    """The offset of a consumed message (only a message not yet produced has none)."""
    off = msg.offset()
    assert off is not None, f"a consumed message without an offset: {msg!r}"
    return off


def headers_of(msg: Message) -> list[tuple[str, str | bytes | None]]:
    """A consumed message's headers as a list of (key, value) pairs; librdkafka hands a consumed
    message's headers as a list (the dict form exists only for producing)."""
    headers = msg.headers() or []
    assert isinstance(headers, list), f"consumed headers as {type(headers)}"
    return [(k, v) for k, v in headers]


def consume(
    bootstrap: str,
    topic: str,
    partitions,
    start: int = OFFSET_BEGINNING,
    timeout: float = 30,
    **conf,
) -> list[tuple]:
    """Everything from `start` to the end of each partition, as
    (partition, offset, key, value, headers, (timestamp_type, timestamp)) in consumption order
    per partition (partitions are concatenated in ascending order)."""
    parts = list(partitions)
    c = consumer(bootstrap, **conf)
    try:
        c.assign([TopicPartition(topic, p, start) for p in parts])
        got: dict[int, list] = {p: [] for p in parts}
        at_eof: set[int] = set()
        deadline = time.monotonic() + timeout
        while at_eof != set(parts):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"consume timed out: eof on {sorted(at_eof)} of {parts}; "
                    f"got {[len(v) for v in got.values()]} records"
                )
            msg = c.poll(0.5)
            if msg is None:
                continue
            part = partition_of(msg)
            err = msg.error()
            if err:
                if err.code() == KafkaError._PARTITION_EOF:
                    at_eof.add(part)
                    continue
                raise AssertionError(f"consume error: {err}")
            at_eof.discard(part)
            got[part].append(
                (
                    part,
                    msg.offset(),
                    msg.key(),
                    msg.value(),
                    headers_of(msg),
                    msg.timestamp(),
                )
            )
        return [rec for p in parts for rec in got[p]]
    finally:
        c.close()


def strip_ts(records: list[tuple]) -> list[tuple]:
    return [r[:5] for r in records]


def watermarks(bootstrap: str, topic: str, partition: int) -> tuple[int, int]:
    c = consumer(bootstrap)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
    finally:
        c.close()
