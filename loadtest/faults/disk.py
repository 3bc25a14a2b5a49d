"""A full disk: the broker's data dir is a 32 MiB tmpfs. An idempotent producer writes while a
filler file takes the last free bytes (leaving less than a batch, so a write is cut short
mid-batch); a producer without retries must get KAFKA_STORAGE_ERROR (56) and no
acknowledgement, a consumer must still be served, then the filler goes and produce must work
again. Everything acknowledged must read back once, in order, before and after a kill -9 and
restart (no torn tail for recovery to trip on). Recovery time: from the space returning to the
first acknowledgement after it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TextIO

from confluent_kafka import KafkaError, Producer

from ..smalldisk import SmallDisk
from .ledger import Tally, compare
from .load import IdempotentLoad, make_value
from .rig import TOPIC_PLAIN, broker, create_topic, read_back, wait_for
from .table import Row

PARTITIONS = 2
DISK_MIB = 32
REFUSED = 6


def run(work: Path, out: TextIO) -> Row:
    b = broker(work, {})
    disk = SmallDisk(b.data_dir, DISK_MIB)
    reason = disk.mount()
    if reason is not None:
        print(f"    disk full skipped: {reason}", file=out, flush=True)
        return Row("disk full (skipped)", 0, Tally(), None, [reason])
    try:
        return _trial(b, disk)
    finally:
        b.kill()
        disk.free()
        disk.unmount()


def _trial(b, disk: SmallDisk) -> Row:
    b.start(90)
    topic = "disk-full"
    create_topic(b.bootstrap, topic, PARTITIONS, TOPIC_PLAIN)
    load = IdempotentLoad(b.bootstrap, topic, PARTITIONS, topic, rate=2000.0)
    load.start()
    wait_for(lambda: load.acks.count >= 2000, 60, "acknowledgements before the disk fills")
    disk.fill(leave_bytes=6000)
    codes = _refused_codes(b.bootstrap, topic)
    stalled = load.acks.count
    fetched = read_back(b.bootstrap, topic, PARTITIONS)  # served while the disk is full
    notes = [f"while full: direct produce answers {codes}; {sum(map(len, fetched.values()))} records fetched"]
    tally = Tally()
    if codes != [KafkaError.KAFKA_STORAGE_ERROR] * REFUSED:
        tally.note(f"expected {REFUSED} x KAFKA_STORAGE_ERROR (56), got {codes}")
        tally.forbidden += sum(1 for c in codes if c == 0)  # acknowledged with no room to write
    freed = time.monotonic()
    load.acks.watch_from(freed)
    disk.free()
    wait_for(lambda: load.acks.count >= stalled + 2000, 120, "acknowledgements after space returned")
    load.finish()
    acked = load.acks.sorted()
    tally.add(compare(acked, read_back(b.bootstrap, topic, PARTITIONS)))
    b.kill()
    b.start(90)
    after_restart = compare(acked, read_back(b.bootstrap, topic, PARTITIONS))
    after_restart.acked = 0  # the same records, counted once
    tally.add(after_restart)
    recovered = load.acks.first_after
    notes.append(f"errors seen by the idempotent producer (retried): {load.acks.errors or 'none'}")
    return Row("disk full", 1, tally, None if recovered is None else recovered - freed, notes)


def _refused_codes(bootstrap: str, topic: str) -> list[int]:
    """Error codes of a producer that does not retry (0 = acknowledged)."""
    codes: list[int] = []
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "retries": 0, "linger.ms": 0,
                  "enable.idempotence": False, "message.timeout.ms": 30000})
    for i in range(REFUSED):
        p.produce(topic, value=make_value("refused", i) * 8, partition=i % PARTITIONS,
                  on_delivery=lambda err, msg: codes.append(0 if err is None else err.code()))
    p.flush(30)
    return codes
