"""SIGKILL during uploads: nothing acknowledged is lost, nothing is counted twice, and no
half-copied segment or orphan object is left in the store once the broker has settled."""

from __future__ import annotations

import random
import time

import pytest
from confluent_kafka import KafkaError

from . import ck
from .helpers import unique_topic
from .test_tiering_helpers import (
    TIERED_TOPIC,
    make_remote,
    new_keyring,
    offsets,
    tiered_factory,  # noqa: F401 - fixture
    wait_settled,
)

KILLS = 3


def _produce_until_killed(b, topic: str, tag: int, seconds: float, rng: random.Random) -> dict[int, bytes]:
    """Produce ~300 records spread over `seconds` (segments roll and upload all along) and
    SIGKILL the broker after `seconds` (or once the first record is acknowledged, if later),
    mid-flight.
    Returns offset -> value of every acknowledged record (acks=all, no retries, so an unacked
    record was written once or not at all)."""
    p = ck.producer(b.bootstrap, **{"acks": "all", "linger.ms": 2, "retries": 0,
                                    "message.timeout.ms": 5000, "batch.num.messages": 20})
    acked: dict[int, bytes] = {}
    failed = []

    def on_delivery(err, msg):
        if err is None:
            acked[msg.offset()] = msg.value()
        else:
            failed.append(err)

    kill_at = time.monotonic() + seconds
    give_up = time.monotonic() + 60  # a busy machine may take longer to answer the first batch
    i = 0
    while (time.monotonic() < kill_at or not acked) and time.monotonic() < give_up:
        value = b"crash-%d-%06d|" % (tag, i) + rng.randbytes(350).hex().encode()
        try:
            p.produce(topic, value=value, partition=0, on_delivery=on_delivery)
            i += 1
        except BufferError:
            p.poll(0.01)
        p.poll(seconds / 300)
    b.kill()
    p.flush(15)
    assert len(p) == 0
    assert acked, "nothing was acknowledged before the kill"
    return acked


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_kill_during_uploads_loses_and_doubles_nothing(tiered_factory, tmp_path, kind):
    remote = make_remote(kind, tmp_path)
    ring = tmp_path / "keys" / "ring.json"
    new_keyring(ring)
    b = tiered_factory(remote, ring)
    topic = unique_topic("tier-crash")
    ck.create_topic(b.bootstrap, topic, 1, TIERED_TOPIC)
    rng = random.Random(99)

    acked: dict[int, bytes] = {}
    for tag in range(KILLS):
        acked_now = _produce_until_killed(b, topic, tag, 1.0 + rng.random(), rng)
        assert not set(acked_now) & set(acked), "an offset was acknowledged twice"
        acked.update(acked_now)
        b.start(30)
    # One more kill right after a burst that was fully acknowledged, while it uploads.
    burst = ck.producer(b.bootstrap, **{"acks": "all", "linger.ms": 5})
    reports: dict[bytes | None, tuple[KafkaError | None, int | None]] = {}
    for i in range(400):
        value = b"burst-%06d|" % i + rng.randbytes(350).hex().encode()
        burst.produce(topic, value=value, partition=0,
                      on_delivery=lambda err, msg: reports.__setitem__(msg.value(), (err, msg.offset())))
    assert burst.flush(30) == 0
    assert all(err is None for err, _ in reports.values())
    for v, (_, off) in reports.items():
        assert v is not None and off is not None  # a delivered record has both
        acked[off] = v
    time.sleep(0.3 + rng.random() * 0.4)
    b.kill()
    b.start(30)

    # Settle: everything below the active segment committed, nothing half-copied, no orphans.
    m = wait_settled(b, remote, topic, 0)
    committed = m.committed()
    assert committed[0].base_offset == 0
    for a, c in zip(committed, committed[1:]):
        assert c.base_offset == a.last_offset + 1, f"gap or overlap: {a} then {c}"

    o = offsets(b.bootstrap, topic, 0)
    assert o["earliest"] == 0
    assert o["latest"] > max(acked)
    assert o["earliest_local"] > o["latest"] // 2, f"most of the data should be remote only: {o}"

    got = ck.consume(b.bootstrap, topic, [0], start=0, timeout=90)
    offs = [g[1] for g in got]
    assert offs == list(range(o["latest"])), "offsets are not 0..end-1 exactly once each"
    values = [g[3] for g in got]
    assert len(set(values)) == len(values), "a record was stored twice"
    for off, value in acked.items():
        assert values[off] == value, f"acknowledged record at offset {off} lost or changed"
