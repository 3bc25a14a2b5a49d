"""LogManager: every partition log under one data dir, plus the flush, retention and roll
schedulers. Modelled on Kafka's LogManager.

Durability: `flush()` is a group commit. While an fsync for a log runs (in a thread), new
callers wait for it and then share a single follow-up fsync, so N concurrent acks=all appends
cost at most two fsyncs rather than N. A failed fsync takes that log offline for writes until
the broker restarts (see LogOfflineError).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

from tiering.log.config import LogConfig
from tiering.log.data_keys import PartitionKeys
from tiering.log.files import fsync_dir
from tiering.log.partition import AppendResult, ReadSlice, UnifiedLog
from tiering.log.producer_state import DEFAULT_PRODUCER_ID_EXPIRATION_MS
from tiering.log.sealed_read import SealedRange, plan_pieces
from tiering.log.sealing import BatchCipher
from tiering.log.segment import LogSegment

log = logging.getLogger(__name__)


class LogOfflineError(OSError):
    """The log's last fsync failed. After a failed fsync the kernel may have dropped the dirty
    pages and a later fsync can succeed without them (Linux marks them clean), so no append
    after it may be acknowledged: the log takes no writes until a restart, whose recovery
    rescans what really is on disk. Kafka takes the whole log dir offline for this; here only
    the partition that failed."""

    def __init__(self, lg: UnifiedLog, cause: OSError) -> None:
        super().__init__(errno.EIO, f"{lg.topic}-{lg.partition} is offline after a failed fsync "
                                    f"({cause.strerror or cause}); restart the broker to recover it")

CLEAN_SHUTDOWN_MARKER = ".clean-shutdown"
DELETE_DIR_SUFFIX = "-delete"

FlushPolicy = Literal["always", "interval"]

# Below this, sealing a produce request or opening a fetch range costs less than a hop to a
# worker thread (AES-GCM runs at GB/s), so it stays on the loop.
CRYPTO_INLINE_BYTES = 64 * 1024


def parse_log_dir_name(name: str) -> tuple[str, int] | None:
    """`<topic>-<partition>`; topics may themselves contain '-', so split at the last one."""
    topic, sep, partition = name.rpartition("-")
    if not sep or not topic or not partition.isdigit():
        return None
    return topic, int(partition)


def log_dir_name(topic: str, partition: int) -> str:
    return f"{topic}-{partition}"


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _flush_and_close(logs: list[UnifiedLog]) -> None:
    # Also catches index-only writes (a roll's final time entry) that flush_all skips.
    for lg in logs:
        lg.flush(full=True)
        lg.close()




class LogManager:
    def __init__(
        self,
        data_dir: Path,
        *,
        flush_policy: FlushPolicy = "always",
        flush_interval_ms: int = 1000,
        retention_check_interval_ms: int = 300_000,
        roll_check_interval_ms: int = 10_000,
        topic_config: Callable[[str], LogConfig] | None = None,
        retention_guard: Callable[[UnifiedLog], Callable[[LogSegment], bool] | None] | None = None,
        producer_id_expiration_ms: int = DEFAULT_PRODUCER_ID_EXPIRATION_MS,
        producer_id_expiration_check_interval_ms: int = 600_000,
    ) -> None:
        if flush_policy not in ("always", "interval"):
            raise ValueError(f"flush_policy must be 'always' or 'interval', not {flush_policy!r}")
        self.data_dir = Path(data_dir)
        self.flush_policy: FlushPolicy = flush_policy
        self.flush_interval_ms = flush_interval_ms
        self.retention_check_interval_ms = retention_check_interval_ms
        self.roll_check_interval_ms = roll_check_interval_ms
        # Kafka's producer.id.expiration.ms and producer.id.expiration.check.interval.ms.
        self.producer_id_expiration_ms = producer_id_expiration_ms
        self.producer_id_expiration_check_interval_ms = producer_id_expiration_check_interval_ms
        # Config for logs found on disk at start-up (topic configs live in the metadata store).
        self._topic_config = topic_config or (lambda topic: LogConfig())
        # Which segments retention may delete (the tier manager holds back those not yet remote).
        self._retention_guard = retention_guard or (lambda lg: None)
        self._logs: dict[tuple[str, int], UnifiedLog] = {}
        self._flushing: dict[UnifiedLog, asyncio.Task[None]] = {}
        self._offline: dict[UnifiedLog, LogOfflineError] = {}  # a failed fsync; until restart
        self._background: list[asyncio.Task[None]] = []
        self._pending_deletes: set[asyncio.Task[None]] = set()
        # Encryption at rest (None: no key provider, nothing is sealed); set before start().
        self.keys: PartitionKeys | None = None
        # Per encrypted log, the last append still being sealed: appends complete in order.
        self._append_tails: dict[UnifiedLog, asyncio.Future[None]] = {}
        self._started = False
        self.was_clean_shutdown = False

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open every partition log under the data dir (recovering after an unclean shutdown)
        and start the background schedulers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        marker = self.data_dir / CLEAN_SHUTDOWN_MARKER
        clean = marker.exists()
        self.was_clean_shutdown = clean
        found: list[tuple[Path, str, int]] = []
        leftovers: list[Path] = []
        for path in sorted(self.data_dir.iterdir()):
            if not path.is_dir():
                continue
            if path.name.endswith(DELETE_DIR_SUFFIX):
                leftovers.append(path)  # a topic deletion that did not finish
                continue
            parsed = parse_log_dir_name(path.name)
            if parsed is not None:
                found.append((path, *parsed))
        for path in leftovers:
            await asyncio.to_thread(shutil.rmtree, path, True)
        ciphers = [await self._cipher_for(path) for path, _, _ in found]
        results = await asyncio.gather(
            *(
                asyncio.to_thread(UnifiedLog.open, path, topic, partition, self._topic_config(topic), not clean,
                                  cipher, self._sealing)
                for (path, topic, partition), cipher in zip(found, ciphers)
            ),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            for r in results:
                if isinstance(r, UnifiedLog):
                    r.close()
            raise errors[0]
        for opened in results:
            assert isinstance(opened, UnifiedLog)
            self._logs[(opened.topic, opened.partition)] = opened
            if opened.flushed_offset < opened.log_end_offset:
                log.info("recovered %s", opened)
        if clean:
            # From here on a crash is unclean again; make the removal itself durable.
            marker.unlink()
            await asyncio.to_thread(fsync_dir, self.data_dir)
        self._started = True
        self._background = [
            asyncio.create_task(self._every(self.retention_check_interval_ms, self.run_retention)),
            asyncio.create_task(self._every(self.roll_check_interval_ms, self.run_rolls)),
            asyncio.create_task(self._every(self.producer_id_expiration_check_interval_ms,
                                            self.run_producer_expiration)),
        ]
        if self.flush_policy == "interval":
            self._background.append(asyncio.create_task(self._every(self.flush_interval_ms, self.flush_all)))

    async def close(self) -> None:
        """Stop the schedulers, flush and close every log, and leave the clean-shutdown marker."""
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background = []
        # Sealed appends still in a worker thread finish before their logs close.
        tails = list(self._append_tails.values())
        if tails:
            await asyncio.gather(*tails, return_exceptions=True)
        await self.flush_all()
        for task in list(self._pending_deletes):
            task.cancel()
        await asyncio.gather(*self._pending_deletes, return_exceptions=True)
        logs = list(self._logs.values())
        self._logs.clear()
        offline = [lg for lg in logs if lg in self._offline]
        await asyncio.to_thread(_flush_and_close, [lg for lg in logs if lg not in self._offline])
        for lg in offline:  # no snapshot and no clean marker: the next start recovers it
            await asyncio.to_thread(lg.close, snapshot=False)
        if self._started and not offline:
            await asyncio.to_thread(self._write_marker)
        self._started = False

    def _write_marker(self) -> None:
        fd = os.open(self.data_dir / CLEAN_SHUTDOWN_MARKER, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.data_dir)

    # --- partitions --------------------------------------------------------------------------

    def get(self, topic: str, partition: int) -> UnifiedLog | None:
        return self._logs.get((topic, partition))

    def create(self, topic: str, partition: int, config: LogConfig,
               cipher: BatchCipher | None = None) -> UnifiedLog:
        """Create the partition's log, or return it (with config applied) if it exists.
        Encrypted partitions are created through open_log, which brings the data key."""
        existing = self._logs.get((topic, partition))
        if existing is not None:
            existing.update_config(config)
            return existing
        path = self.data_dir / log_dir_name(topic, partition)
        created = UnifiedLog.open(path, topic, partition, config, recover=False,
                                  cipher=cipher, seal_appends=self._sealing)
        self._logs[(topic, partition)] = created
        return created

    async def open_log(self, topic: str, partition: int, config: LogConfig) -> UnifiedLog:
        """create(), with the partition's data key made or unwrapped first when encryption at
        rest is on (a KMS unwrap is a network call, hence async), and the directory and files
        made in a thread (a topic of many partitions would otherwise stall the loop)."""
        existing = self._logs.get((topic, partition))
        if existing is not None:
            return self.create(topic, partition, config)
        path = self.data_dir / log_dir_name(topic, partition)
        cipher = await self._cipher_for(path)
        opened = await asyncio.to_thread(UnifiedLog.open, path, topic, partition, config, False,
                                         cipher, self._sealing)
        raced = self._logs.get((topic, partition))
        if raced is not None:  # opened concurrently by another caller: keep the first
            await asyncio.to_thread(opened.close, snapshot=False)
            raced.update_config(config)
            return raced
        self._logs[(topic, partition)] = opened
        return opened

    @property
    def _sealing(self) -> bool:
        return self.keys is not None and self.keys.enabled

    async def _cipher_for(self, path: Path) -> BatchCipher | None:
        return None if self.keys is None else await self.keys.cipher_for(path)

    async def rewrap_keys(self) -> int:
        """Rewrap every partition data key not under the current KEK; returns how many."""
        if self.keys is None:
            return 0
        count = 0
        for lg in list(self._logs.values()):
            if lg.cipher is not None and await self.keys.rewrap(lg.dir):
                count += 1
        return count

    # --- encrypted appends and reads ----------------------------------------------------------

    def append(self, lg: UnifiedLog, records: bytes | bytearray,
               now_ms: int) -> AppendResult | asyncio.Task[AppendResult]:
        """Append one produce request's batches. Synchronous (done before the caller's first
        await, so pipelined requests land in arrival order) unless the log seals its batches
        and the request is large or an earlier one is still being sealed: then a task that
        seals in a worker thread and appends after every earlier append of this log."""
        if lg in self._offline:
            raise self._offline[lg]
        prev = self._append_tails.get(lg)
        if not lg.seal_appends or (prev is None and len(records) <= CRYPTO_INLINE_BYTES):
            return lg.append(records, now_ms=now_ms)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._append_tails[lg] = done
        return asyncio.create_task(self._append_in_turn(lg, records, now_ms, prev, done))

    async def _append_in_turn(self, lg: UnifiedLog, records: bytes | bytearray, now_ms: int,
                              prev: asyncio.Future[None] | None, done: asyncio.Future[None]) -> AppendResult:
        try:
            if len(records) > CRYPTO_INLINE_BYTES:
                prepared = await asyncio.to_thread(lg.prepare_append, records, now_ms=now_ms)
            else:
                prepared = lg.prepare_append(records, now_ms=now_ms)
            if prev is not None:
                await asyncio.shield(prev)
            return lg.append_prepared(prepared, now_ms=now_ms)
        finally:
            if prev is not None and not prev.done():
                # Cancelled (or failed) before our turn: keep the order for later appends.
                await asyncio.gather(asyncio.shield(prev), return_exceptions=True)
            done.set_result(None)
            if self._append_tails.get(lg) is done:
                del self._append_tails[lg]

    async def open_range(self, lg: UnifiedLog, read_slice: ReadSlice) -> SealedRange:
        """A read slice of an encrypted log as clients will see it, opened piece by piece only
        while it is written out. Only the batch headers are read now (in a thread when large):
        they give the opened size. Raises SealError (or OSError) when they do not describe
        whole batches."""
        assert lg.cipher is not None, f"{lg} is not encrypted"
        fd = os.dup(read_slice.fileno)  # the segment may be deleted before the answer is sent
        try:
            if read_slice.size > CRYPTO_INLINE_BYTES:
                pieces = await asyncio.to_thread(plan_pieces, fd, read_slice.position, read_slice.size)
            else:
                pieces = plan_pieces(fd, read_slice.position, read_slice.size)
        except BaseException:
            os.close(fd)
            raise
        return SealedRange(fd, pieces, lg.cipher, label=f"{lg.topic}-{lg.partition}",
                           inline_bytes=CRYPTO_INLINE_BYTES)

    def logs_for(self, topic: str) -> list[UnifiedLog]:
        return sorted((lg for (t, _), lg in self._logs.items() if t == topic), key=lambda lg: lg.partition)

    def all_logs(self) -> list[UnifiedLog]:
        return list(self._logs.values())

    def update_topic_config(self, topic: str, config: LogConfig) -> None:
        for lg in self.logs_for(topic):
            lg.update_config(config)

    async def delete_topic(self, topic: str) -> None:
        """Forget the topic's logs now; the renamed dirs are removed after file.delete.delay.ms
        so reads already handed out (sendfile) finish on open descriptors."""
        for lg in self.logs_for(topic):
            del self._logs[(lg.topic, lg.partition)]
            target = lg.dir.with_name(f"{lg.dir.name}.{uuid.uuid4().hex}{DELETE_DIR_SUFFIX}")
            os.rename(lg.dir, target)
            lg.dir = target
            delay = lg.config.file_delete_delay_ms / 1000
            task = asyncio.create_task(self._delete_later(lg, delay))
            self._pending_deletes.add(task)
            task.add_done_callback(self._pending_deletes.discard)

    async def _delete_later(self, lg: UnifiedLog, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
        finally:
            await self._settle_flush(lg)
            await asyncio.to_thread(lg.delete)

    async def _settle_flush(self, lg: UnifiedLog) -> None:
        task = self._flushing.get(lg)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def delete_records_before(self, lg: UnifiedLog, offset: int) -> int:
        """DeleteRecords on one log: the start moves at once (reads stop at it), and the
        checkpoint's fsync runs in a thread; returns once the new start is durable."""
        start = lg.advance_log_start(offset)
        await asyncio.to_thread(lg.checkpoint_log_start)
        return start

    # --- durability --------------------------------------------------------------------------

    async def flush(self, lg: UnifiedLog, upto_offset: int | None = None) -> None:
        """Make every offset below upto_offset (default: the log end) durable. Group commit:
        joins a running fsync, and callers that arrive meanwhile share the next one."""
        target = lg.log_end_offset if upto_offset is None else min(upto_offset, lg.log_end_offset)
        while lg.flushed_offset < target:
            if lg in self._offline:
                raise self._offline[lg]
            task = self._flushing.get(lg)
            if task is None:
                task = asyncio.create_task(self._run_flush(lg))
                self._flushing[lg] = task
            await asyncio.shield(task)

    async def _run_flush(self, lg: UnifiedLog) -> None:
        try:
            await asyncio.to_thread(lg.flush)
        except OSError as e:
            if lg not in self._offline:
                log.error("fsync of %s failed: %s; it takes no writes until the broker restarts", lg, e)
                self._offline[lg] = LogOfflineError(lg, e)
            raise self._offline[lg] from e
        finally:
            self._flushing.pop(lg, None)

    async def flush_for_ack(self, lg: UnifiedLog, upto_offset: int) -> None:
        """What an acks=all produce waits for: an fsync under the "always" policy; nothing
        under "interval" (the periodic flush bounds the loss window instead)."""
        if self.flush_policy == "always":
            await self.flush(lg, upto_offset)

    async def flush_all(self) -> None:
        pending = [lg for lg in self._logs.values()
                   if lg.flushed_offset < lg.log_end_offset and lg not in self._offline]
        results = await asyncio.gather(*(self.flush(lg) for lg in pending), return_exceptions=True)
        for lg, result in zip(pending, results):
            if isinstance(result, BaseException):
                log.error("flush of %s failed: %s", lg, result)

    # --- schedulers --------------------------------------------------------------------------

    async def run_retention(self) -> None:
        now = _wall_ms()
        doomed: list[LogSegment] = []
        for lg in list(self._logs.values()):
            deleted = lg.apply_retention(now, self._retention_guard(lg))
            if deleted:
                log.info("retention deleted segments %s of %s", deleted, lg)
            doomed += lg.take_expired_deleted()
        if doomed:
            def delete_all() -> None:
                for seg in doomed:
                    seg.delete()

            await asyncio.to_thread(delete_all)

    async def run_producer_expiration(self, now_ms: int | None = None) -> None:
        """Forget idempotent producers idle for producer.id.expiration.ms (and without an open
        transaction): their batches may be long gone through retention or DeleteRecords."""
        now = _wall_ms() if now_ms is None else now_ms
        for lg in list(self._logs.values()):
            expired = lg.remove_expired_producers(now, self.producer_id_expiration_ms)
            if expired:
                log.info("expired %d producer ids of %s", len(expired), lg)

    async def run_rolls(self) -> None:
        now = _wall_ms()
        for lg in list(self._logs.values()):
            lg.maybe_roll(now)

    async def _every(self, interval_ms: int, job: Callable[[], Awaitable[object]]) -> None:
        while True:
            await asyncio.sleep(interval_ms / 1000)
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background log job %s failed", getattr(job, "__name__", job))
