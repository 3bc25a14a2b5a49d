from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

from tests.clock import eventually, until
from tests.unit.conftest import batch_of_size, make_batch
from tiering.log import manager as manager_mod
from tiering.log.config import LogConfig
from tiering.log.manager import CLEAN_SHUTDOWN_MARKER, LogManager, parse_log_dir_name

NOW = 1_700_000_000_000


def test_parse_log_dir_name() -> None:
    assert parse_log_dir_name("orders-0") == ("orders", 0)
    assert parse_log_dir_name("my-topic.v2_x-17") == ("my-topic.v2_x", 17)
    assert parse_log_dir_name("orders") is None
    assert parse_log_dir_name("orders-abc-delete") is None
    assert parse_log_dir_name("-3") is None


async def test_create_get_and_restart(tmp_path: Path) -> None:
    mgr = LogManager(tmp_path, flush_policy="always", flush_interval_ms=1000, retention_check_interval_ms=60_000)
    await mgr.start()
    assert not mgr.was_clean_shutdown
    a0 = mgr.create("my-topic.v2", 0, LogConfig())
    a1 = mgr.create("my-topic.v2", 1, LogConfig())
    b0 = mgr.create("my-topic", 0, LogConfig())
    assert mgr.create("my-topic.v2", 0, LogConfig()) is a0
    assert mgr.get("my-topic.v2", 1) is a1 and mgr.get("nope", 0) is None
    assert mgr.logs_for("my-topic.v2") == [a0, a1]
    a0.append(make_batch(3), now_ms=NOW)
    b0.append(make_batch(2) + make_batch(2), now_ms=NOW)
    await mgr.close()
    assert (tmp_path / CLEAN_SHUTDOWN_MARKER).exists()

    again = LogManager(tmp_path, flush_policy="always", flush_interval_ms=1000, retention_check_interval_ms=60_000)
    await again.start()
    assert again.was_clean_shutdown
    assert not (tmp_path / CLEAN_SHUTDOWN_MARKER).exists()
    assert sorted((lg.topic, lg.partition, lg.log_end_offset) for lg in again.all_logs()) == [
        ("my-topic", 0, 4),
        ("my-topic.v2", 0, 3),
        ("my-topic.v2", 1, 0),
    ]
    lg = again.get("my-topic", 0)
    assert lg is not None and lg.append(make_batch(1), now_ms=NOW).base_offset == 4
    await again.close()


async def test_unclean_start_recovers(tmp_path: Path) -> None:
    mgr = LogManager(tmp_path)
    await mgr.start()
    lg = mgr.create("t", 0, LogConfig())
    lg.append(make_batch(2), now_ms=NOW)
    await mgr.flush(lg)
    path = lg.active_segment.log_path
    size = os.path.getsize(path)
    # Simulate a crash mid-write: no close, no marker, half a batch on disk.
    with open(path, "ab") as f:
        f.write(make_batch(5)[:40])
    for other in mgr.all_logs():
        other.close()
    again = LogManager(tmp_path)
    await again.start()
    assert not again.was_clean_shutdown
    recovered = again.get("t", 0)
    assert recovered is not None and recovered.log_end_offset == 2
    assert os.path.getsize(path) == size
    await again.close()


async def test_group_commit_shares_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mgr = LogManager(tmp_path, flush_policy="always")
    await mgr.start()
    lg = mgr.create("t", 0, LogConfig())
    await asyncio.to_thread(lg.flush)  # the new partition's directory entries
    calls: list[int] = []
    real_fsync = os.fsync
    in_flight = threading.Lock()
    overlapped: list[bool] = []

    def slow_fsync(fd: int) -> None:
        overlapped.append(not in_flight.acquire(blocking=False))
        try:
            calls.append(fd)
            time.sleep(0.02)  # a slow disk: appends pile up behind a running fsync
            real_fsync(fd)
        finally:
            in_flight.release()

    monkeypatch.setattr(os, "fsync", slow_fsync)
    monkeypatch.setattr(os, "fdatasync", slow_fsync)

    async def produce(i: int) -> int:
        await asyncio.sleep(0.001 * (i % 10))
        r = lg.append(make_batch(1), now_ms=NOW)
        await mgr.flush_for_ack(lg, r.last_offset + 1)
        assert lg.flushed_offset > r.last_offset
        return r.base_offset

    offsets = await asyncio.gather(*(produce(i) for i in range(50)))
    assert sorted(offsets) == list(range(50))
    assert lg.flushed_offset == 50
    # An ack needs only the active segment's log synced: 50 acks shared a handful of syncs.
    assert set(calls) == {lg.active_segment.fileno}
    assert 1 <= len(calls) <= 4
    assert not any(overlapped)  # never two fsyncs of one log at once
    calls.clear()
    await mgr.flush(lg, 50)  # already durable: no fsync
    assert calls == []
    monkeypatch.undo()
    await mgr.close()


async def test_interval_policy_does_not_fsync_on_ack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mgr = LogManager(tmp_path, flush_policy="interval", flush_interval_ms=20)
    await mgr.start()
    lg = mgr.create("t", 0, LogConfig())
    r = lg.append(make_batch(1), now_ms=NOW)
    await mgr.flush_for_ack(lg, r.last_offset + 1)
    assert lg.flushed_offset == 0
    await eventually(lambda: lg.flushed_offset == 1)  # the periodic flush gets it
    await mgr.close()


async def test_background_retention_and_rolls(tmp_path: Path) -> None:
    mgr = LogManager(tmp_path, retention_check_interval_ms=20, roll_check_interval_ms=20)
    await mgr.start()
    config = LogConfig(segment_bytes=300, retention_bytes=100, retention_ms=-1, file_delete_delay_ms=0)
    lg = mgr.create("t", 0, config)
    wall = time.time_ns() // 1_000_000
    for _ in range(7):
        lg.append(batch_of_size(100, base_timestamp=wall), now_ms=wall)
    assert [s.base_offset for s in lg.segments] == [0, 3, 6]
    await eventually(lambda: lg.log_start_offset == 6 and not list(lg.dir.glob("*.deleted")))
    assert [s.base_offset for s in lg.segments] == [6]
    assert lg.log_start_offset == 6
    assert sorted(p.name for p in lg.dir.iterdir() if p.suffix in (".log", ".deleted")) == [
        "00000000000000000006.log"
    ]
    # segment.ms rolls happen without appends.
    mgr.update_topic_config("t", LogConfig(segment_ms=1, retention_ms=-1))
    await eventually(lambda: len(lg.segments) == 2)
    assert [s.base_offset for s in lg.segments] == [6, 7]
    await mgr.close()


async def test_delete_topic(tmp_path: Path) -> None:
    mgr = LogManager(tmp_path)
    await mgr.start()
    doomed = mgr.create("a-b", 0, LogConfig(file_delete_delay_ms=0))
    mgr.create("a-b", 1, LogConfig(file_delete_delay_ms=0))
    kept = mgr.create("a", 0, LogConfig())
    doomed.append(make_batch(1), now_ms=NOW)
    await mgr.delete_topic("a-b")
    assert mgr.logs_for("a-b") == [] and mgr.get("a", 0) is kept
    await eventually(lambda: sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["a-0"])
    await mgr.close()


async def test_start_removes_unfinished_deletes(tmp_path: Path) -> None:
    (tmp_path / "t-0.abc-delete").mkdir()
    (tmp_path / "t-0.abc-delete" / "00000000000000000000.log").write_bytes(b"")
    mgr = LogManager(tmp_path)
    await mgr.start()
    assert mgr.all_logs() == []
    assert not (tmp_path / "t-0.abc-delete").exists()
    await mgr.close()


def test_bad_flush_policy(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        LogManager(tmp_path, flush_policy="sometimes")  # type: ignore[arg-type]  # not a policy, on purpose
    assert manager_mod.DELETE_DIR_SUFFIX == "-delete"


async def test_idle_producers_expire_on_a_schedule(tmp_path: Path) -> None:
    mgr = LogManager(tmp_path, producer_id_expiration_ms=60_000,
                     producer_id_expiration_check_interval_ms=20)
    await mgr.start()
    lg = mgr.create("t", 0, LogConfig())
    wall = time.time_ns() // 1_000_000
    lg.append(make_batch(1, producer_id=7, producer_epoch=0, base_sequence=0,
                         base_timestamp=wall - 120_000), now_ms=wall)
    lg.append(make_batch(1, producer_id=8, producer_epoch=0, base_sequence=0,
                         base_timestamp=wall), now_ms=wall)
    await eventually(lambda: lg.producer_state.entry(7) is None)
    assert lg.producer_state.entry(8) is not None
    await mgr.run_producer_expiration(wall + 60_000)
    assert lg.producer_state.entry(8) is None
    await mgr.close()


async def test_delete_records_syncs_its_checkpoint_off_the_loop(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    mgr = LogManager(tmp_path)
    await mgr.start()
    lg = mgr.create("t", 0, LogConfig(segment_bytes=300))
    for _ in range(6):
        lg.append(batch_of_size(100), now_ms=NOW)
    real_fsync = os.fsync
    loop_thread = threading.current_thread()
    on_loop: list[bool] = []
    entered, release = threading.Event(), threading.Event()

    def slow_fsync(fd: int) -> None:
        on_loop.append(threading.current_thread() is loop_thread)
        if len(on_loop) == 1:
            entered.set()
            assert release.wait(10)  # on the loop this would wait out the bound: nothing sets it
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    first = asyncio.create_task(mgr.delete_records_before(lg, 2))
    assert await asyncio.to_thread(entered.wait, 10)
    assert lg.log_start_offset == 2  # reads stop at the new start at once
    second = asyncio.create_task(mgr.delete_records_before(lg, 4))
    await until(lambda: lg.log_start_offset == 4)  # the second ran up to its checkpoint
    assert not first.done() and not second.done()  # neither answered before its fsync
    release.set()
    assert await first == 2 and await second == 4
    assert not any(on_loop)
    # Written after the second move, the checkpoint holds the later start.
    assert (lg.dir / "log-start-offset").read_text() == "4\n"
    monkeypatch.undo()
    await mgr.close()
