"""Remote reads of an uploaded segment: exact batches for any offset, parallel chunk GETs,
prefetch and a bounded chunk cache (directory store, real segment, real key ring)."""

from __future__ import annotations

import asyncio

import pytest

from security.keys import LocalKeyProvider, generate_keyring
from tests.clock import eventually
from tests.unit.conftest import make_batch, whole_batches_from
from tiering.log.config import LogConfig
from tiering.log.partition import UnifiedLog
from tiering.records import iter_batches
from tiering.remote.localfs import FileStore
from tiering.remote.manifest import PartitionManifest
from tiering.remote.reader import ChunkCache, OpenedChunks, ReadSettings, RemoteReader
from tiering.remote.uploader import SegmentFiles, SegmentUploader, UploadSettings

NOW = 1_700_000_000_000


class SlowStore(FileStore):
    """A directory store whose GETs take a while, counting how many run at once."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.running = self.peak = self.gets = 0

    async def get(self, key, start=0, end=None):
        self.running += 1
        self.gets += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(0.01)
            return await super().get(key, start, end)
        finally:
            self.running -= 1


@pytest.fixture
async def uploaded(tmp_path):
    log = UnifiedLog.open(tmp_path / "log" / "t-0", "t", 0, LogConfig(), recover=False)
    for i in range(100):  # 100 batches of 5 records of ~200 bytes
        log.append(make_batch([b"value-%03d-%d-" % (i, j) + b"x" * 180 for j in range(5)]), now_ms=NOW)
    seg = log.active_segment
    log.roll()
    files = SegmentFiles(seg.base_offset, seg.next_offset - 1, seg.max_timestamp, seg.offset_of_max_timestamp,
                         seg.log_path, seg.index_path, seg.time_index_path)
    store = SlowStore(str(tmp_path / "bucket"))
    await store.start()
    generate_keyring(tmp_path / "ring.json")
    up = SegmentUploader(store, LocalKeyProvider.from_file(tmp_path / "ring.json"),
                         UploadSettings(chunk_size=8 * 1024))
    manifest = PartitionManifest("t", "00000000-0000-4000-8000-000000000000", 0)
    entry = await up.upload(manifest, files)
    store.gets = 0
    yield up, manifest, entry, seg.log_path.read_bytes(), store
    await store.close()
    log.close()


async def test_reads_match_the_local_segment_exactly(tmp_path, uploaded):
    up, manifest, entry, raw, store = uploaded
    cache = ChunkCache(tmp_path / "cache", 1 << 20)
    await cache.start()
    reader = RemoteReader(up, "", cache, ReadSettings(prefetch_chunks=0))
    for offset, max_bytes in [(0, 1), (0, 5000), (7, 3000), (250, 20_000), (497, 100_000), (499, 10)]:
        got = await reader.read(manifest, entry, offset, max_bytes)
        assert got == whole_batches_from(raw, offset, max_bytes), (offset, max_bytes)
    assert await reader.read(manifest, entry, 0, 10, min_one=False) == b""
    await reader.close()


async def test_chunks_of_one_read_are_fetched_in_parallel_and_cached(tmp_path, uploaded):
    up, manifest, entry, raw, store = uploaded
    cache = ChunkCache(tmp_path / "cache", 1 << 20)
    await cache.start()
    reader = RemoteReader(up, "", cache, ReadSettings(parallel_gets=4, prefetch_chunks=0))
    got = await reader.read(manifest, entry, 0, 60_000)
    assert got == whole_batches_from(raw, 0, 60_000)
    assert store.peak == 4  # bounded by parallel_gets, and more than one at a time
    gets = store.gets
    assert await reader.read(manifest, entry, 0, 60_000) == got
    assert store.gets == gets  # all from the opened chunks in memory
    await reader.close()
    # A new reader (nothing opened in memory) on the same disk cache: no GET either.
    again = RemoteReader(up, "", cache, ReadSettings(parallel_gets=4, prefetch_chunks=0))
    assert await again.read(manifest, entry, 0, 60_000) == got
    assert store.gets == gets + 1  # only the segment's indexes object
    assert cache.hits >= 7
    await again.close()
    # The disk cache holds chunks as stored: compressed and encrypted, no record in the clear.
    files = list((tmp_path / "cache").iterdir())
    assert files and all(b"value-" not in f.read_bytes() for f in files)
    assert sum(f.stat().st_size for f in files) < len(got) // 2


async def test_prefetch_warms_the_next_chunks_and_the_cache_stays_bounded(tmp_path, uploaded):
    up, manifest, entry, raw, store = uploaded
    cache = ChunkCache(tmp_path / "cache", 40 * 1024)  # about five 8 KiB chunks
    await cache.start()
    reader = RemoteReader(up, "", cache, ReadSettings(prefetch_chunks=2))
    first = await reader.read(manifest, entry, 0, 4000)
    await eventually(lambda: not reader._prefetching)  # the prefetches have landed
    # The indexes object, the first chunk and the one after it (to cover max_bytes), then two
    # more chunks prefetched.
    assert len(cache) == 4 and store.gets == 5
    last_offset = list(iter_batches(first))[-1].last_offset
    ix = await reader.indexes(manifest, entry)
    first_chunk = ix.chunks.chunks_for_offset(last_offset + 1)
    assert first_chunk is not None
    needed = ix.chunks.chunks_for_range(last_offset + 1, 12_000 + first_chunk.size)
    # Every chunk the sequential reader needs next is already opened in memory.
    assert needed and all(f"{entry.segment_uuid}/{c.index}" in reader._opened for c in needed)
    second = await reader.read(manifest, entry, last_offset + 1, 12_000)
    assert second == whole_batches_from(raw, last_offset + 1, 12_000)
    offset = 0
    while offset < 500:  # a full scan through a small cache
        batch = await reader.read(manifest, entry, offset, 16_000)
        offset = list(iter_batches(batch))[-1].last_offset + 1
        assert cache.size <= 40 * 1024
        assert len(reader._opened) <= ReadSettings().opened_per_partition
    await reader.close()


def test_opened_chunks_are_bounded_per_partition_and_in_all() -> None:
    opened = OpenedChunks(max_bytes=100, per_partition=2)
    for i in range(3):
        opened.put("a-0", f"a/{i}", b"x" * 10)
    assert opened.get("a/0") is None and opened.get("a/1") and opened.get("a/2")
    opened.put("b-0", "b/0", b"y" * 60)
    opened.put("c-0", "c/0", b"z" * 30)  # 20 + 60 + 30 > 100: the least recently used goes
    assert opened.size <= 100 and opened.get("c/0") == b"z" * 30
    assert opened.get("a/1") is None


async def test_a_read_across_chunks_is_views_of_each_chunk_not_a_joined_copy(tmp_path, uploaded):
    up, manifest, entry, raw, store = uploaded
    cache = ChunkCache(tmp_path / "cache", 1 << 20)
    await cache.start()
    # Room for every chunk the read opens: they are fetched in parallel, so with fewer slots which
    # one is evicted first would depend on which worker thread finishes first.
    reader = RemoteReader(up, "", cache, ReadSettings(prefetch_chunks=0, opened_per_partition=16))
    part = await reader.read_part(manifest, entry, 7, 30_000)  # 8 KiB chunks: four or five of them
    assert len(part.pieces) >= 4
    assert all(isinstance(p, memoryview) for p in part.pieces)
    # Each piece is whole batches (chunks end at batch boundaries), together exactly the
    # batches a local read gives, and the offset after them.
    for piece in part.pieces:
        batches = list(iter_batches(piece))
        assert sum(b.size for b in batches) == len(piece)
    assert b"".join(part.pieces) == whole_batches_from(raw, 7, 30_000)
    assert part.size == len(whole_batches_from(raw, 7, 30_000))
    assert part.next_offset == list(iter_batches(part.data))[-1].last_offset + 1
    # Each piece is a view of an opened chunk, not of a copy: the same memory as the chunk's.
    ix = await reader.indexes(manifest, entry)
    at_7 = ix.chunks.chunks_for_offset(7)
    assert at_7 is not None
    second = ix.chunks.entries[at_7.index + 1]
    opened = reader._opened.get(f"{entry.segment_uuid}/{second.index}")
    assert opened is not None and part.pieces[1].obj is opened
    await reader.close()
