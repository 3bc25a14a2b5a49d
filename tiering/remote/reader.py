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
import itertools
import logging
import os
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path

from tiering.log.txn_index import ENTRY as TXN_ENTRY
from tiering.records import leading_batches
from tiering.remote.manifest import PartitionManifest, SegmentEntry
from tiering.remote.transform import ChunkEntry, TransformError, restore_chunk
from tiering.remote.uploader import SegmentIndexes, SegmentUploader

log = logging.getLogger("sediment.remote")


class CacheFiles:
    """The chunk cache's blocking file work, run in worker threads, never on the event loop
    (a slow disk would stall every connection). Tests hand in slower ones."""

    def read(self, path: Path) -> bytes:
        return path.read_bytes()

    def write(self, path: Path, data: bytes) -> None:
        tmp = path.with_suffix(f".{os.urandom(6).hex()}.tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def unlink(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def clear(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for p in directory.iterdir():  # a restart forgets the order, not the bytes' validity
            p.unlink()


@dataclass(eq=False)
class _Entry:
    path: Path  # a new name per put: a read of an evicted entry can only miss, never see another's bytes
    size: int


class ChunkCache:
    """Chunks as stored remotely (compressed, encrypted), on local disk, evicted
    least-recently-used past `max_bytes`.

    File work runs in worker threads. Changes to the directory (a put with its evictions, a
    forget) run one at a time under a lock, each to its end even if its caller is cancelled,
    so the files on disk never exceed max_bytes and `size` is always their exact total. Reads
    run alongside: an entry evicted while it is read is a miss."""

    def __init__(self, directory: Path, max_bytes: int, files: CacheFiles | None = None) -> None:
        self._dir = directory
        self._max = max_bytes
        self._files = files or CacheFiles()
        self._entries: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
        self._total = 0
        self._writing: set[str] = set()  # keys with a put under way: a second put of one is dropped
        self._changes = asyncio.Lock()
        self._names = itertools.count()
        self.hits = self.misses = 0

    async def start(self) -> None:
        await asyncio.to_thread(self._files.clear, self._dir)

    def _new_path(self, key: str) -> Path:
        return self._dir / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}-{next(self._names)}"

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        try:
            data = await asyncio.to_thread(self._files.read, entry.path)
        except FileNotFoundError:  # evicted while being read, or removed behind our back
            if self._entries.get(key) is entry:
                self._drop(key)
            self.misses += 1
            return None
        self.hits += 1
        return data

    async def put(self, key: str, data: bytes) -> None:
        if len(data) > self._max or key in self._entries or key in self._writing:
            return
        self._writing.add(key)
        # Shielded: a write cut off by the caller's cancellation would leave a file no entry
        # accounts for, and let the next change start while this one's thread still runs.
        await asyncio.shield(asyncio.ensure_future(self._put(key, data)))

    async def _put(self, key: str, data: bytes) -> None:
        try:
            async with self._changes:
                victims = self._evict_for(len(data))
                path = self._new_path(key)
                try:
                    await asyncio.to_thread(self._replace, victims, path, data)
                except OSError as e:  # a cache that cannot write only costs later GETs
                    log.warning("chunk cache cannot store %s: %s", key, e)
                    return
                self._entries[key] = _Entry(path, len(data))
                self._total += len(data)
        finally:
            self._writing.discard(key)

    def _evict_for(self, size: int) -> list[_Entry]:
        """Least recently used entries to remove so that `size` more bytes fit (under the
        lock: they are gone from disk before the new file is written)."""
        victims = []
        while self._total + size > self._max and self._entries:
            _, entry = self._entries.popitem(last=False)
            self._total -= entry.size
            victims.append(entry)
        return victims

    def _replace(self, victims: list[_Entry], path: Path, data: bytes) -> None:
        for v in victims:
            self._files.unlink(v.path)
        self._files.write(path, data)

    def _drop(self, key: str) -> _Entry | None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._total -= entry.size
        return entry

    async def forget(self, key: str) -> None:
        """Remove one entry (a damaged file), as one change like a put."""
        entry = self._entries.get(key)
        if entry is not None:
            await asyncio.shield(asyncio.ensure_future(self._forget(key, entry)))

    async def _forget(self, key: str, entry: _Entry) -> None:
        async with self._changes:
            if self._entries.get(key) is not entry:  # evicted meanwhile (maybe put again: keep that)
                return
            self._drop(key)
            await asyncio.to_thread(self._files.unlink, entry.path)

    @property
    def size(self) -> int:
        return self._total

    def __len__(self) -> int:
        return len(self._entries)


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
    # Parsed .indexes objects kept in memory whatever the chunk cache's size (a small segment's
    # are a few hundred bytes, and without them every read of it costs one more GET).
    index_cache_bytes: int = 32 << 20
    # Remote segments one read may span after the one holding its offset: small segments would
    # otherwise cost a fetch round trip (and the store's latency) each.
    segments_per_read: int = 32


_INDEX_OVERHEAD = 512  # bytes counted per cached indexes object beyond its sections


def _index_bytes(ix: SegmentIndexes) -> int:
    return (_INDEX_OVERHEAD + 64 * len(ix.chunks) + len(ix.offset_index) + len(ix.time_index)
            + len(ix.txn_index) + len(ix.producer_snapshot))


class IndexCache:
    """Parsed indexes objects with their data keys, in memory, LRU, bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._entries: collections.OrderedDict[str, tuple[SegmentIndexes, bytes | None, int]] = \
            collections.OrderedDict()
        self._total = 0
        self.hits = self.misses = 0

    def get(self, key: str) -> tuple[SegmentIndexes, bytes | None] | None:
        hit = self._entries.get(key)
        if hit is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return hit[0], hit[1]

    def put(self, key: str, ix: SegmentIndexes, data_key: bytes | None) -> None:
        size = _index_bytes(ix)
        if size > self._max or key in self._entries:
            return
        self._entries[key] = (ix, data_key, size)
        self._total += size
        while self._total > self._max:
            _, (_, _, gone) = self._entries.popitem(last=False)
            self._total -= gone

    @property
    def size(self) -> int:
        return self._total

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries


# Transaction index entry of a remote segment: (producer id, first offset, last offset, LSO).
TxnEntry = tuple[int, int, int, int]


def _txn_entries(txn_index: bytes) -> tuple[TxnEntry, ...]:
    whole = len(txn_index) - len(txn_index) % TXN_ENTRY.size
    return tuple((pid, first, last, lso) for _, pid, first, last, lso
                 in TXN_ENTRY.iter_unpack(memoryview(txn_index)[:whole]))


@dataclass(frozen=True)
class ReadPart:
    """Whole batches read from one remote segment, as views of the opened chunks they lie in
    (chunks end at batch boundaries, so no batch spans two), and the offset after the last of
    them (None when there are none)."""

    pieces: list[memoryview]
    next_offset: int | None

    @property
    def size(self) -> int:
        return sum(len(p) for p in self.pieces)

    @property
    def data(self) -> bytes | memoryview:
        """The batches as one buffer (a copy when they span chunks)."""
        if not self.pieces:
            return b""
        return self.pieces[0] if len(self.pieces) == 1 else b"".join(self.pieces)


class RemoteReader:
    def __init__(self, uploader: SegmentUploader, prefix: str, cache: ChunkCache,
                 settings: ReadSettings = ReadSettings()) -> None:
        self._up = uploader
        self._prefix = prefix
        self._cache = cache
        self._opened = OpenedChunks(settings.opened_bytes, settings.opened_per_partition)
        self._settings = settings
        self._gets = asyncio.Semaphore(settings.parallel_gets)
        self._indexes = IndexCache(settings.index_cache_bytes)
        self._indexes_inflight: dict[str, asyncio.Future[tuple[SegmentIndexes, bytes | None]]] = {}
        # The aborted transactions of each segment read so far: a few bytes each (none for most),
        # kept for many more segments than the indexes, since a read_committed fetch looks at
        # every segment from its offset until one shows the search is complete.
        self._txns: collections.OrderedDict[str, tuple[TxnEntry, ...]] = collections.OrderedDict()
        self._txns_max = 1 << 17
        self._prefetching: set[asyncio.Task[None]] = set()
        self._inflight: dict[str, asyncio.Future[bytes]] = {}

    @property
    def settings(self) -> ReadSettings:
        return self._settings

    @property
    def index_cache(self) -> IndexCache:
        return self._indexes

    async def close(self) -> None:
        for t in list(self._prefetching):
            t.cancel()
        await asyncio.gather(*self._prefetching, return_exceptions=True)

    async def indexes(self, manifest: PartitionManifest, entry: SegmentEntry) -> SegmentIndexes:
        """The segment's indexes object, cached in memory (LRU) with its data key."""
        return (await self._segment(manifest, entry))[0]

    async def txn_entries(self, manifest: PartitionManifest, entry: SegmentEntry) -> tuple[TxnEntry, ...]:
        """The segment's transaction index, parsed (cached apart from the indexes)."""
        key = entry.segment_uuid
        hit = self._txns.get(key)
        if hit is not None:
            self._txns.move_to_end(key)
            return hit
        ix, _ = await self._segment(manifest, entry)
        found = _txn_entries(ix.txn_index)
        self._txns[key] = found
        while len(self._txns) > self._txns_max:
            self._txns.popitem(last=False)
        return found

    async def _segment(self, manifest: PartitionManifest, entry: SegmentEntry) -> tuple[SegmentIndexes, bytes | None]:
        """The indexes and data key: from memory, from a load under way, or one GET (counted
        among the parallel GETs) shared by every reader that needs them meanwhile."""
        key = entry.segment_uuid
        hit = self._indexes.get(key)
        if hit is not None:
            return hit
        pending = self._indexes_inflight.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._load_segment(manifest, entry))
            self._indexes_inflight[key] = pending
            pending.add_done_callback(lambda _f: self._indexes_inflight.pop(key, None))
        return await asyncio.shield(pending)

    async def _load_segment(self, manifest: PartitionManifest,
                            entry: SegmentEntry) -> tuple[SegmentIndexes, bytes | None]:
        async with self._gets:
            ix = await self._up.read_indexes(manifest, entry)
        found = (ix, await self._up.data_key(entry))
        self._indexes.put(entry.segment_uuid, *found)
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
                await self._cache.forget(cache_key)
        if data is None:
            log_key, _ = manifest.keys_for(entry, self._prefix)
            async with self._gets:
                blob = await self._up.store.get(log_key, chunk.transformed_position, chunk.transformed_end)
            # The stored form goes to the disk cache while a worker thread opens it.
            restored, _ = await asyncio.gather(
                asyncio.to_thread(restore_chunk, blob, chunk, data_key, entry.segment_uuid),
                self._cache.put(cache_key, blob))
            data = restored
        self._opened.put(f"{manifest.topic}-{manifest.partition}", cache_key, data)
        return data

    async def read(self, manifest: PartitionManifest, entry: SegmentEntry, offset: int, max_bytes: int,
                   min_one: bool = True) -> bytes | memoryview:
        """Whole batches from the one holding `offset` (at most max_bytes, but at least one
        batch when min_one), all from this remote segment."""
        return (await self.read_part(manifest, entry, offset, max_bytes, min_one)).data

    async def read_part(self, manifest: PartitionManifest, entry: SegmentEntry, offset: int, max_bytes: int,
                        min_one: bool = True) -> ReadPart:
        """As read, with the offset after the last batch returned."""
        return await asyncio.wait_for(self._read(manifest, entry, offset, max_bytes, min_one),
                                      self._settings.timeout_s)

    def prefetch_segment(self, manifest: PartitionManifest, entry: SegmentEntry) -> None:
        """Load a segment's indexes and first chunks in the background (the segment a
        sequential reader will read next)."""
        task = asyncio.create_task(self._quiet(self._warm(manifest, entry)))
        self._prefetching.add(task)
        task.add_done_callback(self._prefetching.discard)

    async def _warm(self, manifest: PartitionManifest, entry: SegmentEntry) -> None:
        ix, data_key = await self._segment(manifest, entry)
        await asyncio.gather(*(self._chunk(manifest, entry, c, data_key)
                               for c in ix.chunks.entries[:max(1, self._settings.prefetch_chunks)]))

    async def _read(self, manifest: PartitionManifest, entry: SegmentEntry, offset: int, max_bytes: int,
                    min_one: bool) -> ReadPart:
        ix, data_key = await self._segment(manifest, entry)
        first = ix.chunks.chunks_for_offset(offset)
        if first is None:
            return ReadPart([], None)
        # The batch holding `offset` starts somewhere in the first chunk: cover max_bytes past
        # the end of that chunk so a full answer never falls short by the part before it.
        chunks = ix.chunks.chunks_for_range(offset, max(max_bytes, 1) + first.size)
        parts = await asyncio.gather(*(self._chunk(manifest, entry, c, data_key) for c in chunks))
        self._prefetch(manifest, entry, ix, chunks[-1].index + 1, data_key)
        # Views, not copies, chunk by chunk: the fetch response sends them as they are.
        pieces, next_offset = leading_batches(parts, from_offset=offset, max_bytes=max_bytes, min_one=min_one)
        return ReadPart(pieces, next_offset)

    def _prefetch(self, manifest: PartitionManifest, entry: SegmentEntry, ix: SegmentIndexes, first: int,
                  data_key: bytes | None) -> None:
        for c in ix.chunks.entries[first:first + self._settings.prefetch_chunks]:
            task = asyncio.create_task(self._quiet(self._chunk(manifest, entry, c, data_key)))
            self._prefetching.add(task)
            task.add_done_callback(self._prefetching.discard)

    @staticmethod
    async def _quiet(coro: Awaitable[object]) -> None:
        try:
            await coro
        except Exception as e:  # a failed prefetch only costs a later GET
            log.debug("prefetch failed: %s", e)
