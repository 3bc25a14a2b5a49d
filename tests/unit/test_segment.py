from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.conftest import batch_of_size, make_batch
from tiering.log.config import LogConfig
from tiering.log.segment import LogSegment, segment_name
from tiering.records import assign_offsets, iter_batches, validate_batches

CONFIG = LogConfig(index_interval_bytes=150)


def append(seg: LogSegment, *batches: bytes) -> list[int]:
    """Append batches with offsets from the segment's next offset; returns their base offsets."""
    buf = bytearray(b"".join(batches))
    headers = validate_batches(buf, 1 << 30)
    assign_offsets(buf, headers, seg.next_offset, None)
    stamped = list(iter_batches(buf))
    seg.append(bytes(buf), stamped)
    return [h.base_offset for h in stamped]


def index_entries(seg: LogSegment) -> list[tuple[int, int]]:
    return list(struct.iter_unpack(">ii", seg.index_path.read_bytes()))


def time_entries(seg: LogSegment) -> list[tuple[int, int]]:
    return list(struct.iter_unpack(">qi", seg.time_index_path.read_bytes()))


@pytest.fixture
def seg(tmp_path: Path) -> Iterator[LogSegment]:
    s = LogSegment.open(tmp_path, 100, CONFIG, create=True)
    yield s
    s.close()


def test_file_names(seg: LogSegment, tmp_path: Path) -> None:
    assert segment_name(100) == "00000000000000000100"
    assert seg.log_path == tmp_path / "00000000000000000100.log"
    assert seg.index_path.exists() and seg.time_index_path.exists()
    assert seg.size == 0 and seg.next_offset == 100 and seg.max_timestamp == -1


def test_append_updates_state_and_sparse_index(seg: LogSegment) -> None:
    # Ten 100-byte one-record batches, 150-byte interval: an entry before every 2nd batch.
    bases = append(seg, *[batch_of_size(100, base_timestamp=1000 + i) for i in range(10)])
    assert bases == list(range(100, 110))
    assert seg.size == 1000
    assert seg.next_offset == 110
    assert seg.max_timestamp == 1009
    assert seg.offset_of_max_timestamp == 109
    assert os.path.getsize(seg.log_path) == 1000
    assert index_entries(seg) == [(2, 200), (4, 400), (6, 600), (8, 800)]
    assert time_entries(seg) == [(1002, 2), (1004, 4), (1006, 6), (1008, 8)]
    seg.seal()
    assert time_entries(seg)[-1] == (1009, 9)


def test_time_index_only_grows(seg: LogSegment) -> None:
    stamps = [5000, 1000, 1000, 1000, 6000, 1000]
    append(seg, *[batch_of_size(100, base_timestamp=t) for t in stamps])
    assert index_entries(seg) == [(2, 200), (4, 400)]
    assert time_entries(seg) == [(5000, 0), (6000, 4)]
    assert seg.max_timestamp == 6000 and seg.offset_of_max_timestamp == 104


def test_position_for(seg: LogSegment) -> None:
    # Batches of 3 records each: offsets 100-102 @0, 103-105, ... sizes vary.
    batches = [make_batch(3, base_timestamp=10 * i) for i in range(8)]
    append(seg, *batches)
    positions = [0]
    for b in batches[:-1]:
        positions.append(positions[-1] + len(b))
    for i in range(8):
        for k in range(3):
            assert seg.position_for(100 + 3 * i + k) == positions[i]
    assert seg.position_for(50) == 0
    assert seg.position_for(124) is None
    assert len(index_entries(seg)) >= 2  # the lookups went through the index


def test_byte_range(seg: LogSegment) -> None:
    append(seg, *[batch_of_size(100) for _ in range(10)])
    assert seg.byte_range(0, 10_000, False) == 1000
    assert seg.byte_range(0, 1000, False) == 1000
    assert seg.byte_range(0, 999, False) == 900
    assert seg.byte_range(200, 450, False) == 400
    assert seg.byte_range(300, 99, False) == 0
    assert seg.byte_range(300, 99, True) == 100
    assert seg.byte_range(1000, 100, True) == 0


def test_byte_range_min_one_large_batch(seg: LogSegment) -> None:
    append(seg, batch_of_size(500), batch_of_size(100))
    assert seg.byte_range(0, 400, False) == 0
    assert seg.byte_range(0, 400, True) == 500
    assert seg.byte_range(500, 50, True) == 100


def test_read_bytes(seg: LogSegment) -> None:
    a, b = make_batch(2), make_batch(1)
    append(seg, a, b)
    got = seg.read_bytes(len(a), len(b))
    (h,) = list(iter_batches(got))
    assert h.base_offset == 102 and got[8:] == b[8:]


def test_find_by_timestamp(seg: LogSegment) -> None:
    stamps = [1000, 2000, 1500, 3000, 3000, 4000, 2500, 5000]
    append(seg, *[batch_of_size(100, base_timestamp=t) for t in stamps])
    assert seg.find_by_timestamp(0) == (100, 1000)
    assert seg.find_by_timestamp(1000) == (100, 1000)
    assert seg.find_by_timestamp(1001) == (101, 2000)
    assert seg.find_by_timestamp(2600) == (103, 3000)
    assert seg.find_by_timestamp(4500) == (107, 5000)
    assert seg.find_by_timestamp(5000) == (107, 5000)
    assert seg.find_by_timestamp(5001) is None


def test_reopen_clean_uses_indexes(tmp_path: Path) -> None:
    seg = LogSegment.open(tmp_path, 0, CONFIG, create=True)
    append(seg, *[batch_of_size(100, base_timestamp=1000 + i) for i in range(7)])
    seg.seal()
    before = (index_entries(seg), time_entries(seg))
    seg.close()
    again = LogSegment.open(tmp_path, 0, CONFIG, create=False)
    assert again.sanity_check()
    assert (again.size, again.next_offset, again.max_timestamp, again.offset_of_max_timestamp) == (700, 7, 1006, 6)
    assert (index_entries(again), time_entries(again)) == before
    # Appending continues the index pattern where it left off.
    append(again, batch_of_size(100), batch_of_size(100))
    assert index_entries(again)[-1] == (8, 800)
    again.close()


def test_recover_truncates_torn_tail(tmp_path: Path) -> None:
    seg = LogSegment.open(tmp_path, 0, CONFIG, create=True)
    append(seg, *[batch_of_size(100) for _ in range(5)])
    seg.close()
    torn = make_batch(3, base_offset=5)
    with open(seg.log_path, "ab") as f:
        f.write(torn[: len(torn) // 2])
    again = LogSegment.open(tmp_path, 0, CONFIG, create=False)
    assert again.recovered_bytes == len(torn) // 2
    assert again.size == 500 and again.next_offset == 5
    assert os.path.getsize(again.log_path) == 500
    assert index_entries(again) == [(2, 200), (4, 400)]
    assert append(again, make_batch(1)) == [5]
    again.close()


def test_recover_stops_at_corrupt_batch(tmp_path: Path) -> None:
    seg = LogSegment.open(tmp_path, 0, CONFIG, create=True)
    append(seg, *[batch_of_size(100) for _ in range(6)])
    seg.close()
    with open(seg.log_path, "r+b") as f:
        f.seek(390)
        byte = f.read(1)
        f.seek(390)
        f.write(bytes([byte[0] ^ 0xFF]))
    again = LogSegment.open(tmp_path, 0, CONFIG, create=False, recover=True)
    assert again.recovered_bytes == 300
    assert again.size == 300 and again.next_offset == 3
    assert index_entries(again) == [(2, 200)]
    again.close()


def test_rebuilds_deleted_or_corrupt_index(tmp_path: Path) -> None:
    seg = LogSegment.open(tmp_path, 0, CONFIG, create=True)
    append(seg, *[batch_of_size(100, base_timestamp=1000 + i) for i in range(9)])
    seg.close()
    good = (index_entries(seg), time_entries(seg))
    seg.index_path.unlink()
    again = LogSegment.open(tmp_path, 0, CONFIG, create=False)
    assert (index_entries(again), time_entries(again)) == good
    assert again.next_offset == 9 and again.recovered_bytes == 0
    again.close()
    # An entry pointing at the wrong offset fails the sanity check.
    with open(seg.index_path, "r+b") as f:
        f.seek(-8, os.SEEK_END)
        f.write(struct.pack(">ii", 7, 800))
    bad = LogSegment.open(tmp_path, 0, CONFIG, create=False)
    assert index_entries(bad) == good[0]
    bad.close()
    # A torn index entry too.
    with open(seg.index_path, "ab") as f:
        f.write(b"\x00\x00\x00")
    torn = LogSegment.open(tmp_path, 0, CONFIG, create=False)
    assert index_entries(torn) == good[0]
    assert torn.position_for(5) == 500
    torn.close()


def test_truncate_to(seg: LogSegment) -> None:
    append(seg, make_batch(3), make_batch(3), make_batch(3))  # 100-102, 103-105, 106-108
    size_first = len(make_batch(3))
    assert seg.truncate_to(104) == 2 * size_first
    assert seg.next_offset == 103 and seg.size == size_first
    assert seg.truncate_to(200) == 0
    assert append(seg, make_batch(1)) == [103]


def test_delete_after_rename_keeps_fd_readable(seg: LogSegment, tmp_path: Path) -> None:
    append(seg, make_batch(2))
    seg.rename_for_delete()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "00000000000000000100.index.deleted",
        "00000000000000000100.log.deleted",
        "00000000000000000100.timeindex.deleted",
        "00000000000000000100.txnindex.deleted",
    ]
    assert seg.read_bytes(0, 10)[:8] == struct.pack(">q", 100)
    seg.delete()
    assert list(tmp_path.iterdir()) == []


def test_flush_fsyncs_all_files(seg: LogSegment, monkeypatch: pytest.MonkeyPatch) -> None:
    append(seg, make_batch(1))
    synced: list[int] = []
    monkeypatch.setattr(os, "fsync", synced.append)
    seg.flush()
    assert len(synced) == 4 and synced[0] == seg.fileno  # log, index, timeindex, txnindex


def test_time_index_parse_matches_the_entries() -> None:
    from tiering.log.segment import TIME_INDEX_ENTRY, _parse_time_index

    entries = [(-1, 0), (0, 1), (1_700_000_000_123, 7), ((1 << 63) - 1, (1 << 31) - 1), (-(1 << 63), 3),
               (0xFFFFFFFF, 5), (1 << 32, 6)]
    timestamps, rels = _parse_time_index(b"".join(TIME_INDEX_ENTRY.pack(*e) for e in entries))
    assert list(zip(timestamps, rels)) == entries
    assert [list(a) for a in _parse_time_index(b"")] == [[], []]


@pytest.mark.parametrize("failing", ["log", "index", "time"])
def test_failed_write_rolls_the_append_back(seg: LogSegment, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    # A full disk fails the data write part-way, or the index write after it: either way the
    # segment is left as it was, and the next append lands where the failed one would have.
    import tiering.log.segment as segment_module

    append(seg, *(batch_of_size(100) for _ in range(4)))
    before = (seg.size, seg.next_offset, seg.log_path.read_bytes(), index_entries(seg), time_entries(seg))
    fd = {"log": seg._log_fd, "index": seg._index_fd, "time": seg._time_fd}[failing]
    real = segment_module._write_all

    def full(target: int, data) -> None:
        if target == fd:
            os.write(target, bytes(data)[: len(data) // 2])  # a short write, then no space
            raise OSError(28, "No space left on device")
        real(target, data)

    monkeypatch.setattr(segment_module, "_write_all", full)
    with pytest.raises(OSError):
        append(seg, *(make_batch([b"t" * 40], base_timestamp=10**13) for _ in range(3)))
    monkeypatch.setattr(segment_module, "_write_all", real)
    assert (seg.size, seg.next_offset, seg.log_path.read_bytes(), index_entries(seg), time_entries(seg)) == before
    assert append(seg, batch_of_size(100), batch_of_size(100)) == [before[1], before[1] + 1]
    seg.flush()
    seg.close()
    again = LogSegment.open(tmp_path, 100, CONFIG, create=False)
    assert again.sanity_check() and again.next_offset == before[1] + 2
    again.close()
