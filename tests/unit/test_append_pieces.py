"""A CreateTime produce is written from the request's bytes as they are: new baseOffsets
beside the batches in one writev, no copy of the records, and the batches on disk byte for
byte the client's apart from baseOffset."""

from __future__ import annotations

import os
from pathlib import Path

import crc32c
import pytest

from tests.unit.conftest import make_batch
from tiering.log.config import LogConfig
from tiering.log.partition import UnifiedLog
from tiering.records import ATTRIBUTES_OFFSET, CRC_OFFSET, iter_batches

NOW = 1_700_000_000_000


def _on_disk(lg: UnifiedLog) -> bytes:
    [seg] = lg.segments
    return seg.read_bytes(0, seg.size)


def _request(*batches: bytes) -> bytes:
    # Clients number their batches from 0; a request can carry any baseOffset.
    return b"".join(batches)


def test_bytes_are_written_as_sent_with_new_base_offsets(tmp_path: Path) -> None:
    lg = UnifiedLog.open(tmp_path / "t-0", "t", 0, LogConfig(), False)
    first = make_batch(3)
    lg.append(first, now_ms=NOW)
    request = _request(make_batch(2), make_batch(4, base_offset=7))
    result = lg.append(request, now_ms=NOW)
    assert (result.base_offset, result.last_offset) == (3, 8)
    data = _on_disk(lg)
    headers = list(iter_batches(data))
    assert [(h.base_offset, h.last_offset) for h in headers] == [(0, 2), (3, 4), (5, 8)]
    # Everything but baseOffset is the client's bytes; the CRC still holds.
    sent = list(iter_batches(request))
    for h, s in zip(headers[1:], sent):
        assert data[h.position + 8 : h.position + h.size] == request[s.position + 8 : s.position + s.size]
        assert crc32c.crc32c(data[h.position + ATTRIBUTES_OFFSET : h.position + h.size]) == \
            int.from_bytes(data[h.position + CRC_OFFSET : h.position + CRC_OFFSET + 4], "big")
    assert lg.log_end_offset == 9
    lg.close()


def test_a_short_writev_finishes_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lg = UnifiedLog.open(tmp_path / "t-0", "t", 0, LogConfig(), False)
    real = os.writev
    cut: list[int] = []

    def short(fd: int, buffers: list[bytes | memoryview]) -> int:
        joined = b"".join(buffers)
        n = len(joined) // 3  # the kernel took only a third
        cut.append(n)
        return real(fd, [joined[:n]])

    monkeypatch.setattr(os, "writev", short)
    request = _request(make_batch(2), make_batch(5))
    lg.append(request, now_ms=NOW)
    monkeypatch.undo()
    assert cut  # the pieces went through writev
    data = _on_disk(lg)
    assert len(data) == len(request)
    assert [(h.base_offset, h.last_offset) for h in iter_batches(data)] == [(0, 1), (2, 6)]
    lg.close()


def test_log_append_time_still_patches_a_copy(tmp_path: Path) -> None:
    lg = UnifiedLog.open(tmp_path / "t-0", "t", 0, LogConfig(message_timestamp_type="LogAppendTime"), False)
    request = make_batch(2)
    lg.append(request, now_ms=NOW)
    [h] = list(iter_batches(_on_disk(lg)))
    assert h.max_timestamp == NOW
    lg.close()
