"""TierManager's upload pass: several partitions upload at once, up to remote.upload.concurrency."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.unit.conftest import make_batch
from tiering.log.config import LogConfig
from tiering.log.manager import LogManager
from tiering.remote.localfs import FileStore
from tiering.remote.reader import ChunkCache, ReadSettings
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
