"""Encryption at rest (log.encryption.enable): every client reads exact contents back, and no
record value appears anywhere under the data dir (segments, indexes, snapshots, SQLite, the
remote chunk cache, a file:// store under the data dir); kill -9 loses nothing acknowledged; a
tiered topic still offloads and reads back; key rotation re-wraps every data key so an old key
can leave the ring; the cluster snapshot in the bucket is sealed and still restores."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as AioTP
from confluent_kafka import KafkaError, Message
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KpTP

from . import ck
from .conftest import sediment_command
from .helpers import Plan, Rec, unique_topic, wait_until
from .test_tiering_helpers import (
    SEGMENT_BYTES,
    TIERED_TOPIC,
    RemoteView,
    clear_cache,
    new_keyring,
    offsets,
    rotate_keyring,
    text_plan,
    tiered_factory,  # noqa: F401 - fixture
    wait_offloaded,
)

KCAT = shutil.which("kcat")
LOCAL_TOPIC = {"segment.bytes": str(SEGMENT_BYTES)}


def _marker() -> bytes:
    return b"ATREST" + uuid.uuid4().hex[:12].upper().encode()


def _files_with(root: Path, needle: bytes) -> list[str]:
    """Every regular file under root whose bytes contain needle."""
    hits = []
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink() and needle in p.read_bytes():
            hits.append(str(p.relative_to(root)))
    return hits


def _ring(tmp_path: Path) -> Path:
    ring = tmp_path / "keys" / "ring.json"  # outside every data dir
    new_keyring(ring)
    return ring


def _local_store(b_dir: Path) -> RemoteView:
    """A file:// store under the broker's data dir, so the scan covers it too."""
    return RemoteView.file(b_dir / "data" / "remote")


def _encrypted(tiered_factory, tmp_path: Path, name: str = "enc", ring: Path | None = None,
               settings: dict | None = None, start: bool = True):
    ring = ring or _ring(tmp_path)
    remote = _local_store(tmp_path / name)
    b = tiered_factory(remote, ring, {"log.encryption.enable": "true", "num.partitions": 2,
                                      "remote.keyring.check.interval.ms": 200, **(settings or {})},
                       name=name, start=start)
    return b, remote, ring


# --- every client ---------------------------------------------------------------------------


def _aio_produce_consume(bootstrap: str, topic: str, plan: Plan, read_topics: list[tuple[str, int]]):
    async def run():
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, acks="all",
                             linger_ms=5, request_timeout_ms=15000)
        await p.start()
        try:
            for rnd in plan.rounds:
                futs = [await p.send(topic, value=r.value, key=r.key, partition=r.partition,
                                     headers=list(r.headers), timestamp_ms=r.timestamp) for r in rnd]
                await asyncio.wait_for(asyncio.gather(*futs), 30)
        finally:
            await p.stop()
        out = {}
        for name, parts in read_topics:
            c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                 auto_offset_reset="earliest", request_timeout_ms=15000)
            await c.start()
            try:
                tps = [AioTP(name, q) for q in range(parts)]
                c.assign(tps)
                await c.seek_to_beginning(*tps)
                end = await c.end_offsets(tps)
                got: dict[int, list] = {q: [] for q in range(parts)}
                deadline = time.monotonic() + 60
                while True:
                    positions = [await c.position(tp) for tp in tps]
                    if all(pos >= end[tp] for pos, tp in zip(positions, tps)):
                        break
                    assert time.monotonic() < deadline
                    for tp, recs in (await c.getmany(*tps, timeout_ms=500)).items():
                        got[tp.partition] += [(tp.partition, r.offset, r.key, r.value, list(r.headers or []))
                                              for r in recs]
                out[name] = [r for q in range(parts) for r in got[q]]
            finally:
                await c.stop()
        return out

    return asyncio.run(run())


def _kp_produce_consume(bootstrap: str, topic: str, plan: Plan, read_topics: list[tuple[str, int]]):
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, request_timeout_ms=15000)
    try:
        for rnd in plan.rounds:
            futs = [p.send(topic, value=r.value, key=r.key, partition=r.partition, headers=list(r.headers),
                           timestamp_ms=r.timestamp) for r in rnd]
            for f in futs:
                f.get(30)
    finally:
        p.close()
    out = {}
    for name, parts in read_topics:
        c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                          auto_offset_reset="earliest", request_timeout_ms=15000)
        try:
            tps = [KpTP(name, q) for q in range(parts)]
            c.assign(tps)
            c.seek_to_beginning(*tps)
            end = c.end_offsets(tps)
            got: dict[int, list] = {q: [] for q in range(parts)}
            deadline = time.monotonic() + 60
            while any(c.position(tp) < end[tp] for tp in tps):
                assert time.monotonic() < deadline
                for tp, recs in c.poll(timeout_ms=500).items():
                    got[tp.partition] += [(tp.partition, r.offset, r.key, r.value, list(r.headers or []))
                                          for r in recs]
            out[name] = [r for q in range(parts) for r in got[q]]
        finally:
            c.close()
    return out


def _kcat(bootstrap: str, *args: str, input: bytes | None = None) -> str:
    assert KCAT is not None  # callers run this only where kcat is installed
    res = subprocess.run([KCAT, "-b", bootstrap, "-X", "enable.idempotence=false", "-q", *args],
                         input=input, capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    return res.stdout.decode()


def _kcat_records(bootstrap: str, topic: str, partition: int) -> list[tuple]:
    out = _kcat(bootstrap, "-C", "-t", topic, "-p", str(partition), "-o", "beginning", "-e", "-J")
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [(r["partition"], r["offset"], None if r["key"] is None else r["key"].encode(),
             None if r["payload"] is None else r["payload"].encode(),
             [(h[i], h[i + 1].encode()) for h in [r.get("headers") or []] for i in range(0, len(h), 2)])
            for r in rows]


def test_every_client_reads_exact_contents_and_no_value_is_on_disk(tiered_factory, tmp_path):
    b, remote, ring = _encrypted(tiered_factory, tmp_path)
    marker = _marker()
    plans: dict[str, Plan] = {}
    topics = {name: unique_topic(f"enc-{name}") for name in ("ck", "aio", "kp", "kcat", "tier")}
    for name, topic in topics.items():
        ck.create_topic(b.bootstrap, topic, 2, TIERED_TOPIC if name == "tier" else LOCAL_TOPIC)
    for i, name in enumerate(("ck", "aio", "kp", "tier")):
        # Values of all sizes: some requests are large enough to be sealed in a worker thread.
        plans[name] = text_plan(marker + name.encode(), 2, 120 if name != "tier" else 200,
                                value_chars=600 + 500 * i, seed=i)
    ck_topic = topics["ck"]

    # confluent-kafka: produce and read back, then every client reads the same topic too.
    ck.produce_plan(ck.producer(b.bootstrap, **{"acks": "all", "linger.ms": 20}), ck_topic, plans["ck"])
    assert ck.strip_ts(ck.consume(b.bootstrap, ck_topic, [0, 1], start=0)) == plans["ck"].expected()
    got = _aio_produce_consume(b.bootstrap, topics["aio"], plans["aio"], [(topics["aio"], 2), (ck_topic, 2)])
    assert got[topics["aio"]] == plans["aio"].expected()
    assert got[ck_topic] == plans["ck"].expected()
    got = _kp_produce_consume(b.bootstrap, topics["kp"], plans["kp"], [(topics["kp"], 2), (ck_topic, 2)])
    assert got[topics["kp"]] == plans["kp"].expected()
    assert got[ck_topic] == plans["ck"].expected()
    assert ck.strip_ts(ck.consume(b.bootstrap, topics["aio"], [0, 1], start=0)) == plans["aio"].expected()
    if KCAT:
        lines = [marker + b"kcat-%04d" % i + b"x" * (i * 7) for i in range(60)]
        _kcat(b.bootstrap, "-P", "-t", topics["kcat"], "-p", "1", "-k", "kk", input=b"\n".join(lines) + b"\n")
        got_kcat = _kcat_records(b.bootstrap, topics["kcat"], 1)
        assert [(r[1], r[2], r[3]) for r in got_kcat] == [(i, b"kk", v) for i, v in enumerate(lines)]
        assert _kcat_records(b.bootstrap, ck_topic, 0) == [
            r for r in plans["ck"].expected() if r[0] == 0]

    # A tiered topic with local encryption: offloads, and reads back exactly from the store.
    tier = topics["tier"]
    ck.produce_plan(ck.producer(b.bootstrap, **{"acks": "all", "linger.ms": 20}), tier, plans["tier"])
    ends = {p: plans["tier"].count(p) for p in range(2)}
    for p in range(2):
        o = wait_offloaded(b, remote, tier, p, ends[p] // 2, local_start_at_least=ends[p] // 3)
        assert o["earliest"] == 0 and o["latest"] == ends[p]
    assert ck.strip_ts(ck.consume(b.bootstrap, tier, [0, 1], start=0, timeout=60)) == plans["tier"].expected()
    # ListOffsets by timestamp decodes one batch: through the opening path.
    recs = [r for r in plans["tier"].records if r.partition == 1]
    probe = recs[-5].timestamp
    assert probe is not None  # text_plan gives every record a timestamp
    c = ck.consumer(b.bootstrap)
    try:
        [tp] = c.offsets_for_times([ck.TopicPartition(tier, 1, probe)], timeout=15)
    finally:
        c.close()
    assert tp.offset == len(recs) - 5

    b.stop()  # a clean stop: producer snapshots, indexes and the last cluster snapshot are written
    data = b.data_dir
    logs = list(data.rglob("*.log"))
    assert sum(p.stat().st_size for p in logs) > sum(
        len(r.value or b"") for plan in plans.values() for r in plan.records) // 3
    assert list(data.rglob("partition.key")) and list(data.rglob("metadata.db"))
    assert list((data / "remote").rglob("*.log")), "the file store under the data dir was used"
    assert list((data / "remote-cache").iterdir()), "remote reads went through the chunk cache"
    assert _files_with(data, marker) == []
    # The scan does find the marker where it is in the clear (what the clients were given).
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "x.bin").write_bytes(b"..." + marker + b"ck...")
    assert _files_with(tmp_path / "probe", marker) == ["x.bin"]


def test_encryption_needs_a_key() -> None:
    res = subprocess.run(sediment_command() + ["serve", "--data-dir", "/nonexistent/sediment-enc",
                                               "--set", "log.encryption.enable=true"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2
    assert "log.encryption.enable" in res.stderr and "remote.keyring" in res.stderr


def test_pipelined_idempotent_produce_keeps_its_order(tiered_factory, tmp_path):
    """Large requests are sealed in worker threads; five pipelined requests per connection still
    land in the order they were sent (else the idempotent producer fails on sequence numbers)."""
    b, _, _ = _encrypted(tiered_factory, tmp_path)
    topic = unique_topic("enc-pipeline")
    ck.create_topic(b.bootstrap, topic, 2, LOCAL_TOPIC)
    p = ck.producer(b.bootstrap, **{"enable.idempotence": True, "acks": "all", "linger.ms": 2,
                                    "batch.size": 300_000, "max.in.flight.requests.per.connection": 5})
    rng = random.Random(3)
    sent: dict[int, list[bytes]] = {0: [], 1: []}
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err:
            errors.append(err)

    for i in range(3000):
        part = i % 2
        value = b"pipe-%06d|" % i + rng.randbytes(rng.choice((40, 400, 1500))).hex().encode()
        sent[part].append(value)
        while True:
            try:
                p.produce(topic, value=value, partition=part,
                          on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    assert p.flush(60) == 0 and errors == []
    got = ck.consume(b.bootstrap, topic, [0, 1], start=0, timeout=60)
    for part in (0, 1):
        mine = [g for g in got if g[0] == part]
        assert [g[1] for g in mine] == list(range(len(sent[part])))
        assert [g[3] for g in mine] == sent[part]


def test_turning_encryption_on_keeps_older_plaintext_readable(tiered_factory, tmp_path):
    ring = _ring(tmp_path)
    b, _, _ = _encrypted(tiered_factory, tmp_path, ring=ring, settings={"log.encryption.enable": "false"})
    topic = unique_topic("enc-mixed")
    ck.create_topic(b.bootstrap, topic, 1, LOCAL_TOPIC)
    before, after = _marker(), _marker()
    p = ck.producer(b.bootstrap, **{"acks": "all"})
    first = Plan([[Rec(0, b"k%d" % i, before + b"-%d" % i, (("h", b"%d" % i),)) for i in range(30)]])
    ck.produce_plan(p, topic, first)
    b.stop()
    assert not list(b.data_dir.rglob("partition.key"))
    assert _files_with(b.data_dir, before)  # written in the clear while encryption was off
    b.settings["log.encryption.enable"] = "true"
    b.start(30)
    second = Plan([[Rec(0, b"k%d" % i, after + b"-%d" % i, ()) for i in range(30)]])
    ck.produce_plan(ck.producer(b.bootstrap, **{"acks": "all"}), topic, second)
    both = Plan(first.rounds + second.rounds)
    assert ck.strip_ts(ck.consume(b.bootstrap, topic, [0], start=0)) == both.expected()
    b.stop()
    assert list(b.data_dir.rglob("partition.key"))
    assert _files_with(b.data_dir, after) == []
    b.start(30)  # sealed and plaintext batches side by side survive a restart
    assert ck.strip_ts(ck.consume(b.bootstrap, topic, [0], start=0)) == both.expected()


# --- kill -9 -------------------------------------------------------------------------------


def test_kill_during_produce_keeps_every_acknowledged_record(tiered_factory, tmp_path):
    b, _, _ = _encrypted(tiered_factory, tmp_path)
    topic = unique_topic("enc-crash")
    ck.create_topic(b.bootstrap, topic, 1, LOCAL_TOPIC)
    rng = random.Random(5)
    acked: dict[int, bytes] = {}
    for round_ in range(2):
        p = ck.producer(b.bootstrap, **{"acks": "all", "linger.ms": 5, "retries": 0,
                                        "message.timeout.ms": 5000, "batch.size": 400_000})
        mine: dict[int, bytes] = {}

        def on_delivery(err, msg, mine=mine):
            if err is None:
                mine[msg.offset()] = msg.value()

        # Killed at a random moment once something is acknowledged (a busy machine may take
        # longer than the random delay to answer the first batch).
        kill_at = time.monotonic() + 1.0 + rng.random()
        give_up = time.monotonic() + 60
        i = 0
        while (time.monotonic() < kill_at or not mine) and time.monotonic() < give_up:
            value = b"crash-%d-%06d|" % (round_, i) + rng.randbytes(rng.choice((50, 700, 3000))).hex().encode()
            try:
                p.produce(topic, value=value, partition=0, on_delivery=on_delivery)
                i += 1
            except BufferError:
                p.poll(0.01)
            p.poll(0)
        b.kill()
        p.flush(15)
        assert mine, "nothing was acknowledged before the kill"
        assert not set(mine) & set(acked)
        acked.update(mine)
        b.start(30)
    got = ck.consume(b.bootstrap, topic, [0], start=0, timeout=60)
    values = {g[1]: g[3] for g in got}
    assert [g[1] for g in got] == list(range(len(got)))
    for off, value in acked.items():
        assert values.get(off) == value, f"acknowledged record at offset {off} lost or changed"


# --- key rotation ----------------------------------------------------------------------------


def _key_files(b) -> dict[str, str]:
    return {p.parent.name: json.loads(p.read_text())["key_id"] for p in b.data_dir.rglob("partition.key")}


def _entry_keys(remote: RemoteView, topic: str) -> set[str | None]:
    out = set()
    for p in range(2):
        m = remote.manifest(topic, p)
        out |= {e.key_id for e in (m.entries if m else [])}
    return out


def _snapshot_key(remote: RemoteView) -> str:
    return json.loads(remote.read("_cluster/metadata.json"))["key_id"]


def test_rotation_rewraps_every_data_key_and_the_old_key_can_go(tiered_factory, tmp_path):
    b, remote, ring = _encrypted(tiered_factory, tmp_path)
    k1 = json.loads(ring.read_text())["current"]
    topic = unique_topic("enc-rotate")
    ck.create_topic(b.bootstrap, topic, 2, TIERED_TOPIC)
    marker = _marker()
    plan = text_plan(marker, 2, 150)
    ck.produce_plan(ck.producer(b.bootstrap, **{"acks": "all", "linger.ms": 20}), topic, plan)
    for p in range(2):
        wait_offloaded(b, remote, topic, p, plan.count(p) // 2)
    assert set(_key_files(b).values()) == {k1}
    assert _entry_keys(remote, topic) == {k1}
    wait_until(lambda: remote.keys() and "_cluster/metadata.json" in remote.keys(), 20, what="snapshot")
    wait_until(lambda: _snapshot_key(remote) == k1, 20, what="snapshot sealed under k1")

    k2 = rotate_keyring(ring)  # while the broker runs
    wait_until(lambda: set(_key_files(b).values()) == {k2}, 20, what="partition keys under k2")
    wait_until(lambda: _entry_keys(remote, topic) == {k2}, 20, what="manifest entries under k2")
    wait_until(lambda: _snapshot_key(remote) == k2, 20, what="snapshot under k2")
    assert "older keys may be removed" in b.since_last_start()
    assert ck.strip_ts(ck.consume(b.bootstrap, topic, [0, 1], start=0, timeout=60)) == plan.expected()

    # The old key leaves the ring: local and remote data stay readable.
    b.stop()
    doc = json.loads(ring.read_text())
    doc["keys"] = [k for k in doc["keys"] if k["id"] != k1]
    ring.write_text(json.dumps(doc))
    os.chmod(ring, 0o600)
    clear_cache(b)
    b.start(30)
    assert ck.strip_ts(ck.consume(b.bootstrap, topic, [0, 1], start=0, timeout=60)) == plan.expected()

    # Offline: rotate with --data-dir re-wraps the partition key files; the broker then
    # re-wraps the manifest entries when it starts.
    b.stop()
    res = subprocess.run(sediment_command() + ["keys", "rotate", str(ring), "--data-dir", str(b.data_dir)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    k3 = json.loads(ring.read_text())["current"]
    assert f"re-wrapped {len(_key_files(b))} partition data keys" in res.stdout
    assert set(_key_files(b).values()) == {k3}
    b.start(30)
    wait_until(lambda: _entry_keys(remote, topic) == {k3}, 20, what="manifest entries under k3")
    assert ck.strip_ts(ck.consume(b.bootstrap, topic, [0, 1], start=0, timeout=60)) == plan.expected()


# --- the cluster snapshot -------------------------------------------------------------------


def test_snapshot_is_sealed_and_an_empty_disk_restores_from_it(tiered_factory, tmp_path):
    ring = _ring(tmp_path)
    remote = RemoteView.file(tmp_path / "shared-store")  # outlives the first broker's disk
    a = tiered_factory(remote, ring, name="first")
    topic = unique_topic("enc-snapshot-topic")
    ck.create_topic(a.bootstrap, topic, 2, {**TIERED_TOPIC, "remote.upload.interval.ms": "500"})
    plan = text_plan(_marker(), 2, 60)
    ck.produce_plan(ck.producer(a.bootstrap, **{"acks": "all"}), topic, plan)
    for p in range(2):
        wait_until(lambda p=p: remote.remote_end(topic, p) == plan.count(p), 60, interval=0.2,
                   what=f"{topic}-{p} in the store")
    a.stop()
    raw = remote.read("_cluster/metadata.json")
    assert json.loads(raw)["format"] == "sediment-encrypted-snapshot-v1"
    assert topic.encode() not in raw and b"enc-snapshot-topic" not in raw

    b = tiered_factory(remote, ring, name="second")  # an empty data dir
    for p in range(2):
        assert offsets(b.bootstrap, topic, p)["latest"] == plan.count(p)
    assert ck.strip_ts(ck.consume(b.bootstrap, topic, [0, 1], start=0, timeout=60)) == plan.expected()
