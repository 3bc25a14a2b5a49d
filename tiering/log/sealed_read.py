"""A fetch range of an encrypted partition, opened piece by piece while it is sent.

Opening a whole range before answering holds it twice (stored and opened) for as long as the
answer waits to be written: up to fetch.max.bytes per in-flight fetch. Its opened size is known
without decrypting (every sealed batch is SEAL_OVERHEAD longer stored, and the headers are
readable), so the answer can carry the exact length and leave the bytes to the writer, which
pulls them as runs of whole batches of about PIECE_BYTES: read, opened (in a worker thread
when large) and written one after another, the next one opened while the current one drains.

GCM authenticates a batch only by decrypting it, so a tampered batch is found when its piece is
opened, possibly after the answer's length went out; `pieces()` then raises SealError and
yields nothing of that piece (see the writer for what happens to the connection).
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass

from tiering.log.sealing import SEAL_OVERHEAD, SEALED_EPOCH, BatchCipher, SealError
from tiering.records import HEADER_SIZE, LOG_OVERHEAD, MIN_BATCH_LENGTH

PIECE_BYTES = 1 << 20
_SCAN_WINDOW = 64 * 1024  # headers are read in windows this large (one pread per batch if larger)
_LENGTH_EPOCH = struct.Struct(">ii")  # batchLength @8, partitionLeaderEpoch @12


@dataclass(frozen=True)
class Piece:
    position: int  # in the stored file
    size: int  # stored bytes: whole batches
    opened: int  # their size once opened


def _batches(fd: int, start: int, end: int) -> Iterator[tuple[int, int, bool]]:
    """(position, stored size, sealed) of each batch in [start, end), from headers alone.
    Raises SealError unless the range is exactly whole batches."""
    pos = start
    while pos < end:
        window = os.pread(fd, min(_SCAN_WINDOW, end - pos), pos)
        if len(window) < min(HEADER_SIZE, end - pos):
            raise SealError(f"stored range [{start}, {end}) is cut short at {pos + len(window)}")
        off = 0
        while off + HEADER_SIZE <= len(window):
            length, epoch = _LENGTH_EPOCH.unpack_from(window, off + 8)
            size = length + LOG_OVERHEAD
            sealed = epoch == SEALED_EPOCH
            if length < MIN_BATCH_LENGTH or pos + off + size > end or (
                    sealed and size < HEADER_SIZE + SEAL_OVERHEAD):
                raise SealError(f"stored range [{start}, {end}) holds no whole batch at {pos + off}")
            yield pos + off, size, sealed
            off += size
        if off == 0:
            raise SealError(f"stored range [{start}, {end}) ends in a partial batch at {pos}")
        pos += off


def plan_pieces(fd: int, position: int, size: int, piece_bytes: int = PIECE_BYTES) -> list[Piece]:
    """Cut a stored range of whole batches into runs of about piece_bytes (a larger batch is a
    run of its own). Blocking reads of headers: a thread for large ranges."""
    pieces: list[Piece] = []
    start, stored, opened = position, 0, 0
    for at, batch, sealed in _batches(fd, position, position + size):
        if stored and stored + batch > piece_bytes:
            pieces.append(Piece(start, stored, opened))
            start, stored, opened = at, 0, 0
        stored += batch
        opened += batch - (SEAL_OVERHEAD if sealed else 0)
    if stored:
        pieces.append(Piece(start, stored, opened))
    return pieces


def open_piece(fd: int, piece: Piece, cipher: BatchCipher) -> bytes | bytearray:
    data = os.pread(fd, piece.size, piece.position)
    if len(data) != piece.size:
        raise SealError(f"stored batches at {piece.position} were cut short ({len(data)} of {piece.size} bytes)")
    out = cipher.open_batches(data)
    if len(out) != piece.opened:  # the file changed under the range (truncated and rewritten)
        raise SealError(f"stored batches at {piece.position} opened to {len(out)} bytes, not {piece.opened}")
    return out


class SealedRange:
    """Opened bytes of a stored range, made while they are written out. Owns `fd` (a dup'ed
    descriptor, so retention may delete the segment meanwhile) until close()."""

    def __init__(self, fd: int, pieces: list[Piece], cipher: BatchCipher, *, label: str = "",
                 inline_bytes: int = 64 * 1024) -> None:
        self._fd = fd
        self._pieces = pieces
        self._cipher = cipher
        self._inline = inline_bytes  # below this, opening costs less than a thread hop
        self.label = label  # e.g. topic-partition, for the log line of a failure
        self.size = sum(p.opened for p in pieces)
        self.stored_size = sum(p.size for p in pieces)

    async def pieces(self) -> AsyncGenerator[bytes | bytearray, None]:
        """The opened bytes, a run of whole batches at a time; the next run is opened while
        the caller writes the current one, so at most two are held."""
        ahead: asyncio.Future[bytes | bytearray] | None = None
        try:
            for i in range(len(self._pieces)):
                current = ahead if ahead is not None else self._start(self._pieces[i])
                ahead = self._start(self._pieces[i + 1]) if i + 1 < len(self._pieces) else None
                try:
                    piece = await current
                except (SealError, OSError) as e:
                    raise SealError(f"{self.label}: {e}") from e
                yield piece
                del piece
        finally:
            if ahead is not None:
                ahead.cancel()
                # A cancelled thread still runs to its end; its result or error is dropped.
                ahead.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _start(self, piece: Piece) -> asyncio.Future[bytes | bytearray]:
        if piece.size > self._inline:
            return asyncio.ensure_future(asyncio.to_thread(open_piece, self._fd, piece, self._cipher))
        done: asyncio.Future[bytes | bytearray] = asyncio.get_running_loop().create_future()
        try:
            done.set_result(open_piece(self._fd, piece, self._cipher))
        except (SealError, OSError) as e:
            done.set_exception(e)
        return done

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
