"""Offload of real sealed segments to a directory store: exact round trip, nothing in plaintext,
crash-safe states and clean-up, wrong keys fail loudly."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from security.keys import DecryptionError, LocalKeyProvider, UnknownKey, generate_keyring, load_keyring, rotate_keyring
from tests.unit.conftest import make_batch
from tiering.log.config import LogConfig
from tiering.log.partition import UnifiedLog
from tiering.remote.manifest import PartitionManifest, SegmentState
from tiering.remote.uploader import SegmentFiles, SegmentUploader, UploadSettings

NOW = 1_700_000_000_000
TOPIC_ID = "7b1c0d2e-0000-4000-8000-000000000001"


def _sealed_segment(tmp_path: Path, values: list[bytes]) -> tuple[UnifiedLog, SegmentFiles]:
    log = UnifiedLog.open(tmp_path / "log" / "orders-0", "orders", 0, LogConfig(index_interval_bytes=64),
                          recover=False)
    for i in range(0, len(values), 3):
        log.append(make_batch(values[i:i + 3], base_timestamp=NOW + i), now_ms=NOW)
    seg = log.active_segment
    log.roll()
    return log, SegmentFiles(seg.base_offset, seg.next_offset - 1, seg.max_timestamp, seg.offset_of_max_timestamp,
                             seg.log_path, seg.index_path, seg.time_index_path)


@contextlib.contextmanager
def _puts_fail(store, suffix: str, why: str) -> Iterator[None]:
    """PUTs of keys ending in suffix raise ConnectionError while inside."""
    real_put = store.put

    async def put(key, data):
        if key.endswith(suffix):
            raise ConnectionError(why)
        await real_put(key, data)

    store.put = put
    try:
        yield
    finally:
        store.put = real_put


def _all_object_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


async def test_upload_round_trips_exactly_and_hides_values(tmp_path, store, keys):
    values = [b"secret-card-number-%04d" % i + os.urandom(8).hex().encode() for i in range(200)]
    log, seg = _sealed_segment(tmp_path, values)
    up = SegmentUploader(store, keys, UploadSettings(prefix="tenant-a", chunk_size=1024))
    manifest = PartitionManifest("orders", TOPIC_ID, 0)
    entry = await up.upload(manifest, seg)

    assert entry.state is SegmentState.COPY_FINISHED
    assert (entry.base_offset, entry.last_offset, entry.size) == (0, 199, seg.log_path.stat().st_size)
    stored = PartitionManifest.from_json(await store.get(manifest.key("tenant-a")))
    assert [e.segment_uuid for e in stored.committed()] == [entry.segment_uuid]
    log_key, indexes_key = manifest.keys_for(entry, "tenant-a")
    assert log_key == f"tenant-a/orders-{TOPIC_ID}/0/{0:020d}-{entry.segment_uuid}.log"
    assert sorted(o.key for o in await store.list("tenant-a/")) == sorted(
        [log_key, indexes_key, manifest.key("tenant-a")])

    assert await up.download(stored, entry) == seg.log_path.read_bytes()
    ix = await up.read_indexes(stored, entry)
    assert seg.index_path is not None and seg.time_index_path is not None  # _sealed_segment hands both over
    assert ix.offset_index == seg.index_path.read_bytes() and ix.offset_index  # sparse index went up
    assert ix.time_index == seg.time_index_path.read_bytes()
    assert len(ix.chunks) > 1  # 1 KiB chunks: several

    blob = _all_object_bytes(tmp_path / "bucket")
    for v in values[::17]:
        assert v[:24] not in blob
    log.close()


async def test_crash_between_started_and_finished_is_cleaned_up(tmp_path, store, keys):
    log, seg = _sealed_segment(tmp_path, [b"v%d" % i for i in range(30)])
    up = SegmentUploader(store, keys, UploadSettings(prefix="p"))
    manifest = PartitionManifest("orders", TOPIC_ID, 0)

    with _puts_fail(store, ".indexes", "broker killed mid-upload"), pytest.raises(ConnectionError):
        await up.upload(manifest, seg)

    # What a restarted broker finds: the entry is COPY_STARTED, the .log object is there.
    found = await up.load_manifest("orders", TOPIC_ID, 0)
    (started,) = found.entries
    assert started.state is SegmentState.COPY_STARTED and found.committed() == []
    stray = PartitionManifest("orders", TOPIC_ID, 0).key("p").rsplit("/", 1)[0] + "/stray.log"
    await store.put(stray, b"left by something else")
    deleted = await up.clean_up(found)
    assert sorted(deleted) == sorted([found.keys_for(started, "p")[0], found.keys_for(started, "p")[1], stray])
    assert found.entries == []
    assert [o.key for o in await store.list("p/")] == [found.key("p")]

    entry = await up.upload(found, seg)  # the re-upload counts once
    assert [e.segment_uuid for e in found.committed()] == [entry.segment_uuid]
    assert await up.download(found, entry) == seg.log_path.read_bytes()
    log.close()


async def test_wrong_keys_fail_loudly_and_rotation_keeps_old_data_readable(tmp_path, store, keys):
    log, seg = _sealed_segment(tmp_path, [b"v%d" % i for i in range(30)])
    manifest = PartitionManifest("orders", TOPIC_ID, 0)
    entry = await SegmentUploader(store, keys, UploadSettings()).upload(manifest, seg)

    rotate_keyring(tmp_path / "ring.json")  # key 2 becomes current; key 1 stays in the ring
    rotated = LocalKeyProvider(load_keyring(tmp_path / "ring.json"))
    assert rotated.current_id != entry.key_id
    assert await SegmentUploader(store, rotated, UploadSettings()).download(manifest, entry) == \
        seg.log_path.read_bytes()

    generate_keyring(tmp_path / "other.json")
    stranger = LocalKeyProvider.from_file(tmp_path / "other.json")
    with pytest.raises(UnknownKey):
        await SegmentUploader(store, stranger, UploadSettings()).download(manifest, entry)
    with pytest.raises(ValueError):
        await SegmentUploader(store, None, UploadSettings()).download(manifest, entry)
    log_key, _ = manifest.keys_for(entry, "")
    data = bytearray(await store.get(log_key))
    data[len(data) // 2] ^= 1
    await store.put(log_key, bytes(data))
    with pytest.raises(DecryptionError):
        await SegmentUploader(store, keys, UploadSettings()).download(manifest, entry)
    log.close()


async def test_manifest_spills_are_saved_loaded_replaced_and_cleaned_up(store):
    from tiering.remote.manifest import SPILL_SIZE, SegmentEntry

    up = SegmentUploader(store, None, UploadSettings(prefix="p"))
    m = PartitionManifest("orders", TOPIC_ID, 0)
    for i in range(2 * SPILL_SIZE + 10):
        m.add(SegmentEntry(f"00000000-0000-4000-8000-{i:012d}", i * 10, i * 10 + 9, NOW, i * 10 + 9, 100, 50,
                           SegmentState.COPY_FINISHED))
    await up.save_manifest(m)
    folder = f"p/orders-{TOPIC_ID}/0/"
    (spill,) = [k for k in m.manifest_keys("p") if k != m.key("p")]
    assert sorted(o.key for o in await store.list(folder)) == sorted([m.key("p"), spill])
    loaded = await up.load_manifest("orders", TOPIC_ID, 0)
    assert loaded == m and loaded.entries == m.entries
    assert await up.clean_up(loaded) == []  # the spill is named: not an orphan

    # Retention of the oldest segment rewrites its spill; the old spill goes after the head.
    first = loaded.entries[0].segment_uuid
    loaded.mark(first, SegmentState.DELETE_STARTED)
    loaded.mark(first, SegmentState.DELETE_FINISHED)
    loaded.prune_deleted()
    await up.save_manifest(loaded)
    (spill2,) = [k for k in loaded.manifest_keys("p") if k != loaded.key("p")]
    assert spill2 != spill
    assert sorted(o.key for o in await store.list(folder)) == sorted([loaded.key("p"), spill2])
    assert (await up.load_manifest("orders", TOPIC_ID, 0)).entries == loaded.entries

    # A save that dies after its new spill but before the head: the bucket keeps the last
    # head and its spill; clean-up removes the stray spill.
    second = loaded.entries[0].segment_uuid
    loaded.mark(second, SegmentState.DELETE_STARTED)
    with _puts_fail(store, "manifest.json", "store went away"), pytest.raises(ConnectionError):
        await up.save_manifest(loaded)
    again = await up.load_manifest("orders", TOPIC_ID, 0)
    assert again.get(second).state is SegmentState.COPY_FINISHED
    stray = sorted({o.key for o in await store.list(folder)} - again.manifest_keys("p"))
    assert len(stray) == 1 and stray[0].rsplit("/", 1)[1].startswith("manifest-00000000000000000010-")
    assert await up.clean_up(again) == stray
    assert sorted(o.key for o in await store.list(folder)) == sorted([again.key("p"), spill2])
