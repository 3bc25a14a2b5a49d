"""TierManager's upload pass: several partitions upload at once, up to remote.upload.concurrency,
and a failed upload never hides what the bucket already holds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.unit.conftest import make_batch
from tiering.log.config import LogConfig
from tiering.log.manager import LogManager
from tiering.records import iter_batches
from tiering.remote.localfs import FileStore
from tiering.remote.manifest import SegmentState
from tiering.remote.reader import ChunkCache, ReadSettings
from tiering.remote.store import StoreError, StoreUnavailable
from tiering.remote.uploader import UploadSettings
from tiering.tier import TieredTopic, TierManager, TierSettings

NOW = 1_700_000_000_000
TOPIC_ID = "7b1c0d2e-0000-4000-8000-000000000003"


class _GatedStore(FileStore):
    """Each segment upload waits until `gate` uploads run at once (or every expected one has
    started): a one-at-a-time pass never gets past the first and times out."""

    def __init__(self, root: str, gate: int, expected: int) -> None:
        super().__init__(root)
        self.gate = gate
        self.expected = expected
        self.started = 0
        self.active = 0
        self.max_active = 0
        self._changed = asyncio.Condition()

    async def put_stream(self, key, parts):
        async with self._changed:
            self.started += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self._changed.notify_all()
            async with asyncio.timeout(5):
                await self._changed.wait_for(lambda: self.active >= self.gate or self.started >= self.expected)
        try:
            await super().put_stream(key, parts)
        finally:
            async with self._changed:
                self.active -= 1
                self._changed.notify_all()


def _logs(tmp_path: Path, partitions: int, config: LogConfig) -> LogManager:
    logs = LogManager(tmp_path / "data")
    for p in range(partitions):
        lg = logs.create("orders", p, config)
        lg.append(make_batch([b"p%d-v%d" % (p, i) for i in range(3)], base_timestamp=NOW), now_ms=NOW)
        lg.roll()
    return logs


async def test_partitions_upload_concurrently_up_to_the_limit(tmp_path):
    config = LogConfig(remote_storage_enable=True)
    topic = TieredTopic("orders", TOPIC_ID, 3, config)
    logs = _logs(tmp_path, 3, config)
    store = _GatedStore(str(tmp_path / "bucket"), gate=2, expected=3)
    await store.start()
    settings = TierSettings(upload=UploadSettings(chunk_size=4096), read=ReadSettings(), upload_concurrency=2)
    tier = TierManager(logs, store, None, ChunkCache(tmp_path / "cache", 1 << 20), settings, lambda: [topic])
    try:
        await tier.run_once(now_ms=NOW)
        assert tier.metrics.upload_failures == 0
        assert tier.metrics.segments_uploaded == 3
        assert (store.started, store.max_active) == (3, 2)
        for p in range(3):
            m = await tier.manifest(topic, p)
            assert [(e.base_offset, e.last_offset) for e in m.committed()] == [(0, 2)]
    finally:
        await tier.close()
        await store.close()


class _FlakyStore(FileStore):
    """A store that fails the operations named in `failing` (all of them: "*") the way S3Store
    does once its retries are spent."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.failing: set[str] = set()

    def _check(self, op: str) -> None:
        if "*" in self.failing or op in self.failing:
            raise StoreUnavailable(f"{op}: store down")

    async def put(self, key, data):
        self._check("put")
        await super().put(key, data)

    async def put_stream(self, key, parts):
        self._check("put")
        await super().put_stream(key, parts)

    async def get(self, key, start=0, end=None):
        self._check("get")
        return await super().get(key, start, end)

    async def head(self, key):
        self._check("get")
        return await super().head(key)

    async def list(self, prefix):
        self._check("list")
        return await super().list(prefix)

    async def delete(self, keys):
        self._check("delete")
        await super().delete(keys)


def _append_and_roll(lg, first: int, count: int) -> None:
    lg.append(make_batch([b"v%d" % (first + i) for i in range(count)], base_timestamp=NOW), now_ms=NOW)
    lg.roll()


async def test_failed_upload_keeps_the_committed_view_while_the_store_is_down(tmp_path):
    config = LogConfig(remote_storage_enable=True)
    topic = TieredTopic("orders", TOPIC_ID, 1, config)
    logs = _logs(tmp_path, 1, config)
    lg = logs.get("orders", 0)
    assert lg is not None
    store = _FlakyStore(str(tmp_path / "bucket"))
    await store.start()
    settings = TierSettings(upload=UploadSettings(chunk_size=4096), read=ReadSettings(), fetch_max_wait_ms=2000)
    tier = TierManager(logs, store, None, ChunkCache(tmp_path / "cache", 1 << 20), settings, lambda: [topic])
    await tier._cache.start()
    try:
        await tier.run_once(now_ms=NOW)
        assert tier.remote_range("orders", 0) == (0, 2)
        _append_and_roll(lg, 3, 3)
        lg.delete_records_before(3)  # the first segment is remote only, as after local retention

        # The store goes down: the next segment's upload fails, and so does the reload after it.
        store.failing = {"*"}
        await tier.run_once(now_ms=NOW)
        assert tier.metrics.upload_failures == 1
        assert tier.remote_range("orders", 0) == (0, 2)
        assert tier.log_start_offset(lg) == 0
        with pytest.raises(StoreError):
            await tier.read("orders", 0, 0, 1 << 20, True)

        # The manifest can be read again but not cleaned up: the view is still the committed one.
        store.failing = {"put", "delete", "list"}
        await tier.run_once(now_ms=NOW)
        assert tier.remote_range("orders", 0) == (0, 2)

        # The store is back: clean-up, then the upload; nothing half-copied is left.
        store.failing = set()
        await tier.run_once(now_ms=NOW)
        assert tier.remote_range("orders", 0) == (0, 5)
        m = await tier.manifest(topic, 0)
        assert [(e.base_offset, e.state) for e in m.entries] == [(0, SegmentState.COPY_FINISHED),
                                                                 (3, SegmentState.COPY_FINISHED)]
        named = {m.key("")} | {k for e in m.entries for k in m.keys_for(e, "")}
        assert {o.key for o in await store.list("")} == named
        data = await tier.read("orders", 0, 0, 1 << 20, True)
        assert data is not None
        assert [h.base_offset for h in iter_batches(data)] == [0, 3]  # both segments: the budget allows
    finally:
        await tier.close()
        await store.close()
