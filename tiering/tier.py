"""TierManager: composes the local log (tiering/log) with the object-store tier (tiering/remote).

It uploads sealed segments of tiered topics in offset order, rolls active segments whose data is
older than remote.upload.interval.ms (so unsealed data in the bucket is never older than that),
lets local retention delete only segments the manifest has committed, applies the topic's total
retention to remote segments, and serves reads and timestamp lookups below the local log start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from security.keys import KeyProvider
from tiering.log.config import LogConfig
from tiering.log.manager import LogManager
from tiering.log.partition import UnifiedLog
from tiering.log.segment import LogSegment
from tiering.records import iter_batches, leading_batches, record_timestamps
from tiering.remote.manifest import ManifestError, PartitionManifest, SegmentEntry, SegmentState
from tiering.remote.reader import ChunkCache, ReadPart, ReadSettings, RemoteReader
from tiering.remote.store import ObjectStore, StoreError, StoreUnavailable
from tiering.remote.transform import TransformError
from tiering.remote.uploader import SegmentFiles, SegmentUploader, UploadSettings

log = logging.getLogger("sediment.tier")


def _consume(task: asyncio.Future[Any]) -> None:
    """Done callback of an abandoned read: its outcome is not wanted (nor logged as lost)."""
    if not task.cancelled():
        task.exception()


_TIME_ENTRY = 12  # time index entry: int64 timestamp, int32 relative offset


class RemoteReadTimeout(StoreUnavailable):
    """A remote read did not finish within remote.fetch.max.wait.ms."""


class RemoteViewUnknown(StoreUnavailable):
    """The partition's manifest could not be read yet: what the bucket holds is unknown."""


@dataclass(frozen=True)
class TieredTopic:
    name: str
    topic_id: str
    partitions: int
    config: LogConfig  # the topic's whole config (total retention, not the local one)


@dataclass
class TierMetrics:
    segments_uploaded: int = 0
    bytes_uploaded: int = 0  # object bytes written
    upload_seconds: float = 0.0
    upload_failures: int = 0
    segments_deleted: int = 0
    remote_reads: int = 0
    remote_read_timeouts: int = 0
    remote_bytes: dict[tuple[str, int], int] = field(default_factory=dict)


@dataclass(frozen=True)
class TierSettings:
    upload: UploadSettings
    read: ReadSettings
    check_interval_ms: int = 1000
    fetch_max_wait_ms: int = 5000
    upload_concurrency: int = 4  # partitions uploading at once


class TierManager:
    def __init__(self, logs: LogManager, store: ObjectStore, keys: KeyProvider | None, cache: ChunkCache,
                 settings: TierSettings, topics: Callable[[], list[TieredTopic]]) -> None:
        self._logs = logs
        self._store = store
        self._settings = settings
        self._topics = topics
        self._uploader = SegmentUploader(store, keys, settings.upload)
        self._cache = cache
        self._reader = RemoteReader(self._uploader, settings.upload.prefix, cache, settings.read)
        self._manifests: dict[tuple[str, int], PartitionManifest] = {}
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}
        # Partitions whose last upload failed and whose bucket has not been cleaned up since.
        self._unsettled: set[tuple[str, int]] = set()
        # Partitions whose manifest has not been read since start (the store was down).
        self._unopened: set[tuple[str, int]] = set()
        self._task: asyncio.Task[None] | None = None
        self.metrics = TierMetrics()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open every tiered partition's remote view (see _open_partition). A partition whose
        manifest cannot be read now (the store is down) does not stop the broker: it serves its
        local data, answers a retriable error for what may be remote, and is opened again on
        every pass of the upload loop until it works."""
        await self._cache.start()
        for topic in self._topics():
            if not topic.config.remote_storage_enable:
                continue
            for p in range(topic.partitions):
                await self._try_open(topic, p)
        self._task = asyncio.create_task(self._loop())

    async def _try_open(self, topic: TieredTopic, p: int) -> bool:
        key = (topic.name, p)
        try:
            await self._open_partition(topic, p)
        except (StoreError, OSError, ManifestError) as e:
            if key not in self._unopened:
                log.warning("remote view of %s-%d unknown until the store answers: %s", topic.name, p, e)
            self._unopened.add(key)
            return False
        self._unopened.discard(key)
        return True

    async def _open_partition(self, topic: TieredTopic, p: int) -> None:
        """Load the manifest, clean up after crashed uploads, and let an empty local log
        continue after the remote end (a broker rebuilt from the bucket)."""
        m = await self._uploader.load_manifest(topic.name, topic.topic_id, p)
        removed = await self._uploader.clean_up(m)
        if removed:
            log.info("removed %d objects of interrupted uploads of %s-%d", len(removed), topic.name, p)
        self._manifests[(topic.name, p)] = m
        self._count_remote_bytes(m)
        lg = self._logs.get(topic.name, p)
        end = m.remote_end_offset
        if lg is not None and end is not None and lg.size_bytes == 0 and lg.log_end_offset <= end:
            lg.start_at(end + 1)
            log.info("%s-%d continues at offset %d after its remote segments", topic.name, p, end + 1)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._reader.close()

    async def manifest(self, topic: TieredTopic, partition: int) -> PartitionManifest:
        key = (topic.name, partition)
        m = self._manifests.get(key)
        if m is None:
            m = await self._uploader.load_manifest(topic.name, topic.topic_id, partition)
            self._manifests[key] = m
            self._count_remote_bytes(m)
        return m

    def _count_remote_bytes(self, m: PartitionManifest) -> None:
        self.metrics.remote_bytes[(m.topic, m.partition)] = sum(e.object_size for e in m.committed())

    def _lock(self, key: tuple[str, int]) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    # -- what local retention may delete ---------------------------------------------------

    def retention_guard(self, lg: UnifiedLog) -> Callable[[LogSegment], bool] | None:
        """For a tiered partition: only segments the manifest has committed may go locally."""
        m = self._manifests.get((lg.topic, lg.partition))
        if m is None:
            return None if not lg.config.remote_storage_enable else (lambda seg: False)
        end = m.remote_end_offset
        return lambda seg: end is not None and seg.next_offset - 1 <= end

    # -- the upload loop -------------------------------------------------------------------

    async def _loop(self) -> None:
        interval = self._settings.check_interval_ms / 1000
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("tiering pass failed")
            await asyncio.sleep(interval)

    async def run_once(self, now_ms: int | None = None) -> None:
        """One pass over the tiered partitions, up to upload_concurrency of them at once; each
        partition's segments still go up in offset order, under its lock."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        jobs = iter([(topic, p, lg) for topic in self._topics() if topic.config.remote_storage_enable
                     for p in range(topic.partitions) if (lg := self._logs.get(topic.name, p)) is not None])

        async def worker() -> None:
            for topic, p, lg in jobs:  # the workers share one iterator: each job runs once
                await self._tier_partition(topic, p, lg, now)

        await asyncio.gather(*(worker() for _ in range(max(1, self._settings.upload_concurrency))))

    async def _tier_partition(self, topic: TieredTopic, p: int, lg: UnifiedLog, now: int) -> None:
        async with self._lock((topic.name, p)):
            if (topic.name, p) in self._unopened and not await self._try_open(topic, p):
                return
            try:
                self._roll_if_stale(lg, topic.config, now)
                await self._upload_sealed(topic, p, lg)
                await self._apply_remote_retention(topic, p, lg, now)
            except (StoreError, OSError, ManifestError) as e:
                # One partition's failure (e.g. its manifest cannot be read) holds up no other.
                log.warning("tiering %s-%d failed (will retry): %s", topic.name, p, e)
            except Exception:
                log.exception("tiering %s-%d failed (will retry)", topic.name, p)

    @staticmethod
    def _roll_if_stale(lg: UnifiedLog, config: LogConfig, now: int) -> None:
        active = lg.active_segment
        basis = active.rolling_basis_ms
        if active.size > 0 and basis is not None and now - basis >= config.remote_upload_interval_ms:
            lg.roll()

    async def _upload_sealed(self, topic: TieredTopic, p: int, lg: UnifiedLog) -> None:
        key = (topic.name, p)
        if key in self._unsettled and not await self._reload(topic, p):
            return  # the store is still failing: the next pass tries again
        for seg in lg.sealed_segments():
            m = await self.manifest(topic, p)
            end = m.remote_end_offset
            if seg.size == 0 or (end is not None and seg.next_offset - 1 <= end):
                continue
            files = SegmentFiles(seg.base_offset, seg.next_offset - 1, seg.max_timestamp,
                                 seg.offset_of_max_timestamp, seg.log_path, seg.index_path,
                                 seg.time_index_path, seg.txn_index_path,
                                 lg.dir / f"{seg.next_offset:020d}.snapshot",
                                 open_batch=seg.cipher.open_batch if seg.cipher is not None else None)
            started = time.monotonic()
            # The upload changes a copy: readers keep the committed view until the copy is saved.
            work = m.copy()
            try:
                entry = await self._uploader.upload(work, files)
            except (StoreError, OSError, TransformError) as e:
                self.metrics.upload_failures += 1
                log.warning("upload of %s-%d segment %d failed (will retry): %s", topic.name, p, seg.base_offset, e)
                await self._reload(topic, p)
                return
            self._manifests[key] = work
            self.metrics.segments_uploaded += 1
            self.metrics.bytes_uploaded += entry.object_size
            self.metrics.upload_seconds += time.monotonic() - started
            self._count_remote_bytes(work)

    async def _reload(self, topic: TieredTopic, p: int) -> bool:
        """After a failed upload: re-read the manifest and remove what the attempt left; True
        when both worked. The manifest in memory is replaced only by one read whole from the
        store, and the clean-up works on a copy: while the store is down, reads keep the last
        committed view (dropping it would make remote data look deleted and send consumers
        past it)."""
        key = (topic.name, p)
        self._unsettled.add(key)
        try:
            fresh = await self._uploader.load_manifest(topic.name, topic.topic_id, p)
        except (StoreError, OSError, ManifestError) as e:
            log.warning("reload of the manifest of %s-%d deferred: %s", topic.name, p, e)
            return False
        self._manifests[key] = fresh
        self._count_remote_bytes(fresh)
        cleaned = fresh.copy()
        try:
            await self._uploader.clean_up(cleaned)
        except (StoreError, OSError) as e:
            log.warning("clean-up of %s-%d deferred: %s", topic.name, p, e)
            return False
        self._manifests[key] = cleaned
        self._unsettled.discard(key)
        return True

    async def _apply_remote_retention(self, topic: TieredTopic, p: int, lg: UnifiedLog, now: int) -> None:
        cfg = topic.config
        if not cfg.deletes:
            return
        m = await self.manifest(topic, p)
        committed = m.committed()
        doomed: dict[str, SegmentEntry] = {}
        if cfg.retention_ms >= 0:
            for e in committed:
                if now - e.max_timestamp <= cfg.retention_ms:
                    break
                doomed[e.segment_uuid] = e
        if cfg.retention_bytes >= 0:
            end = -1 if m.remote_end_offset is None else m.remote_end_offset
            local_only = sum(s.size for s in lg.segments if s.base_offset > end)
            total = sum(e.size for e in committed) + local_only
            for e in committed:
                if total <= cfg.retention_bytes:
                    break
                doomed.setdefault(e.segment_uuid, e)
                total -= e.size
        for e in m.below_start():
            doomed.setdefault(e.segment_uuid, e)
        if doomed:
            m = await self._delete_entries(m, list(doomed.values()))
            # The partition's start moves with its oldest data: local copies below go too.
            start = m.log_start_offset
            if start is None:
                start = max(e.last_offset for e in doomed.values()) + 1
            if lg.log_start_offset < start <= lg.high_watermark:
                await self._logs.delete_records_before(lg, start)
            self._count_remote_bytes(m)
            log.info("remote retention deleted %d segments of %s-%d", len(doomed), topic.name, p)

    async def delete_records(self, topic: TieredTopic, p: int, lg: UnifiedLog, offset: int) -> int:
        """DeleteRecords across the tiers: the manifest's start floor moves to offset (saved
        before answering), remote segments wholly below it are deleted, and the local log start
        moves too. offset must be within [0, high watermark]. Returns the partition's new start."""
        async with self._lock((topic.name, p)):
            m = (await self.manifest(topic, p)).copy()
            if m.committed() and m.raise_start(offset):
                await self._uploader.save_manifest(m)
                self._manifests[(topic.name, p)] = m
                if m.below_start():
                    m = await self._delete_entries(m, m.below_start())
                self._count_remote_bytes(m)
            if offset > lg.log_start_offset:
                await self._logs.delete_records_before(lg, offset)
            return self.log_start_offset(lg)

    async def _delete_entries(self, committed: PartitionManifest, doomed: list[SegmentEntry]) -> PartitionManifest:
        """KIP-405's delete for a batch of segments: all DELETE_STARTED in one manifest save,
        their objects in batched deletes, then all DELETE_FINISHED and pruned in one more save
        (two saves per retention pass, not two per segment). Works on a copy, which becomes
        the partition's view once the first save succeeds; returns it."""
        m = committed.copy()
        for e in doomed:
            m.mark(e.segment_uuid, SegmentState.DELETE_STARTED)
        await self._uploader.save_manifest(m)
        self._manifests[(m.topic, m.partition)] = m
        prefix = self._settings.upload.prefix
        await self._store.delete([k for e in doomed for k in m.keys_for(e, prefix)])
        for e in doomed:
            m.mark(e.segment_uuid, SegmentState.DELETE_FINISHED)
        m.prune_deleted()
        await self._uploader.save_manifest(m)
        self.metrics.segments_deleted += len(doomed)
        return m

    async def delete_topic(self, topic: TieredTopic) -> None:
        """Remove every object of the topic (all partitions' segments and manifests)."""
        for p in range(topic.partitions):
            m = self._manifests.pop((topic.name, p), None) or PartitionManifest(topic.name, topic.topic_id, p)
            self._unsettled.discard((topic.name, p))
            self._unopened.discard((topic.name, p))
            self.metrics.remote_bytes.pop((topic.name, p), None)
            directory = m.key(self._settings.upload.prefix).rsplit("/", 1)[0] + "/"
            keys = [o.key for o in await self._store.list(directory)]
            if keys:
                await self._store.delete(keys)

    # -- reads -----------------------------------------------------------------------------

    def remote_range(self, topic: str, partition: int) -> tuple[int, int] | None:
        """(first, last) offsets held remotely, None when nothing is."""
        m = self._manifests.get((topic, partition))
        if m is None:
            return None
        start, end = m.log_start_offset, m.remote_end_offset
        return None if start is None or end is None else (start, end)

    def log_start_offset(self, lg: UnifiedLog) -> int:
        """The first offset across both tiers. Raises RemoteViewUnknown while the partition's
        manifest could not be read since start and the local log does not start at 0: the
        bucket may hold earlier records, and the local start would send consumers past them."""
        if (lg.topic, lg.partition) in self._unopened and lg.log_start_offset > 0:
            raise RemoteViewUnknown(f"{lg.topic}-{lg.partition}: the store has not answered since start")
        remote = self.remote_range(lg.topic, lg.partition)
        return lg.log_start_offset if remote is None else min(remote[0], lg.log_start_offset)

    async def read(self, topic: str, partition: int, offset: int, max_bytes: int,
                   min_one: bool) -> bytes | memoryview | None:
        """read_pieces as one buffer (a copy when the batches lie in several chunks)."""
        pieces = await self.read_pieces(topic, partition, offset, max_bytes, min_one)
        if pieces is None:
            return None
        return ReadPart(pieces, None).data

    async def read_pieces(self, topic: str, partition: int, offset: int, max_bytes: int,
                          min_one: bool) -> list[memoryview] | None:
        """Whole batches from the remote segment holding offset on, in offset order, as views
        of the opened chunks they lie in (sent as they are, never joined); None when
        the offset is not remote. Raises StoreError when the store fails or does not answer
        within remote.fetch.max.wait.ms: never an empty answer, which a replay would take for
        its end.

        While max_bytes leaves room, the answer goes on into the following remote segments
        (read at the same time as the first), as a local read would run on past a roll: with
        small segments, one segment per fetch costs a round trip to the store for each few KiB
        and leaves the store idle while the answer travels. Only the first segment must be read:
        a later one that fails or is late ends the answer before it (the next fetch starts
        there, and reports its error). When the answer ends at a segment's end, the next
        segments are prefetched for the consumer's next fetch."""
        m = self._manifests.get((topic, partition))
        entry = m.segment_for_offset(offset) if m is not None else None
        if m is None or entry is None:
            return None
        self.metrics.remote_reads += 1
        wait_s = self._settings.fetch_max_wait_ms / 1000
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        following = self._following(m, entry, max_bytes)
        reads = [asyncio.ensure_future(self._reader.read_part(m, entry, offset, max_bytes, min_one))]
        reads += [asyncio.ensure_future(self._reader.read_part(m, e, at, max_bytes, False)) for e, at in following]
        for task in reads:
            task.add_done_callback(_consume)
        try:
            try:
                first = await asyncio.wait_for(asyncio.shield(reads[0]), wait_s)
            except TimeoutError:
                self.metrics.remote_read_timeouts += 1
                log.warning("remote read of %s-%d at %d passed remote.fetch.max.wait.ms", topic, partition, offset)
                raise RemoteReadTimeout(f"remote read of {topic}-{partition} at {offset} passed "
                                        f"remote.fetch.max.wait.ms ({self._settings.fetch_max_wait_ms} ms)") from None
            parts = list(first.pieces)
            total = first.size
            last, end = entry, first.next_offset
            if end is None or end <= entry.last_offset:  # cut by max_bytes, or nothing to return
                return parts
            for (e, _), task in zip(following, reads[1:]):
                try:
                    part = await asyncio.wait_for(asyncio.shield(task), max(0.0, deadline - loop.time()))
                except Exception as ex:  # the answer ends here; the next fetch reports it
                    log.debug("remote read of %s-%d ends before segment %d: %s", topic, partition, e.base_offset, ex)
                    break
                if part.next_offset is None or not part.pieces:
                    break
                if total + part.size > max_bytes:
                    parts += leading_batches(part.pieces, max_bytes=max_bytes - total)[0]
                    break
                parts += part.pieces
                total += part.size
                last, end = e, part.next_offset
                if end <= e.last_offset:
                    break
            else:
                if end > last.last_offset:  # ended at a segment's end: warm the next ones
                    for e, _ in self._following(m, last, 1 << 62, self._reader.settings.prefetch_chunks):
                        self._reader.prefetch_segment(m, e)
            return parts
        finally:
            for task in reads:
                if not task.done():
                    task.cancel()

    def _following(self, m: PartitionManifest, entry: SegmentEntry, budget: int,
                   limit: int | None = None) -> list[tuple[SegmentEntry, int]]:
        """The committed segments after entry that a read continuing past it would read next,
        with the offset each is read from: until their sizes (entry's own counted) reach budget
        (the last may be cut), at most segments_per_read of them (or limit). What
        segment_for_offset would answer for each next offset, found in one pass."""
        limit = self._reader.settings.segments_per_read if limit is None else limit
        planned = entry.size
        if limit <= 0 or planned >= budget:
            return []
        out: list[tuple[SegmentEntry, int]] = []
        at = entry.last_offset + 1
        for e in m.committed_after(entry):
            if e.last_offset < at:
                continue  # wholly inside what was read already (overlapping segments)
            if len(out) >= limit or planned >= budget:
                break
            out.append((e, at))
            planned += e.size
            at = e.last_offset + 1
        return out

    async def aborted_transactions(self, lg: UnifiedLog, fetch_offset: int,
                                   upper_offset: int) -> list[tuple[int, int]]:
        """Kafka's collectAbortedTransactions across the tiers: the transaction indexes of the
        remote segments from the one holding fetch_offset on, then the local ones, until an
        aborted transaction whose LSO (when its abort was written) reached upper_offset shows
        that every transaction starting below upper_offset had ended before it, so later
        segments cannot add one. Remote segments whose manifest entry says their transaction
        index is empty are skipped without a GET (KIP-1058): a read_committed replay of a topic
        without transactions reads no indexes for it. The others are read a window at a time
        (their parsed indexes are cached)."""
        out: list[tuple[int, int]] = []
        if upper_offset <= fetch_offset:
            return out
        m = self._manifests.get((lg.topic, lg.partition))
        if m is not None:
            pending = m.with_transactions_from(fetch_offset)  # segments known to have none skipped
            window = max(1, self._reader.settings.parallel_gets)
            for i in range(0, len(pending), window):
                batch = pending[i:i + window]
                found = await asyncio.gather(*(self._reader.txn_entries(m, e) for e in batch))
                for entries in found:
                    for pid, first, last, lso in entries:
                        if last >= fetch_offset and first < upper_offset:
                            out.append((pid, first))
                        if lso >= upper_offset:
                            return out
        return out + lg.aborted_transactions(max(fetch_offset, lg.log_start_offset), upper_offset)

    async def offset_for_timestamp(self, topic: str, partition: int, timestamp: int,
                                   below: int | None = None) -> tuple[int, int] | None:
        """First record at or after timestamp among remote segments: the manifest picks the
        segment, its time index the starting batch, then records of one batch are decoded."""
        m = self._manifests.get((topic, partition))
        if m is None:
            return None
        start = m.log_start_offset
        for entry in m.committed():
            if below is not None and entry.base_offset >= below:
                break
            if start is None or entry.last_offset < start:
                continue
            if entry.max_timestamp < timestamp:
                continue
            ix = await self._reader.indexes(m, entry)
            start = entry.base_offset
            t = ix.time_index
            for pos in range(0, len(t) - len(t) % _TIME_ENTRY, _TIME_ENTRY):
                ts = int.from_bytes(t[pos:pos + 8], "big", signed=True)
                if ts >= timestamp:
                    break
                start = entry.base_offset + int.from_bytes(t[pos + 8:pos + 12], "big", signed=True)
            offset = start
            while offset <= entry.last_offset:
                data = await self._reader.read(m, entry, offset, 1 << 20, True)
                if not data:
                    break
                for h in iter_batches(data):
                    if h.max_timestamp >= timestamp:
                        for o, ts in record_timestamps(data[h.position:h.position + h.size]):
                            if ts >= timestamp and o >= start:
                                return o, ts
                    offset = h.last_offset + 1
        return None

    def max_timestamp(self, topic: str, partition: int) -> tuple[int, int] | None:
        m = self._manifests.get((topic, partition))
        start = m.log_start_offset if m is not None else None
        if m is None or start is None:
            return None
        committed = [e for e in m.committed() if e.max_timestamp_offset >= start]
        if not committed:
            return None
        best = max(committed, key=lambda e: (e.max_timestamp, -e.base_offset))
        return best.max_timestamp_offset, best.max_timestamp

    # -- key re-wrapping ---------------------------------------------------------------------

    async def rewrap_keys(self, keys: KeyProvider) -> int:
        """Rewrap every manifest entry's data key that is not under the current KEK (after a
        key ring rotation), saving each changed manifest under the partition's lock. The objects
        themselves do not change: only the small wrapped key in the manifest. Returns how many
        entries were rewrapped."""
        count = 0
        current = keys.current_id
        for topic in self._topics():
            if not topic.config.remote_storage_enable:
                continue
            for p in range(topic.partitions):
                async with self._lock((topic.name, p)):
                    m = await self.manifest(topic, p)
                    changed = 0
                    for entry in m.entries:
                        wrapped = entry.wrapped()
                        if wrapped is None or wrapped.key_id == current:
                            continue
                        data_key = await keys.unwrap(wrapped)
                        m.replace_entry(entry.with_wrapped(await keys.wrap(data_key)))
                        changed += 1
                    if changed:
                        await self._uploader.save_manifest(m)
                        count += changed
        return count

    # -- metrics -----------------------------------------------------------------------------

    def upload_lag(self) -> tuple[int, int]:
        """(segments, bytes) sealed locally but not yet committed remotely."""
        segments = size = 0
        for topic in self._topics():
            if not topic.config.remote_storage_enable:
                continue
            for p in range(topic.partitions):
                lg = self._logs.get(topic.name, p)
                m = self._manifests.get((topic.name, p))
                if lg is None:
                    continue
                end = m.remote_end_offset if m is not None else None
                for seg in lg.sealed_segments():
                    if seg.size and (end is None or seg.next_offset - 1 > end):
                        segments += 1
                        size += seg.size
        return segments, size
