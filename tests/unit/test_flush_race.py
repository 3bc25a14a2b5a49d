"""Writes that land while an fsync of their file runs must stay dirty: what a sync covers is
fixed when it starts, never when it returns. The slow disk is a fake fsync/fdatasync that holds
its first call on an event until the test has written during it."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.unit.conftest import batch_of_size, make_batch
from tiering.log.config import LogConfig
from tiering.log.manager import CLEAN_SHUTDOWN_MARKER, LogManager, LogOfflineError
from tiering.log.partition import RECOVERY_POINT_CHECKPOINT, UnifiedLog
from tiering.log.segment import LogSegment
from tiering.records import assign_offsets, iter_batches, validate_batches

NOW = 1_700_000_000_000
WAIT = 10.0  # seconds: a bound on waits for the other thread, never a pause


class SlowSync:
    """Stands in for os.fsync or os.fdatasync: records each call (with what `observe` says at
    its start) and holds the first one until released."""

    def __init__(self, real: Callable[[int], None], observe: Callable[[], int] = lambda: 0) -> None:
        self.real = real
        self.observe = observe
        self.calls: list[int] = []
        self.seen: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, fd: int) -> None:
        self.calls.append(fd)
        self.seen.append(self.observe())
        if len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(WAIT)
        self.real(fd)


def in_thread(fn: Callable[[], object]) -> threading.Thread:
    t = threading.Thread(target=fn)
    t.start()
    return t


def append(seg: LogSegment, batch: bytes) -> None:
    buf = bytearray(batch)
    headers = validate_batches(buf, 1 << 30)
    assign_offsets(buf, headers, seg.next_offset, None)
    seg.append(bytes(buf), list(iter_batches(buf)))


@pytest.fixture
def seg(tmp_path: Path):
    s = LogSegment.open(tmp_path, 0, LogConfig(index_interval_bytes=1 << 20), create=True)
    yield s
    s.close()


def test_append_during_fdatasync_keeps_segment_dirty(seg: LogSegment, monkeypatch: pytest.MonkeyPatch) -> None:
    slow = SlowSync(os.fdatasync)
    monkeypatch.setattr(os, "fdatasync", slow)
    append(seg, make_batch(1))
    t = in_thread(lambda: seg.flush(data_only=True))
    assert slow.entered.wait(WAIT)
    append(seg, make_batch(1))  # lands while the sync runs
    slow.release.set()
    t.join(WAIT)
    assert seg.data_dirty and seg.dirty
    seg.flush(data_only=True)
    assert slow.calls == [seg.fileno, seg.fileno]
    assert not seg.data_dirty


def test_index_write_during_full_fsync_keeps_segment_dirty(seg: LogSegment, monkeypatch: pytest.MonkeyPatch) -> None:
    append(seg, make_batch(1, base_timestamp=5_000))
    seg.flush()
    slow = SlowSync(os.fsync)
    monkeypatch.setattr(os, "fsync", slow)
    append(seg, make_batch(1, base_timestamp=6_000))
    t = in_thread(seg.flush)
    assert slow.entered.wait(WAIT)
    seal_from = os.path.getsize(seg.time_index_path)
    seg.seal()  # the roll's final time index entry, written while the log's fsync runs
    assert os.path.getsize(seg.time_index_path) == seal_from + 12
    slow.release.set()
    t.join(WAIT)
    assert seg.dirty and not seg.data_dirty
    calls_before = len(slow.calls)
    seg.flush()
    assert len(slow.calls) == calls_before + 4  # log, both indexes, transaction index
    assert not seg.dirty


def open_log(path: Path, **config: Any) -> UnifiedLog:
    return UnifiedLog.open(path / "t-0", "t", 0, LogConfig(**config), False)


def test_flushed_offset_never_passes_a_started_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = open_log(tmp_path)
    log.flush()  # the new directory's entries, before the slow disk is in place
    # Each fdatasync records the log end when it starts: the most it can make durable.
    slow = SlowSync(os.fdatasync, lambda: log.log_end_offset)
    monkeypatch.setattr(os, "fdatasync", slow)
    log.append(make_batch(1), now_ms=NOW)
    t = in_thread(log.flush)
    assert slow.entered.wait(WAIT)
    log.append(make_batch(1), now_ms=NOW)  # offset 1, during the sync
    slow.release.set()
    t.join(WAIT)
    assert log.flushed_offset == 1
    log.flush()
    assert slow.seen == [1, 2]  # a second sync started after offset 1 was written
    assert log.flushed_offset == 2


def test_recovery_point_waits_for_a_sync_after_the_last_write(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    log = open_log(tmp_path, segment_bytes=300)
    log.append(batch_of_size(100), now_ms=NOW)
    log.flush()
    first = log.active_segment
    slow = SlowSync(os.fsync)
    monkeypatch.setattr(os, "fsync", slow)
    t = in_thread(lambda: log.flush(full=True))
    assert slow.entered.wait(WAIT)
    for _ in range(3):  # the third rolls: the first segment is sealed during the sync
        log.append(batch_of_size(100), now_ms=NOW)
    assert len(log.segments) == 2
    slow.release.set()
    t.join(WAIT)
    calls_before = len(slow.calls)
    log.flush()
    # The sealed segment was written after the full fsync started: synced again before the
    # recovery point may pass it.
    assert first.fileno in slow.calls[calls_before:]
    assert (log.dir / RECOVERY_POINT_CHECKPOINT).read_text() == "3\n"
    log.close()


def test_flush_syncs_directory_of_a_new_segment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = open_log(tmp_path, segment_bytes=300)
    log.flush()
    synced_dirs: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            synced_dirs.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    log.flush()
    assert synced_dirs == []  # nothing created since the last flush
    for _ in range(4):
        log.append(batch_of_size(100), now_ms=NOW)
    assert len(log.segments) == 2
    log.flush()
    # The producer snapshot's write syncs the directory too; the new segment's names need it
    # whether or not a snapshot was written.
    assert synced_dirs.count(str(log.dir)) == 2
    log.close()


async def test_group_commit_answers_only_after_a_sync_that_started_after_the_append(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mgr = LogManager(tmp_path, flush_policy="always")
    await mgr.start()
    lg = mgr.create("t", 0, LogConfig())
    await asyncio.to_thread(lg.flush)
    slow = SlowSync(os.fdatasync, lambda: lg.log_end_offset)
    monkeypatch.setattr(os, "fdatasync", slow)
    lg.append(make_batch(1), now_ms=NOW)
    first = asyncio.create_task(mgr.flush_for_ack(lg, 1))
    assert await asyncio.to_thread(slow.entered.wait, WAIT)
    lg.append(make_batch(1), now_ms=NOW)
    second = asyncio.create_task(mgr.flush_for_ack(lg, 2))
    slow.release.set()
    await first
    assert slow.seen == [1]
    await second
    assert slow.seen == [1, 2]
    assert lg.flushed_offset == 2
    monkeypatch.undo()
    await mgr.close()


async def test_failed_fsync_takes_the_log_offline_until_restart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a failed fsync a later one may succeed without the lost pages: nothing appended
    since may be acknowledged. The log refuses writes and acks until a restart recovers it."""
    mgr = LogManager(tmp_path, flush_policy="always")
    await mgr.start()
    lg = mgr.create("t", 0, LogConfig())
    other = mgr.create("t", 1, LogConfig())
    mgr.append(lg, make_batch(2), NOW)
    await mgr.flush_for_ack(lg, 2)

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    mgr.append(lg, make_batch(1), NOW)
    with pytest.raises(LogOfflineError):
        await mgr.flush_for_ack(lg, 3)
    monkeypatch.undo()  # the disk "works" again: a later fsync would succeed
    with pytest.raises(LogOfflineError):
        await mgr.flush_for_ack(lg, 3)
    with pytest.raises(LogOfflineError):
        mgr.append(lg, make_batch(1), NOW)
    assert lg.log_end_offset == 3 and lg.flushed_offset == 2
    # Other partitions carry on.
    mgr.append(other, make_batch(1), NOW)
    await mgr.flush_for_ack(other, 1)
    assert other.flushed_offset == 1
    await mgr.close()
    assert not (tmp_path / CLEAN_SHUTDOWN_MARKER).exists()  # the next start recovers

    again = LogManager(tmp_path, flush_policy="always")
    await again.start()
    assert not again.was_clean_shutdown
    reopened = again.get("t", 0)
    assert reopened is not None and reopened.log_end_offset == 3
    appended = again.append(reopened, make_batch(1), NOW)
    assert not isinstance(appended, asyncio.Task) and appended.base_offset == 3
    await again.flush_for_ack(reopened, 4)
    assert reopened.flushed_offset == 4
    await again.close()
