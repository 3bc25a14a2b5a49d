"""A segment's transaction index, `<base>.txnindex`: the transactions aborted in that segment.

Kafka's layout: fixed 34-byte entries, big-endian: version int16 (0), producerId int64,
firstOffset int64, lastOffset int64 (the abort marker's offset), lastStableOffset int64 (the LSO
right after the abort). An entry lives in the segment that holds its abort marker. read_committed
fetches list the aborted transactions overlapping the fetched range so consumers can drop them.

Entries are appended with os.write and fsynced with the segment; the file is created with the
segment, so a missing file (or a torn tail) tells the log to rebuild it from the log itself.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from tiering.log.files import SyncMark

TXN_INDEX_SUFFIX = ".txnindex"
ENTRY = struct.Struct(">hqqqq")
VERSION = 0

assert ENTRY.size == 34


@dataclass(frozen=True, slots=True)
class AbortedTxn:
    producer_id: int
    first_offset: int
    last_offset: int
    last_stable_offset: int

    def pack(self) -> bytes:
        return ENTRY.pack(VERSION, self.producer_id, self.first_offset, self.last_offset,
                          self.last_stable_offset)


class TransactionIndex:
    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        self.existed = path.exists()
        self._fd = os.open(path, os.O_RDWR | os.O_APPEND | (os.O_CREAT if create else 0), 0o644)
        self._entries: list[AbortedTxn] | None = None
        self._sync = SyncMark()

    @property
    def dirty(self) -> bool:
        """Written since the last completed fsync that started after the write."""
        return self._sync.dirty

    @property
    def is_valid(self) -> bool:
        """The file existed before this open and holds only whole entries of a known version."""
        if not self.existed:
            return False
        size = os.fstat(self._fd).st_size
        if size % ENTRY.size:
            return False
        try:
            self._load()
        except ValueError:
            return False
        return True

    def _load(self) -> list[AbortedTxn]:
        if self._entries is None:
            size = os.fstat(self._fd).st_size
            raw = os.pread(self._fd, size, 0) if size else b""
            entries = []
            for version, pid, first, last, lso in ENTRY.iter_unpack(raw[: len(raw) - len(raw) % ENTRY.size]):
                if version != VERSION:
                    raise ValueError(f"{self.path}: unknown entry version {version}")
                entries.append(AbortedTxn(pid, first, last, lso))
            self._entries = entries
        return self._entries

    @property
    def entries(self) -> list[AbortedTxn]:
        return list(self._load())

    def append(self, txn: AbortedTxn) -> None:
        entries = self._load()
        if entries and txn.last_offset <= entries[-1].last_offset:
            raise ValueError(
                f"{self.path}: aborted txn ending at {txn.last_offset} after one ending at "
                f"{entries[-1].last_offset}"
            )
        data = txn.pack()
        written = os.write(self._fd, data)
        if written != len(data):
            raise OSError(f"short write to {self.path}")
        entries.append(txn)
        self._sync.wrote()

    def reset(self) -> None:
        """Empty the index (before a rebuild)."""
        os.ftruncate(self._fd, 0)
        self._entries = []
        self.existed = True
        self._sync.wrote()

    def truncate_to(self, offset: int) -> None:
        """Drop entries whose marker is at or after offset (the log is cut there)."""
        entries = self._load()
        keep = [e for e in entries if e.last_offset < offset]
        if len(keep) != len(entries):
            os.ftruncate(self._fd, len(keep) * ENTRY.size)
            self._entries = keep
            self._sync.wrote()

    def collect(self, fetch_offset: int, upper_offset: int) -> tuple[list[AbortedTxn], bool]:
        """Aborted transactions overlapping [fetch_offset, upper_offset), and whether the search
        is complete (an entry's LSO reached upper_offset: later segments cannot add any)."""
        found = []
        for e in self._load():
            if e.last_offset >= fetch_offset and e.first_offset < upper_offset:
                found.append(e)
            if e.last_stable_offset >= upper_offset:
                return found, True
        return found, False

    def flush(self) -> None:
        captured = self._sync.capture()
        if self._fd >= 0:
            os.fsync(self._fd)
        self._sync.synced_to(captured)

    def rename(self, target: Path) -> None:
        os.rename(self.path, target)
        self.path = target

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def delete(self) -> None:
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
