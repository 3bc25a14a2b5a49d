"""Transactions end to end: confluent-kafka consume-transform-produce, aborts, a killed app,
read_committed against read_uncommitted, fencing, and a restart in the middle of it all."""

from __future__ import annotations

import signal
import struct
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from kio.schema.end_txn.v3.request import EndTxnRequest
from kio.schema.types import ProducerId, TransactionalId
from kio.static.primitive import i16, i64

from tests.integration import ck
from tests.integration.helpers import kio_call, unique_topic

BROKER_SETTINGS = {
    "group.initial.rebalance.delay.ms": 0,
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": 500,
}
PRODUCER_FENCED = 90


def _txn_producer(bootstrap: str, txn_id: str, **conf) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id,
                     "transaction.timeout.ms": 60000, "linger.ms": 1, **conf})


def _group_consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                     "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                     "session.timeout.ms": 6000, "heartbeat.interval.ms": 500})


def _read_all(bootstrap: str, topic: str, isolation: str) -> list[tuple[int, bytes]]:
    """Every visible record of partition 0 as (offset, value): read_committed or read_uncommitted."""
    conf: dict[str, Any] = {"isolation.level": isolation}  # a dict[str, str] would be checked against start=
    return [(r[1], r[3]) for r in ck.consume(bootstrap, topic, [0], **conf)]


def _poll_n(consumer: Consumer, n: int, timeout: float = 30.0) -> list:
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        assert time.monotonic() < deadline, f"only {len(got)} of {n} records"
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        assert msg.error() is None, msg.error()
        got.append(msg)
    return got


def _transform_batch(producer: Producer, consumer: Consumer, out_topic: str, n: int, *, commit: bool) -> list[bytes]:
    msgs = _poll_n(consumer, n)
    producer.begin_transaction()
    for m in msgs:
        producer.produce(out_topic, key=m.key(), value=m.value().upper(), partition=0)
    positions = [TopicPartition(m.topic(), m.partition(), m.offset() + 1) for m in msgs[-1:]]
    producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata())
    if commit:
        producer.commit_transaction(30)
    else:
        producer.flush(10)  # abort_transaction() purges unsent records; these must reach the log
        producer.abort_transaction(30)
        # An aborted batch is processed again: rewind to where it started.
        consumer.seek(TopicPartition(msgs[0].topic(), msgs[0].partition(), msgs[0].offset()))
    return [m.value().upper() for m in msgs]


KILLED_APP = textwrap.dedent("""
    import os, signal, sys
    from confluent_kafka import Consumer, Producer
    bootstrap, in_topic, out_topic, group, txn_id = sys.argv[1:6]
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                  "session.timeout.ms": 6000})
    c.subscribe([in_topic])
    msgs = []
    while len(msgs) < 5:
        m = c.poll(1.0)
        if m is not None and m.error() is None:
            msgs.append(m)
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id, "linger.ms": 1})
    p.init_transactions(30)
    p.begin_transaction()
    for m in msgs:
        p.produce(out_topic, key=m.key(), value=b"KILLED-" + m.value(), partition=0)
    p.flush(30)
    print("produced", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_consume_transform_produce_with_an_abort_and_a_killed_app(module_broker):
    b = module_broker
    in_topic, out_topic = unique_topic("txn-in"), unique_topic("txn-out")
    group, txn_id = unique_topic("txn-group"), unique_topic("txn-id")
    ck.create_topic(b.bootstrap, in_topic, 1)
    ck.create_topic(b.bootstrap, out_topic, 1)
    p = ck.producer(b.bootstrap)
    inputs = [b"event-%02d" % i for i in range(30)]
    for i, v in enumerate(inputs):
        p.produce(in_topic, key=b"k%d" % i, value=v, partition=0)
    assert p.flush(15) == 0

    # 1) five committed, five aborted then redone and committed.
    consumer = _group_consumer(b.bootstrap, group)
    consumer.subscribe([in_topic])
    producer = _txn_producer(b.bootstrap, txn_id)
    producer.init_transactions(30)
    _transform_batch(producer, consumer, out_topic, 5, commit=True)
    aborted_values = _transform_batch(producer, consumer, out_topic, 5, commit=False)
    _transform_batch(producer, consumer, out_topic, 5, commit=True)
    consumer.close()
    producer.flush(5)
    del producer

    # 2) an app instance produces five transformed records in a transaction and is killed.
    out = subprocess.run([sys.executable, "-c", KILLED_APP, b.bootstrap, in_topic, out_topic, group, txn_id],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == -signal.SIGKILL and "produced" in out.stdout, out.stderr
    # The hanging transaction holds back read_committed readers (the LSO) until it ends.
    assert len(_read_all(b.bootstrap, out_topic, "read_committed")) == 10
    assert sum(v.startswith(b"KILLED-") for _, v in _read_all(b.bootstrap, out_topic, "read_uncommitted")) == 5

    # 3) a new instance with the same transactional id fences and aborts it, and finishes.
    consumer = _group_consumer(b.bootstrap, group)
    consumer.subscribe([in_topic])
    producer = _txn_producer(b.bootstrap, txn_id)
    producer.init_transactions(30)
    _transform_batch(producer, consumer, out_topic, 20, commit=True)  # inputs 10..29
    committed = consumer.committed([TopicPartition(in_topic, 0)], timeout=10)
    consumer.close()

    expected = [v.upper() for v in inputs]
    visible = _read_all(b.bootstrap, out_topic, "read_committed")
    assert [v for _, v in visible] == expected
    everything = [v for _, v in _read_all(b.bootstrap, out_topic, "read_uncommitted")]
    assert everything == expected[:5] + aborted_values + expected[5:10] + \
        [b"KILLED-" + v for v in inputs[10:15]] + expected[10:]
    assert committed[0].offset == 30


def test_restart_keeps_committed_results_and_aborts_nothing_twice(module_broker):
    b = module_broker
    out_topic, txn_id = unique_topic("txn-restart"), unique_topic("txn-restart-id")
    ck.create_topic(b.bootstrap, out_topic, 1)
    producer = _txn_producer(b.bootstrap, txn_id)
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(out_topic, value=b"committed", partition=0)
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(out_topic, value=b"in-flight", partition=0)
    producer.flush(10)
    b.kill()
    b.restart()
    # The transaction open at the kill is still open (its producer may come back) and then
    # times out or is fenced: a new producer with the id aborts it.
    p2 = _txn_producer(b.bootstrap, txn_id)
    p2.init_transactions(30)
    assert [v for _, v in _read_all(b.bootstrap, out_topic, "read_committed")] == [b"committed"]
    assert [v for _, v in _read_all(b.bootstrap, out_topic, "read_uncommitted")] == [b"committed", b"in-flight"]




def _end_txn_raw(bootstrap: str, txn_id: str, producer_id: int, epoch: int) -> int:
    req = EndTxnRequest(transactional_id=TransactionalId(txn_id), producer_id=ProducerId(producer_id),
                        producer_epoch=i16(epoch), committed=True)
    return int(kio_call(bootstrap, req, 26, 3).error_code)


def test_fenced_producer_gets_producer_fenced(module_broker):
    b = module_broker
    topic, txn_id = unique_topic("txn-fence"), unique_topic("txn-fence-id")
    ck.create_topic(b.bootstrap, topic, 1)
    old = _txn_producer(b.bootstrap, txn_id)
    old.init_transactions(30)
    old.begin_transaction()
    old.produce(topic, value=b"from-old", partition=0)
    old.flush(10)
    new = _txn_producer(b.bootstrap, txn_id)
    new.init_transactions(30)  # bumps the epoch: the old producer is fenced, its txn aborted
    with pytest.raises(KafkaException) as e:
        old.commit_transaction(30)
    err = e.value.args[0]
    assert err.fatal()
    assert err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)
    new.begin_transaction()
    new.produce(topic, value=b"from-new", partition=0)
    new.commit_transaction(30)
    assert [v for _, v in _read_all(b.bootstrap, topic, "read_committed")] == [b"from-new"]
    assert [v for _, v in _read_all(b.bootstrap, topic, "read_uncommitted")] == [b"from-old", b"from-new"]


def test_end_txn_with_an_old_epoch_is_producer_fenced_on_the_wire(module_broker):
    b = module_broker
    topic, txn_id = unique_topic("txn-wire"), unique_topic("txn-wire-id")
    ck.create_topic(b.bootstrap, topic, 1)
    p1 = _txn_producer(b.bootstrap, txn_id)
    p1.init_transactions(30)
    p2 = _txn_producer(b.bootstrap, txn_id)
    p2.init_transactions(30)
    p2.begin_transaction()
    p2.produce(topic, value=b"x", partition=0)
    p2.commit_transaction(30)
    # The producer id and epoch, read back from the committed batch's header on disk.
    log_files = sorted((b.data_dir / f"{topic}-0").glob("*.log"))
    data = log_files[0].read_bytes()
    producer_id, epoch = struct.unpack_from(">qh", data, 43)
    assert _end_txn_raw(b.bootstrap, txn_id, producer_id, epoch - 1) == PRODUCER_FENCED
    assert _end_txn_raw(b.bootstrap, txn_id, producer_id + 1000, epoch) == 49  # INVALID_PRODUCER_ID_MAPPING


def test_describe_and_list_transactions(module_broker):
    from kio.schema.describe_transactions.v0.request import DescribeTransactionsRequest
    from kio.schema.list_transactions.v1.request import ListTransactionsRequest

    b = module_broker
    topic, txn_id = unique_topic("txn-desc"), unique_topic("txn-desc-id")
    ck.create_topic(b.bootstrap, topic, 2)
    p = _txn_producer(b.bootstrap, txn_id, **{"transaction.timeout.ms": 45000})
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(topic, value=b"a", partition=0)
    p.produce(topic, value=b"b", partition=1)
    p.flush(10)
    describe = DescribeTransactionsRequest(transactional_ids=(TransactionalId(txn_id),))
    resp = kio_call(b.bootstrap, describe, 65, 0)
    (state,) = resp.transaction_states
    assert (state.error_code, state.transactional_id, state.transaction_state) == (0, txn_id, "Ongoing")
    assert state.transaction_timeout.total_seconds() == 45
    assert [(t.topic, sorted(t.partitions)) for t in state.topics] == [(topic, [0, 1])]
    assert state.producer_epoch >= 0 and state.producer_id >= 0
    # An unknown id: error 105 and start time -1 (which the codec will not read back, so by hand:
    # throttle int32, array length 2 as uvarint, then error int16 and the id as a compact string).
    unknown = DescribeTransactionsRequest(transactional_ids=(TransactionalId("no-such-id"),))
    raw = kio_call(b.bootstrap, unknown, 65, 0, raw=True)
    assert raw[4] == 2 and struct.unpack_from(">h", raw, 5)[0] == 105
    assert raw[7] == len("no-such-id") + 1 and raw[8:18] == b"no-such-id"

    listed = kio_call(b.bootstrap, ListTransactionsRequest(state_filters=("Ongoing", "Bogus"),
                                                        producer_id_filters=(), duration_filter=i64(-1)), 66, 1)
    assert listed.error_code == 0 and tuple(listed.unknown_state_filters) == ("Bogus",)
    assert (txn_id, state.producer_id, "Ongoing") in [
        (t.transactional_id, t.producer_id, t.transaction_state) for t in listed.transaction_states]
    p.commit_transaction(30)
    resp = kio_call(b.bootstrap, describe, 65, 0)
    assert resp.transaction_states[0].transaction_state == "CompleteCommit"
    assert resp.transaction_states[0].topics == ()
