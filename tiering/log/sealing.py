"""Encryption at rest for local segments: each record batch is sealed with AES-256-GCM.

A sealed batch keeps Kafka's 61-byte header readable, so the offset and time indexes, the
sanity check, producer-state replay and retention work from headers alone, as for plaintext:

    header'  (61 bytes)  = the original header with
                           batchLength          += SEAL_OVERHEAD (32)
                           partitionLeaderEpoch  = SEALED_EPOCH (INT32_MIN, the marker)
    nonce    (12 bytes)
    ciphertext || tag    = AES-256-GCM(data key, nonce,
                                       plaintext = original partitionLeaderEpoch (4) || records,
                                       associated data = header'[8:61])

Opening restores the original batch byte for byte (so the client's CRC-32C still verifies).
The associated data covers every header field but baseOffset: batches are sealed before their
offsets are assigned (off the event loop, see LogManager.append), and baseOffset lies outside
the client's CRC too; recovery checks that offsets only grow.

The marker is per batch, so a partition may hold plaintext batches written before encryption
was turned on (or after it was turned off) next to sealed ones: whatever is not marked is
served as stored. Transaction markers (control batches) are written in plaintext: they carry no
record data, and producer-state recovery reads them from headers plus that one small record.

Nonces: one random 96-bit start per cipher instance (per broker run and partition), then a
counter. Two runs collide only if their counter ranges overlap somewhere in 2^96, so the
2^32-messages bound of purely random nonces does not apply to a busy partition.

A torn or tampered batch fails the GCM tag: recovery treats it like a CRC failure (the tail
from there is cut), reads raise SealError.
"""

from __future__ import annotations

import itertools
import secrets
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tiering.records import HEADER_SIZE, BatchHeader, iter_batches, read_header

SEALED_EPOCH = -(1 << 31)
NONCE_SIZE = 12
TAG_SIZE = 16
EPOCH_SIZE = 4
SEAL_OVERHEAD = NONCE_SIZE + EPOCH_SIZE + TAG_SIZE

_LENGTH_EPOCH = struct.Struct(">ii")  # batchLength @8, partitionLeaderEpoch @12
_EPOCH = struct.Struct(">i")
_NONCE_SPACE = 1 << 96


class SealError(Exception):
    """A sealed batch fails authentication (torn, tampered, or the wrong key), or a sealed
    batch was met without a key."""


def is_sealed(h: BatchHeader) -> bool:
    return h.partition_leader_epoch == SEALED_EPOCH


class BatchCipher:
    """AES-256-GCM under one partition's data key. Thread-safe: sealing and opening run in
    worker threads (cryptography releases the GIL for large buffers)."""

    def __init__(self, data_key: bytes, key_id: str = "") -> None:
        if len(data_key) != 32:
            raise ValueError("a batch cipher needs a 256-bit data key")
        self._aead = AESGCM(bytes(data_key))
        self.key_id = key_id  # id of the KEK the data key is wrapped under (for logs)
        self._counter = itertools.count(secrets.randbelow(_NONCE_SPACE))

    def _nonce(self) -> bytes:
        return (next(self._counter) % _NONCE_SPACE).to_bytes(NONCE_SIZE, "big")

    # --- sealing -----------------------------------------------------------------------------
    # Both directions write straight into one output buffer with encrypt_into/decrypt_into: a
    # fetch of tens of MiB is otherwise dominated by copies, not by AES-GCM (~6 GB/s here).

    def seal_batches(self, buf: bytes | bytearray,
                     headers: list[BatchHeader]) -> tuple[bytearray, list[BatchHeader]]:
        """Seal whole batches (validated, positions relative to buf). Control batches stay as
        they are. Returns the stored bytes and their headers (positions in the new buffer).
        A bytearray is borrowed for the call (restored before it returns)."""
        if not isinstance(buf, bytearray):
            buf = bytearray(buf)
        total = sum(h.size + (0 if h.is_control or is_sealed(h) else SEAL_OVERHEAD) for h in headers)
        out = bytearray(total)
        view = memoryview(buf)
        dst = memoryview(out)
        stored: list[BatchHeader] = []
        pos = 0
        for h in headers:
            src = h.position
            if h.is_control or is_sealed(h):
                dst[pos:pos + h.size] = view[src:src + h.size]
            else:
                self._seal_into(view, src, h.size, dst, pos)
            stored.append(read_header(out, pos))
            pos += h.size + (0 if h.is_control or is_sealed(h) else SEAL_OVERHEAD)
        view.release()
        dst.release()
        return out, stored

    def _seal_into(self, src: memoryview, at: int, size: int, dst: memoryview, pos: int) -> None:
        header = bytearray(src[at:at + HEADER_SIZE])
        length, epoch = _LENGTH_EPOCH.unpack_from(header, 8)
        _LENGTH_EPOCH.pack_into(header, 8, length + SEAL_OVERHEAD, SEALED_EPOCH)
        nonce = self._nonce()
        dst[pos:pos + HEADER_SIZE] = header
        dst[pos + HEADER_SIZE:pos + HEADER_SIZE + NONCE_SIZE] = nonce
        # Plaintext = original epoch || records: borrow the 4 bytes before the records (the
        # recordCount field) for the epoch, so the plaintext is one contiguous slice of src.
        count_at = at + HEADER_SIZE - EPOCH_SIZE
        saved = bytes(src[count_at:at + HEADER_SIZE])
        _EPOCH.pack_into(src, count_at, epoch)
        try:
            body = pos + HEADER_SIZE + NONCE_SIZE
            self._aead.encrypt_into(nonce, src[count_at:at + size], bytes(header[8:]),
                                    dst[body:body + size - HEADER_SIZE + EPOCH_SIZE + TAG_SIZE])
        finally:
            src[count_at:at + HEADER_SIZE] = saved

    # --- opening -----------------------------------------------------------------------------

    def open_batch(self, batch: bytes | bytearray | memoryview) -> bytes | bytearray:
        """The original bytes of one whole stored batch (sealed or not)."""
        return self.open_batches(batch)

    def open_batches(self, buf: bytes | bytearray | memoryview) -> bytes | bytearray:
        """The original bytes of a run of whole stored batches (a fetch range); a new
        bytearray when anything was sealed (no further copy), else bytes."""
        view = memoryview(buf)
        batches = []
        end = 0
        size = 0
        for h in iter_batches(view):
            if h.position != end:
                break
            batches.append(h)
            end = h.position + h.size
            size += h.size - (SEAL_OVERHEAD if is_sealed(h) else 0)
        if end != len(view):
            raise SealError(f"stored range of {len(view)} bytes ends in a partial batch at {end}")
        if not any(is_sealed(h) for h in batches):
            return bytes(view)
        out = bytearray(size)
        dst = memoryview(out)
        pos = 0
        for h in batches:
            if is_sealed(h):
                self._open_into(view, h, dst, pos)
                pos += h.size - SEAL_OVERHEAD
            else:
                dst[pos:pos + h.size] = view[h.position:h.position + h.size]
                pos += h.size
        dst.release()
        return out

    def _open_into(self, src: memoryview, h: BatchHeader, dst: memoryview, pos: int) -> None:
        at, size = h.position, h.size
        if size < HEADER_SIZE + SEAL_OVERHEAD:
            raise SealError(f"sealed batch at offset {h.base_offset} is {size} bytes, too short")
        nonce = src[at + HEADER_SIZE:at + HEADER_SIZE + NONCE_SIZE]
        # Decrypt so the plaintext's leading epoch lands on the 4 bytes before the records,
        # then write the header over them (restoring recordCount there).
        plain_at = pos + HEADER_SIZE - EPOCH_SIZE
        try:
            self._aead.decrypt_into(nonce, src[at + HEADER_SIZE + NONCE_SIZE:at + size],
                                    src[at + 8:at + HEADER_SIZE],
                                    dst[plain_at:pos + size - SEAL_OVERHEAD])
        except InvalidTag:
            raise SealError(f"sealed batch at offset {h.base_offset} fails authentication "
                            "(torn, tampered, or another key)") from None
        (epoch,) = _EPOCH.unpack_from(dst, plain_at)
        dst[pos:pos + HEADER_SIZE] = src[at:at + HEADER_SIZE]
        _LENGTH_EPOCH.pack_into(dst, pos + 8, h.batch_length - SEAL_OVERHEAD, epoch)

    def verify(self, batch: bytes | bytearray | memoryview) -> bool:
        """True when a stored sealed batch authenticates (recovery's check in place of the CRC)."""
        try:
            self.open_batch(batch)
        except SealError:
            return False
        return True


def open_segment(buf: bytes | bytearray | memoryview, cipher: BatchCipher | None,
                 index: bytes = b"") -> tuple[bytes | bytearray, bytes]:
    """A stored segment's original bytes and its offset index translated to them (positions in
    the index point into the stored file; the plaintext is SEAL_OVERHEAD shorter per sealed
    batch before each position). For the uploader, which ships plaintext batches."""
    removed_before: dict[int, int] = {}  # stored position -> bytes removed before it
    removed = 0
    for h in iter_batches(buf):
        removed_before[h.position] = removed
        if is_sealed(h):
            removed += SEAL_OVERHEAD
    if not removed:
        return bytes(buf), index
    if cipher is None:
        raise SealError("segment holds sealed batches but no data key is available")
    out = bytearray()
    for rel, pos in struct.iter_unpack(">ii", index[:len(index) - len(index) % 8]):
        out += struct.pack(">ii", rel, pos - removed_before.get(pos, removed))
    return cipher.open_batches(buf), bytes(out)
