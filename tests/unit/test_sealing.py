"""Encryption at rest of local segments: the sealed batch format, and the log around it."""

from __future__ import annotations

import asyncio
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from security.keys import Kek, KeyRing, LocalKeyProvider, new_data_key
from tests.unit.conftest import make_batch
from tiering.log.config import LogConfig
from tiering.log.data_keys import KEY_FILE, DataKeyError, PartitionKeys, read_key_file, rewrap_key_file
from tiering.log.partition import UnifiedLog
from tiering.log.sealing import SEAL_OVERHEAD, SEALED_EPOCH, BatchCipher, SealError, is_sealed, open_segment
from tiering.records import (
    HEADER_SIZE,
    TIMESTAMP_TYPE_MASK,
    InvalidRecordError,
    build_control_batch,
    crc32c,
    iter_batches,
    read_header,
    record_timestamps,
    validate_batches,
)

MARKER = b"secret-marker-7f3a"
NOW = 1_700_000_000_000


def _batches(*values: list[bytes], base: int = 0, epoch: int = 7) -> bytes:
    out = bytearray()
    for vals in values:
        b = bytearray(make_batch(vals, base_offset=base))
        struct.pack_into(">i", b, 12, epoch)  # partitionLeaderEpoch, outside the CRC
        out += b
        base += len(vals)
    return bytes(out)


def _seal(cipher: BatchCipher, data: bytes) -> bytearray:
    sealed, _ = cipher.seal_batches(data, validate_batches(data, 1 << 30))
    return sealed


def test_round_trip_is_byte_exact_and_hides_values() -> None:
    cipher = BatchCipher(new_data_key())
    data = _batches([MARKER + b"-0", MARKER + b"-1"], [MARKER + b"-2"], base=40)
    sealed = _seal(cipher, data)
    assert MARKER not in sealed
    assert len(sealed) == len(data) + 2 * SEAL_OVERHEAD
    headers = list(iter_batches(sealed))
    assert [h.base_offset for h in headers] == [40, 42]
    assert all(is_sealed(h) and h.partition_leader_epoch == SEALED_EPOCH for h in headers)
    assert [h.record_count for h in headers] == [2, 1]  # indexing fields stay readable
    opened = cipher.open_batches(sealed)
    assert opened == data
    for h in iter_batches(opened):  # the client's CRC still verifies
        assert crc32c(opened[h.position + 21:h.position + h.size]) == h.crc
        assert h.partition_leader_epoch == 7


def test_base_offset_may_be_assigned_after_sealing() -> None:
    cipher = BatchCipher(new_data_key())
    data = bytearray(_batches([b"a"], [b"b", b"c"]))
    sealed = _seal(cipher, bytes(data))
    for h, base in zip(iter_batches(sealed), (100, 101)):
        struct.pack_into(">q", sealed, h.position, base)
    for h, base in zip(iter_batches(data), (100, 101)):
        struct.pack_into(">q", data, h.position, base)
    assert cipher.open_batches(sealed) == bytes(data)


@pytest.mark.parametrize("where", [HEADER_SIZE + 20, HEADER_SIZE - 5, 21, len(b"") + 13, -1])
def test_tampering_is_detected(where: int) -> None:
    cipher = BatchCipher(new_data_key())
    sealed = _seal(cipher, _batches([MARKER]))
    sealed[where] ^= 0x01
    if where == 13:  # the marker itself: no longer recognised as sealed, served as stored
        assert cipher.open_batches(sealed) == bytes(sealed)
        return
    with pytest.raises(SealError):
        cipher.open_batches(sealed)
    assert not cipher.verify(sealed)


def test_wrong_key_fails() -> None:
    sealed = _seal(BatchCipher(new_data_key()), _batches([MARKER]))
    with pytest.raises(SealError):
        BatchCipher(new_data_key()).open_batches(sealed)


def test_control_and_mixed_plaintext_batches_pass_through() -> None:
    cipher = BatchCipher(new_data_key())
    control = build_control_batch(5, 0, True, 3, NOW, base_offset=1)
    plain = _batches([b"old"])
    sealed = _seal(cipher, _batches([MARKER], base=2))
    stored = plain + _seal(cipher, control) + sealed
    assert _seal(cipher, control) == control  # markers stay plaintext
    assert cipher.open_batches(stored) == plain + control + _batches([MARKER], base=2)


def test_nonces_never_repeat() -> None:
    cipher = BatchCipher(new_data_key())
    data = _batches([b"x"])
    nonces = {bytes(_seal(cipher, data)[HEADER_SIZE:HEADER_SIZE + 12]) for _ in range(200)}
    assert len(nonces) == 200


def test_open_segment_translates_index_positions() -> None:
    cipher = BatchCipher(new_data_key())
    data = _batches([b"a"], [b"b"], [b"c"])
    sealed = _seal(cipher, data)
    stored = list(iter_batches(sealed))
    plain = list(iter_batches(data))
    index = struct.pack(">iiii", 1, stored[1].position, 2, stored[2].position)
    out, out_index = open_segment(sealed, cipher, index)
    assert out == data
    assert out_index == struct.pack(">iiii", 1, plain[1].position, 2, plain[2].position)
    with pytest.raises(SealError):
        open_segment(sealed, None, index)


# --- the partition log with a cipher -----------------------------------------------------


def _open(path: Path, cipher: BatchCipher | None, recover: bool = False, **config: Any) -> UnifiedLog:
    return UnifiedLog.open(path / "t-0", "t", 0, LogConfig(**config), recover,
                           cipher=cipher, seal_appends=cipher is not None)


def test_log_seals_on_disk_and_reads_back(tmp_path: Path) -> None:
    cipher = BatchCipher(new_data_key())
    lg = _open(tmp_path, cipher, index_interval_bytes=1)
    originals = [make_batch([MARKER + b"%d" % i] * 3, base_timestamp=NOW + i) for i in range(5)]
    for b in originals:
        lg.append(b, now_ms=NOW)
    assert lg.log_end_offset == 15
    raw = b"".join(p.read_bytes() for p in (tmp_path / "t-0").iterdir())
    assert MARKER not in raw
    sl = lg.read(6, 1 << 20, True)
    assert sl is not None
    got = lg.read_bytes(sl)
    expect = b"".join(bytearray(b) for b in originals[2:])
    assert [h.base_offset for h in iter_batches(got)] == [6, 9, 12]
    for h, orig in zip(iter_batches(got), originals[2:]):
        assert got[h.position + 8:h.position + h.size] == orig[8:]  # all but the assigned offset
    assert len(got) == len(expect)
    # Batch i holds timestamps NOW+i .. NOW+i+2: one batch is opened and decoded.
    assert lg.offset_for_timestamp(NOW + 3) == (5, NOW + 3)
    assert lg.max_timestamp() == (14, NOW + 6)
    lg.close()


def test_log_append_time_is_sealed_consistently(tmp_path: Path) -> None:
    cipher = BatchCipher(new_data_key())
    lg = _open(tmp_path, cipher, message_timestamp_type="LogAppendTime")
    lg.append(make_batch([MARKER]), now_ms=NOW)
    sl = lg.read(0, 1 << 20, True)
    assert sl is not None
    got = lg.read_bytes(sl)
    h = read_header(got)
    assert h.max_timestamp == NOW and h.attributes & TIMESTAMP_TYPE_MASK
    assert crc32c(got[21:h.size]) == h.crc
    assert record_timestamps(got) == [(0, NOW)]
    lg.close()


def test_recovery_cuts_a_torn_sealed_tail(tmp_path: Path) -> None:
    cipher = BatchCipher(new_data_key())
    lg = _open(tmp_path, cipher)
    for i in range(4):
        lg.append(make_batch([MARKER + b"%d" % i]), now_ms=NOW)
    lg.flush()
    path = lg.active_segment.log_path
    size = path.stat().st_size
    lg.close()
    # A torn last write: the batch's length is there, its last bytes are not (the GCM tag).
    with open(path, "r+b") as f:
        f.truncate(size - 3)
    lg = _open(tmp_path, cipher, recover=True)
    assert lg.log_end_offset == 3
    sl = lg.read(0, 1 << 20, True)
    assert sl is not None and [h.base_offset for h in iter_batches(lg.read_bytes(sl))] == [0, 1, 2]
    lg.close()
    # A flipped ciphertext byte in the middle fails authentication: cut from there on.
    with open(path, "r+b") as f:
        f.seek(HEADER_SIZE + 20)
        byte = f.read(1)
        f.seek(HEADER_SIZE + 20)
        f.write(bytes([byte[0] ^ 0xFF]))
    lg = _open(tmp_path, cipher, recover=True)
    assert lg.log_end_offset == 0
    lg.close()


def test_sealed_segment_refuses_recovery_without_key(tmp_path: Path) -> None:
    lg = _open(tmp_path, BatchCipher(new_data_key()))
    lg.append(make_batch([MARKER]), now_ms=NOW)
    lg.close()
    with pytest.raises(SealError):
        UnifiedLog.open(tmp_path / "t-0", "t", 0, LogConfig(), True)
    assert (tmp_path / "t-0" / "00000000000000000000.log").stat().st_size > 0  # nothing was cut


def test_mixed_partition_plaintext_then_sealed(tmp_path: Path) -> None:
    plain = _open(tmp_path, None)
    plain.append(make_batch([b"before"]), now_ms=NOW)
    plain.close()
    cipher = BatchCipher(new_data_key())
    lg = _open(tmp_path, cipher, recover=True)
    lg.append(make_batch([MARKER]), now_ms=NOW)
    values = b""
    for offset in (0, 1):  # (the old batch's timestamp rolled the segment)
        sl = lg.read(offset, 1 << 20, True)
        assert sl is not None
        values += lg.read_bytes(sl)
    assert b"before" in values and MARKER in values
    raw = b"".join(p.read_bytes() for p in (tmp_path / "t-0").glob("*.log"))
    assert b"before" in raw and MARKER not in raw
    lg.close()


# --- partition key files -----------------------------------------------------------------


def _ring(*ids: str) -> KeyRing:
    return KeyRing([Kek(i, 0, os.urandom(32)) for i in ids], ids[-1])


def _key_id(directory: Path) -> str:
    """The key id in the partition's key file; there must be one."""
    wrapped = read_key_file(directory)
    assert wrapped is not None, f"no key file in {directory}"
    return wrapped.key_id


def test_partition_key_file_create_reopen_rewrap(tmp_path: Path) -> None:
    ring = _ring("k1")
    keys = PartitionKeys(LocalKeyProvider(ring), enabled=True)
    d = tmp_path / "t-0"
    c1 = asyncio.run(keys.cipher_for(d))
    assert c1 is not None and _key_id(d) == "k1"
    sealed = _seal(c1, _batches([MARKER]))
    rotated = KeyRing(ring.keys() + [Kek("k2", 1, os.urandom(32))], "k2")
    provider = LocalKeyProvider(rotated)
    assert asyncio.run(rewrap_key_file(d, provider))
    assert _key_id(d) == "k2"
    assert not asyncio.run(rewrap_key_file(d, provider))
    only_new = LocalKeyProvider(KeyRing([rotated.keys()[1]], "k2"))
    c2 = asyncio.run(PartitionKeys(only_new, enabled=False).cipher_for(d))
    assert c2 is not None and c2.open_batches(sealed) == _batches([MARKER])
    # Not enabled and no key file: plaintext partition.
    assert asyncio.run(PartitionKeys(only_new, enabled=False).cipher_for(tmp_path / "t-1")) is None
    assert not (tmp_path / "t-1" / KEY_FILE).exists()
    with pytest.raises(DataKeyError):
        asyncio.run(PartitionKeys(None, enabled=False).cipher_for(d))


# --- the log manager: sealing off the loop, in arrival order ---------------------------------


async def test_large_appends_are_sealed_in_a_thread_and_land_in_arrival_order(tmp_path: Path) -> None:
    from tiering.log.manager import CRYPTO_INLINE_BYTES, LogManager

    ring = _ring("k1")
    mgr = LogManager(tmp_path, retention_check_interval_ms=60_000)
    mgr.keys = PartitionKeys(LocalKeyProvider(ring), enabled=True)
    await mgr.start()
    lg = await mgr.open_log("t", 0, LogConfig())
    assert lg.seal_appends and (tmp_path / "t-0" / KEY_FILE).exists()
    big = make_batch([MARKER + b"big" + b"x" * 1000] * (CRYPTO_INLINE_BYTES // 1000 + 5), base_timestamp=NOW)
    small = make_batch([MARKER + b"small"], base_timestamp=NOW)
    first = mgr.append(lg, big, NOW)
    second = mgr.append(lg, small, NOW)  # small, but behind a large one still being sealed
    third = mgr.append(lg, big, NOW)
    assert isinstance(first, asyncio.Task) and isinstance(second, asyncio.Task) and isinstance(third, asyncio.Task)
    results = [await r for r in (first, second, third)]
    n = read_header(big).record_count
    assert [(r.base_offset, r.last_offset) for r in results] == [(0, n - 1), (n, n), (n + 1, 2 * n)]
    # Nothing pending any more: a small append is synchronous again.
    fourth = mgr.append(lg, small, NOW)
    assert not isinstance(fourth, asyncio.Task) and fourth.base_offset == 2 * n + 1
    sl = lg.read(n, 1 << 20, True)
    assert sl is not None
    opening = await mgr.open_range(lg, sl)
    try:
        opened = b"".join([piece async for piece in opening.pieces()])
    finally:
        opening.close()
    assert len(opened) == opening.size
    assert MARKER + b"small" in opened and read_header(opened).base_offset == n
    assert all(MARKER not in p.read_bytes() for p in (tmp_path / "t-0").iterdir())
    # A bad request in the chain fails alone; later appends still follow in order.
    bad = bytearray(big)
    bad[-1] ^= 1
    failing = mgr.append(lg, bytes(bad), NOW)
    after = mgr.append(lg, small, NOW)
    assert isinstance(failing, asyncio.Task) and isinstance(after, asyncio.Task)  # both awaited below
    with pytest.raises(InvalidRecordError):  # the flipped bit fails the batch's CRC
        await failing
    assert (await after).base_offset == 2 * n + 2
    await mgr.close()
