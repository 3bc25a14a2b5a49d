"""Remote reads: offset -> chunk map -> ranged GETs (in parallel) -> cache -> decrypt -> decompress.

Chunks of one read are fetched concurrently (Aiven's plugin fetches them one after another,
which caps replays far below the store's bandwidth), sequential readers get the following
chunks prefetched, and the cache on local disk is bounded in bytes (LRU).

The disk cache holds chunks as they came from the store: compressed and, with a key provider,
encrypted. A copied disk therefore reveals no record from it, and a one-pass replay writes the
compressed bytes (about a third of the logical ones) instead of the restored chunks. Opened
chunks are kept only in memory (`OpenedChunks`: a few per partition, 64 MiB in all), which is
what sequential readers and their prefetches need.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from tiering.records import iter_batches
from tiering.remote.manifest import PartitionManifest, SegmentEntry
from tiering.remote.transform import ChunkEntry, TransformError, restore_chunk
from tiering.remote.uploader import SegmentIndexes, SegmentUploader

log = logging.getLogger("sediment.remote")


class ChunkCache:
    """Chunks as stored remotely (compressed, encrypted), on local disk, evicted
    least-recently-used past `max_bytes`."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self._dir = directory
        self._max = max_bytes
        self._sizes: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._total = 0
        self.hits = self.misses = 0

    def start(self) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        for p in self._dir.iterdir():  # a restart forgets the order, not the bytes' validity
            p.unlink()

    def _path(self, key: str) -> Path:
        return self._dir / hashlib.sha256(key.encode()).hexdigest()

    async def get(self, key: str) -> bytes | None:
        if key not in self._sizes:
            self.misses += 1
            return None
        self._sizes.move_to_end(key)
        self.hits += 1
        try:
            return await asyncio.to_thread(self._path(key).read_bytes)
        except FileNotFoundError:
            self._forget(key)
            return None

    async def put(self, key: str, data: bytes) -> None:
        if len(data) > self._max or key in self._sizes:
            return
        try:
            await asyncio.to_thread(self._write, self._path(key), data)
        except OSError as e:
            # A full disk costs the cache this chunk, not the reader its answer.
            log.warning("chunk cache cannot store %s: %s", key, e)
            return
        self._sizes[key] = len(data)
        self._total += len(data)
        while self._total > self._max:
            old, _ = next(iter(self._sizes.items()))
            self._forget(old)
            try:
                os.unlink(self._path(old))
            except FileNotFoundError:
                pass

    def _forget(self, key: str) -> None:
        self._total -= self._sizes.pop(key, 0)

    def forget(self, key: str) -> None:
        self._forget(key)
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        tmp = path.with_suffix(f".{os.urandom(6).hex()}.tmp")
        try:
            tmp.write_bytes(data)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)

    @property
    def size(self) -> int:
        return self._total

    def __len__(self) -> int:
        return len(self._sizes)


class OpenedChunks:
    """Decrypted, decompressed chunks in memory: LRU, bounded in total bytes and in chunks per
    partition (so one fast replay cannot evict everyone else's next chunk)."""

    def __init__(self, max_bytes: int = 64 << 20, per_partition: int = 4) -> None:
        self._max = max_bytes
        self._per_partition = per_partition
        self._chunks: collections.OrderedDict[str, tuple[str, bytes]] = collections.OrderedDict()
        self._counts: collections.Counter[str] = collections.Counter()
        self._total = 0

    def get(self, key: str) -> bytes | None:
        hit = self._chunks.get(key)
        if hit is None:
            return None
        self._chunks.move_to_end(key)
        return hit[1]

    def put(self, partition: str, key: str, data: bytes) -> None:
        if key in self._chunks or len(data) > self._max:
            return
        if self._counts[partition] >= self._per_partition:
            oldest = next(k for k, (p, _) in self._chunks.items() if p == partition)
            self._drop(oldest)
        self._chunks[key] = (partition, data)
        self._counts[partition] += 1
        self._total += len(data)
        while self._total > self._max:
            self._drop(next(iter(self._chunks)))

    def _drop(self, key: str) -> None:
        partition, data = self._chunks.pop(key)
        self._total -= len(data)
        self._counts[partition] -= 1
        if not self._counts[partition]:
            del self._counts[partition]

    @property
    def size(self) -> int:
        return self._total

    def __len__(self) -> int:
        return len(self._chunks)

    def __contains__(self, key: str) -> bool:
        return key in self._chunks


@dataclass(frozen=True)
class ReadSettings:
    parallel_gets: int = 8
    prefetch_chunks: int = 2
    timeout_s: float = 30.0
    opened_bytes: int = 64 << 20  # opened chunks kept in memory, in all
    opened_per_partition: int = 4


class RemoteReader:
    def __init__(self, uploader: SegmentUploader, prefix: str, cache: ChunkCache,
                 settings: ReadSettings = ReadSettings()) -> None:
        self._up = uploader
        self._prefix = prefix
        self._cache = cache
        self._opened = OpenedChunks(settings.opened_bytes, settings.opened_per_partition)
        self._settings = settings
        self._gets = asyncio.Semaphore(settings.parallel_gets)
        self._indexes: collections.OrderedDict[str, tuple[SegmentIndexes, bytes | None]] = collections.OrderedDict()
        self._prefetching: set[asyncio.Task[None]] = set()
        self._inflight: dict[str, asyncio.Future[bytes]] = {}

    async def close(self) -> None:
        for t in list(self._prefetching):
            t.cancel()
        await asyncio.gather(*self._prefetching, return_exceptions=True)

    async def indexes(self, manifest: PartitionManifest, entry: SegmentEntry) -> SegmentIndexes:
        """The segment's indexes object, cached in memory (LRU) with its data key."""
        return (await self._segment(manifest, entry))[0]

    async def _segment(self, manifest: PartitionManifest, entry: SegmentEntry) -> tuple[SegmentIndexes, bytes | None]:
        hit = self._indexes.get(entry.segment_uuid)
        if hit is not None:
            self._indexes.move_to_end(entry.segment_uuid)
            return hit
        found = (await self._up.read_indexes(manifest, entry), await self._up.data_key(entry))
        self._indexes[entry.segment_uuid] = found
        while len(self._indexes) > 256:
            self._indexes.popitem(last=False)
        return found

    async def _chunk(self, manifest: PartitionManifest, entry: SegmentEntry, chunk: ChunkEntry,
                     data_key: bytes | None) -> bytes:
        """One restored chunk: opened in memory, from a load already under way (a prefetch and
        a read share it), or loaded from the disk cache or a new ranged GET."""
        cache_key = f"{entry.segment_uuid}/{chunk.index}"
        opened = self._opened.get(cache_key)
        if opened is not None:
            return opened
        pending = self._inflight.get(cache_key)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch(manifest, entry, chunk, data_key, cache_key))
            self._inflight[cache_key] = pending
            pending.add_done_callback(lambda _f: self._inflight.pop(cache_key, None))
        return await asyncio.shield(pending)

    async def _fetch(self, manifest: PartitionManifest, entry: SegmentEntry, chunk: ChunkEntry,
                     data_key: bytes | None, cache_key: str) -> bytes:
        data: bytes | None = None
        blob = await self._cache.get(cache_key)
        if blob is not None:
            try:
                data = await asyncio.to_thread(restore_chunk, blob, chunk, data_key, entry.segment_uuid)
            except TransformError as e:  # a damaged cache file: forget it, GET the chunk again
                log.warning("cached chunk %s is unusable (%s); fetching it again", cache_key, e)
                self._cache.forget(cache_key)
        if data is None:
            log_key, _ = manifest.keys_for(entry, self._prefix)
            async with self._gets:
                blob = await self._up.store.get(log_key, chunk.transformed_position, chunk.transformed_end)
            # The stored form goes to the disk cache while a worker thread opens it.
            data, _ = await asyncio.gather(
                asyncio.to_thread(restore_chunk, blob, chunk, data_key, entry.segment_uuid),
                self._cache.put(cache_key, blob))
        self._opened.put(f"{manifest.topic}-{manifest.partition}", cache_key, data)
        return data

    async def read(self, manifest: PartitionManifest, entry: SegmentEntry, offset: int, max_bytes: int,
                   min_one: bool = True) -> bytes | memoryview:
        """Whole batches from the one holding `offset` (at most max_bytes, but at least one
        batch when min_one), all from this remote segment."""
        return await asyncio.wait_for(self._read(manifest, entry, offset, max_bytes, min_one),
                                      self._settings.timeout_s)

    async def _read(self, manifest: PartitionManifest, entry: SegmentEntry, offset: int, max_bytes: int,
                    min_one: bool) -> bytes | memoryview:
        ix, data_key = await self._segment(manifest, entry)
        first = ix.chunks.chunks_for_offset(offset)
        if first is None:
            return b""
        # The batch holding `offset` starts somewhere in the first chunk: cover max_bytes past
        # the end of that chunk so a full answer never falls short by the part before it.
        chunks = ix.chunks.chunks_for_range(offset, max(max_bytes, 1) + first.size)
        parts = await asyncio.gather(*(self._chunk(manifest, entry, c, data_key) for c in chunks))
        self._prefetch(manifest, entry, ix, chunks[-1].index + 1, data_key)
        data = b"".join(parts)
        start = end = None
        for h in iter_batches(data):
            if h.last_offset < offset:
                continue
            if start is None:
                start = h.position
            if h.position + h.size - start > max_bytes and not (min_one and end is None):
                break
            end = h.position + h.size
        # A view, not a copy: the fetch response sends it as it is.
        return b"" if start is None or end is None else memoryview(data)[start:end]

    def _prefetch(self, manifest: PartitionManifest, entry: SegmentEntry, ix: SegmentIndexes, first: int,
                  data_key: bytes | None) -> None:
        for c in ix.chunks.entries[first:first + self._settings.prefetch_chunks]:
            task = asyncio.create_task(self._quiet(self._chunk(manifest, entry, c, data_key)))
            self._prefetching.add(task)
            task.add_done_callback(self._prefetching.discard)

    @staticmethod
    async def _quiet(coro: "asyncio.Future[bytes] | object") -> None:
        try:
            await coro  # type: ignore[misc]
        except Exception as e:  # a failed prefetch only costs a later GET
            log.debug("prefetch failed: %s", e)
