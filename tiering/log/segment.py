"""One log segment: `<base>.log` plus its sparse `.index` and `.timeindex`, Kafka's layout, and
its `.txnindex` of aborted transactions (see txn_index.py; the partition log maintains it).

`.index` entries are 8 bytes (int32 offset relative to the base, int32 byte position) and
`.timeindex` entries 12 bytes (int64 timestamp, int32 relative offset), all big-endian. Both are
sparse: an offset entry for the batch that follows every `index.interval.bytes` appended, and a
time entry at the same points when the max timestamp has grown. Unlike Kafka, which preallocates
the index files to segment.index.bytes, mmaps them and trims on roll, we append entries with
os.write and keep a lazily loaded in-memory copy for lookups: no trim step, and a torn tail is a
size that is not a multiple of the entry size, which the sanity check catches.

All methods are synchronous; the caller decides which ones run in a thread (fsync, recovery).
"""

from __future__ import annotations

import mmap
import os
import struct
import sys
import time
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tiering.log.config import LogConfig
from tiering.log.files import SyncMark
from tiering.log.sealing import SEALED_EPOCH, BatchCipher, SealError, open_segment
from tiering.log.txn_index import TXN_INDEX_SUFFIX, AbortedTxn, TransactionIndex
from tiering.records import (
    ATTRIBUTES_OFFSET,
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC_V2,
    MIN_BATCH_LENGTH,
    NO_TIMESTAMP,
    BatchHeader,
    crc32c,
    read_header,
)

LOG_SUFFIX = ".log"
INDEX_SUFFIX = ".index"
TIME_INDEX_SUFFIX = ".timeindex"
DELETED_SUFFIX = ".deleted"

INDEX_ENTRY = struct.Struct(">ii")
TIME_INDEX_ENTRY = struct.Struct(">qi")
_HEADER = struct.Struct(">qiibIhiqqqhii")

INT32_MAX = (1 << 31) - 1
SCAN_CHUNK = 32 * 1024
_LITTLE_ENDIAN = sys.byteorder == "little"


def segment_name(base_offset: int) -> str:
    return f"{base_offset:020d}"


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class _Lookups:
    """A segment's offset and time indexes in memory, as parallel arrays for bisect."""

    index_rel: array  # relative offsets of the offset index
    index_pos: array  # their positions in the log
    time_ts: array  # timestamps of the time index
    time_rel: array  # their relative offsets


class LogSegment:
    def __init__(self, directory: Path, base_offset: int, config: LogConfig,
                 cipher: BatchCipher | None = None) -> None:
        self.dir = directory
        # The partition's data key when it is encrypted: sealed batches are opened on read
        # and authenticated by recovery (see sealing.py).
        self.cipher = cipher
        self.base_offset = base_offset
        self.index_interval_bytes = config.index_interval_bytes
        name = segment_name(base_offset)
        self.log_path = directory / (name + LOG_SUFFIX)
        self.index_path = directory / (name + INDEX_SUFFIX)
        self.time_index_path = directory / (name + TIME_INDEX_SUFFIX)
        self.txn_index_path = directory / (name + TXN_INDEX_SUFFIX)
        self.txn_index: TransactionIndex | None = None
        # True when the transaction index must be rebuilt from the log (the file was missing or
        # torn, or the log itself was recovered); the partition log does it with producer state.
        self.txn_index_stale = False
        self._log_fd = -1
        self._index_fd = -1
        self._time_fd = -1
        self._size = 0
        self._next_offset = base_offset
        self._max_timestamp = NO_TIMESTAMP
        self._offset_of_max_timestamp = -1
        self._last_time_entry_ts = NO_TIMESTAMP
        self._bytes_since_index = 0
        # In-memory copies of the index files, loaded on first lookup.
        self._lookups: _Lookups | None = None  # the indexes in memory, loaded on first lookup
        # Wall-clock basis for segment.ms: when the first batch arrived (Kafka uses the first
        # batch's timestamp; the append time is immune to odd client clocks).
        self.rolling_basis_ms: int | None = None
        # Durability as write positions captured before each sync (see SyncMark): the log
        # file, and the offset and time indexes (the transaction index keeps its own).
        self._log_sync = SyncMark()
        self._index_sync = SyncMark()
        self.recovered_bytes = 0  # bytes a recovery cut off

    # --- opening, recovery -------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: Path,
        base_offset: int,
        config: LogConfig,
        create: bool,
        *,
        recover: bool = False,
        cipher: BatchCipher | None = None,
    ) -> LogSegment:
        """Open (or create) a segment. An existing one is recovered when recover is true or
        when its indexes fail the cheap sanity check."""
        seg = cls(directory, base_offset, config, cipher)
        flags = os.O_RDWR | os.O_APPEND
        seg._log_fd = os.open(seg.log_path, flags | (os.O_CREAT if create else 0), 0o644)
        try:
            seg._index_fd = os.open(seg.index_path, flags | os.O_CREAT, 0o644)
            seg._time_fd = os.open(seg.time_index_path, flags | os.O_CREAT, 0o644)
            seg.txn_index = TransactionIndex(seg.txn_index_path)
            seg.txn_index_stale = not seg.txn_index.is_valid
            seg._size = os.fstat(seg._log_fd).st_size
            if recover or not seg.sanity_check():
                seg.recover()
        except BaseException:
            seg.close()
            raise
        return seg

    def sanity_check(self) -> bool:
        """Load the segment's state from its indexes plus a short tail scan.

        True when the last index entries point at real batches with matching offsets and the
        file ends on a batch boundary; False means a full recover() is needed.
        """
        size = os.fstat(self._log_fd).st_size
        index_size = os.fstat(self._index_fd).st_size
        time_size = os.fstat(self._time_fd).st_size
        if index_size % INDEX_ENTRY.size or time_size % TIME_INDEX_ENTRY.size:
            return False
        self._size = size
        if size == 0:
            if index_size or time_size:
                return False
            self._reset_state()
            return True
        start = 0
        last_rel = -1
        if index_size:
            last_rel, start = INDEX_ENTRY.unpack(_pread_exact(self._index_fd, 8, index_size - 8))
            if start >= size:
                return False
        time_ts, time_rel = NO_TIMESTAMP, -1
        if time_size:
            time_ts, time_rel = TIME_INDEX_ENTRY.unpack(_pread_exact(self._time_fd, 12, time_size - 12))
        last: BatchHeader | None = None
        max_ts = time_ts
        max_ts_offset = self.base_offset + time_rel if time_size else -1
        end = start
        since_index = 0
        for h in self._scan(start, size):
            if h.magic != MAGIC_V2 or h.last_offset_delta < 0:
                return False
            # Past the last entry, no batch may have been due an index entry.
            if since_index > self.index_interval_bytes:
                return False
            since_index += h.size
            if last is None and index_size and h.last_offset != self.base_offset + last_rel:
                return False
            if last is not None and h.base_offset <= last.last_offset:
                return False
            if h.max_timestamp > max_ts:
                max_ts, max_ts_offset = h.max_timestamp, h.last_offset
            last = h
            end = h.position + h.size
        if last is None or end != size:
            return False
        if time_size and self.base_offset + time_rel > last.last_offset:
            return False
        first = read_header(_pread_exact(self._log_fd, HEADER_SIZE, 0))
        if first.base_offset < self.base_offset:
            return False
        self._drop_loaded_indexes()
        self._next_offset = last.next_offset
        self._max_timestamp = max_ts
        self._offset_of_max_timestamp = max_ts_offset
        self._last_time_entry_ts = time_ts
        self._bytes_since_index = size - start
        self.rolling_basis_ms = _rolling_basis(first.max_timestamp)
        return True

    def recover(self) -> int:
        """Scan the whole log validating every batch (magic, length, CRC-32C, offsets), cut the
        file at the first bad or torn batch, and rebuild both indexes. Returns bytes cut off.

        max.message.bytes is deliberately not enforced here: lowering it must not destroy data
        that was valid when written.
        """
        size = os.fstat(self._log_fd).st_size
        self._reset_state()
        valid = 0
        index_entries = bytearray()
        time_entries = bytearray()
        first_ts: int | None = None
        if size:
            with open(self.log_path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) as mm:
                view = memoryview(mm)
                try:
                    expected = self.base_offset
                    pos = 0
                    headers: list[BatchHeader] = []
                    while size - pos >= HEADER_SIZE:
                        fields = _HEADER.unpack_from(view, pos)
                        length, magic, crc, last_delta = fields[1], fields[3], fields[4], fields[6]
                        batch_size = length + LOG_OVERHEAD
                        if magic != MAGIC_V2 or length < MIN_BATCH_LENGTH or pos + batch_size > size:
                            break
                        if fields[0] < expected or last_delta < 0:
                            break
                        if fields[0] + last_delta - self.base_offset > INT32_MAX:
                            break
                        if fields[2] == SEALED_EPOCH:
                            # A sealed batch: the GCM tag stands in for the CRC (a torn or
                            # tampered tail fails it). Without the key nothing can be judged, so
                            # refuse to open rather than cut acknowledged data.
                            if self.cipher is None:
                                raise SealError(f"{self.log_path} holds sealed batches but the "
                                                "partition has no data key")
                            if not self.cipher.verify(view[pos : pos + batch_size]):
                                break
                        elif crc32c(view[pos + ATTRIBUTES_OFFSET : pos + batch_size]) != crc:
                            break
                        h = BatchHeader(pos, *fields)
                        if first_ts is None:
                            first_ts = h.max_timestamp
                        headers.append(h)
                        expected = h.next_offset
                        pos += batch_size
                        if len(headers) >= 4096:
                            self._track(headers, 0, index_entries, time_entries)
                            headers.clear()
                    self._track(headers, 0, index_entries, time_entries)
                    valid = pos
                finally:
                    view.release()
        # The final time entry Kafka writes when a segment goes inactive is re-added by seal().
        truncated = size - valid
        if truncated:
            os.ftruncate(self._log_fd, valid)
        for fd, entries in ((self._index_fd, index_entries), (self._time_fd, time_entries)):
            os.ftruncate(fd, 0)
            if entries:
                _write_all(fd, entries)
        self._size = valid
        self._drop_loaded_indexes()
        self.rolling_basis_ms = None if first_ts is None else _rolling_basis(first_ts)
        self.recovered_bytes = truncated
        self._log_sync.wrote()
        self._index_sync.wrote()
        self.txn_index_stale = True
        return truncated

    def _reset_state(self) -> None:
        self._size = 0
        self._next_offset = self.base_offset
        self._max_timestamp = NO_TIMESTAMP
        self._offset_of_max_timestamp = -1
        self._last_time_entry_ts = NO_TIMESTAMP
        self._bytes_since_index = 0
        self._drop_loaded_indexes()
        self.rolling_basis_ms = None

    # --- state ---------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._size

    @property
    def next_offset(self) -> int:
        return self._next_offset

    @property
    def max_timestamp(self) -> int:
        return self._max_timestamp

    @property
    def offset_of_max_timestamp(self) -> int:
        """Last offset of the first batch that reached max_timestamp (-1 when empty)."""
        return self._offset_of_max_timestamp

    @property
    def fileno(self) -> int:
        return self._log_fd

    @property
    def is_empty(self) -> bool:
        return self._size == 0

    @property
    def data_dirty(self) -> bool:
        """Log bytes written that no completed fsync/fdatasync started after."""
        return self._log_sync.dirty

    @property
    def dirty(self) -> bool:
        """Any of the segment's files written that no completed fsync started after."""
        txn_dirty = self.txn_index is not None and self.txn_index.dirty
        return self._log_sync.dirty or self._index_sync.dirty or txn_dirty

    # --- appending -------------------------------------------------------------------------

    def append(
        self, data: bytes | bytearray | memoryview | list[bytes | memoryview], headers: list[BatchHeader],
        now_ms: int | None = None,
    ) -> None:
        """Append whole batches with offsets already assigned; header positions are relative
        to data, which is one buffer or pieces written with one writev.
        One write for the data; index entries are written after it. now_ms (wall clock,
        default the system's) starts the segment.ms clock on the first append."""
        if not headers:
            return
        before = self._append_state()
        index_entries = bytearray()
        time_entries = bytearray()
        try:
            if isinstance(data, list):
                size = sum(len(p) for p in data)
                _writev_all(self._log_fd, data)
            else:
                size = len(data)
                _write_all(self._log_fd, data)
            self._track(headers, before.size, index_entries, time_entries)
            if index_entries:
                _write_all(self._index_fd, index_entries)
            if time_entries:
                _write_all(self._time_fd, time_entries)
        except OSError:
            # A failed write (ENOSPC, EIO) leaves the segment as it was: no torn batch, no
            # batch without its index entry, no entry pointing past the data.
            self._restore(before)
            raise
        self._size = before.size + size
        self._next_offset = headers[-1].next_offset
        if self.rolling_basis_ms is None:
            self.rolling_basis_ms = wall_ms() if now_ms is None else now_ms
        # Counted once written: a sync that captures the count must start after the write.
        self._log_sync.wrote()
        if index_entries or time_entries:
            self._index_sync.wrote()

    def _append_state(self) -> _AppendState:
        return _AppendState(
            self._size, os.fstat(self._index_fd).st_size, os.fstat(self._time_fd).st_size,
            self._next_offset, self._max_timestamp, self._offset_of_max_timestamp,
            self._last_time_entry_ts, self._bytes_since_index)

    def _restore(self, st: _AppendState) -> None:
        """Cut the files back to `st` and forget what _track recorded after it."""
        os.ftruncate(self._log_fd, st.size)
        os.ftruncate(self._index_fd, st.index_size)
        os.ftruncate(self._time_fd, st.time_size)
        self._size = st.size
        self._next_offset = st.next_offset
        self._max_timestamp = st.max_timestamp
        self._offset_of_max_timestamp = st.offset_of_max_timestamp
        self._last_time_entry_ts = st.last_time_entry_ts
        self._bytes_since_index = st.bytes_since_index
        self._drop_loaded_indexes()  # reloaded from the files on the next lookup

    def _track(
        self, headers: list[BatchHeader], base_pos: int, index_entries: bytearray, time_entries: bytearray
    ) -> None:
        """Kafka's per-batch index rule: update the max timestamp, and once more than
        index_interval_bytes went by since the last entry, index this batch."""
        base = self.base_offset
        interval = self.index_interval_bytes
        for h in headers:
            if h.max_timestamp > self._max_timestamp:
                self._max_timestamp = h.max_timestamp
                self._offset_of_max_timestamp = h.last_offset
            if self._bytes_since_index > interval:
                rel = h.last_offset - base
                pos = base_pos + h.position
                index_entries += INDEX_ENTRY.pack(rel, pos)
                if self._lookups is not None:
                    self._lookups.index_rel.append(rel)
                    self._lookups.index_pos.append(pos)
                self._maybe_time_entry(time_entries)
                self._bytes_since_index = 0
            self._bytes_since_index += h.size
            self._next_offset = h.next_offset

    def _maybe_time_entry(self, time_entries: bytearray) -> None:
        if self._max_timestamp > self._last_time_entry_ts:
            rel = self._offset_of_max_timestamp - self.base_offset
            time_entries += TIME_INDEX_ENTRY.pack(self._max_timestamp, rel)
            if self._lookups is not None:
                self._lookups.time_ts.append(self._max_timestamp)
                self._lookups.time_rel.append(rel)
            self._last_time_entry_ts = self._max_timestamp

    def append_aborted_txn(self, txn: AbortedTxn) -> None:
        assert self.txn_index is not None
        self.txn_index.append(txn)

    def aborted_txns(self) -> list[AbortedTxn]:
        return [] if self.txn_index is None else self.txn_index.entries

    def collect_aborted_txns(self, fetch_offset: int, upper_offset: int) -> tuple[list[AbortedTxn], bool]:
        if self.txn_index is None:
            return [], False
        return self.txn_index.collect(fetch_offset, upper_offset)

    def iter_headers(self, from_offset: int | None = None) -> Iterator[BatchHeader]:
        """Headers of the batches from the one holding from_offset (default: the first)."""
        start = 0
        if from_offset is not None and from_offset > self.base_offset:
            h = self.batch_for(from_offset)
            if h is None:
                return
            start = h.position
        yield from self._scan(start)

    def seal(self) -> None:
        """The segment stops being active: record its max timestamp in the time index, as
        Kafka does on roll, so timestamp lookups and restarts see it without a scan."""
        entries = bytearray()
        before = self._last_time_entry_ts
        self._maybe_time_entry(entries)
        if entries:
            size = os.fstat(self._time_fd).st_size
            try:
                _write_all(self._time_fd, entries)
            except OSError:
                os.ftruncate(self._time_fd, size)
                self._last_time_entry_ts = before
                self._drop_loaded_indexes()
                raise
            self._index_sync.wrote()

    # --- lookups ---------------------------------------------------------------------------

    def _load_indexes(self) -> _Lookups:
        if self._lookups is not None:
            return self._lookups
        raw = _read_file(self._index_fd)
        pairs = array("i")
        pairs.frombytes(raw[: len(raw) - len(raw) % INDEX_ENTRY.size])
        if _LITTLE_ENDIAN:
            pairs.byteswap()
        raw_time = _read_file(self._time_fd)
        time_ts, time_rel = _parse_time_index(raw_time[: len(raw_time) - len(raw_time) % TIME_INDEX_ENTRY.size])
        self._lookups = _Lookups(index_rel=pairs[0::2], index_pos=pairs[1::2], time_ts=time_ts, time_rel=time_rel)
        return self._lookups

    def _drop_loaded_indexes(self) -> None:
        self._lookups = None

    def _scan(self, start: int, end: int | None = None) -> Iterator[BatchHeader]:
        """Batch headers from byte start to end, read in chunks with pread."""
        end = self._size if end is None else end
        pos = start
        unpack = _HEADER.unpack_from
        while end - pos >= HEADER_SIZE:
            buf = os.pread(self._log_fd, min(SCAN_CHUNK, end - pos), pos)
            off = 0
            while len(buf) - off >= HEADER_SIZE:
                fields = unpack(buf, off)
                if fields[1] < MIN_BATCH_LENGTH:
                    return
                h = BatchHeader(pos + off, *fields)
                if h.position + h.size > end:
                    return
                yield h
                off += h.size
            if off == 0:
                return
            pos += off

    def position_for(self, offset: int) -> int | None:
        """Byte position of the first batch whose last offset is >= offset; None if beyond."""
        h = self.batch_for(offset)
        return None if h is None else h.position

    def batch_for(self, offset: int) -> BatchHeader | None:
        """Header of the first batch whose last offset is >= offset (index lookup, then scan)."""
        if offset >= self._next_offset:
            return None
        lk = self._load_indexes()
        i = bisect_right(lk.index_rel, offset - self.base_offset) - 1
        start = lk.index_pos[i] if i >= 0 else 0
        for h in self._scan(start):
            if h.last_offset >= offset:
                return h
        return None

    def header_at(self, position: int) -> BatchHeader:
        return BatchHeader(position, *_HEADER.unpack(_pread_exact(self._log_fd, HEADER_SIZE, position)))

    def byte_range(self, position: int, max_bytes: int, min_one: bool) -> int:
        """Bytes of whole batches from position that fit in max_bytes. With min_one, a first
        batch larger than max_bytes is returned whole (Kafka's minOneMessage)."""
        end = self._size
        if position >= end:
            return 0
        if end - position <= max_bytes:
            return end - position  # the file holds only whole batches
        limit = position + max_bytes
        # Indexed positions are batch boundaries: jump to the last one within the limit.
        lk = self._load_indexes()
        i = bisect_right(lk.index_pos, limit) - 1
        start = position
        if i >= 0 and lk.index_pos[i] > position:
            start = lk.index_pos[i]
        stop = start
        for h in self._scan(start):
            if h.position + h.size > limit:
                break
            stop = h.position + h.size
        if stop == position and min_one:
            return self.header_at(position).size
        return stop - position

    def read_bytes(self, position: int, size: int) -> bytes:
        """Stored bytes (sealed batches stay sealed)."""
        return _pread_exact(self._log_fd, size, position)

    def read_plain(self, position: int, size: int) -> bytes | bytearray:
        """Original bytes of the whole batches in [position, position + size): sealed ones
        opened. Large ranges are CPU work: callers on the event loop use a thread."""
        data = _pread_exact(self._log_fd, size, position)
        if self.cipher is None:
            return data
        return self.cipher.open_batches(data)

    def plain_log_and_index(self) -> tuple[bytes | bytearray, bytes]:
        """The whole log in original bytes and its offset index translated to them (what
        the uploader ships: remote chunks hold plaintext batches, compressed and encrypted per
        chunk). Blocking: run in a thread."""
        raw = _pread_exact(self._log_fd, self._size, 0) if self._size else b""
        return open_segment(raw, self.cipher, _read_file(self._index_fd))

    def find_by_timestamp(self, timestamp: int, min_offset: int = -1) -> tuple[int, int] | None:
        """(base offset, max timestamp) of the first batch whose max timestamp >= timestamp.

        Batch granularity: Kafka answers with the first record whose timestamp >= target;
        without decoding records we answer with that record's batch, so a consumer may see a
        few earlier records of the batch first. Batches ending below min_offset (the log start)
        are skipped.
        """
        if self._max_timestamp < timestamp or self._size == 0:
            return None
        lk = self._load_indexes()
        start = 0
        # Time entries before the target cover only batches with smaller timestamps.
        i = bisect_left(lk.time_ts, timestamp) - 1
        if i >= 0:
            rel = lk.time_rel[i]
            j = bisect_right(lk.index_rel, rel) - 1
            start = lk.index_pos[j] if j >= 0 else 0
        for h in self._scan(start):
            if h.max_timestamp >= timestamp and h.last_offset >= min_offset:
                return h.base_offset, h.max_timestamp
        return None

    # --- maintenance -------------------------------------------------------------------------

    def truncate_to(self, offset: int) -> int:
        """Remove every batch whose last offset is >= offset (a batch holding offset goes
        whole, as in Kafka). Returns the bytes removed. Rare: state is rebuilt by a scan."""
        position = self.position_for(offset)
        if position is None:
            return 0
        removed = self._size - position
        os.ftruncate(self._log_fd, position)
        self.recover()
        self.recovered_bytes = 0
        if self.txn_index is not None:
            self.txn_index.truncate_to(offset)
        self.txn_index_stale = False
        return removed

    def flush(self, data_only: bool = False) -> None:
        """fsync the log and both indexes; with data_only, fdatasync just the log. That is
        enough to acknowledge: indexes of the active segment are rebuilt by recovery after an
        unclean stop, so they need syncing only once the segment is sealed.

        What is synced is captured before the sync starts: writes landing meanwhile (appends
        run on the loop while this runs in a thread) leave the segment dirty."""
        log_mark = self._log_sync.capture()
        if data_only:
            if self._log_fd >= 0:
                os.fdatasync(self._log_fd)
            self._log_sync.synced_to(log_mark)
            return
        index_mark = self._index_sync.capture()
        for fd in (self._log_fd, self._index_fd, self._time_fd):
            if fd >= 0:
                os.fsync(fd)
        if self.txn_index is not None:
            self.txn_index.flush()
        self._log_sync.synced_to(log_mark)
        self._index_sync.synced_to(index_mark)

    def rename_for_delete(self) -> None:
        """First step of Kafka's asynchronous delete: rename the files out of the way so a
        restart ignores them, while open descriptors (a sendfile in progress) keep working."""
        for attr in ("log_path", "index_path", "time_index_path"):
            path: Path = getattr(self, attr)
            target = path.with_name(path.name + DELETED_SUFFIX)
            try:
                os.rename(path, target)
            except FileNotFoundError:
                continue
            setattr(self, attr, target)
        if self.txn_index is not None:
            try:
                self.txn_index.rename(self.txn_index.path.with_name(self.txn_index.path.name + DELETED_SUFFIX))
            except FileNotFoundError:
                pass
            self.txn_index_path = self.txn_index.path

    def close(self) -> None:
        for attr in ("_log_fd", "_index_fd", "_time_fd"):
            fd = getattr(self, attr)
            if fd >= 0:
                os.close(fd)
                setattr(self, attr, -1)
        if self.txn_index is not None:
            self.txn_index.close()

    def delete(self) -> None:
        self.close()
        for path in (self.log_path, self.index_path, self.time_index_path, self.txn_index_path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def __repr__(self) -> str:
        return (
            f"LogSegment(base={self.base_offset}, next={self._next_offset}, size={self._size}, "
            f"max_ts={self._max_timestamp})"
        )


@dataclass(frozen=True, slots=True)
class _AppendState:
    """What a failed append rolls a segment back to."""

    size: int
    index_size: int
    time_size: int
    next_offset: int
    max_timestamp: int
    offset_of_max_timestamp: int
    last_time_entry_ts: int
    bytes_since_index: int


def _rolling_basis(first_batch_ts: int) -> int:
    # After a restart the first batch's timestamp stands in for its append time; clamp it so a
    # far-future client clock cannot keep a segment open forever.
    now = wall_ms()
    return now if first_batch_ts < 0 else min(first_batch_ts, now)


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    written = os.write(fd, data)
    if written == len(data):
        return
    view = memoryview(data)
    while written < len(view):
        written += os.write(fd, view[written:])


def _writev_all(fd: int, pieces: list[bytes | memoryview]) -> None:
    # IOV_MAX bounds one writev; after a short write (rare on a regular file) the rest goes
    # out with plain writes, in order.
    for i in range(0, len(pieces), _IOV_MAX):
        chunk = pieces[i:i + _IOV_MAX]
        written = os.writev(fd, chunk)
        if written < sum(len(p) for p in chunk):
            _write_all(fd, memoryview(b"".join(pieces[i:]))[written:])
            return


_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024


def _pread_exact(fd: int, size: int, position: int) -> bytes:
    data = os.pread(fd, size, position)
    if len(data) == size:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        chunk = os.pread(fd, size - got, position + got)
        if not chunk:
            raise EOFError(f"short read at {position + got}: wanted {size - got} more bytes")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _parse_time_index(raw: bytes) -> tuple[array, array]:
    """(timestamps, relative offsets) of whole 12-byte time index entries. This runs on the
    loop at a segment's first lookup: a full segment's index has ~260k entries, which a
    per-entry Python loop takes ~0.1 s over; array slicing does it in C."""
    words = array("i")
    words.frombytes(raw)  # three big-endian int32 per entry: ts high, ts low, relative offset
    if not _LITTLE_ENDIAN:
        return array("q", [ts for ts, _ in TIME_INDEX_ENTRY.iter_unpack(raw)]), words[2::3]
    words.byteswap()
    halves = array("i", bytes(len(raw) // 12 * 8))
    halves[0::2] = words[1::3]  # an int64 in native (little-endian) order: low word first
    halves[1::2] = words[0::3]
    timestamps = array("q")
    timestamps.frombytes(halves.tobytes())
    return timestamps, words[2::3]


def _read_file(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return _pread_exact(fd, size, 0) if size else b""
