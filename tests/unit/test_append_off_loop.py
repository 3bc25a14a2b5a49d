"""An append's write runs in a worker thread: a write into the page cache can wait behind an
fsync of the same disk for milliseconds, and the loop must serve everyone else meanwhile. Until
the write returns, the log looks as it was to readers and takes no other change; its appends
and markers take turns in call order. The slow disk is a fake os.writev that holds the write of
one marked request on an event until the test lets it go."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from tests.unit.conftest import make_batch
from tiering.log.config import LogConfig
from tiering.log.manager import LogManager
from tiering.records import iter_batches

NOW = 1_700_000_000_000
WAIT = 10.0  # seconds: a bound on waits for the other thread, never a pause
MARK = b"hold-this-write"


class HeldWrite:
    """Stands in for os.writev: the write whose pieces hold MARK waits until released."""

    def __init__(self) -> None:
        self.real = os.writev
        self.entered = threading.Event()
        self.release = threading.Event()
        self.threads: list[str] = []

    def __call__(self, fd: int, pieces: list) -> int:
        self.threads.append(threading.current_thread().name)
        if any(MARK in bytes(p) for p in pieces):
            self.entered.set()
            assert self.release.wait(WAIT), "never released"
        return self.real(fd, pieces)


@pytest.fixture
async def held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    fake = HeldWrite()
    monkeypatch.setattr(os, "writev", fake)
    mgr = LogManager(tmp_path, flush_policy="always", roll_check_interval_ms=3_600_000)
    await mgr.start()
    yield mgr, fake
    fake.release.set()
    await mgr.close()


async def _entered(fake: HeldWrite) -> None:
    assert await asyncio.to_thread(fake.entered.wait, WAIT)


async def test_a_held_write_stalls_neither_the_loop_nor_other_partitions(held) -> None:
    mgr, fake = held
    lg = mgr.create("t", 0, LogConfig(segment_ms=1))
    other = mgr.create("t", 1, LogConfig())
    assert (await mgr.append(lg, make_batch(2), NOW)).last_offset == 1
    slow = mgr.append(lg, make_batch([MARK]), NOW)
    await _entered(fake)
    # The loop runs: another partition appends, fsyncs and answers while the write is held.
    done = await mgr.append(other, make_batch(3), NOW)
    await mgr.flush_for_ack(other, done.last_offset + 1)
    assert (done.base_offset, other.flushed_offset) == (0, 3)
    assert threading.main_thread().name not in fake.threads  # every write ran off the loop
    # Readers see the log as it was; it neither rolls nor loses its active segment meanwhile.
    assert lg.writing and lg.log_end_offset == 2
    sl = lg.read(0, 1 << 20, True)
    assert sl is not None and [b.last_offset for b in iter_batches(lg.active_segment.read_bytes(
        sl.position, sl.size))] == [1]
    assert lg.read(2, 1 << 20, True) is None
    assert not lg.maybe_roll(NOW + 10_000)
    assert lg.apply_retention(NOW + 10**12, lambda _seg: True) == []
    fake.release.set()
    result = await slow
    assert (result.base_offset, result.last_offset, lg.log_end_offset, lg.writing) == (2, 2, 3, False)
    sl = lg.read(2, 1 << 20, True)
    assert sl is not None and MARK in lg.active_segment.read_bytes(sl.position, sl.size)
    assert lg.maybe_roll(NOW + 10_000)  # the check after the write rolls


async def test_appends_and_markers_take_turns_in_call_order(held) -> None:
    mgr, fake = held
    lg = mgr.create("t", 0, LogConfig())
    first = mgr.append(lg, make_batch([MARK]), NOW)
    await _entered(fake)
    second = mgr.append(lg, make_batch(2), NOW)
    marker = asyncio.ensure_future(mgr.append_control(lg, 7, 0, False, 0, NOW))
    third = mgr.append(lg, make_batch(1), NOW)
    await asyncio.sleep(0)  # let them all reach their turns: none may pass the held write
    assert not (second.done() or marker.done() or third.done()) and lg.log_end_offset == 0
    fake.release.set()
    got = [(r.base_offset, r.last_offset) for r in (await first, await second)]
    assert got == [(0, 0), (1, 2)]
    assert await marker == 3
    assert (await third).base_offset == 4


async def test_a_cancelled_append_still_takes_in_its_write(held) -> None:
    """The request waiting for an answer went away (its connection closed) while its bytes were
    being written: the log still accounts for them, and the next append follows them."""
    mgr, fake = held
    lg = mgr.create("t", 0, LogConfig())
    gone = mgr.append(lg, make_batch([MARK]), NOW)
    await _entered(fake)
    gone.cancel()
    nxt = mgr.append(lg, make_batch(1), NOW)
    await asyncio.sleep(0)
    assert not gone.done() or gone.cancelled()
    fake.release.set()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert (await nxt).base_offset == 1
    offsets = [b.last_offset for seg in lg.segments for b in iter_batches(seg.read_bytes(0, seg.size))]
    assert offsets == [0, 1]


async def test_a_failed_write_in_the_thread_leaves_the_log_as_it_was(held, monkeypatch) -> None:
    mgr, fake = held
    lg = mgr.create("t", 0, LogConfig())
    await mgr.append(lg, make_batch(2), NOW)
    size = lg.active_segment.size

    def full(fd: int, pieces: list) -> int:
        os.write(fd, bytes(pieces[0])[:10])  # a torn start, as a disk filling up leaves
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "writev", full)
    with pytest.raises(OSError):
        await mgr.append(lg, make_batch(3), NOW)
    assert (lg.log_end_offset, lg.writing, lg.active_segment.size) == (2, False, size)
    assert os.path.getsize(lg.active_segment.log_path) == size
    monkeypatch.setattr(os, "writev", fake)
    assert (await mgr.append(lg, make_batch(1), NOW)).base_offset == 2
