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

from tiering.records import HEADER_SIZE, LOG_OVERHEAD, BatchHeader, iter_batches, read_header

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

    def seal_batches(self, buf: bytes | bytearray | memoryview,
                     headers: list[BatchHeader]) -> tuple[bytearray, list[BatchHeader]]:
        """Seal whole batches (validated, positions relative to buf). Control batches stay as
        they are. Returns the stored bytes and their headers (positions in the new buffer)."""
        view = memoryview(buf)
        out = bytearray()
        stored: list[BatchHeader] = []
        for h in headers:
            pos = len(out)
            batch = view[h.position:h.position + h.size]
            if h.is_control or is_sealed(h):
                out += batch
            else:
                out += self._seal_one(batch)
            stored.append(read_header(out, pos))
        return out, stored

    def _seal_one(self, batch: memoryview) -> bytes:
        header = bytearray(batch[:HEADER_SIZE])
        length, epoch = _LENGTH_EPOCH.unpack_from(header, 8)
        _LENGTH_EPOCH.pack_into(header, 8, length + SEAL_OVERHEAD, SEALED_EPOCH)
        nonce = self._nonce()
        plain = _EPOCH.pack(epoch) + batch[HEADER_SIZE:]
        return bytes(header) + nonce + self._aead.encrypt(nonce, plain, bytes(header[8:]))

    # --- opening -----------------------------------------------------------------------------

    def open_batch(self, batch: bytes | bytearray | memoryview) -> bytes:
        """The original bytes of one whole stored batch (sealed or not)."""
        view = memoryview(batch)
        length, epoch = _LENGTH_EPOCH.unpack_from(view, 8)
        if epoch != SEALED_EPOCH:
            return bytes(view)
        if length + LOG_OVERHEAD != len(view) or len(view) < HEADER_SIZE + SEAL_OVERHEAD:
            raise SealError(f"sealed batch of {len(view)} bytes claims length {length}")
        nonce = bytes(view[HEADER_SIZE:HEADER_SIZE + NONCE_SIZE])
        try:
            plain = self._aead.decrypt(nonce, view[HEADER_SIZE + NONCE_SIZE:], view[8:HEADER_SIZE])
        except InvalidTag:
            base = struct.unpack_from(">q", view, 0)[0]
            raise SealError(f"sealed batch at offset {base} fails authentication "
                            "(torn, tampered, or another key)") from None
        header = bytearray(view[:HEADER_SIZE])
        _LENGTH_EPOCH.pack_into(header, 8, length - SEAL_OVERHEAD, _EPOCH.unpack_from(plain, 0)[0])
        return bytes(header) + plain[EPOCH_SIZE:]

    def open_batches(self, buf: bytes | bytearray | memoryview) -> bytes:
        """The original bytes of a run of whole stored batches (a fetch range)."""
        view = memoryview(buf)
        parts: list[bytes | memoryview] = []
        end = 0
        for h in iter_batches(view):
            if h.position != end:
                break
            batch = view[h.position:h.position + h.size]
            parts.append(self.open_batch(batch) if is_sealed(h) else batch)
            end = h.position + h.size
        if end != len(view):
            raise SealError(f"stored range of {len(view)} bytes ends in a partial batch at {end}")
        return b"".join(parts)

    def verify(self, batch: bytes | bytearray | memoryview) -> bool:
        """True when a stored sealed batch authenticates (recovery's check in place of the CRC)."""
        try:
            self.open_batch(batch)
        except SealError:
            return False
        return True


def open_segment(buf: bytes | bytearray | memoryview, cipher: BatchCipher | None,
                 index: bytes = b"") -> tuple[bytes, bytes]:
    """A stored segment's original bytes and its offset index translated to them (positions in
    the index point into the stored file; the plaintext is SEAL_OVERHEAD shorter per sealed
    batch before each position). For the uploader, which ships plaintext batches."""
    view = memoryview(buf)
    shift_at: list[tuple[int, int]] = []  # (stored position, bytes removed before it)
    removed = 0
    parts: list[bytes | memoryview] = []
    for h in iter_batches(view):
        shift_at.append((h.position, removed))
        batch = view[h.position:h.position + h.size]
        if is_sealed(h):
            if cipher is None:
                raise SealError("segment holds sealed batches but no data key is available")
            parts.append(cipher.open_batch(batch))
            removed += SEAL_OVERHEAD
        else:
            parts.append(batch)
    if not removed:
        return bytes(view), index
    shifts = dict(shift_at)
    out = bytearray()
    for rel, pos in struct.iter_unpack(">ii", index[:len(index) - len(index) % 8]):
        out += struct.pack(">ii", rel, pos - shifts.get(pos, removed))
    return b"".join(parts), bytes(out)
