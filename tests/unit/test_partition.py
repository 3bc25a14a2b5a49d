from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.unit.conftest import batch_of_size, make_batch
from tiering.log.config import LogConfig
from tiering.log.partition import OffsetOutOfRangeError, UnifiedLog
from tiering.records import InvalidRecordError, Rejection, iter_batches, validate_batches

NOW = 1_700_000_000_000
HOUR = 3_600_000


def open_log(path: Path, recover: bool = False, **config: Any) -> UnifiedLog:
    return UnifiedLog.open(path / "orders.v1-3", "orders.v1", 3, LogConfig(**config), recover)


def read_at(log: UnifiedLog, offset: int) -> bytes | bytearray:
    """The batches of one read at `offset` (up to 100 bytes, at least one batch); there must be some."""
    s = log.read(offset, 100, True)
    assert s is not None, f"nothing to read at {offset}"
    return log.read_bytes(s)


def bases(log: UnifiedLog) -> list[int]:
    return [s.base_offset for s in log.segments]


# --- append / read ------------------------------------------------------------------------


def test_append_assigns_offsets(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    assert (log.log_start_offset, log.log_end_offset, log.high_watermark) == (0, 0, 0)
    r1 = log.append(make_batch(3) + make_batch(2), now_ms=NOW)
    assert (r1.base_offset, r1.last_offset, r1.log_append_time_ms, r1.log_start_offset) == (0, 4, -1, 0)
    assert r1.record_bytes == len(make_batch(3)) + len(make_batch(2))
    r2 = log.append(make_batch(1), now_ms=NOW)
    assert (r2.base_offset, r2.last_offset) == (5, 5)
    assert log.log_end_offset == 6
    assert log.size_bytes == r1.record_bytes + r2.record_bytes
    log.close()


def test_append_rejects_bad_batches(tmp_path: Path) -> None:
    log = open_log(tmp_path, max_message_bytes=200)
    with pytest.raises(InvalidRecordError) as info:
        log.append(batch_of_size(201), now_ms=NOW)
    assert info.value.reason is Rejection.TOO_LARGE
    bad = bytearray(make_batch(1))
    bad[-1] ^= 1
    with pytest.raises(InvalidRecordError) as info:
        log.append(bad, now_ms=NOW)
    assert info.value.reason is Rejection.CORRUPT
    assert log.log_end_offset == 0 and log.size_bytes == 0
    log.close()


def test_log_append_time(tmp_path: Path) -> None:
    log = open_log(tmp_path, message_timestamp_type="LogAppendTime")
    r = log.append(make_batch(2, base_timestamp=5), now_ms=NOW)
    assert r.log_append_time_ms == NOW
    s = log.read(0, 1 << 20, True)
    assert s is not None
    (h,) = validate_batches(log.read_bytes(s), 1 << 20)  # CRC still valid
    assert h.max_timestamp == NOW and h.is_log_append_time
    assert log.max_timestamp() == (0, NOW)  # every record carries NOW: the first one answers
    log.close()


def test_read(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    sizes = [len(make_batch(2)) for _ in range(4)]
    for _ in range(4):
        log.append(make_batch(2), now_ms=NOW)  # 0-1, 2-3, 4-5, 6-7
    s = log.read(3, 1 << 20, False)
    assert s is not None
    assert (s.position, s.size, s.base_offset) == (sizes[0], sum(sizes[1:]), 2)
    assert s.path == log.active_segment.log_path and s.fileno == log.active_segment.fileno
    assert [h.base_offset for h in iter_batches(log.read_bytes(s))] == [2, 4, 6]
    s = log.read(0, sizes[0] + 1, False)
    assert s is not None and s.size == sizes[0]
    assert log.read(0, 10, False) is None
    s = log.read(0, 10, True)
    assert s is not None and s.size == sizes[0]
    assert log.read(8, 100, True) is None
    with pytest.raises(OffsetOutOfRangeError):
        log.read(9, 100, True)
    with pytest.raises(OffsetOutOfRangeError):
        log.read(-1, 100, True)
    log.close()


def test_roll_on_segment_bytes_and_read_stays_in_segment(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=300)
    for _ in range(7):
        log.append(batch_of_size(100), now_ms=NOW)
    # A segment takes three 100-byte batches: 300 is not > 300 - 100 until the fourth.
    assert bases(log) == [0, 3, 6]
    assert [s.size for s in log.segments] == [300, 300, 100]
    assert [s.base_offset for s in log.sealed_segments()] == [0, 3]
    s = log.read(1, 10_000, False)
    assert s is not None and (s.segment.base_offset, s.position, s.size) == (0, 100, 200)
    s = log.read(3, 10_000, False)
    assert s is not None and (s.segment.base_offset, s.position, s.size) == (3, 0, 300)
    log.close()


def test_roll_on_segment_ms(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_ms=HOUR)
    log.append(make_batch(1), now_ms=NOW)
    assert log.active_segment.rolling_basis_ms == NOW
    log.append(make_batch(1), now_ms=NOW + HOUR)
    assert bases(log) == [0]
    log.append(make_batch(1), now_ms=NOW + HOUR + 1)
    assert bases(log) == [0, 2]
    assert log.active_segment.rolling_basis_ms == NOW + HOUR + 1
    assert not log.maybe_roll(NOW + 2 * HOUR + 1)
    assert log.maybe_roll(NOW + 2 * HOUR + 2)
    assert bases(log) == [0, 2, 3]
    assert not log.maybe_roll(NOW * 2)  # an empty active segment never rolls
    log.close()


def test_timestamps(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=250)
    for ts in (1000, 3000, 2000, 5000, 4000):
        log.append(batch_of_size(100, base_timestamp=ts), now_ms=NOW)
    assert bases(log) == [0, 2, 4]
    assert log.offset_for_timestamp(0) == (0, 1000)
    assert log.offset_for_timestamp(2500) == (1, 3000)
    assert log.offset_for_timestamp(3500) == (3, 5000)
    assert log.offset_for_timestamp(5001) is None
    assert log.max_timestamp() == (3, 5000)
    assert (log.earliest(), log.latest()) == (0, 5)
    log.delete_records_before(2)
    assert log.offset_for_timestamp(0) == (2, 2000)
    log.close()


def test_delete_records_before(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=300)
    for _ in range(7):
        log.append(batch_of_size(100), now_ms=NOW)
    assert log.delete_records_before(4) == 4
    assert bases(log) == [3, 6]
    assert log.log_start_offset == 4
    assert (tmp_path / "orders.v1-3" / "log-start-offset").read_text() == "4\n"
    with pytest.raises(OffsetOutOfRangeError):
        log.read(3, 100, True)
    s = log.read(4, 100, False)
    assert s is not None and s.base_offset == 4
    assert log.delete_records_before(2) == 4  # never moves back
    with pytest.raises(OffsetOutOfRangeError):
        log.delete_records_before(8)
    assert log.delete_records_before(-1) == 7
    assert bases(log) == [6]  # the active segment stays
    assert log.read(7, 100, True) is None
    log.close()
    again = open_log(tmp_path)
    assert (again.log_start_offset, again.log_end_offset) == (7, 7)
    again.close()


def test_retention_by_bytes(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=300, retention_bytes=450, retention_ms=-1)
    for _ in range(8):
        log.append(batch_of_size(100), now_ms=NOW)
    assert bases(log) == [0, 3, 6] and log.size_bytes == 800
    # 350 bytes over: only whole segments that fit in the excess go.
    assert log.apply_retention(NOW) == [0]
    assert log.log_start_offset == 3 and log.size_bytes == 500
    assert log.apply_retention(NOW) == []
    deleted_files = sorted(p.name for p in (tmp_path / "orders.v1-3").glob("*.deleted"))
    assert deleted_files == [
        "00000000000000000000.index.deleted",
        "00000000000000000000.log.deleted",
        "00000000000000000000.timeindex.deleted",
        "00000000000000000000.txnindex.deleted",
    ]
    assert log.purge_deleted(force=True) == 1
    assert not list((tmp_path / "orders.v1-3").glob("*.deleted"))
    with pytest.raises(OffsetOutOfRangeError):
        log.read(2, 100, True)
    log.close()


def test_retention_by_time_rolls_expired_active(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=300, retention_ms=HOUR)
    for i in range(8):
        log.append(batch_of_size(100, base_timestamp=NOW + i * 1000), now_ms=NOW)
    assert bases(log) == [0, 3, 6]
    # Segment 0 ends at NOW+2000, segment 3 at NOW+5000.
    assert log.apply_retention(NOW + 2000 + HOUR) == []
    assert log.apply_retention(NOW + 2001 + HOUR) == [0]
    assert log.log_start_offset == 3
    assert log.apply_retention(NOW + 100 * HOUR) == [3, 6]
    assert bases(log) == [8]
    assert (log.log_start_offset, log.log_end_offset, log.size_bytes) == (8, 8, 0)
    assert log.append(make_batch(1), now_ms=NOW).base_offset == 8
    log.close()


def test_retention_respects_may_delete_and_policy(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=300, retention_bytes=0, retention_ms=-1)
    for _ in range(7):
        log.append(batch_of_size(100), now_ms=NOW)
    assert log.apply_retention(NOW, may_delete=lambda seg: seg.base_offset < 3) == [0]
    log.update_config(LogConfig(segment_bytes=300, retention_bytes=0, retention_ms=0, cleanup_policy="compact"))
    assert log.apply_retention(NOW) == []
    log.close()


# --- restart ------------------------------------------------------------------------------


def test_restart_keeps_everything(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=300, index_interval_bytes=50)
    payload = [batch_of_size(100, base_timestamp=NOW + i) for i in range(8)]
    for b in payload:
        log.append(b, now_ms=NOW)
    log.flush()
    before = [(s.base_offset, s.size, s.next_offset, s.max_timestamp) for s in log.segments]
    data = [read_at(log, o) for o in range(8)]
    log.close()
    for recover in (False, True):
        again = open_log(tmp_path, recover=recover, segment_bytes=300, index_interval_bytes=50)
        assert [(s.base_offset, s.size, s.next_offset, s.max_timestamp) for s in again.segments] == before
        assert (again.log_start_offset, again.log_end_offset) == (0, 8)
        assert [read_at(again, o) for o in range(8)] == data
        assert again.offset_for_timestamp(NOW + 5) == (5, NOW + 5)
        assert again.append(make_batch(1), now_ms=NOW).base_offset == 8
        again.close()
        os.truncate(again.active_segment.log_path, 200)  # undo the extra batch for the next round


def test_unclean_restart_truncates_torn_tail(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=300)
    for _ in range(5):
        log.append(batch_of_size(100), now_ms=NOW)
    log.flush()
    active = log.active_segment.log_path
    log.close()
    torn = make_batch(4)
    with open(active, "ab") as f:
        f.write(torn[:70])
    again = open_log(tmp_path, recover=True, segment_bytes=300)
    assert again.log_end_offset == 5
    assert os.path.getsize(active) == 200
    assert again.append(make_batch(1), now_ms=NOW).base_offset == 5
    again.close()


def test_recovery_point_limits_unclean_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = open_log(tmp_path, segment_bytes=300)
    for _ in range(7):
        log.append(batch_of_size(100), now_ms=NOW)
    log.flush()
    log.close()
    assert (tmp_path / "orders.v1-3" / "recovery-point").read_text() == "6\n"
    from tiering.log.segment import LogSegment

    scanned: list[int] = []
    original = LogSegment.recover

    def spy(self: LogSegment) -> int:
        scanned.append(self.base_offset)
        return original(self)

    monkeypatch.setattr(LogSegment, "recover", spy)
    again = open_log(tmp_path, recover=True, segment_bytes=300)
    assert scanned == [6]
    assert again.log_end_offset == 7
    again.close()


def test_flush_tracks_flushed_offset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = open_log(tmp_path, segment_bytes=300)
    synced: list[int] = []
    real_fsync = os.fsync
    datasynced: list[int] = []
    real_fdatasync = os.fdatasync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    def fdatasync(fd: int) -> None:
        datasynced.append(fd)
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    for _ in range(4):
        log.append(batch_of_size(100), now_ms=NOW)
    assert log.flushed_offset == 0
    log.flush()
    assert log.flushed_offset == 4
    # The sealed segment: log, both indexes and the transaction index; then the producer
    # snapshot written at the roll, and its directory; then the directory again for the new
    # segments' names, and its parent, which gained the new partition directory.
    assert len(synced) == 8
    assert datasynced == [log.active_segment.fileno]  # the active one: just its log
    synced.clear()
    datasynced.clear()
    log.flush()
    assert synced == [] and datasynced == []
    log.flush(full=True)  # its log was synced and its indexes never written: nothing to do
    assert synced == [] and datasynced == []
    log.append(batch_of_size(100), now_ms=NOW)
    log.flush(full=True)  # shutdown: the active segment's indexes too
    assert len(synced) == 4 and datasynced == []
    log.close()


def test_delete_removes_dir(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(make_batch(1), now_ms=NOW)
    log.delete()
    assert not (tmp_path / "orders.v1-3").exists()


def test_offset_for_timestamp_is_exact_within_a_batch(tmp_path) -> None:
    from tests.unit.conftest import make_batch

    log = UnifiedLog.open(tmp_path / "t-0", "t", 0, LogConfig(), recover=False)
    log.append(make_batch([b"a", b"b", b"c", b"d"], timestamps=[100, 200, 300, 250]), now_ms=NOW)
    log.append(make_batch([b"e", b"f"], timestamps=[400, 500]), now_ms=NOW)
    assert log.offset_for_timestamp(150) == (1, 200)
    assert log.offset_for_timestamp(260) == (2, 300)
    assert log.offset_for_timestamp(450) == (5, 500)
    assert log.offset_for_timestamp(501) is None
    assert log.max_timestamp() == (5, 500)
    log.delete_records_before(2)
    assert log.offset_for_timestamp(0) == (2, 300)  # never below the log start
    log.close()
