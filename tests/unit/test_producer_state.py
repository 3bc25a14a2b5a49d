"""Idempotent producer state and the log side of transactions, with hand-built batches."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.conftest import make_batch
from tiering.log.config import LogConfig
from tiering.log.partition import UnifiedLog
from tiering.log.producer_state import ProducerStateManager
from tiering.records import (
    CONTROL_ABORT,
    CONTROL_COMMIT,
    INT32_MAX,
    TRANSACTIONAL_MASK,
    InvalidRecordError,
    Rejection,
    build_control_batch,
    control_record_type,
    iter_batches,
    read_header,
    validate_batches,
)

NOW = 1_700_000_000_000
PID = 4000


def open_log(path: Path, recover: bool = False, **config: object) -> UnifiedLog:
    # The LogConfig fields the test sets, each of its own type: collected as **object here
    return UnifiedLog.open(path / "t-0", "t", 0, LogConfig(**config), recover)  # type: ignore[arg-type]


def idem(n: int, seq: int, *, pid: int = PID, epoch: int = 0, txn: bool = False, ts: int = NOW) -> bytes:
    return make_batch(n, producer_id=pid, producer_epoch=epoch, base_sequence=seq,
                      attributes=TRANSACTIONAL_MASK if txn else 0, base_timestamp=ts)


def error_of(log: UnifiedLog, data: bytes) -> Rejection:
    with pytest.raises(InvalidRecordError) as info:
        log.append(data, now_ms=NOW)
    return info.value.reason


def all_batches(log: UnifiedLog):
    out = []
    for seg in log.segments:
        out += list(iter_batches(seg.read_bytes(0, seg.size)))
    return out


# --- records helpers ------------------------------------------------------------------------


def test_control_batch_is_valid_and_decodes() -> None:
    data = build_control_batch(7, 3, False, 11, NOW, base_offset=42)
    (h,) = validate_batches(data, 1 << 20)
    assert h.is_control and h.is_transactional and h.producer_id == 7 and h.producer_epoch == 3
    assert h.base_offset == 42 and h.record_count == 1 and h.base_sequence == -1
    assert control_record_type(data) == (CONTROL_ABORT, 11)
    assert control_record_type(build_control_batch(7, 3, True, 0, NOW)) == (CONTROL_COMMIT, 0)


def test_last_sequence_wraps() -> None:
    h = read_header(make_batch(4, producer_id=1, producer_epoch=0, base_sequence=INT32_MAX - 1))
    assert h.last_sequence == 1  # INT32_MAX - 1, INT32_MAX, 0, 1


# --- idempotence ----------------------------------------------------------------------------


def test_duplicate_returns_original_offsets(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(make_batch(2), now_ms=NOW)  # a plain producer first: offsets 0-1
    first = log.append(idem(3, 0), now_ms=NOW)
    second = log.append(idem(2, 3), now_ms=NOW)
    assert (first.base_offset, second.base_offset) == (2, 5)
    again = log.append(idem(3, 0), now_ms=NOW + 5)
    assert again.duplicate and (again.base_offset, again.last_offset) == (2, 4)
    assert again.log_append_time_ms == -1
    again2 = log.append(idem(2, 3), now_ms=NOW)
    assert again2.duplicate and again2.base_offset == 5
    assert log.log_end_offset == 7 and len(all_batches(log)) == 3
    nxt = log.append(idem(1, 5), now_ms=NOW)
    assert not nxt.duplicate and nxt.base_offset == 7
    log.close()


def test_duplicate_with_log_append_time_reports_original_time(tmp_path: Path) -> None:
    log = open_log(tmp_path, message_timestamp_type="LogAppendTime")
    log.append(idem(1, 0), now_ms=NOW)
    again = log.append(idem(1, 0), now_ms=NOW + 999)
    assert again.duplicate and again.log_append_time_ms == NOW
    log.close()


def test_only_last_five_batches_are_remembered(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    for i in range(6):
        log.append(idem(1, i), now_ms=NOW)
    assert log.append(idem(1, 1), now_ms=NOW).duplicate
    # Sequence 0 fell out of the window: not a duplicate any more, but out of order.
    assert error_of(log, idem(1, 0)) == Rejection.OUT_OF_ORDER_SEQUENCE
    log.close()


def test_sequence_gap_and_old_epoch_codes(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(idem(2, 0, epoch=1), now_ms=NOW)
    assert error_of(log, idem(1, 3, epoch=1)) == Rejection.OUT_OF_ORDER_SEQUENCE
    assert error_of(log, idem(1, 2, epoch=0)) == Rejection.STALE_PRODUCER_EPOCH
    # A new epoch must start at sequence 0.
    assert error_of(log, idem(1, 5, epoch=2)) == Rejection.OUT_OF_ORDER_SEQUENCE
    assert log.append(idem(1, 0, epoch=2), now_ms=NOW).base_offset == 2
    # The old epoch is fenced now.
    assert error_of(log, idem(1, 2, epoch=1)) == Rejection.STALE_PRODUCER_EPOCH
    assert log.log_end_offset == 3
    log.close()


def test_unknown_producer_may_start_anywhere_and_sequences_wrap(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(idem(2, INT32_MAX - 1), now_ms=NOW)
    assert log.append(idem(1, 0), now_ms=NOW).base_offset == 2
    log.close()


def test_bad_producer_batches_are_invalid_records(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    assert error_of(log, make_batch(1, producer_id=1, producer_epoch=0, base_sequence=-1)) == Rejection.INVALID
    assert error_of(log, make_batch(1, attributes=TRANSACTIONAL_MASK)) == Rejection.INVALID
    assert error_of(log, build_control_batch(1, 0, True, 0, NOW)) == Rejection.INVALID
    assert log.log_end_offset == 0
    log.close()


def test_multi_batch_request_is_checked_as_a_unit(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    both = idem(2, 0) + idem(3, 2)
    assert log.append(both, now_ms=NOW).last_offset == 4
    again = log.append(both, now_ms=NOW)
    assert again.duplicate and again.base_offset == 0
    # A gap inside one request fails the whole request.
    assert error_of(log, idem(1, 5) + idem(1, 7)) == Rejection.OUT_OF_ORDER_SEQUENCE
    assert log.log_end_offset == 5
    log.close()


def _answers(log: UnifiedLog) -> list[object]:
    out: list[object] = []
    for data in (idem(2, 0, epoch=1), idem(1, 4, epoch=1), idem(1, 3, epoch=0), idem(1, 2, epoch=1)):
        try:
            r = log.append(data, now_ms=NOW)
            out.append((r.duplicate, r.base_offset))
        except InvalidRecordError as e:
            out.append(e.reason)
    return out


@pytest.mark.parametrize("drop_snapshots", [False, True])
@pytest.mark.parametrize("clean", [True, False])
def test_state_survives_reopen(tmp_path: Path, drop_snapshots: bool, clean: bool) -> None:
    log = open_log(tmp_path, segment_bytes=300)
    for i in range(0, 8, 2):
        log.append(idem(2, i, epoch=1), now_ms=NOW)  # rolls more than once
        log.append(make_batch(1), now_ms=NOW)
    log.append(idem(1, 100, pid=PID + 1), now_ms=NOW)
    assert len(log.segments) > 1
    if clean:
        log.close()
    else:
        log.flush()
        for seg in log.segments:
            seg.close()
    snaps = sorted(p.name for p in (tmp_path / "t-0").glob("*.snapshot"))
    assert snaps
    if drop_snapshots:
        for name in snaps:
            (tmp_path / "t-0" / name).unlink()
    log = open_log(tmp_path, recover=not clean, segment_bytes=300)
    entry = log.producer_state.entry(PID)
    assert entry is not None and entry.epoch == 1
    dup = log.append(idem(2, 6, epoch=1), now_ms=NOW)
    assert dup.duplicate and dup.base_offset == 9
    dup = log.append(idem(2, 4, epoch=1), now_ms=NOW)
    assert dup.duplicate and dup.base_offset == 6
    assert error_of(log, idem(1, 9, epoch=1)) == Rejection.OUT_OF_ORDER_SEQUENCE
    assert error_of(log, idem(1, 8, epoch=0)) == Rejection.STALE_PRODUCER_EPOCH
    assert log.append(idem(1, 8, epoch=1), now_ms=NOW).base_offset == 13
    assert log.append(idem(1, 101, pid=PID + 1), now_ms=NOW).base_offset == 14
    log.close()


def test_snapshot_written_on_roll_and_close_and_deleted_with_segments(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=300, retention_ms=-1)
    for i in range(8):
        log.append(idem(1, i), now_ms=NOW)
    bases = [s.base_offset for s in log.segments]
    snaps = log.producer_state.snapshot_offsets()
    assert snaps and set(snaps) <= set(bases[1:])
    log.delete_records_before(bases[-1])
    assert all(off >= bases[-1] for off in log.producer_state.snapshot_offsets())
    log.close()
    assert log.log_end_offset in ProducerStateManager(tmp_path / "t-0").snapshot_offsets()


def test_torn_snapshot_is_ignored(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(idem(3, 0), now_ms=NOW)
    log.close()
    (snap,) = (tmp_path / "t-0").glob("*.snapshot")
    snap.write_bytes(snap.read_bytes()[:-3] + b"xyz")
    log = open_log(tmp_path)
    assert not snap.exists()
    assert log.append(idem(3, 0), now_ms=NOW).duplicate
    log.close()


def test_expired_producers_are_forgotten(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(idem(1, 0, ts=NOW), now_ms=NOW)
    log.append(idem(1, 0, pid=PID + 1, ts=NOW + 1000), now_ms=NOW)
    assert log.remove_expired_producers(NOW + 1500, 1000) == [PID]
    assert log.producer_state.entry(PID) is None and log.producer_state.entry(PID + 1) is not None
    # Forgotten: any sequence is accepted again, as for a new producer.
    assert log.append(idem(1, 7), now_ms=NOW).base_offset == 2
    log.close()


# --- transactions ---------------------------------------------------------------------------


def test_transactions_move_the_lso(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(make_batch(2), now_ms=NOW)  # 0-1
    log.append(idem(2, 0, txn=True), now_ms=NOW)  # 2-3: opens a transaction
    assert log.last_stable_offset == 2 and log.high_watermark == 4
    log.append(idem(1, 0, pid=9, txn=True), now_ms=NOW)  # 4
    log.append(idem(1, 2, txn=True), now_ms=NOW)  # 5
    assert error_of(log, idem(1, 3)) == Rejection.TXN_STATE  # non-transactional inside a txn
    marker = log.append_control(PID, 0, True, 0, NOW)
    assert marker == 6
    assert log.last_stable_offset == 4  # producer 9 is still open
    assert log.aborted_transactions(0, 7) == []
    abort = log.append_control(9, 0, False, 0, NOW)
    assert abort == 7 and log.last_stable_offset == 8 == log.high_watermark
    assert log.aborted_transactions(0, 8) == [(9, 4)]
    assert log.aborted_transactions(5, 8) == [(9, 4)]  # overlaps: last offset 7 >= 5
    assert log.aborted_transactions(0, 4) == []  # starts at 4: outside [0, 4)
    assert log.aborted_transactions(8, 9) == []
    (entry,) = log.active_segment.aborted_txns()
    assert (entry.producer_id, entry.first_offset, entry.last_offset, entry.last_stable_offset) == (9, 4, 7, 8)
    header = log.active_segment.batch_for(7)
    assert header is not None
    batch = log.active_segment.read_bytes(header.position, 78)
    assert control_record_type(batch) == (CONTROL_ABORT, 0)
    # After the marker the producer writes normally again.
    assert log.append(idem(1, 1, pid=9), now_ms=NOW).base_offset == 8
    log.close()


def test_marker_fencing(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(idem(1, 0, epoch=2, txn=True), now_ms=NOW)
    log.append_control(PID, 2, False, 5, NOW)
    with pytest.raises(InvalidRecordError) as info:
        log.append_control(PID, 1, False, 5, NOW)
    assert info.value.reason == Rejection.STALE_PRODUCER_EPOCH
    with pytest.raises(InvalidRecordError) as info:
        log.append_control(PID, 2, True, 4, NOW)
    assert info.value.reason == Rejection.STALE_COORDINATOR_EPOCH
    log.close()


def test_read_upto_offset_returns_whole_batches_below_it(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(make_batch(2), now_ms=NOW)  # 0-1
    log.append(make_batch(1), now_ms=NOW)  # 2
    log.append(idem(2, 0, txn=True), now_ms=NOW)  # 3-4, open
    log.append(make_batch(1), now_ms=NOW)  # 5
    lso = log.last_stable_offset
    assert lso == 3
    sl = log.read(0, 1 << 20, True, upto_offset=lso)
    assert sl is not None
    assert [h.base_offset for h in iter_batches(log.read_bytes(sl))] == [0, 2]
    assert log.slice_end_offset(sl) == 3
    assert log.read(3, 1 << 20, True, upto_offset=lso) is None
    below = log.read(1, 1 << 20, True, upto_offset=2)
    assert below is not None and below.size == len(make_batch(2))
    full = log.read(0, 1 << 20, True)
    assert full is not None
    assert log.slice_end_offset(full) == 6
    log.append_control(PID, 0, True, 0, NOW)
    assert log.last_stable_offset == 7
    log.close()


def test_aborted_transactions_across_segments(tmp_path: Path) -> None:
    log = open_log(tmp_path, segment_bytes=250)
    log.append(idem(1, 0, txn=True), now_ms=NOW)  # 0
    for _ in range(4):
        log.append(make_batch(1), now_ms=NOW)  # 1-4, rolling
    marker = log.append_control(PID, 0, False, 0, NOW)
    assert len(log.segments) > 1
    assert log.aborted_transactions(0, 2) == [(PID, 0)]  # marker lives in a later segment
    assert log.aborted_transactions(marker + 1, marker + 2) == []
    log.close()


@pytest.mark.parametrize("clean", [True, False])
def test_txn_index_rebuilt_after_its_file_is_deleted(tmp_path: Path, clean: bool) -> None:
    log = open_log(tmp_path, segment_bytes=300)
    log.append(idem(1, 0, txn=True), now_ms=NOW)  # 0
    log.append(idem(1, 0, pid=9, txn=True), now_ms=NOW)  # 1
    log.append_control(PID, 0, False, 0, NOW)  # 2
    log.append(idem(1, 1, pid=9, txn=True), now_ms=NOW)  # 3
    log.append(make_batch(1), now_ms=NOW)  # 4
    log.append_control(9, 0, False, 0, NOW)  # 5
    log.append(idem(1, 1, txn=True), now_ms=NOW)  # 6: open at the end
    expected = log.aborted_transactions(0, 7)
    assert expected == [(PID, 0), (9, 1)]
    entries = [(s.base_offset, s.aborted_txns()) for s in log.segments]
    assert len(log.segments) > 1
    if clean:
        log.close()
    else:
        log.flush()
        for seg in log.segments:
            seg.close()
    for p in (tmp_path / "t-0").glob("*.txnindex"):
        p.unlink()
    log = open_log(tmp_path, recover=not clean, segment_bytes=300)
    assert [(s.base_offset, s.aborted_txns()) for s in log.segments] == entries
    assert log.aborted_transactions(0, 7) == expected
    assert log.last_stable_offset == 6
    assert error_of(log, idem(1, 2)) == Rejection.TXN_STATE
    log.append_control(PID, 0, True, 0, NOW)
    assert log.last_stable_offset == log.high_watermark == 8
    log.close()


def test_open_transaction_survives_restart_without_snapshot(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(make_batch(1), now_ms=NOW)
    log.append(idem(2, 0, txn=True), now_ms=NOW)
    log.close()
    for p in (tmp_path / "t-0").glob("*.snapshot"):
        p.unlink()
    log = open_log(tmp_path)
    assert log.last_stable_offset == 1
    log.append_control(PID, 0, False, 3, NOW)
    assert log.aborted_transactions(0, 4) == [(PID, 1)]
    log.close()
