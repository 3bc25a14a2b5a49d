"""A full disk under the data dir (a size-limited tmpfs): produce answers KAFKA_STORAGE_ERROR
(56) for the partitions it cannot write, fetches keep being served, nothing acknowledged is
lost, and produce works again once space returns, with no torn or half-indexed tail left for
later reads or a restart to trip on."""

from __future__ import annotations

import subprocess

import pytest
from confluent_kafka import KafkaError

from loadtest.smalldisk import SmallDisk

from . import ck
from .conftest import sediment_command
from .helpers import unique_topic, wait_until

PARTITIONS = 2
VALUE = 3000


def _value(tag: str, p: int, i: int) -> bytes:
    head = f"{tag}-p{p}-{i:05d}|".encode()
    return head + b"x" * (VALUE - len(head))


class Acked:
    """Delivery reports of one producer: acknowledged (partition, offset, value), and errors."""

    def __init__(self) -> None:
        self.records: list[tuple[int, int, bytes]] = []
        self.errors: list[int] = []

    def __call__(self, err, msg) -> None:
        if err is not None:
            self.errors.append(err.code())
        else:
            self.records.append((msg.partition(), msg.offset(), msg.value()))


def _produce(p, topic: str, tag: str, count: int, acked: Acked) -> None:
    for i in range(count):
        part = i % PARTITIONS
        p.produce(topic, value=_value(tag, part, i), partition=part, on_delivery=acked)


def _read_back(bootstrap: str, topic: str) -> list[tuple[int, int, bytes]]:
    return [(r[0], r[1], r[3]) for r in ck.consume(bootstrap, topic, range(PARTITIONS), start=0, timeout=60)]


@pytest.fixture(params=["plain", "encrypted"])
def small_disk(request, broker_factory, tmp_path):
    settings = {}
    if request.param == "encrypted":  # large requests are sealed in a worker thread: that path too
        ring = tmp_path / "keys" / "ring.json"
        ring.parent.mkdir()
        subprocess.run(sediment_command() + ["keys", "generate", str(ring)], check=True, timeout=60)
        settings = {"log.encryption.enable": "true", "remote.keyring": str(ring)}
    b = broker_factory(settings, start=False)
    disk = SmallDisk(b.data_dir, size_mib=16)
    reason = disk.mount()
    if reason is not None:
        pytest.skip(f"no size-limited file system for the data dir: {reason}")
    try:
        yield b, disk
    finally:
        b.kill()
        disk.free()
        disk.unmount()


def test_disk_full_answers_storage_error_and_loses_nothing(small_disk):
    b, disk = small_disk
    b.start()
    topic = unique_topic("diskfull")
    ck.create_topic(b.bootstrap, topic, PARTITIONS)
    idem = ck.producer(b.bootstrap, **{"enable.idempotence": True, "acks": "all",
                                       "message.timeout.ms": 120000})
    acked = Acked()
    _produce(idem, topic, "before", 200, acked)
    assert idem.flush(30) == 0 and acked.errors == []

    # Less than one batch of room is left, so the next write is cut short by ENOSPC mid-batch.
    disk.fill(leave_bytes=6000)
    direct = ck.producer(b.bootstrap, acks="all", retries=0, **{"linger.ms": 0})
    refused = Acked()
    for i in range(6):  # 100 KB requests: bigger than the room left, and sealed off the loop
        direct.produce(topic, value=_value("refused", i % PARTITIONS, i) * 34, partition=i % PARTITIONS,
                       on_delivery=refused)
    assert direct.flush(30) == 0
    assert refused.records == [], "acknowledged although the disk is full"
    assert refused.errors == [KafkaError.KAFKA_STORAGE_ERROR] * 6

    # The idempotent producer keeps retrying its batches meanwhile.
    _produce(idem, topic, "during", 40, acked)
    idem.poll(1)

    # Fetches are still served, and show exactly what was acknowledged.
    assert _read_back(b.bootstrap, topic) == sorted(acked.records)
    assert b.running

    disk.free()
    assert idem.flush(60) == 0
    _produce(idem, topic, "after", 40, acked)
    assert idem.flush(30) == 0
    assert acked.errors == []
    assert len(acked.records) == 280
    got = _read_back(b.bootstrap, topic)
    assert got == sorted(acked.records)
    for part in range(PARTITIONS):  # dense offsets: nothing torn or skipped at the old tail
        assert [o for p, o, _ in got if p == part] == list(range(140))

    # A kill -9 and restart: recovery finds whole batches and intact indexes.
    b.kill()
    b.start()
    assert _read_back(b.bootstrap, topic) == got
    later = Acked()
    _produce(idem, topic, "restart", 4, later)
    wait_until(lambda: idem.flush(1) == 0, 60, what="produce after the restart")
    assert later.errors == []
    assert sorted((p, o) for p, o, _ in later.records) == [(0, 140), (0, 141), (1, 140), (1, 141)]
