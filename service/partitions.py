"""The partition layer (Kafka's ReplicaManager): the one place that appends to partitions and
acknowledges the appends, reads them across the local log, the encrypted log and the remote
tier, knows their start and end offsets across both tiers, and holds the fetches waiting for
data. Kafka handlers and the HTTP API call it; they translate messages, it decides.

An append answers each partition with one `PartitionAppend`: Kafka's error code and message, or
the base offset, the append time and the log start.

A read answers each partition with one `PartitionRead`: an error code, the offsets a fetch
response carries, the aborted transactions (read_committed) and the bytes, which are a file
range to send as-is (sendfile), an encrypted range opened while it is sent, or bytes read from
the bucket.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from service.errors import ErrorCode, rejection_code
from tiering.log.manager import LogManager
from tiering.log.partition import AppendResult, OffsetOutOfRangeError, ReadSlice, UnifiedLog
from tiering.log.sealed_read import SealedRange
from tiering.log.sealing import SealError
from tiering.records import InvalidRecordError, leading_batches
from tiering.remote.store import StoreError
from tiering.remote.transform import TransformError
from tiering.tier import TieredTopic, TierManager

log = logging.getLogger("sediment.partitions")

# ListOffsets' special timestamps.
EARLIEST, LATEST, MAX_TIMESTAMP, EARLIEST_LOCAL = -2, -1, -3, -4


@dataclass
class FileRange:
    """Bytes of a segment file to send as-is (sendfile on plain TCP)."""

    fd: int  # a dup'ed descriptor owned by the response; closed after sending
    position: int
    size: int

    def close(self) -> None:
        os.close(self.fd)


# A remote read is a list of views of the opened chunks its batches lie in, spliced as they are.
Records = FileRange | SealedRange | bytes | bytearray | memoryview | list[memoryview]


@dataclass
class PartitionRead:
    """One partition of a read: what was asked, then what it answers."""

    topic: str
    partition: int
    offset: int
    max_bytes: int
    error: ErrorCode = ErrorCode.none
    high_watermark: int = -1
    last_stable_offset: int = -1
    log_start_offset: int = -1
    aborted: list[tuple[int, int]] | None = None  # (producer id, first offset); read_committed only
    records: Records | None = None

    def release(self) -> None:
        """Close what the records hold (a descriptor) when they will not be sent."""
        if isinstance(self.records, (FileRange, SealedRange)):
            self.records.close()
        self.records = None


@dataclass
class PartitionAppend:
    """One partition of an append: its batches, then its answer."""

    topic: str
    partition: int
    records: bytes | bytearray
    error: ErrorCode = ErrorCode.none
    message: str | None = None
    base_offset: int = -1
    log_append_time: int = -1
    log_start_offset: int = -1

    def fail(self, code: ErrorCode, message: str | None = None) -> None:
        self.error, self.message = code, message
        self.base_offset = self.log_append_time = self.log_start_offset = -1


class Partitions:
    def __init__(self, logs: LogManager, tier: Callable[[], TierManager | None],
                 tiered: Callable[[str], TieredTopic | None] = lambda name: None) -> None:
        self._logs = logs
        self._tier = tier
        self._tiered = tiered  # a topic's view for the tier manager, None when not tiered
        self._waiters: dict[tuple[str, int], set[asyncio.Future[None]]] = {}

    def log(self, topic: str, partition: int) -> UnifiedLog | None:
        return self._logs.get(topic, partition)

    def log_start_offset(self, lg: UnifiedLog) -> int:
        """The first offset across both tiers. Raises StoreError (RemoteViewUnknown) while the
        bucket has not answered since start and may hold earlier records."""
        tier = self._tier()
        return tier.log_start_offset(lg) if tier is not None else lg.log_start_offset

    # -- appends -----------------------------------------------------------------------------

    async def append(self, parts: list[PartitionAppend], acks: int, now_ms: int) -> None:
        """Append each part's batches, then, with acks=-1 (all), wait until they are durable
        (a group-commit fsync when log.flush.policy=always). Fills in each part's answer.

        Every partition is appended before the first await, so pipelined requests from one
        connection land in arrival order; on an encrypted partition a large request is sealed
        in a worker thread, its place in the log's order taken before the first await too. A
        write or fsync that fails (a full disk) answers KAFKA_STORAGE_ERROR for that partition,
        as Kafka does: the segment rolls a failed write back, so nothing is acknowledged that
        was not written."""
        written: list[tuple[PartitionAppend, UnifiedLog, int]] = []  # what acks=all waits for
        sealing: list[tuple[PartitionAppend, UnifiedLog, asyncio.Task[AppendResult]]] = []
        for p in parts:
            lg = self.log(p.topic, p.partition)
            if lg is None:
                p.fail(ErrorCode.unknown_topic_or_partition)
                continue
            if not p.records:
                p.fail(ErrorCode.invalid_record, "no record batches")
                continue
            try:
                result = self._logs.append(lg, p.records, now_ms)
            except (InvalidRecordError, OSError) as e:
                self._failed(p, lg, e)
                continue
            if isinstance(result, asyncio.Task):
                sealing.append((p, lg, result))
            else:
                written.append(self._appended(p, lg, result))
        for p, lg, task in sealing:
            (outcome,) = await asyncio.gather(task, return_exceptions=True)
            if isinstance(outcome, (InvalidRecordError, OSError)):
                self._failed(p, lg, outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                written.append(self._appended(p, lg, outcome))
        if acks == -1 and written:
            results = await asyncio.gather(*(self._logs.flush_for_ack(lg, last + 1) for _, lg, last in written),
                                           return_exceptions=True)
            for (p, lg, _), flushed in zip(written, results):
                if isinstance(flushed, OSError):
                    log.error("fsync of %s failed: %s", lg, flushed)
                    p.fail(ErrorCode.kafka_storage_error, f"log write failed: {flushed.strerror or flushed}")
                elif isinstance(flushed, BaseException):
                    raise flushed

    def _appended(self, p: PartitionAppend, lg: UnifiedLog, result: AppendResult
                  ) -> tuple[PartitionAppend, UnifiedLog, int]:
        if not result.duplicate:  # a retried batch already in the log: nothing new to fetch
            self.wake(p.topic, p.partition)
        p.base_offset, p.log_append_time = result.base_offset, result.log_append_time_ms
        p.log_start_offset = result.log_start_offset
        return p, lg, result.last_offset  # a duplicate still waits for its original's fsync

    @staticmethod
    def _failed(p: PartitionAppend, lg: UnifiedLog, e: InvalidRecordError | OSError) -> None:
        if isinstance(e, InvalidRecordError):
            p.fail(rejection_code(e), str(e))
        else:
            log.error("append to %s failed: %s", lg, e)
            p.fail(ErrorCode.kafka_storage_error, f"log write failed: {e.strerror or e}")

    # -- reads -------------------------------------------------------------------------------

    async def fetch(self, parts: list[PartitionRead], max_bytes: int, min_bytes: int, max_wait_s: float,
                    committed: bool) -> None:
        """Kafka's DelayedFetch: read until min_bytes are there, a partition errs, or max_wait_s
        passes, waiting for appends in between. Fills in each part."""
        deadline = time.monotonic() + max_wait_s
        while True:
            total, any_error = await self.read(parts, max_bytes, committed)
            remaining = deadline - time.monotonic()
            if total >= min_bytes or any_error or remaining <= 0:
                return
            for p in parts:
                p.release()
            await self.wait_for_data(((p.topic, p.partition) for p in parts), remaining)

    async def read(self, parts: list[PartitionRead], max_bytes: int,
                   committed: bool = False) -> tuple[int, bool]:
        """One pass over the parts, in order, within max_bytes (the first partition with data
        may pass it by one batch, so a consumer never stalls on a large batch). With committed
        (read_committed), reads stop at the last stable offset and each part lists the aborted
        transactions overlapping what it returns. Partitions whose offset lies below the local
        log start are read from the bucket afterwards, all at once. Returns the bytes read and
        whether any part erred."""
        total, any_error = 0, False
        remote: list[PartitionRead] = []
        sealed: list[tuple[PartitionRead, UnifiedLog, ReadSlice]] = []
        for p in parts:
            lg = self.log(p.topic, p.partition)
            if lg is None:
                p.error = ErrorCode.unknown_topic_or_partition
                any_error = True
                continue
            p.high_watermark = lg.high_watermark
            try:
                p.log_start_offset, remote_known = self.log_start_offset(lg), True
            except StoreError:  # the bucket has not answered since start: it may hold earlier data
                p.log_start_offset, remote_known = lg.log_start_offset, False
            p.last_stable_offset = lg.last_stable_offset
            p.aborted = [] if committed else None
            budget = min(p.max_bytes, max_bytes - total)
            if budget <= 0 and total > 0:
                continue
            try:
                sl = lg.read(p.offset, max(budget, 0), min_one=(total == 0),
                             upto_offset=p.last_stable_offset if committed else None)
            except OffsetOutOfRangeError:
                if p.log_start_offset <= p.offset < lg.log_start_offset:
                    remote.append(p)
                    continue
                # The bucket's view is unknown: a retriable error, as out of range would reset
                # the consumer past data the bucket may hold.
                unknown = not remote_known and p.offset < lg.log_start_offset
                p.error = ErrorCode.kafka_storage_error if unknown else ErrorCode.offset_out_of_range
                any_error = True
                continue
            if sl is None or sl.size == 0:
                continue
            if committed:
                p.aborted = lg.aborted_transactions(p.offset, lg.slice_end_offset(sl))
            if lg.cipher is not None:
                sealed.append((p, lg, sl))  # opened below, all at once; stored size as the budget
            else:
                p.records = FileRange(os.dup(sl.fileno), sl.position, sl.size)
            total += sl.size
        if sealed:
            total += await self._open_sealed(sealed)
            any_error = any_error or any(p.error for p, _, _ in sealed)
        if remote:
            total += await self._read_remote(remote, max_bytes - total, first=total == 0, committed=committed)
            any_error = any_error or any(p.error for p in remote)
        return total, any_error

    async def _open_sealed(self, sealed: list[tuple[PartitionRead, UnifiedLog, ReadSlice]]) -> int:
        """Encrypted at rest: no sendfile. Only the ranges' batch headers are read here
        (concurrently, in worker threads when large); the batches are opened while the answer
        is written, a piece at a time, so an answer waiting in the queue holds no opened range.
        Returns the change to the byte total (opened batches are 32 bytes per batch shorter)."""
        results = await self._open_ranges(sealed)
        unexpected = next((r for r in results if isinstance(r, BaseException)
                           and not isinstance(r, (SealError, OSError))), None)
        delta = 0
        for (p, _, sl), opened in zip(sealed, results):
            delta -= sl.size
            if isinstance(opened, SealedRange):
                if unexpected is not None:
                    opened.close()
                    continue
                p.records = opened
                delta += opened.size
            elif unexpected is None:
                # Headers that do not describe whole batches: caught before anything is sent.
                log.error("%s-%d at %d: %s", p.topic, p.partition, p.offset, opened)
                p.error = ErrorCode.kafka_storage_error
        if unexpected is not None:
            raise unexpected
        return delta

    async def _open_ranges(self, sealed: list[tuple[PartitionRead, UnifiedLog, ReadSlice]]
                           ) -> list[SealedRange | BaseException]:
        """open_range of each, concurrently; if the read is cancelled meanwhile, the ranges
        already made are closed (each holds a descriptor)."""
        tasks = [asyncio.ensure_future(self._logs.open_range(lg, sl)) for _, lg, sl in sealed]
        try:
            await asyncio.wait(tasks)
        except asyncio.CancelledError:
            for t in tasks:
                t.cancel()
                t.add_done_callback(_close_made)
            raise
        return [t.exception() or t.result() for t in tasks]

    async def _read_remote(self, parts: list[PartitionRead], budget: int, *, first: bool, committed: bool) -> int:
        """Remote partitions of one read, concurrently within the bytes left (each gets its
        share in request order, as a sequential read would)."""
        tier = self._tier()
        assert tier is not None
        shares = []
        for p in parts:
            share = min(p.max_bytes, budget)
            shares.append(share)
            budget -= max(share, 0)
        results = await asyncio.gather(*(
            tier.read_pieces(p.topic, p.partition, p.offset, max(share, 0), min_one=first and i == 0)
            for i, (p, share) in enumerate(zip(parts, shares))), return_exceptions=True)
        total = 0
        for p, data in zip(parts, results):
            if isinstance(data, BaseException):
                if isinstance(data, asyncio.CancelledError):
                    raise data
                # The store failed or passed remote.fetch.max.wait.ms, or the data cannot be
                # decrypted: an error for this partition only, never bytes that are not the
                # record's and never an empty answer (a replay would take it for its end).
                # Kafka's DelayedRemoteFetch answers a failed remote read with its exception's
                # code and an expired one with no records; KAFKA_STORAGE_ERROR (56) is the code
                # that librdkafka, aiokafka and kafka-python all retry at the same offset (a
                # metadata refresh, then the fetch again), where OFFSET_OUT_OF_RANGE would reset
                # the position and UNKNOWN_SERVER_ERROR would reach the application.
                log.warning("remote read of %s-%d at %d failed: %s", p.topic, p.partition, p.offset, data)
                p.error = ErrorCode.kafka_storage_error
                continue
            if data is None:  # deleted from the bucket meanwhile
                p.error = ErrorCode.offset_out_of_range
                continue
            if not data:
                continue
            if committed:
                lg = self.log(p.topic, p.partition)
                if lg is not None:
                    data, next_offset = leading_batches(data, below=p.last_stable_offset)
                    if next_offset is not None:
                        p.aborted = await tier.aborted_transactions(lg, p.offset, next_offset)
            p.records = data  # spliced into the response, not copied through the encoder
            total += sum(len(piece) for piece in data)
        return total

    # -- offsets -----------------------------------------------------------------------------

    async def list_offset(self, topic: str, partition: int, timestamp: int,
                          committed: bool = False) -> tuple[ErrorCode, int, int]:
        """Kafka's ListOffsets for one partition: (error, offset, timestamp) for EARLIEST (-2,
        across both tiers), EARLIEST_LOCAL (-4), LATEST (-1, the LSO with committed),
        MAX_TIMESTAMP (-3) or the first record at or after a timestamp. When the bucket may
        hold the answer but cannot give it now, a retriable KAFKA_STORAGE_ERROR, never the
        local answer (which would send a consumer past the remote records)."""
        lg = self.log(topic, partition)
        if lg is None:
            return ErrorCode.unknown_topic_or_partition, -1, -1
        tier = self._tier()
        found: tuple[int, int] | None
        if timestamp == EARLIEST:
            try:
                found = (self.log_start_offset(lg), -1)
            except StoreError as e:
                log.warning("ListOffsets earliest of %s-%d: %s", topic, partition, e)
                return ErrorCode.kafka_storage_error, -1, -1
        elif timestamp == EARLIEST_LOCAL:
            found = (lg.log_start_offset, -1)
        elif timestamp == LATEST:
            found = (lg.last_stable_offset if committed else lg.high_watermark, -1)
        elif timestamp == MAX_TIMESTAMP:
            found = lg.max_timestamp()
            remote = tier.max_timestamp(topic, partition) if tier is not None else None
            if remote is not None and (found is None or found[0] < 0 or remote[1] > found[1]):
                found = remote
        elif timestamp < 0:
            return ErrorCode.unsupported_version, -1, -1
        else:  # the bucket first: remote segments below the local start hold the earlier records
            found = None
            if tier is not None and tier.remote_range(topic, partition) is not None:
                try:
                    found = await tier.offset_for_timestamp(topic, partition, timestamp, below=lg.log_start_offset)
                except (StoreError, TransformError, ValueError) as e:
                    log.warning("ListOffsets of %s-%d at timestamp %d: remote lookup failed: %s",
                                topic, partition, timestamp, e)
                    return ErrorCode.kafka_storage_error, -1, -1
            if found is None:
                found = lg.offset_for_timestamp(timestamp)
        offset, ts = found if found is not None else (-1, -1)
        return ErrorCode.none, offset, ts

    async def delete_records(self, topic: str, partition: int, offset: int) -> tuple[ErrorCode, int]:
        """Kafka's DeleteRecords on one partition (offset -1: the high watermark): (error, new
        low watermark). On a tiered topic the remote start moves too (saved in the manifest
        before the answer), so no tier serves older data. A bucket that cannot be updated or
        read answers KAFKA_STORAGE_ERROR, and nothing is answered as done."""
        lg = self.log(topic, partition)
        if lg is None:
            return ErrorCode.unknown_topic_or_partition, -1
        try:
            target = lg.delete_records_target(offset)
            tier, tiered = self._tier(), self._tiered(topic)
            if tier is not None and tiered is not None:
                return ErrorCode.none, await tier.delete_records(tiered, partition, lg, target)
            return ErrorCode.none, await self._logs.delete_records_before(lg, target)
        except OffsetOutOfRangeError:
            return ErrorCode.offset_out_of_range, -1
        except StoreError as e:
            log.warning("DeleteRecords of %s-%d: %s", topic, partition, e)
            return ErrorCode.kafka_storage_error, -1

    # -- transaction markers -----------------------------------------------------------------

    async def write_markers(self, partitions: Iterable[tuple[str, int]], producer_id: int, producer_epoch: int,
                            commit: bool, now_ms: int) -> None:
        """A transaction's commit or abort marker on each partition, made durable before this
        returns (the coordinator completes the transaction only then). A deleted partition has
        nothing to mark; one that saw a newer epoch of the producer is already fenced."""
        written: list[tuple[str, int, UnifiedLog]] = []
        for topic, partition in partitions:
            lg = self.log(topic, partition)
            if lg is None:
                continue
            try:
                lg.append_control(producer_id, producer_epoch, commit, 0, now_ms)
            except InvalidRecordError as e:
                log.warning("no %s marker for producer %d at %s-%d: %s", "commit" if commit else "abort",
                            producer_id, topic, partition, e)
                continue
            written.append((topic, partition, lg))
        await asyncio.gather(*(self._logs.flush(lg) for _, _, lg in written))
        for topic, partition, _ in written:
            self.wake(topic, partition)

    # -- waiting for data ----------------------------------------------------------------------

    def wake(self, topic: str, partition: int) -> None:
        """New data (or a new end) on a partition: fetches waiting on it read again."""
        for fut in self._waiters.pop((topic, partition), ()):
            if not fut.done():
                fut.set_result(None)

    def wake_all(self, topic: str, partitions: int) -> None:
        for p in range(partitions):
            self.wake(topic, p)

    async def wait_for_data(self, keys: Iterable[tuple[str, int]], timeout_s: float) -> None:
        """Until one of the partitions gets data or timeout_s passes."""
        if timeout_s <= 0:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        keys = list(keys)
        for key in keys:
            self._waiters.setdefault(key, set()).add(fut)
        try:
            await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            pass
        finally:
            for key in keys:
                waiting = self._waiters.get(key)
                if waiting is not None:
                    waiting.discard(fut)
                    if not waiting:
                        del self._waiters[key]


def _close_made(task: asyncio.Future[SealedRange]) -> None:
    if not task.cancelled() and task.exception() is None:
        task.result().close()
