"""UnifiedLog: one partition's local log, a sorted list of segments in `<data_dir>/<topic>-<p>`.

Modelled on Kafka's UnifiedLog/LocalLog. All methods are synchronous. append/read/roll and the
retention bookkeeping are cheap (page-cache writes, renames) and run on the event loop; flush()
and open() (recovery) block and belong in a thread. flush() may run in a thread concurrently with
appends on the loop: it reads segment lists and per-segment write positions, and what each sync
covers is fixed before it starts (see SyncMark).
"""

from __future__ import annotations

import shutil
import threading
import time
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tiering.log.config import LogConfig
from tiering.log.files import SyncMark, fsync_dir, write_atomically
from tiering.log.producer_state import CompletedTxn, ProducerStateManager
from tiering.log.sealing import BatchCipher
from tiering.log.segment import DELETED_SUFFIX, LOG_SUFFIX, LogSegment
from tiering.log.txn_index import AbortedTxn
from tiering.records import (
    CONTROL_ABORT,
    NO_TIMESTAMP,
    BatchHeader,
    InvalidRecordError,
    assign_offsets,
    build_control_batch,
    control_record_type,
    offset_pieces,
    read_header,
    record_timestamps,
    validate_batches,
)

LOG_START_CHECKPOINT = "log-start-offset"
RECOVERY_POINT_CHECKPOINT = "recovery-point"
INT32_MAX = (1 << 31) - 1


class OffsetOutOfRangeError(Exception):
    def __init__(self, message: str, *, log_start_offset: int, log_end_offset: int) -> None:
        super().__init__(message)
        self.log_start_offset = log_start_offset
        self.log_end_offset = log_end_offset


@dataclass(frozen=True, slots=True)
class AppendResult:
    base_offset: int
    last_offset: int
    log_append_time_ms: int  # -1 for CreateTime
    log_start_offset: int
    record_bytes: int
    # True when the batches repeat ones an idempotent producer already wrote: nothing was
    # written and the offsets are those of the original write.
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class PreparedAppend:
    """Batches of one produce request validated and sealed ahead of their append (sealing is
    CPU work done in a thread); offsets are assigned by append_prepared, in arrival order."""

    buf: bytearray
    headers: list[BatchHeader]  # as stored (sealed), positions in buf
    append_time: int | None  # LogAppendTime already applied, or None
    plain_size: int


@dataclass(frozen=True, slots=True)
class ReadSlice:
    """Whole batches in one segment file: send with sendfile(fileno, position, size)."""

    segment: LogSegment
    position: int
    size: int
    base_offset: int  # of the first batch, which may start before the fetch offset

    @property
    def path(self) -> Path:
        return self.segment.log_path

    @property
    def fileno(self) -> int:
        return self.segment.fileno


class UnifiedLog:
    def __init__(
        self,
        directory: Path,
        topic: str,
        partition: int,
        config: LogConfig,
        segments: list[LogSegment],
        log_start_offset: int,
        recovery_point: int,
        producers: ProducerStateManager | None = None,
        cipher: BatchCipher | None = None,
        seal_appends: bool = False,
        created_files: bool = False,
    ) -> None:
        self.dir = directory
        # Encryption at rest: with a cipher the partition may hold sealed batches (read paths
        # open them); seal_appends seals every new batch (log.encryption.enable).
        self.cipher = cipher
        self.seal_appends = seal_appends and cipher is not None
        self.topic = topic
        self.partition = partition
        self._config = config
        self._segments = segments
        self._bases = [s.base_offset for s in segments]
        self._log_end_offset = segments[-1].next_offset
        self._log_start_offset = log_start_offset
        # Recovered segments were rewritten and are not yet known to be on disk.
        self._flushed_offset = min(
            (s.base_offset for s in segments if s.dirty), default=self._log_end_offset
        )
        self._recovery_point = recovery_point
        # Directory entries of new segment files: an fdatasync of a new file does not make its
        # name durable, so flush() syncs the directory (and, the first time, its parent, which
        # may have just gained the partition's directory) before data in it counts as flushed.
        self._dir_sync = SyncMark()
        self._parent_unsynced = created_files
        if created_files:
            self._dir_sync.wrote()
        # Serialises log-start checkpoint writes (in threads): each writes the start current
        # when it runs, so the file never goes back to an older start.
        self._checkpoint_lock = threading.Lock()
        # Deleted segments stay open until file.delete.delay.ms is over, so a read slice handed
        # out just before (a sendfile in flight) never sees its descriptor closed or reused.
        self._graveyard: list[tuple[float, LogSegment]] = []
        self._producers = producers or ProducerStateManager(directory, f"{topic}-{partition}")

    # --- opening ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls, directory: Path, topic: str, partition: int, config: LogConfig, recover: bool,
        cipher: BatchCipher | None = None, seal_appends: bool = False,
    ) -> UnifiedLog:
        """Load the partition. With recover (unclean shutdown), every segment from the recovery
        point on is fully scanned; the others, and all segments after a clean shutdown, get the
        cheap index sanity check and are scanned only if it fails."""
        created = not directory.exists()
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.iterdir():
            if leftover.name.endswith(DELETED_SUFFIX) or leftover.name.endswith(".tmp"):
                leftover.unlink(missing_ok=True)
        bases = sorted(int(p.name[: -len(LOG_SUFFIX)]) for p in directory.glob("*" + LOG_SUFFIX))
        _remove_orphan_indexes(directory, set(bases))
        recovery_point = _read_checkpoint(directory / RECOVERY_POINT_CHECKPOINT)
        start_checkpoint = _read_checkpoint(directory / LOG_START_CHECKPOINT)
        segments: list[LogSegment] = []
        try:
            for i, base in enumerate(bases):
                full = recover and (recovery_point is None or base >= recovery_point)
                seg = LogSegment.open(directory, base, config, create=False, recover=full, cipher=cipher)
                segments.append(seg)
                if seg.recovered_bytes and i + 1 < len(bases):
                    # Everything after a damaged segment follows a gap: drop it, as Kafka does.
                    for later in bases[i + 1 :]:
                        LogSegment(directory, later, config).delete()
                    break
            if not segments:
                created = True
                segments.append(LogSegment.open(directory, start_checkpoint or 0, config, create=True,
                                                cipher=cipher))
        except BaseException:
            for seg in segments:
                seg.close()
            raise
        log_end = segments[-1].next_offset
        log_start = max(start_checkpoint or 0, segments[0].base_offset)
        log_start = min(log_start, log_end)
        try:
            producers = _load_producer_state(directory, f"{topic}-{partition}", segments, recover,
                                             recovery_point)
        except BaseException:
            for seg in segments:
                seg.close()
            raise
        return cls(directory, topic, partition, config, segments, log_start, recovery_point or 0,
                   producers, cipher, seal_appends, created_files=created)

    # --- state -----------------------------------------------------------------------------

    @property
    def config(self) -> LogConfig:
        return self._config

    def update_config(self, config: LogConfig) -> None:
        self._config = config
        for seg in self._segments:
            seg.index_interval_bytes = config.index_interval_bytes

    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self._log_end_offset

    @property
    def high_watermark(self) -> int:
        return self._log_end_offset  # single replica: everything appended is committed

    @property
    def flushed_offset(self) -> int:
        """Every offset below this is on stable storage."""
        return self._flushed_offset

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    @property
    def segments(self) -> list[LogSegment]:
        return list(self._segments)

    @property
    def active_segment(self) -> LogSegment:
        return self._segments[-1]

    def sealed_segments(self) -> list[LogSegment]:
        """Segments that will never change again (candidates for tiering)."""
        return self._segments[:-1]

    # --- append ----------------------------------------------------------------------------

    def append(self, records: bytes | bytearray, *, now_ms: int) -> AppendResult:
        """Validate, assign offsets and write the batches of one produce request.

        Pass a bytearray to avoid the one copy made to patch offsets in place.
        Raises InvalidRecordError.
        """
        if self.seal_appends:
            return self.append_prepared(self.prepare_append(records, now_ms=now_ms), now_ms=now_ms)
        config = self._config
        headers = validate_batches(records, config.max_message_bytes)
        append_time = now_ms if config.log_append_time else None
        # CreateTime batches are written from the request's bytes as they are, new offsets
        # beside them; LogAppendTime rewrites CRC-covered bytes, so those get a copy to patch.
        buf = records if isinstance(records, bytearray) or append_time is None else bytearray(records)
        return self._append_validated(buf, headers, append_time, stamp=append_time,
                                      record_bytes=len(buf), now_ms=now_ms)

    def prepare_append(self, records: bytes | bytearray, *, now_ms: int) -> PreparedAppend:
        """Validate and seal the batches of one produce request without touching the log's
        state (thread-safe: may run in a worker thread while the loop appends other requests).
        LogAppendTime is applied before sealing because it changes authenticated header bytes;
        baseOffset, which is not authenticated, is patched later by append_prepared."""
        assert self.cipher is not None
        config = self._config
        headers = validate_batches(records, config.max_message_bytes)
        buf = records if isinstance(records, bytearray) else bytearray(records)
        append_time = now_ms if config.log_append_time else None
        if append_time is not None:
            assign_offsets(buf, headers, 0, append_time)
            headers = [read_header(buf, h.position) for h in headers]
        sealed, stored = self.cipher.seal_batches(buf, headers)
        return PreparedAppend(sealed, stored, append_time, len(buf))

    def append_prepared(self, prepared: PreparedAppend, *, now_ms: int) -> AppendResult:
        """Assign offsets to prepared (sealed) batches and write them: the part of an append
        that must happen in arrival order, on the loop."""
        return self._append_validated(prepared.buf, prepared.headers, prepared.append_time, stamp=None,
                                      record_bytes=prepared.plain_size, now_ms=now_ms)

    def _append_validated(self, buf: bytes | bytearray, headers: list[BatchHeader], append_time: int | None, *,
                          stamp: int | None, record_bytes: int, now_ms: int) -> AppendResult:
        """Producer-state check, offsets (and LogAppendTime when stamp is set), one write."""
        base = self._log_end_offset
        pending = self._producers.prepare_append(headers, base, append_time)
        if pending is not None and pending.duplicate is not None:
            dup = pending.duplicate
            return AppendResult(
                base_offset=dup.first_offset,
                last_offset=dup.last_offset,
                log_append_time_ms=dup.timestamp if append_time is not None else -1,
                log_start_offset=self._log_start_offset,
                record_bytes=0,
                duplicate=True,
            )
        count = sum(h.last_offset_delta + 1 for h in headers)
        if self._should_roll(len(buf), base + count - 1, now_ms):
            self.roll()
        if isinstance(buf, bytearray):
            last = assign_offsets(buf, headers, base, stamp)
            stamped = [read_header(buf, h.position) for h in headers]
            self._segments[-1].append(buf, stamped, now_ms)
        else:
            assert stamp is None, "a LogAppendTime stamp needs a bytearray to patch"
            pieces, stamped = offset_pieces(buf, headers, base)
            last = stamped[-1].last_offset
            self._segments[-1].append(pieces, stamped, now_ms)
        self._log_end_offset = last + 1
        if pending is not None:
            self._producers.commit(pending)
        return AppendResult(
            base_offset=base,
            last_offset=last,
            log_append_time_ms=-1 if append_time is None else append_time,
            log_start_offset=self._log_start_offset,
            record_bytes=record_bytes,
        )

    def append_control(
        self, producer_id: int, producer_epoch: int, commit: bool, coordinator_epoch: int, now_ms: int
    ) -> int:
        """Write an end-transaction marker for the producer and close its open transaction here.
        An abort is recorded in the active segment's transaction index. Returns the marker's
        offset. Raises InvalidRecordError (STALE_PRODUCER_EPOCH, STALE_COORDINATOR_EPOCH).
        """
        self._producers.check_marker(producer_id, producer_epoch, coordinator_epoch)
        buf = bytearray(build_control_batch(producer_id, producer_epoch, commit, coordinator_epoch, now_ms))
        headers = validate_batches(buf, len(buf))
        offset = self._log_end_offset
        if self._should_roll(len(buf), offset, now_ms):
            self.roll()
        assign_offsets(buf, headers, offset, None)
        active = self._segments[-1]
        active.append(buf, [read_header(buf, 0)], now_ms)
        self._log_end_offset = offset + 1
        completed = self._producers.complete_txn(
            producer_id, producer_epoch, coordinator_epoch, offset, not commit, now_ms)
        if completed.aborted:
            active.append_aborted_txn(self._aborted_entry(completed))
        return offset

    def _aborted_entry(self, completed: CompletedTxn) -> AbortedTxn:
        return AbortedTxn(completed.producer_id, completed.first_offset, completed.last_offset,
                          self._producers.last_stable_offset_after(completed))

    @property
    def producer_state(self) -> ProducerStateManager:
        return self._producers

    @property
    def last_stable_offset(self) -> int:
        """Offsets below this are decided: no open transaction starts before it (Kafka's LSO)."""
        hw = self.high_watermark
        first = self._producers.first_unstable_offset
        lso = hw if first is None else min(first, hw)
        return max(lso, self._log_start_offset)

    def aborted_transactions(self, fetch_offset: int, upper_offset: int) -> list[tuple[int, int]]:
        """(producer id, first offset) of the aborted transactions overlapping
        [fetch_offset, upper_offset), from the transaction indexes of the segments from the one
        holding fetch_offset on (Kafka's collectAbortedTransactions)."""
        out: list[tuple[int, int]] = []
        if upper_offset <= fetch_offset:
            return out
        i = max(bisect_right(self._bases, fetch_offset) - 1, 0)
        for seg in self._segments[i:]:
            found, complete = seg.collect_aborted_txns(fetch_offset, upper_offset)
            out += [(t.producer_id, t.first_offset) for t in found]
            if complete:
                break
        return out

    def slice_end_offset(self, read_slice: ReadSlice) -> int:
        """The offset after the last batch of a read slice."""
        seg = read_slice.segment
        end = read_slice.position + read_slice.size
        if end >= seg.size:
            return seg.next_offset
        return seg.header_at(end).base_offset

    def remove_expired_producers(self, now_ms: int, expiration_ms: int) -> list[int]:
        return self._producers.remove_expired(now_ms, expiration_ms)

    def _should_roll(self, size: int, last_offset: int, now_ms: int) -> bool:
        active = self._segments[-1]
        if active.size == 0:
            return False
        return (
            active.size > self._config.segment_bytes - size
            or self._segment_expired(active, now_ms)
            or last_offset - active.base_offset > INT32_MAX
        )

    def _segment_expired(self, seg: LogSegment, now_ms: int) -> bool:
        basis = seg.rolling_basis_ms
        return basis is not None and seg.size > 0 and now_ms - basis > self._config.segment_ms

    def roll(self) -> LogSegment:
        """Seal the active segment and start a new one at the log end offset (a no-op when the
        active segment is empty)."""
        active = self._segments[-1]
        if active.size == 0:
            return active
        active.seal()
        new = LogSegment.open(self.dir, self._log_end_offset, self._config, create=True, cipher=self.cipher)
        self._dir_sync.wrote()
        self._segments.append(new)
        self._bases.append(new.base_offset)
        # The state after every batch of the sealed segments: a restart replays from here.
        self._producers.take_snapshot(new.base_offset)
        return new

    def start_at(self, offset: int) -> None:
        """Make an empty log continue at `offset` (Kafka's truncateFullyAndStartAt): a broker
        rebuilt from the bucket appends after the last remote offset."""
        if self.size_bytes != 0:
            raise ValueError(f"{self.topic}-{self.partition}: start_at needs an empty log")
        for seg in self._segments:
            seg.delete()
        new = LogSegment.open(self.dir, offset, self._config, create=True, cipher=self.cipher)
        self._dir_sync.wrote()
        self._segments = [new]
        self._bases = [offset]
        self._log_start_offset = self._log_end_offset = self._flushed_offset = offset
        _write_checkpoint(self.dir / LOG_START_CHECKPOINT, offset, durable=True)

    def maybe_roll(self, now_ms: int) -> bool:
        """Roll on segment.ms even without new appends (keeps sealing time-bounded)."""
        if self._segment_expired(self._segments[-1], now_ms):
            self.roll()
            return True
        return False

    # --- read ------------------------------------------------------------------------------

    def read(
        self, offset: int, max_bytes: int, min_one: bool, upto_offset: int | None = None
    ) -> ReadSlice | None:
        """Whole batches from the segment holding offset, up to max_bytes (or one whole batch
        with min_one). Never crosses a segment boundary: call again from the next offset.
        With upto_offset (the LSO for read_committed), only batches ending below it."""
        if offset < self._log_start_offset or offset > self._log_end_offset:
            raise OffsetOutOfRangeError(
                f"offset {offset} outside [{self._log_start_offset}, {self._log_end_offset}]",
                log_start_offset=self._log_start_offset,
                log_end_offset=self._log_end_offset,
            )
        if offset == self._log_end_offset or (upto_offset is not None and offset >= upto_offset):
            return None
        segments = self._segments
        i = max(bisect_right(self._bases, offset) - 1, 0)
        for seg in segments[i:]:
            h = seg.batch_for(offset)
            if h is None:
                continue  # offset past this segment's data (a gap): look in the next one
            if upto_offset is not None and upto_offset < seg.next_offset:
                if h.last_offset >= upto_offset:
                    return None
                stop = seg.position_for(upto_offset)
                if stop is not None:
                    max_bytes = min(max_bytes, stop - h.position)
            size = seg.byte_range(h.position, max_bytes, min_one)
            if size == 0:
                return None
            return ReadSlice(seg, h.position, size, h.base_offset)
        return None

    def read_bytes(self, read_slice: ReadSlice) -> bytes | bytearray:
        """The slice's batches as clients see them (sealed batches opened)."""
        return read_slice.segment.read_plain(read_slice.position, read_slice.size)

    # --- offsets by time (ListOffsets) -----------------------------------------------------

    def earliest(self) -> int:
        return self._log_start_offset

    def latest(self) -> int:
        return self._log_end_offset

    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record at or after the log start whose timestamp
        is >= timestamp: the index finds the batch, then that one batch is decoded."""
        start = self._log_start_offset
        for seg in self._segments:
            if seg.next_offset <= start or seg.max_timestamp < timestamp:
                continue
            found = seg.find_by_timestamp(timestamp, start)
            if found is not None:
                return self._first_record_at_or_after(seg, found, timestamp, start)
        return None

    @staticmethod
    def _first_record_at_or_after(seg: LogSegment, found: tuple[int, int], timestamp: int,
                                  start: int) -> tuple[int, int]:
        """Refine a batch hit to the exact record, as Kafka answers (decodes one batch)."""
        batch = seg.batch_for(max(found[0], start))
        if batch is None:
            return max(found[0], start), found[1]
        for offset, ts in record_timestamps(seg.read_plain(batch.position, batch.size)):
            if offset >= start and ts >= timestamp:
                return offset, ts
        return max(found[0], start), found[1]

    def max_timestamp(self) -> tuple[int, int]:
        """(offset, timestamp) of the largest timestamp (ListOffsets -3); (-1, -1) when empty.
        The offset is that of the first record carrying it."""
        best = (-1, NO_TIMESTAMP)
        best_seg: LogSegment | None = None
        for seg in self._segments:
            if seg.next_offset > self._log_start_offset and seg.max_timestamp > best[1]:
                best, best_seg = (seg.offset_of_max_timestamp, seg.max_timestamp), seg
        if best_seg is not None:  # exact record: the first one carrying the max timestamp
            batch = best_seg.batch_for(best[0])
            if batch is not None:
                for offset, ts in record_timestamps(best_seg.read_plain(batch.position, batch.size)):
                    if ts == best[1]:
                        return offset, ts
        return best

    # --- deletion --------------------------------------------------------------------------

    def delete_records_target(self, offset: int) -> int:
        """DeleteRecords' offset checked against the high watermark (-1 means the high
        watermark); raises OffsetOutOfRangeError outside [0, high watermark]."""
        if offset == -1:
            return self.high_watermark
        if offset < 0 or offset > self.high_watermark:
            raise OffsetOutOfRangeError(
                f"cannot delete records before {offset}: high watermark is {self.high_watermark}",
                log_start_offset=self._log_start_offset,
                log_end_offset=self._log_end_offset,
            )
        return offset

    def delete_records_before(self, offset: int) -> int:
        """DeleteRecords, all blocking: advance_log_start, then checkpoint_log_start.
        On the event loop use LogManager.delete_records_before, which syncs in a thread."""
        start = self.advance_log_start(offset)
        self.checkpoint_log_start()
        return start

    def advance_log_start(self, offset: int) -> int:
        """DeleteRecords' bookkeeping (cheap, on the loop): move the log start to offset
        (-1 = high watermark) and drop the segments wholly below it. Returns the new log start.
        Not durable until checkpoint_log_start() has run: answer only after it."""
        offset = self.delete_records_target(offset)
        if offset > self._log_start_offset:
            self._log_start_offset = offset
            self._delete_oldest_while(lambda seg, nxt: nxt is not None and nxt.base_offset <= offset)
        return self._log_start_offset

    def checkpoint_log_start(self) -> None:
        """Write the current log start to its checkpoint with fsync (blocking: a thread)."""
        with self._checkpoint_lock:
            _write_checkpoint(self.dir / LOG_START_CHECKPOINT, self._log_start_offset, durable=True)

    def apply_retention(
        self, now_ms: int, may_delete: Callable[[LogSegment], bool] | None = None
    ) -> list[int]:
        """Kafka's retention: delete the oldest segments breaching retention.ms, then
        retention.bytes, then those wholly below the log start. The active segment goes only
        after a roll, so a partition always keeps one. may_delete lets the tier manager hold
        back segments not yet in the bucket. Returns the deleted base offsets. The files are
        renamed now and removed by purge_deleted() once file.delete.delay.ms is over."""
        config = self._config
        deleted: list[int] = []
        if config.deletes and config.retention_ms >= 0:
            limit = config.retention_ms
            deleted += self._delete_oldest_while(
                lambda seg, nxt: now_ms - seg.max_timestamp > limit, may_delete
            )
        if config.deletes and config.retention_bytes >= 0:
            excess = self.size_bytes - config.retention_bytes

            def over_size(seg: LogSegment, nxt: LogSegment | None) -> bool:
                nonlocal excess
                if excess - seg.size >= 0:
                    excess -= seg.size
                    return True
                return False

            deleted += self._delete_oldest_while(over_size, may_delete)
        start = self._log_start_offset
        deleted += self._delete_oldest_while(
            lambda seg, nxt: nxt is not None and nxt.base_offset <= start, may_delete
        )
        return deleted

    def _delete_oldest_while(
        self,
        predicate: Callable[[LogSegment, LogSegment | None], bool],
        may_delete: Callable[[LogSegment], bool] | None = None,
    ) -> list[int]:
        segments = self._segments
        count = 0
        for i, seg in enumerate(segments):
            nxt = segments[i + 1] if i + 1 < len(segments) else None
            if nxt is None and seg.size == 0:
                break
            if may_delete is not None and not may_delete(seg):
                break
            if not predicate(seg, nxt):
                break
            count += 1
        if count == 0:
            return []
        if count == len(segments):
            self.roll()  # keep an (empty) active segment at the log end
        victims = self._segments[:count]
        del self._segments[:count]
        del self._bases[:count]
        deadline = time.monotonic() + self._config.file_delete_delay_ms / 1000
        for seg in victims:
            seg.rename_for_delete()
            self._graveyard.append((deadline, seg))
        self._log_start_offset = max(self._log_start_offset, self._segments[0].base_offset)
        self._producers.delete_snapshots_below(self._segments[0].base_offset)
        return [s.base_offset for s in victims]

    def take_expired_deleted(self, force: bool = False) -> list[LogSegment]:
        """Deleted segments whose file.delete.delay.ms is over, handed to the caller to
        close and unlink (in a thread: unlinking a large file can take a while)."""
        now = time.monotonic()
        expired = [seg for deadline, seg in self._graveyard if force or deadline <= now]
        if expired:
            self._graveyard = [(d, s) for d, s in self._graveyard if not (force or d <= now)]
        return expired

    def purge_deleted(self, force: bool = False) -> int:
        """Close and unlink deleted segments whose delay is over; returns how many."""
        expired = self.take_expired_deleted(force)
        for seg in expired:
            seg.delete()
        return len(expired)

    # --- durability ------------------------------------------------------------------------

    def flush(self, upto_offset: int | None = None, *, full: bool = False) -> None:
        """Make everything appended before the call durable (blocking: run in a thread),
        whatever upto_offset. Sealed segments get a full fsync (log and indexes) so the recovery
        point can pass them; the active one only an fdatasync of its log unless `full`.

        The log end is read before any sync starts, and segments report dirty until a sync that
        started after their last write has returned, so flushed_offset never runs ahead of the
        syncs (appends land on the loop while this runs in a thread)."""
        end = self._log_end_offset
        segments = list(self._segments)
        for i, seg in enumerate(segments):
            if i == len(segments) - 1 and not full:
                if seg.data_dirty:
                    seg.flush(data_only=True)
            elif seg.dirty:
                seg.flush()
        self._producers.fsync_pending()
        self._sync_dir()
        if end > self._flushed_offset:
            self._flushed_offset = end
        # Every sealed segment is on disk: an unclean restart need only scan from the active one.
        point = segments[-1].base_offset
        if point != self._recovery_point and not any(s.dirty for s in segments[:-1]):
            _write_checkpoint(self.dir / RECOVERY_POINT_CHECKPOINT, point, durable=False)
            self._recovery_point = point

    def _sync_dir(self) -> None:
        if not self._dir_sync.dirty:
            return
        mark = self._dir_sync.capture()
        if self._parent_unsynced:
            fsync_dir(self.dir.parent)
            self._parent_unsynced = False
        fsync_dir(self.dir)
        self._dir_sync.synced_to(mark)

    # --- lifecycle -------------------------------------------------------------------------

    def close(self, *, snapshot: bool = True) -> None:
        """Leave a producer snapshot at the log end (a clean restart then replays nothing) and
        close every file. Blocking: run in a thread."""
        if snapshot and self._segments and self._segments[-1].fileno >= 0:
            try:
                self._producers.take_snapshot(self._log_end_offset, sync=True)
            except OSError:
                pass  # the next open rebuilds the state from the log
        for seg in self._segments:
            seg.close()
        self.purge_deleted(force=True)

    def delete(self) -> None:
        self.close(snapshot=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __repr__(self) -> str:
        return (
            f"UnifiedLog({self.topic}-{self.partition}, start={self._log_start_offset}, "
            f"end={self._log_end_offset}, segments={len(self._segments)})"
        )


def _read_checkpoint(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    try:
        return int(text)
    except ValueError:
        return None  # a torn checkpoint counts as absent


def _write_checkpoint(path: Path, value: int, *, durable: bool) -> None:
    write_atomically(path, f"{value}\n".encode(), durable=durable)


def _remove_orphan_indexes(directory: Path, bases: set[int]) -> None:
    for p in directory.iterdir():
        stem, dot, suffix = p.name.partition(".")
        if suffix in ("index", "timeindex", "txnindex") and stem.isdigit() and int(stem) not in bases:
            p.unlink(missing_ok=True)


def _load_producer_state(
    directory: Path, name: str, segments: list[LogSegment], recover: bool, recovery_point: int | None
) -> ProducerStateManager:
    """Load the latest usable snapshot and replay batch headers from there to the log end.

    After a clean shutdown any snapshot up to the log end will do; after an unclean one only
    those at or below the recovery point (later ones may describe data recovery cut off).
    Segments whose transaction index is stale (missing, torn, or the segment was recovered) are
    replayed whole and get their index rebuilt on the way.
    """
    state = ProducerStateManager(directory, name)
    log_end = segments[-1].next_offset
    state.delete_snapshots_above(log_end)
    limit = log_end
    if recover:
        limit = min(limit, recovery_point or 0)
    stale = [s for s in segments if s.txn_index_stale]
    if stale:
        limit = min(limit, stale[0].base_offset)
    start = state.load_latest_snapshot(limit)
    if start is None:
        start = segments[0].base_offset
    for seg in stale:
        assert seg.txn_index is not None
        seg.txn_index.reset()
    for seg in segments:
        if seg.next_offset <= start or seg.is_empty:
            continue
        rebuild = seg.txn_index_stale
        for h in seg.iter_headers(start if start > seg.base_offset else None):
            marker = None
            if h.is_control and h.producer_id >= 0:
                try:
                    kind, coordinator_epoch = control_record_type(seg.read_bytes(h.position, h.size))
                except (InvalidRecordError, IndexError, EOFError):
                    continue
                marker = (kind == CONTROL_ABORT, coordinator_epoch)
            completed = state.replay(h, marker)
            if completed is not None and completed.aborted and rebuild:
                seg.append_aborted_txn(AbortedTxn(
                    completed.producer_id, completed.first_offset, completed.last_offset,
                    state.last_stable_offset_after(completed)))
        seg.txn_index_stale = False
    return state
