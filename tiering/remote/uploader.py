"""Offload one sealed segment: chunk -> compress -> encrypt -> PUT, then commit it in the manifest.

Crash safety follows KIP-405's states. The manifest records COPY_STARTED before any object is
written and COPY_FINISHED only after both objects are complete, so a broker killed mid-upload
leaves an entry that `clean_up` deletes (objects and entry), never a half-counted segment.
Only a COPY_FINISHED segment may be deleted locally.

The `.indexes` object holds, behind one AES-GCM seal under the segment's data key: the chunk
map, the offset index, the time index, the transaction index and the producer snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import uuid
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

from security.keys import KeyProvider, WrappedKey, new_data_key
from tiering.remote.manifest import ManifestHead, PartitionManifest, SegmentEntry, SegmentState
from tiering.remote.store import ObjectStore, StoreError
from tiering.remote.transform import (
    Batch,
    ChunkEntry,
    ChunkIndex,
    chunk_batches,
    decrypt,
    encrypt,
    file_batches,
    restore_range,
    transform_chunks,
)

log = logging.getLogger("sediment.remote")

_INDEXES_MAGIC = b"SDIX"
_INDEXES_VERSION = 1


@dataclass(frozen=True)
class SegmentFiles:
    """What the local log hands over for one sealed segment (tiering/log is not imported here)."""

    base_offset: int
    last_offset: int
    max_timestamp: int
    max_timestamp_offset: int
    log_path: Path
    index_path: Path | None = None
    time_index_path: Path | None = None
    txn_index_path: Path | None = None
    producer_snapshot_path: Path | None = None
    # For a locally encrypted segment: the original bytes of one stored batch (sealed or not).
    # Remote chunks hold original batches, compressed and encrypted per chunk; the offset index
    # is translated to positions in them.
    open_batch: Callable[[bytes | bytearray], bytes | bytearray] | None = None


@dataclass(frozen=True)
class UploadSettings:
    prefix: str = ""
    codec: str = "zstd"
    chunk_size: int = 4 * 1024 * 1024
    level: int | None = None


@dataclass(frozen=True)
class SegmentIndexes:
    chunks: ChunkIndex
    offset_index: bytes
    time_index: bytes
    txn_index: bytes
    producer_snapshot: bytes


_SECTIONS = ("chunks", "offset_index", "time_index", "txn_index", "producer_snapshot")


def _indexes_aad(segment_uuid: str) -> bytes:
    return f"{segment_uuid}:indexes".encode()


def pack_indexes(ix: SegmentIndexes, data_key: bytes | None, segment_uuid: str) -> bytes:
    parts = [ix.chunks.to_bytes(), ix.offset_index, ix.time_index, ix.txn_index, ix.producer_snapshot]
    body = struct.pack(">5I", *(len(p) for p in parts)) + b"".join(parts)
    if data_key is not None:
        body = encrypt(body, data_key, _indexes_aad(segment_uuid))
    return _INDEXES_MAGIC + bytes([_INDEXES_VERSION, data_key is not None]) + body


def unpack_indexes(blob: bytes, data_key: bytes | None, segment_uuid: str) -> SegmentIndexes:
    if blob[:4] != _INDEXES_MAGIC or blob[4] != _INDEXES_VERSION:
        raise ValueError(f"segment {segment_uuid}: not an indexes object (version {blob[4:5]!r})")
    body = blob[6:]
    if blob[5]:
        if data_key is None:
            raise ValueError(f"segment {segment_uuid}: indexes are encrypted but no data key was given")
        body = decrypt(body, data_key, _indexes_aad(segment_uuid))
    sizes = struct.unpack_from(">5I", body)
    pos, fields = 20, []
    for size in sizes:
        fields.append(bytes(body[pos:pos + size]))
        pos += size
    return SegmentIndexes(ChunkIndex.from_bytes(fields[0]), *fields[1:])


def _read(path: Path | None) -> bytes:
    return path.read_bytes() if path is not None and path.exists() else b""


_INDEX_ENTRY = struct.Struct(">ii")  # offset index entry: relative offset, position


class _OpenedIndex:
    """Translates a stored segment's offset index to positions in its opened batches, batch by
    batch as they stream past (both are in position order), without a map of every batch."""

    def __init__(self, index: bytes) -> None:
        self._entries = list(_INDEX_ENTRY.iter_unpack(index[:len(index) - len(index) % 8]))
        self._next = 0
        self._removed = 0
        self._out = bytearray()

    def passed(self, stored_pos: int, stored_size: int, opened_size: int) -> None:
        while self._next < len(self._entries) and self._entries[self._next][1] <= stored_pos:
            rel, pos = self._entries[self._next]
            self._out += _INDEX_ENTRY.pack(rel, pos - self._removed)
            self._next += 1
        self._removed += stored_size - opened_size

    def result(self) -> bytes:
        for rel, pos in self._entries[self._next:]:
            self._out += _INDEX_ENTRY.pack(rel, pos - self._removed)
        self._next = len(self._entries)
        return bytes(self._out)


def _opened_batches(batches: Iterable[Batch], open_batch: Callable[[bytes | bytearray], bytes | bytearray],
                    index: _OpenedIndex) -> Iterator[Batch]:
    stored_pos = 0
    for base, last, data in batches:
        opened = open_batch(data)
        index.passed(stored_pos, len(data), len(opened))
        stored_pos += len(data)
        yield base, last, opened


@dataclass
class ChunkMeter:
    """How many chunks upload pipelines hold (read, transformed or waiting for the store):
    what bounds an upload's memory, whatever the segment's size."""

    held: int = 0
    peak: int = 0

    def take(self) -> None:
        self.held += 1
        self.peak = max(self.peak, self.held)

    def drop(self) -> None:
        self.held -= 1


@dataclass
class _SegmentStream:
    """A sealed segment opened for upload: its transformed chunks, one at a time, and the
    index entries of those already produced."""

    file: BinaryIO
    chunks: Iterator[tuple[ChunkEntry, bytes]]
    opened_index: _OpenedIndex | None
    entries: list[ChunkEntry] = field(default_factory=list)

    def next_part(self) -> bytes | None:
        """Read, cut, compress and encrypt the next chunk (blocking: run in a thread)."""
        item = next(self.chunks, None)
        if item is None:
            return None
        self.entries.append(item[0])
        return item[1]

    def close(self) -> None:
        self.file.close()


async def load_manifest(store: ObjectStore, prefix: str, topic: str, topic_id: object,
                        partition: int) -> PartitionManifest:
    """A partition's manifest from the bucket (an empty one when there is none): the head,
    then the spills it names, a few at a time."""
    probe = PartitionManifest(topic, topic_id, partition)
    if await store.head(probe.key(prefix)) is None:
        return probe
    head = ManifestHead.parse(await store.get(probe.key(prefix)))
    names = head.spill_names
    limit = asyncio.Semaphore(8)

    async def get(name: str) -> bytes:
        async with limit:
            return await store.get(probe.spill_key(prefix, name))

    return head.manifest(dict(zip(names, await asyncio.gather(*(get(n) for n in names)))))


class SegmentUploader:
    def __init__(self, store: ObjectStore, keys: KeyProvider | None, settings: UploadSettings,
                 meter: ChunkMeter | None = None) -> None:
        self._store = store
        self._keys = keys
        self._settings = settings
        self.meter = meter if meter is not None else ChunkMeter()

    @property
    def store(self) -> ObjectStore:
        return self._store

    async def save_manifest(self, manifest: PartitionManifest) -> None:
        """New spills first, then the head that names them; spills no head names any more
        are deleted after (a failure there leaves them to clean_up)."""
        prefix = self._settings.prefix
        for key, body in manifest.unsaved_spills(prefix):
            await self._store.put(key, body)
        await self._store.put(manifest.key(prefix), manifest.to_json().encode())
        garbage = manifest.saved()
        if garbage:
            try:
                await self._store.delete([manifest.spill_key(prefix, n) for n in garbage])
            except (StoreError, OSError) as e:
                log.warning("old manifest spills of %s-%d not deleted yet: %s", manifest.topic, manifest.partition, e)
                return
            manifest.forget_spills(garbage)

    async def load_manifest(self, topic: str, topic_id: object, partition: int) -> PartitionManifest:
        return await load_manifest(self._store, self._settings.prefix, topic, topic_id, partition)

    async def upload(self, manifest: PartitionManifest, seg: SegmentFiles) -> SegmentEntry:
        """Copy one sealed segment and commit it. The manifest object is rewritten twice:
        COPY_STARTED before the first byte, COPY_FINISHED after the last. The segment streams
        through the pipeline a chunk at a time: memory does not grow with its size."""
        s = self._settings
        segment_uuid = str(uuid.uuid4())
        data_key = new_data_key() if self._keys is not None else None
        wrapped: WrappedKey | None = await self._keys.wrap(data_key) if self._keys and data_key else None
        index_files = await asyncio.to_thread(
            lambda: tuple(_read(p) for p in (seg.index_path, seg.time_index_path, seg.txn_index_path,
                                            seg.producer_snapshot_path)))
        stream = await asyncio.to_thread(self._open, seg, index_files[0], data_key, segment_uuid)
        try:
            entry = SegmentEntry(segment_uuid, seg.base_offset, seg.last_offset, seg.max_timestamp,
                                 seg.max_timestamp_offset, os.fstat(stream.file.fileno()).st_size, 0,
                                 SegmentState.COPY_STARTED, s.codec, s.chunk_size,
                                 wrapped.key_id if wrapped else None, wrapped.blob_b64() if wrapped else None,
                                 txn_index_bytes=len(index_files[2]))
            manifest.add(entry)
            await self.save_manifest(manifest)
            log_key, indexes_key = manifest.keys_for(entry, s.prefix)
            parts = self._parts(stream)
            try:
                await self._store.put_stream(log_key, parts)
            finally:
                await parts.aclose()  # a failed store call may leave the generator open
        finally:
            stream.close()
        chunks = ChunkIndex(stream.entries, encrypted=data_key is not None)
        if stream.opened_index is not None:
            index_files = (stream.opened_index.result(),) + index_files[1:]
        indexes = SegmentIndexes(chunks, *index_files)
        await self._store.put(indexes_key, pack_indexes(indexes, data_key, segment_uuid))
        manifest.replace_entry(replace(entry, size=chunks.original_size, object_size=chunks.object_size))
        done = manifest.mark(segment_uuid, SegmentState.COPY_FINISHED)
        await self.save_manifest(manifest)
        return done

    def _open(self, seg: SegmentFiles, offset_index: bytes, data_key: bytes | None,
              segment_uuid: str) -> _SegmentStream:
        s = self._settings
        f = open(seg.log_path, "rb", buffering=1 << 20)  # noqa: SIM115 - closed by the try/finally below
        try:
            batches: Iterable[Batch] = file_batches(f, os.fstat(f.fileno()).st_size)
            opened_index = None
            if seg.open_batch is not None:
                opened_index = _OpenedIndex(offset_index)
                batches = _opened_batches(batches, seg.open_batch, opened_index)
            chunks = transform_chunks(chunk_batches(batches, s.chunk_size), data_key, segment_uuid, s.codec, s.level)
            return _SegmentStream(f, chunks, opened_index)
        except BaseException:
            f.close()
            raise

    async def _parts(self, stream: _SegmentStream) -> AsyncGenerator[bytes, None]:
        """The object's bytes chunk by chunk, the next chunk transformed in a worker thread
        while the store sends the previous one (read-ahead of one): the pipeline holds at most
        two chunks, and the store's put_stream pulls only as fast as it uploads."""
        meter = self.meter
        loop = asyncio.get_running_loop()
        pending: asyncio.Future[bytes | None] | None = None

        def start() -> asyncio.Future[bytes | None]:
            meter.take()
            return loop.run_in_executor(None, stream.next_part)

        try:
            pending = start()
            while True:
                part = await asyncio.shield(pending)
                if part is None:
                    meter.drop()
                    pending = None
                    return
                pending = start()
                try:
                    yield part
                finally:
                    meter.drop()
        finally:
            if pending is not None:
                # A worker may still be reading the file: let it finish before the file closes.
                await asyncio.gather(pending, return_exceptions=True)
                meter.drop()

    async def clean_up(self, manifest: PartitionManifest) -> list[str]:
        """Delete what crashed uploads left: COPY_STARTED entries and their objects, and objects
        in the partition's directory that no entry names. Returns the deleted keys."""
        s = self._settings
        deleted: list[str] = []
        for entry in manifest.entries:
            if entry.state is SegmentState.COPY_STARTED:
                keys = list(manifest.keys_for(entry, s.prefix))
                manifest.mark(entry.segment_uuid, SegmentState.DELETE_STARTED)
                await self.save_manifest(manifest)
                await self._store.delete(keys)
                manifest.mark(entry.segment_uuid, SegmentState.DELETE_FINISHED)
                deleted += keys
        manifest.prune_deleted()
        await self.save_manifest(manifest)
        known = manifest.manifest_keys(s.prefix)
        for entry in manifest.entries:
            known.update(manifest.keys_for(entry, s.prefix))
        directory = manifest.key(s.prefix).rsplit("/", 1)[0] + "/"
        orphans = [o.key for o in await self._store.list(directory) if o.key not in known]
        if orphans:
            await self._store.delete(orphans)
        return deleted + orphans

    async def data_key(self, entry: SegmentEntry) -> bytes | None:
        wrapped = entry.wrapped()
        if wrapped is None:
            return None
        if self._keys is None:
            raise ValueError(f"segment {entry.segment_uuid} is encrypted under key {wrapped.key_id}, "
                             "but no key provider is configured")
        return await self._keys.unwrap(wrapped)

    async def read_indexes(self, manifest: PartitionManifest, entry: SegmentEntry) -> SegmentIndexes:
        _, indexes_key = manifest.keys_for(entry, self._settings.prefix)
        return unpack_indexes(await self._store.get(indexes_key), await self.data_key(entry), entry.segment_uuid)

    async def download(self, manifest: PartitionManifest, entry: SegmentEntry) -> bytes:
        """The whole original segment, back through decrypt and decompress (recovery, tests)."""
        log_key, _ = manifest.keys_for(entry, self._settings.prefix)
        ix = await self.read_indexes(manifest, entry)
        key = await self.data_key(entry)
        blob = await self._store.get(log_key)
        chunks = await asyncio.to_thread(restore_range, blob, 0, ix.chunks.entries, key, entry.segment_uuid)
        return b"".join(chunks)

