"""Tiered storage end to end: a topic whose data sank to the object store (file:// and S3 on
moto) is read back by every client with exact contents; what is stored is compressed and
encrypted; a wrong key ring never yields wrong bytes; key rotation; upload metrics.

The module's main fixture produces ~1.7 MB into a two-partition topic with 16 KiB segments and
about one segment of local retention, then waits until most of it is only in the bucket.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, TopicPartition

from security.keys import load_keyring
from tiering.remote.transform import restore_range
from tiering.remote.uploader import unpack_indexes

from . import ck
from .helpers import Plan, unique_topic, wait_until
from .test_tiering_helpers import (
    TIERED_TOPIC,
    RemoteView,
    TieredBroker,
    clear_cache,
    expected_by_partition,
    get_metrics,
    make_remote,
    metric,
    new_keyring,
    offsets,
    produce,
    rotate_keyring,
    text_plan,
    tiered_broker,
    tiered_factory,  # noqa: F401 - fixture
    wait_offloaded,
    wait_settled,
)

KCAT = shutil.which("kcat")
PARTITIONS = 2
PER_PARTITION = 900  # ~0.85 MB of values per partition
LOCAL_FILES_AT_MOST = 4  # local.retention.bytes is one segment; the active one may be partial


@dataclass
class Loaded:
    broker: TieredBroker
    remote: RemoteView
    topic: str
    plan: Plan
    keyring: Path
    key_id: str
    marker: bytes

    def expected(self, partition: int) -> list[tuple]:
        return expected_by_partition(self.plan)[partition]


@pytest.fixture(scope="module", params=["file", "s3"])
def loaded(request, tmp_path_factory):
    base = tmp_path_factory.mktemp(f"tiering-{request.param}")
    remote = RemoteView.make(request.param, base / "remote-store")
    keyring = base / "keys" / "ring.json"
    key_id = new_keyring(keyring)
    b = tiered_broker(base / "broker", remote, keyring)
    b.start(30)
    try:
        topic = unique_topic("tier")
        marker = b"PLAIN" + uuid.uuid4().hex[:12].encode()
        ck.create_topic(b.bootstrap, topic, PARTITIONS, TIERED_TOPIC)
        plan = text_plan(marker, PARTITIONS, PER_PARTITION)
        produce(b, topic, plan)
        for p in range(PARTITIONS):
            wait_offloaded(b, remote, topic, p, at_least=int(PER_PARTITION * 0.8),
                           local_start_at_least=int(PER_PARTITION * 0.8))
            wait_settled(b, remote, topic, p)
            # Uploads settle before the next retention pass trims the local copies.
            wait_until(lambda p=p: len(b.segment_files(topic, p)) <= LOCAL_FILES_AT_MOST, 60,
                       interval=0.2, what=f"{topic}-{p} local copies trimmed")
        yield Loaded(b, remote, topic, plan, keyring, key_id, marker)
    except BaseException:
        print(b.log_tail(80))
        raise
    finally:
        try:
            b.stop()
        except AssertionError:
            pass


# --------------------------------------------------------------------------------------------
# Where the data is
# --------------------------------------------------------------------------------------------


def test_most_data_is_only_remote(loaded):
    b, remote, topic = loaded.broker, loaded.remote, loaded.topic
    for p in range(PARTITIONS):
        o = offsets(b.bootstrap, topic, p)
        # earliest is the remote log start; EARLIEST_LOCAL (-4) the local one.
        assert o["earliest"] == 0, o
        assert o["latest"] == PER_PARTITION, o
        assert o["earliest_local"] >= int(PER_PARTITION * 0.8), o
        assert ck.watermarks(b.bootstrap, topic, p) == (0, PER_PARTITION)

        m = remote.check_partition(topic, p)
        committed = m.committed()
        assert committed[0].base_offset == 0
        # Committed segments cover [0, local start) without a gap.
        for a, c in zip(committed, committed[1:]):
            assert c.base_offset == a.last_offset + 1, (a, c)
        assert committed[-1].last_offset + 1 >= o["earliest_local"]
        local = b.segment_files(topic, p)
        assert len(committed) >= 30, len(committed)
        assert len(local) <= LOCAL_FILES_AT_MOST, [f.name for f in local]
        # The local log starts at its first file.
        assert int(local[0].stem) == o["earliest_local"], ([f.name for f in local], o)


def test_confluent_reads_everything_from_offset_zero(loaded):
    b = loaded.broker
    for p in range(PARTITIONS):
        got = ck.consume(b.bootstrap, loaded.topic, [p], start=0, timeout=60)
        assert ck.strip_ts(got) == loaded.expected(p)
        want_ts = [r.timestamp for r in loaded.plan.records if r.partition == p]
        assert [g[5] for g in got] == [(1, ts) for ts in want_ts]  # CreateTime, exact


def test_confluent_reads_both_partitions_in_one_consumer(loaded):
    got = ck.consume(loaded.broker.bootstrap, loaded.topic, range(PARTITIONS), start=0, timeout=60)
    assert ck.strip_ts(got) == [r for p in range(PARTITIONS) for r in loaded.expected(p)]


def test_aiokafka_reads_everything_from_offset_zero(loaded):
    from aiokafka import AIOKafkaConsumer
    from aiokafka import TopicPartition as ATP

    async def run():
        c = AIOKafkaConsumer(bootstrap_servers=loaded.broker.bootstrap, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="none",
                             request_timeout_ms=30000)
        await c.start()
        try:
            tps = [ATP(loaded.topic, p) for p in range(PARTITIONS)]
            c.assign(tps)
            for tp in tps:
                c.seek(tp, 0)
            assert await c.beginning_offsets(tps) == {tp: 0 for tp in tps}
            got: dict[int, list[tuple]] = {p: [] for p in range(PARTITIONS)}
            deadline = time.monotonic() + 60
            while any(len(got[p]) < PER_PARTITION for p in got):
                assert time.monotonic() < deadline, {p: len(v) for p, v in got.items()}
                for tp, recs in (await c.getmany(*tps, timeout_ms=500)).items():
                    for r in recs:
                        got[tp.partition].append((tp.partition, r.offset, r.key, r.value,
                                                  [(k, v) for k, v in (r.headers or [])]))
            return got
        finally:
            await c.stop()

    got = asyncio.run(run())
    for p in range(PARTITIONS):
        assert got[p] == loaded.expected(p)


def test_kafka_python_reads_everything_from_offset_zero(loaded):
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    c = KafkaConsumer(bootstrap_servers=loaded.broker.bootstrap, group_id=None,
                      enable_auto_commit=False, auto_offset_reset="none", request_timeout_ms=30000)
    try:
        tps = [KTP(loaded.topic, p) for p in range(PARTITIONS)]
        c.assign(tps)
        for tp in tps:
            c.seek(tp, 0)
        assert c.beginning_offsets(tps) == {tp: 0 for tp in tps}
        got: dict[int, list[tuple]] = {p: [] for p in range(PARTITIONS)}
        deadline = time.monotonic() + 60
        while any(len(got[p]) < PER_PARTITION for p in got):
            assert time.monotonic() < deadline, {p: len(v) for p, v in got.items()}
            for tp, recs in c.poll(timeout_ms=500).items():
                for r in recs:
                    got[tp.partition].append((tp.partition, r.offset, r.key, r.value,
                                              [(k, v) for k, v in (r.headers or [])]))
    finally:
        c.close()
    for p in range(PARTITIONS):
        assert got[p] == loaded.expected(p)


@pytest.mark.skipif(KCAT is None, reason="kcat not installed: apt-get install kcat")
def test_kcat_reads_everything_from_offset_zero(loaded):
    for p in range(PARTITIONS):
        cmd = [KCAT, "-b", loaded.broker.bootstrap, "-q", "-C", "-t", loaded.topic, "-p", str(p),
               "-o", "0", "-e", "-J"]
        res = subprocess.run(cmd, capture_output=True, timeout=120)
        assert res.returncode == 0, res.stderr.decode(errors="replace")
        got = [json.loads(line) for line in res.stdout.decode().splitlines() if line.strip()]
        want = [
            (p, off, None if k is None else k.decode(), None if v is None else v.decode(),
             [x for hk, hv in h for x in (hk, hv.decode())])
            for _, off, k, v, h in loaded.expected(p)
        ]
        assert [(m["partition"], m["offset"], m["key"], m["payload"], m.get("headers") or [])
                for m in got] == want


def test_offsets_for_times_land_on_remote_records(loaded):
    b, topic = loaded.broker, loaded.topic
    local_start = {p: offsets(b.bootstrap, topic, p)["earliest_local"] for p in range(PARTITIONS)}
    ts = {p: [r.timestamp for r in loaded.plan.records if r.partition == p] for p in range(PARTITIONS)}
    targets = [(0, 0), (0, 37), (0, 401), (1, 5), (1, 333), (1, local_start[1] - 1)]
    for p, off in targets:
        assert off < local_start[p]
    c = ck.consumer(b.bootstrap)

    def lookup(p: int, ts_ms: int):
        # One partition per call: a request names each partition once.
        [r] = c.offsets_for_times([TopicPartition(topic, p, ts_ms)], timeout=15)
        return r.partition, r.offset, r.error

    try:
        # Exactly a record's timestamp, and 5 ms before it (between it and the one before).
        exact = [lookup(p, ts[p][off]) for p, off in targets]
        between = [lookup(p, ts[p][off] - 5) for p, off in targets]
        past_end = lookup(0, ts[0][-1] + 1)
    finally:
        c.close()
    assert exact == [(p, off, None) for p, off in targets]
    assert between == [(p, off, None) for p, off in targets]
    assert past_end[1] == -1
    # And consuming from the answer gives that very record.
    [(_, off, key, value, _)] = ck.strip_ts(
        ck.consume(b.bootstrap, topic, [0], start=exact[2][1], timeout=30))[:1]
    assert (off, key, value) == loaded.expected(0)[401][1:4]


# --------------------------------------------------------------------------------------------
# What is stored
# --------------------------------------------------------------------------------------------


def test_objects_are_compressed_and_encrypted(loaded):
    remote, topic = loaded.remote, loaded.topic
    values = [r.value for r in loaded.plan.records if r.value]
    needles = [loaded.marker] + [v[40:72] for v in values[::97]] + [b"key-0-12", b"t-1-301"]
    keys = remote.keys()
    assert any(k.endswith(".log") for k in keys) and any(k.endswith(".indexes") for k in keys)
    for key in keys:
        data = remote.read(key)
        for needle in needles:
            assert needle not in data, f"plaintext {needle!r} in stored object {key}"

    ring = load_keyring(loaded.keyring)
    for p in range(PARTITIONS):
        m = remote.check_partition(topic, p)
        committed = m.committed()
        assert {e.key_id for e in committed} == {loaded.key_id}
        assert all(e.encrypted for e in committed)
        # Hex text compresses about 2:1; the stored objects must show it.
        original = sum(e.size for e in committed)
        stored = sum(len(remote.read(m.keys_for(e, "")[0])) for e in committed)
        assert stored < 0.8 * original, (stored, original)
        assert all(e.codec == "zstd" for e in committed)
        # Under the key ring the objects restore to the very batches that were produced.
        e = committed[1]
        log_key, ix_key = m.keys_for(e, "")
        data_key = ring.unwrap(e.wrapped())
        ix = unpack_indexes(remote.read(ix_key), data_key, e.segment_uuid)
        segment = b"".join(restore_range(remote.read(log_key), 0, ix.chunks.entries, data_key, e.segment_uuid))
        assert len(segment) == e.size
        first = loaded.expected(p)[e.base_offset]
        assert first[3] is None or first[3] in segment


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def test_upload_metrics(loaded):
    b, remote, topic = loaded.broker, loaded.remote, loaded.topic
    committed = sum(len(remote.committed(topic, p)) for p in range(PARTITIONS))

    def settled():
        s = get_metrics(b)
        lag = (metric(s, "sediment_remote_upload_lag_segments"), metric(s, "sediment_remote_upload_lag_bytes"))
        return s if lag == (0, 0) else None

    s = wait_until(settled, 30, interval=0.3, what="upload lag 0")
    assert metric(s, "sediment_remote_segments_uploaded_total") == committed
    uploaded_bytes = metric(s, "sediment_remote_bytes_uploaded_total")
    assert uploaded_bytes >= sum(len(remote.read(k)) for k in remote.keys() if k.endswith(".log")) > 0
    assert metric(s, "sediment_remote_upload_seconds_count") == committed
    assert metric(s, "sediment_remote_upload_seconds_sum") > 0
    for p in range(PARTITIONS):
        assert metric(s, "sediment_remote_bytes", topic=topic, partition=str(p)) > 0


# --------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------


def _sink(b, remote, topic, plan, partitions=1):
    ck.create_topic(b.bootstrap, topic, partitions, TIERED_TOPIC)
    produce(b, topic, plan)
    for p in range(partitions):
        n = plan.count(p)
        wait_offloaded(b, remote, topic, p, at_least=int(n * 0.7), local_start_at_least=int(n * 0.7))


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_wrong_key_ring_never_yields_wrong_bytes(tiered_factory, tmp_path, kind):
    remote = make_remote(kind, tmp_path)
    ring1, ring2 = tmp_path / "keys" / "one.json", tmp_path / "keys" / "two.json"
    key1 = new_keyring(ring1)
    new_keyring(ring2)
    b = tiered_factory(remote, ring1)
    topic = unique_topic("tier-wrongkey")
    plan = text_plan(b"WRONGKEY", 1, 300)
    _sink(b, remote, topic, plan)
    wait_settled(b, remote, topic, 0)
    b.stop()
    clear_cache(b)

    b.settings["remote.keyring"] = str(ring2)
    try:
        b.start(30)
    except AssertionError:
        # Refusing to start is a loud failure too, as long as the log says why.
        log = b.since_last_start()
        assert key1 in log or "key" in log.lower(), log[-3000:]
        return

    # Read once local retention is quiet: it may still delete segments committed before the
    # stop, and whatever it deletes can only be read with the old key ring.
    seen = []

    def stable():
        seen.append(offsets(b.bootstrap, topic, 0)["earliest_local"])
        return seen[-1] if len(seen) >= 6 and len(set(seen[-6:])) == 1 else None

    local_start = wait_until(stable, 20, interval=0.3, what="a stable local log start")
    assert local_start > 0
    expected = expected_by_partition(plan)[0]
    c = ck.consumer(b.bootstrap, **{"fetch.error.backoff.ms": 100})
    got, errors = [], []
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err:
                if err.code() != KafkaError._PARTITION_EOF:
                    errors.append(err)
                continue
            got.append((ck.partition_of(msg), ck.offset_of(msg), msg.key(), msg.value(), ck.headers_of(msg)))
    finally:
        c.close()
    # No wrong bytes: whatever arrived is exactly what was produced at that offset ...
    for g in got:
        assert g == expected[g[1]], f"wrong record at offset {g[1]}"
    # ... and nothing that lives only under the other key ring arrived at all.
    assert [g[1] for g in got if g[1] < local_start] == []
    assert b.running, "the broker died instead of failing the read"
    log = b.since_last_start()
    assert key1 in log, f"the broker log does not name the missing key {key1}:\n{log[-3000:]}"
    # Local data is still served.
    local = ck.strip_ts(ck.consume(b.bootstrap, topic, [0], start=local_start, timeout=30))
    assert local == expected[local_start:]


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_key_rotation_keeps_old_data_readable(tiered_factory, tmp_path, kind):
    remote = make_remote(kind, tmp_path)
    ring = tmp_path / "keys" / "ring.json"
    key1 = new_keyring(ring)
    b = tiered_factory(remote, ring)
    topic = unique_topic("tier-rotate")
    first = text_plan(b"ROT1", 1, 300, seed=1)
    _sink(b, remote, topic, first)
    end1 = offsets(b.bootstrap, topic, 0)["latest"]
    b.stop()

    key2 = rotate_keyring(ring)
    assert key2 != key1
    clear_cache(b)
    b.start(30)
    second = text_plan(b"ROT2", 1, 300, seed=2,
                       base_ts=first.max_timestamp() + 10)
    produce(b, topic, second)
    total = end1 + second.count(0)
    wait_offloaded(b, remote, topic, 0, at_least=end1 + int(second.count(0) * 0.7),
                   local_start_at_least=end1 + int(second.count(0) * 0.7))

    m = wait_settled(b, remote, topic, 0)
    committed = m.committed()
    old = [e for e in committed if e.last_offset < end1]
    new = [e for e in committed if e.base_offset >= end1]
    assert old and new
    assert {e.key_id for e in old} <= {key1, key2}
    assert {e.key_id for e in new} == {key2}, [(e.base_offset, e.key_id) for e in new]
    # Segments that straddle end1 (the first start's active segment) are new ones too.
    assert {e.key_id for e in committed if e.last_offset >= end1} == {key2}

    combined = Plan(first.rounds + second.rounds)
    got = ck.strip_ts(ck.consume(b.bootstrap, topic, [0], start=0, timeout=60))
    assert len(got) == total
    assert got == combined.expected()

    # Once more from a cold cache after a restart: key 1's segments still decrypt.
    b.stop()
    clear_cache(b)
    b.start(30)
    got = ck.strip_ts(ck.consume(b.bootstrap, topic, [0], start=0, timeout=60))
    assert got == combined.expected()
