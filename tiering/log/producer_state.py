"""Per-partition producer state: idempotent de-duplication and open transactions.

Modelled on Kafka's ProducerStateManager. For every producer id seen in the partition we keep its
epoch, the metadata of its last five batches (enough to recognise any retry of the requests a
producer may have in flight), the coordinator epoch of its last transaction marker, and the first
offset of its open transaction. The open transactions give the first unstable offset, which
bounds the last stable offset (LSO) that read_committed consumers may read up to.

The state is rebuilt from batch headers alone (plus the one small record of each control batch),
so it survives restarts as `<20-digit offset>.snapshot` files: the state after every batch below
that offset. A snapshot is written when a segment rolls and on clean shutdown; on open, the log
loads the latest usable snapshot and replays the headers from there to the log end, or replays
the whole log when there is none. Kafka's snapshot format is not used: ours is a versioned JSON
body behind a header line carrying its CRC-32C, so a torn file is recognised and skipped.

Not thread-safe: all mutation happens on the event loop (or in open(), before the log is shared).
fsync_pending() may run in a thread: it only touches files already written.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from tiering.log.files import fsync_dir, write_atomically
from tiering.records import (
    NO_PRODUCER_EPOCH,
    NO_SEQUENCE,
    BatchHeader,
    InvalidRecordError,
    Rejection,
    crc32c,
    in_sequence,
)

SNAPSHOT_SUFFIX = ".snapshot"
SNAPSHOT_VERSION = 1
_SNAPSHOT_MAGIC = b"SEDIMENT-PRODUCER-SNAPSHOT"
NUM_BATCHES_TO_RETAIN = 5  # Kafka's: producers may have at most five requests in flight
MAX_SNAPSHOTS = 3
DEFAULT_PRODUCER_ID_EXPIRATION_MS = 86_400_000


def snapshot_name(offset: int) -> str:
    return f"{offset:020d}{SNAPSHOT_SUFFIX}"


@dataclass(frozen=True, slots=True)
class BatchMetadata:
    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int
    timestamp: int  # the batch's max timestamp as written (the append time for LogAppendTime)


@dataclass(slots=True)
class ProducerEntry:
    producer_id: int
    epoch: int = NO_PRODUCER_EPOCH
    batches: list[BatchMetadata] = field(default_factory=list)  # oldest first, at most five
    coordinator_epoch: int = -1
    txn_first_offset: int | None = None
    last_timestamp: int = -1  # max timestamp of its last batch or marker (drives expiration)

    def copy(self) -> ProducerEntry:
        return ProducerEntry(self.producer_id, self.epoch, list(self.batches), self.coordinator_epoch,
                             self.txn_first_offset, self.last_timestamp)

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else NO_SEQUENCE

    @property
    def last_data_offset(self) -> int:
        return self.batches[-1].last_offset if self.batches else -1

    def find_duplicate(self, epoch: int, first_seq: int, last_seq: int) -> BatchMetadata | None:
        if epoch != self.epoch:
            return None
        for b in self.batches:
            if b.first_seq == first_seq and b.last_seq == last_seq:
                return b
        return None

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch = epoch
            self.batches.clear()

    def add_batch(self, meta: BatchMetadata) -> None:
        self.batches.append(meta)
        if len(self.batches) > NUM_BATCHES_TO_RETAIN:
            del self.batches[0]


@dataclass(frozen=True, slots=True)
class CompletedTxn:
    producer_id: int
    first_offset: int
    last_offset: int  # the marker's offset
    aborted: bool


@dataclass(slots=True)
class PendingAppend:
    """The outcome of checking one produce request against the producer state: either a
    duplicate of batches already in the log, or the entries to install once the write is done."""

    duplicate: BatchMetadata | None = None
    entries: dict[int, ProducerEntry] = field(default_factory=dict)


class ProducerStateManager:
    def __init__(self, directory: Path, name: str = "") -> None:
        self.dir = directory
        self.name = name or directory.name
        self.producers: dict[int, ProducerEntry] = {}
        self._ongoing: dict[int, int] = {}  # producer id -> first offset of its open transaction
        self._unsynced: list[Path] = []

    # --- queries ---------------------------------------------------------------------------

    def entry(self, producer_id: int) -> ProducerEntry | None:
        return self.producers.get(producer_id)

    @property
    def first_unstable_offset(self) -> int | None:
        return min(self._ongoing.values()) if self._ongoing else None

    @property
    def ongoing_transactions(self) -> dict[int, int]:
        return dict(self._ongoing)

    # --- client appends --------------------------------------------------------------------

    def prepare_append(
        self, headers: list[BatchHeader], base_offset: int, append_time_ms: int | None
    ) -> PendingAppend | None:
        """Check the batches of one client append that will start at base_offset.

        Returns None when no batch carries a producer id (the common, cheap case), a
        PendingAppend with `duplicate` set when a batch repeats one already written (the
        request is then not written: Kafka treats a partition's batches of one request as a
        unit), or the entries to commit() after the write. Raises InvalidRecordError with
        STALE_PRODUCER_EPOCH, OUT_OF_ORDER_SEQUENCE, TXN_STATE or INVALID.
        """
        pending: PendingAppend | None = None
        offset = base_offset
        for h in headers:
            first_offset = offset
            offset += h.last_offset_delta + 1
            if h.is_control:
                raise InvalidRecordError(Rejection.INVALID, "clients may not write control batches")
            if h.producer_id < 0:
                if h.is_transactional:
                    raise InvalidRecordError(Rejection.INVALID, "transactional batch without a producer id")
                continue
            if h.base_sequence < 0:
                raise InvalidRecordError(
                    Rejection.INVALID,
                    f"invalid sequence number {h.base_sequence} in a batch of producer {h.producer_id}",
                )
            if pending is None:
                pending = PendingAppend()
            pid = h.producer_id
            entry = pending.entries.get(pid)
            if entry is None:
                current = self.producers.get(pid)
                if current is not None:
                    dup = current.find_duplicate(h.producer_epoch, h.base_sequence, h.last_sequence)
                    if dup is not None:
                        return PendingAppend(duplicate=dup)
                entry = current.copy() if current is not None else ProducerEntry(pid)
                pending.entries[pid] = entry
            else:
                dup = entry.find_duplicate(h.producer_epoch, h.base_sequence, h.last_sequence)
                if dup is not None:
                    raise InvalidRecordError(
                        Rejection.OUT_OF_ORDER_SEQUENCE,
                        f"producer {pid} repeats sequences {h.base_sequence}..{h.last_sequence} "
                        "within one request",
                    )
            self._check(entry, h, first_offset)
            ts = append_time_ms if append_time_ms is not None else h.max_timestamp
            self._apply_data(entry, h, first_offset, offset - 1, ts)
        return pending

    def _check(self, entry: ProducerEntry, h: BatchHeader, first_offset: int) -> None:
        epoch, first_seq = h.producer_epoch, h.base_sequence
        if epoch < entry.epoch:
            raise InvalidRecordError(
                Rejection.STALE_PRODUCER_EPOCH,
                f"epoch {epoch} of producer {h.producer_id} is older than the current {entry.epoch} "
                f"in {self.name}",
            )
        if epoch != entry.epoch:
            # A new (or first seen) epoch starts at sequence 0. An unknown producer may start
            # anywhere: its earlier batches may have been removed by retention (Kafka 2.5+).
            if first_seq != 0 and entry.epoch != NO_PRODUCER_EPOCH:
                raise InvalidRecordError(
                    Rejection.OUT_OF_ORDER_SEQUENCE,
                    f"producer {h.producer_id}: new epoch {epoch} starts at sequence {first_seq}, not 0",
                )
        elif entry.batches and not in_sequence(entry.last_seq, first_seq):
            raise InvalidRecordError(
                Rejection.OUT_OF_ORDER_SEQUENCE,
                f"producer {h.producer_id} epoch {epoch}: sequence {first_seq} after {entry.last_seq} "
                f"in {self.name}",
            )
        elif not entry.batches and first_seq != 0 and entry.epoch != NO_PRODUCER_EPOCH:
            # Known epoch with no batch metadata left (a marker was its last write): Kafka
            # expects the sequence to follow NO_SEQUENCE, i.e. 0.
            raise InvalidRecordError(
                Rejection.OUT_OF_ORDER_SEQUENCE,
                f"producer {h.producer_id} epoch {epoch}: sequence {first_seq} where 0 was expected",
            )
        if entry.txn_first_offset is not None and not h.is_transactional:
            raise InvalidRecordError(
                Rejection.TXN_STATE,
                f"expected a transactional write from producer {h.producer_id} at offset {first_offset}",
            )

    def commit(self, pending: PendingAppend) -> None:
        for pid, entry in pending.entries.items():
            self.producers[pid] = entry
            if entry.txn_first_offset is not None:
                self._ongoing.setdefault(pid, entry.txn_first_offset)

    @staticmethod
    def _apply_data(entry: ProducerEntry, h: BatchHeader, first_offset: int, last_offset: int, ts: int) -> None:
        entry.set_epoch(h.producer_epoch)
        entry.add_batch(BatchMetadata(h.base_sequence, h.last_sequence, first_offset, last_offset, ts))
        entry.last_timestamp = ts
        if h.is_transactional and entry.txn_first_offset is None:
            entry.txn_first_offset = first_offset

    # --- transaction markers ---------------------------------------------------------------

    def check_marker(self, producer_id: int, producer_epoch: int, coordinator_epoch: int) -> None:
        """Kafka's checks before writing an end-transaction marker."""
        entry = self.producers.get(producer_id)
        if entry is None:
            return
        if producer_epoch < entry.epoch:
            raise InvalidRecordError(
                Rejection.STALE_PRODUCER_EPOCH,
                f"marker epoch {producer_epoch} of producer {producer_id} is older than {entry.epoch}",
            )
        if coordinator_epoch < entry.coordinator_epoch:
            raise InvalidRecordError(
                Rejection.STALE_COORDINATOR_EPOCH,
                f"marker coordinator epoch {coordinator_epoch} for producer {producer_id} is older "
                f"than {entry.coordinator_epoch}",
            )

    def complete_txn(
        self, producer_id: int, producer_epoch: int, coordinator_epoch: int, marker_offset: int,
        aborted: bool, timestamp: int,
    ) -> CompletedTxn:
        """Apply an end-transaction marker written at marker_offset."""
        entry = self.producers.get(producer_id)
        if entry is None:
            entry = self.producers[producer_id] = ProducerEntry(producer_id)
        entry.set_epoch(producer_epoch)
        entry.coordinator_epoch = coordinator_epoch
        entry.last_timestamp = max(entry.last_timestamp, timestamp)
        first = entry.txn_first_offset if entry.txn_first_offset is not None else marker_offset
        entry.txn_first_offset = None
        self._ongoing.pop(producer_id, None)
        return CompletedTxn(producer_id, first, marker_offset, aborted)

    def last_stable_offset_after(self, completed: CompletedTxn) -> int:
        """The LSO right after `completed` ended (recorded with an aborted transaction)."""
        first = self.first_unstable_offset
        return completed.last_offset + 1 if first is None else min(first, completed.last_offset + 1)

    # --- replay (recovery) -----------------------------------------------------------------

    def replay(self, h: BatchHeader, marker: tuple[bool, int] | None = None) -> CompletedTxn | None:
        """Apply one batch read back from the log, without validation. For a control batch pass
        marker=(aborted, coordinator_epoch)."""
        if h.producer_id < 0:
            return None
        if h.is_control:
            if marker is None:
                return None
            aborted, coordinator_epoch = marker
            return self.complete_txn(h.producer_id, h.producer_epoch, coordinator_epoch,
                                     h.base_offset, aborted, h.max_timestamp)
        entry = self.producers.get(h.producer_id)
        if entry is None:
            entry = self.producers[h.producer_id] = ProducerEntry(h.producer_id)
        self._apply_data(entry, h, h.base_offset, h.last_offset, h.max_timestamp)
        if entry.txn_first_offset is not None:
            self._ongoing.setdefault(h.producer_id, entry.txn_first_offset)
        return None

    # --- expiration ------------------------------------------------------------------------

    def remove_expired(self, now_ms: int, expiration_ms: int) -> list[int]:
        """Forget producers without an open transaction whose last write is older than
        expiration_ms (Kafka's producer.id.expiration.ms). Returns their ids."""
        expired = [
            pid for pid, e in self.producers.items()
            if e.txn_first_offset is None and now_ms - e.last_timestamp >= expiration_ms
        ]
        for pid in expired:
            del self.producers[pid]
        return expired

    def clear(self) -> None:
        self.producers.clear()
        self._ongoing.clear()

    # --- snapshots -------------------------------------------------------------------------

    def snapshot_offsets(self) -> list[int]:
        out = []
        for p in self.dir.glob("*" + SNAPSHOT_SUFFIX):
            stem = p.name[: -len(SNAPSHOT_SUFFIX)]
            if stem.isdigit():
                out.append(int(stem))
        return sorted(out)

    def take_snapshot(self, offset: int, *, sync: bool = False) -> Path:
        """Write the state (which must cover exactly the batches below offset). Without sync
        the file is fsynced later by fsync_pending() (a roll happens on the event loop)."""
        body = json.dumps({
            "version": SNAPSHOT_VERSION,
            "offset": offset,
            "producers": [
                [e.producer_id, e.epoch, e.coordinator_epoch, e.last_timestamp,
                 -1 if e.txn_first_offset is None else e.txn_first_offset,
                 [[b.first_seq, b.last_seq, b.first_offset, b.last_offset, b.timestamp] for b in e.batches]]
                for e in self.producers.values()
            ],
        }, separators=(",", ":")).encode()
        data = b"%s %d %08x\n" % (_SNAPSHOT_MAGIC, SNAPSHOT_VERSION, crc32c(body)) + body
        path = self.dir / snapshot_name(offset)
        write_atomically(path, data, durable=sync)
        if not sync:
            self._unsynced.append(path)
        self._trim_snapshots()
        return path

    def fsync_pending(self) -> None:
        pending, self._unsynced = self._unsynced, []
        synced = False
        for path in pending:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
                synced = True
            finally:
                os.close(fd)
        if synced:
            fsync_dir(self.dir)

    def _trim_snapshots(self) -> None:
        offsets = self.snapshot_offsets()
        for off in offsets[:-MAX_SNAPSHOTS]:
            (self.dir / snapshot_name(off)).unlink(missing_ok=True)

    def delete_snapshots_below(self, offset: int) -> None:
        """Snapshots go with the segments they follow (retention, DeleteRecords)."""
        for off in self.snapshot_offsets():
            if off < offset:
                (self.dir / snapshot_name(off)).unlink(missing_ok=True)

    def delete_snapshots_above(self, offset: int) -> None:
        for off in self.snapshot_offsets():
            if off > offset:
                (self.dir / snapshot_name(off)).unlink(missing_ok=True)

    def load_latest_snapshot(self, upto_offset: int) -> int | None:
        """Replace the state with the latest intact snapshot at or below upto_offset and return
        its offset; unreadable snapshots are deleted. None (and an empty state) without one."""
        self.clear()
        for off in reversed(self.snapshot_offsets()):
            if off > upto_offset:
                continue
            path = self.dir / snapshot_name(off)
            try:
                self._load(path, off)
                return off
            except (OSError, ValueError, KeyError, TypeError, IndexError):
                self.clear()
                path.unlink(missing_ok=True)
        return None

    def _load(self, path: Path, offset: int) -> None:
        raw = path.read_bytes()
        head, sep, body = raw.partition(b"\n")
        parts = head.split(b" ")
        if not sep or len(parts) != 3 or parts[0] != _SNAPSHOT_MAGIC:
            raise ValueError(f"{path}: not a producer snapshot")
        if int(parts[1]) != SNAPSHOT_VERSION:
            raise ValueError(f"{path}: unknown snapshot version {parts[1]!r}")
        if int(parts[2], 16) != crc32c(body):
            raise ValueError(f"{path}: CRC mismatch")
        doc = json.loads(body)
        if doc["offset"] != offset:
            raise ValueError(f"{path}: holds offset {doc['offset']}")
        for pid, epoch, coord, last_ts, txn_first, batches in doc["producers"]:
            entry = ProducerEntry(int(pid), int(epoch), [BatchMetadata(*map(int, b)) for b in batches],
                                  int(coord), None if txn_first < 0 else int(txn_first), int(last_ts))
            self.producers[entry.producer_id] = entry
            if entry.txn_first_offset is not None:
                self._ongoing[entry.producer_id] = entry.txn_first_offset


