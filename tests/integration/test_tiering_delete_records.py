"""DeleteRecords on a tiered topic moves the partition's start in both tiers: the remote start
floor is saved in the manifest (it survives a restart), remote segments wholly below it are
deleted from the bucket, and no consumer can read below it from either tier."""

from __future__ import annotations

from confluent_kafka import KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from . import ck
from .helpers import unique_topic
from .test_tiering_helpers import (
    TIERED_TOPIC,
    expected_by_partition,
    make_remote,
    offsets,
    produce,
    text_plan,
    tiered_factory,  # noqa: F401 - fixture
    wait_offloaded,
    wait_settled,
)

RECORDS = 300


def _delete_records(bootstrap: str, topic: str, offset: int) -> int:
    # A client of its own: one cached from before a broker restart may still hold stale metadata.
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fs = admin.delete_records([TopicPartition(topic, 0, offset)], request_timeout=15)
    [fut] = fs.values()
    return fut.result(20).low_watermark


def _first_error(bootstrap: str, topic: str, offset: int) -> KafkaError:
    """With auto.offset.reset=error librdkafka turns the broker's OFFSET_OUT_OF_RANGE into
    _AUTO_OFFSET_RESET, naming the broker's error in its text."""
    c = ck.consumer(bootstrap, **{"auto.offset.reset": "error"})
    try:
        c.assign([TopicPartition(topic, 0, offset)])
        for _ in range(40):
            msg = c.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err:
                return err
            raise AssertionError(f"read offset {msg.offset()} below the log start")
        raise AssertionError("no error for an offset below the log start")
    finally:
        c.close()


def _assert_out_of_range(err: KafkaError) -> None:
    assert err.code() == KafkaError._AUTO_OFFSET_RESET, err
    assert "Broker: Offset out of range" in err.str(), err


def test_delete_records_moves_the_start_of_both_tiers(tiered_factory, tmp_path):
    remote = make_remote("file", tmp_path)
    b = tiered_factory(remote)
    topic = unique_topic("tier-delrec")
    ck.create_topic(b.bootstrap, topic, 1, TIERED_TOPIC)
    plan = text_plan(b"DR", 1, RECORDS)
    produce(b, topic, plan)
    wait_offloaded(b, remote, topic, 0, at_least=200, local_start_at_least=200)
    m = wait_settled(b, remote, topic, 0)
    expected = expected_by_partition(plan)[0]

    # Inside the second remote segment: the first segment goes from the bucket, the second
    # stays but is read from the new start on.
    first, second = m.committed()[:2]
    cut = second.base_offset + 3
    assert _delete_records(b.bootstrap, topic, cut) == cut
    assert ck.watermarks(b.bootstrap, topic, 0) == (cut, RECORDS)
    o = offsets(b.bootstrap, topic, 0)
    assert o["earliest"] == cut and o["latest"] == RECORDS
    after = remote.check_partition(topic, 0)
    assert after.start_floor == cut
    assert first.segment_uuid not in {e.segment_uuid for e in after.entries}
    d = remote.partition_dirs(topic)[0]
    gone = {f"{d}/{k}" for k in m.keys_for(first, "")}
    assert gone & set(remote.keys()) == set()
    got = ck.consume(b.bootstrap, topic, [0], start=ck.OFFSET_BEGINNING, timeout=60)
    assert ck.strip_ts(got) == expected[cut:]
    _assert_out_of_range(_first_error(b.bootstrap, topic, cut - 1))

    # Below the current start: nothing moves, the answer is the current start.
    assert _delete_records(b.bootstrap, topic, 5) == cut

    # The floor is in the manifest: a restarted broker starts there too.
    b.stop()
    b.start(30)
    assert ck.watermarks(b.bootstrap, topic, 0) == (cut, RECORDS)
    assert ck.strip_ts(ck.consume(b.bootstrap, topic, [0], start=cut, timeout=60)) == expected[cut:]

    # Past everything remote (into the local tail): the bucket keeps nothing readable.
    local_cut = RECORDS - 4
    assert _delete_records(b.bootstrap, topic, local_cut) == local_cut
    assert ck.watermarks(b.bootstrap, topic, 0) == (local_cut, RECORDS)
    assert ck.strip_ts(ck.consume(b.bootstrap, topic, [0], timeout=60)) == expected[local_cut:]
    # Only a segment holding offsets at or past the cut may stay in the bucket.
    assert [e.base_offset for e in remote.committed(topic, 0) if e.last_offset < local_cut] == []
    _assert_out_of_range(_first_error(b.bootstrap, topic, 0))

    # Beyond the high watermark: OFFSET_OUT_OF_RANGE, nothing changes.
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    fs = admin.delete_records([TopicPartition(topic, 0, RECORDS + 1)], request_timeout=15)
    [fut] = fs.values()
    assert ck.future_error_code(fut) == KafkaError.OFFSET_OUT_OF_RANGE
    assert ck.watermarks(b.bootstrap, topic, 0) == (local_cut, RECORDS)
