"""Transaction coordinator: transactional ids, producer epochs and the two-phase end of a transaction.

Kafka's state machine (TransactionCoordinator / TransactionMetadata): Empty -> Ongoing ->
PrepareCommit | PrepareAbort -> CompleteCommit | CompleteAbort. Every transition is written to
the MetadataStore before it is acted on, so a restart finds a Prepare* state and finishes it
(markers again, then offsets), and never leaves a transaction hanging. Ongoing transactions
past their timeout are aborted with a bumped epoch, which fences the producer that let them
expire.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from service.errors import ErrorCode
from service.logsafe import printable

if TYPE_CHECKING:
    from service.groups import GroupCoordinator
    from service.metadata import MetadataStore
    from service.partitions import Partitions
    from service.producer_ids import ProducerIds

log = logging.getLogger("sediment.txn")

EMPTY, ONGOING = "Empty", "Ongoing"
PREPARE_COMMIT, PREPARE_ABORT = "PrepareCommit", "PrepareAbort"
COMPLETE_COMMIT, COMPLETE_ABORT = "CompleteCommit", "CompleteAbort"
STATES = (EMPTY, ONGOING, PREPARE_COMMIT, PREPARE_ABORT, COMPLETE_COMMIT, COMPLETE_ABORT)
MAX_EPOCH = 32767 - 1  # Short.MaxValue is reserved; bump to a new producer id past this


@dataclass(frozen=True)
class TxnMetadata:
    transactional_id: str
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    state: str = EMPTY
    partitions: frozenset[tuple[str, int]] = frozenset()
    groups: frozenset[str] = frozenset()
    start_ms: int = -1
    update_ms: int = field(default_factory=lambda: _now_ms())
    # TxnOffsetCommit offsets, kept here so a commit finished after a restart still has them:
    # (group, topic, partition, offset, leader epoch, metadata, commit time ms).
    offsets: tuple[tuple[str, str, int, int, int, str, int], ...] = ()


def txn_to_json(txn: TxnMetadata) -> dict[str, object]:
    """The stored form (MetadataStore row, bucket snapshot): sets become sorted lists."""
    d = asdict(txn)
    d["partitions"] = sorted(txn.partitions)
    d["groups"] = sorted(txn.groups)
    return d


def txn_from_json(d: dict[str, Any]) -> TxnMetadata:
    d = dict(d)
    d["partitions"] = frozenset((t, p) for t, p in d["partitions"])
    d["groups"] = frozenset(d["groups"])
    d["offsets"] = tuple(tuple(o) for o in d.get("offsets", ()))
    return TxnMetadata(**d)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class TransactionCoordinator:
    def __init__(self, store: MetadataStore, partitions: Partitions, groups: GroupCoordinator,
                 producer_ids: ProducerIds, *, max_timeout_ms: int = 900_000,
                 cleanup_interval_ms: int = 10_000) -> None:
        self._store = store
        self._partitions = partitions
        self._groups = groups
        self._producer_ids = producer_ids
        self._max_timeout_ms = max_timeout_ms
        self._cleanup_interval_ms = cleanup_interval_ms
        self._txns: dict[str, TxnMetadata] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        for txn in await self._store.load_transactions():
            self._txns[txn.transactional_id] = txn
        for txn in list(self._txns.values()):
            if txn.state in (PREPARE_COMMIT, PREPARE_ABORT):
                log.info("completing %s of %s after restart", txn.state, printable(txn.transactional_id))
                async with self._lock(txn.transactional_id):
                    await self._complete(txn)
        self._task = asyncio.create_task(self._expire_loop(self._cleanup_interval_ms / 1000))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def _lock(self, transactional_id: str) -> asyncio.Lock:
        return self._locks.setdefault(transactional_id, asyncio.Lock())

    async def _save(self, txn: TxnMetadata) -> TxnMetadata:
        txn = replace(txn, update_ms=_now_ms())
        await self._store.put_transaction(txn)
        self._txns[txn.transactional_id] = txn
        return txn

    # -- InitProducerId --------------------------------------------------------------------

    async def init_producer_id(self, transactional_id: str, timeout_ms: int, producer_id: int = -1,
                               producer_epoch: int = -1) -> tuple[ErrorCode, int, int]:
        """(error, producer id, epoch). A known id gets its epoch bumped, fencing older producers;
        an open transaction is aborted first."""
        if not 0 < timeout_ms <= self._max_timeout_ms:
            return ErrorCode.invalid_transaction_timeout, -1, -1
        async with self._lock(transactional_id):
            txn = self._txns.get(transactional_id)
            if txn is None:
                pid = await self._producer_ids.allocate()
                txn = await self._save(TxnMetadata(transactional_id, pid, 0, timeout_ms))
                return ErrorCode.none, txn.producer_id, txn.producer_epoch
            if producer_id >= 0 and (producer_id, producer_epoch) != (txn.producer_id, txn.producer_epoch):
                # KIP-360: a producer re-initialising must name the current id and epoch.
                return ErrorCode.producer_fenced, -1, -1
            if txn.state in (PREPARE_COMMIT, PREPARE_ABORT):
                return ErrorCode.concurrent_transactions, -1, -1
            if txn.state == ONGOING:
                txn = await self._abort_with_bump(txn)
            txn = await self._bump(replace(txn, timeout_ms=timeout_ms))
            return ErrorCode.none, txn.producer_id, txn.producer_epoch

    async def _bump(self, txn: TxnMetadata) -> TxnMetadata:
        if txn.producer_epoch >= MAX_EPOCH:
            pid = await self._producer_ids.allocate()
            return await self._save(replace(txn, producer_id=pid, producer_epoch=0, state=EMPTY,
                                            partitions=frozenset(), groups=frozenset(), start_ms=-1))
        return await self._save(replace(txn, producer_epoch=txn.producer_epoch + 1, state=EMPTY,
                                        partitions=frozenset(), groups=frozenset(), start_ms=-1))

    async def _abort_with_bump(self, txn: TxnMetadata) -> TxnMetadata:
        """Fence the current producer (epoch + 1) and abort its transaction under the new epoch."""
        fenced = replace(txn, producer_epoch=min(txn.producer_epoch + 1, MAX_EPOCH))
        fenced = await self._save(replace(fenced, state=PREPARE_ABORT))
        return await self._complete(fenced)

    # -- checks shared by the transactional APIs --------------------------------------------

    def _check(self, transactional_id: str, producer_id: int,
               producer_epoch: int) -> tuple[ErrorCode, TxnMetadata | None]:
        txn = self._txns.get(transactional_id)
        if txn is None or txn.producer_id != producer_id:
            return ErrorCode.invalid_producer_id_mapping, None
        if producer_epoch != txn.producer_epoch:
            return ErrorCode.producer_fenced, None
        if txn.state in (PREPARE_COMMIT, PREPARE_ABORT):
            return ErrorCode.concurrent_transactions, None
        return ErrorCode.none, txn

    def _begin(self, txn: TxnMetadata) -> TxnMetadata:
        if txn.state == ONGOING:
            return txn
        return replace(txn, state=ONGOING, partitions=frozenset(), groups=frozenset(), start_ms=_now_ms())

    # -- AddPartitionsToTxn / AddOffsetsToTxn / TxnOffsetCommit ------------------------------

    async def add_partitions(self, transactional_id: str, producer_id: int, producer_epoch: int,
                             partitions: list[tuple[str, int]]) -> dict[tuple[str, int], ErrorCode]:
        async with self._lock(transactional_id):
            error, txn = self._check(transactional_id, producer_id, producer_epoch)
            if txn is None:
                return {tp: error for tp in partitions}
            unknown = {tp for tp in partitions if self._partitions.log(*tp) is None}
            if unknown:
                return {tp: ErrorCode.unknown_topic_or_partition if tp in unknown
                        else ErrorCode.operation_not_attempted for tp in partitions}
            txn = self._begin(txn)
            await self._save(replace(txn, partitions=txn.partitions | set(partitions)))
            return {tp: ErrorCode.none for tp in partitions}

    async def add_offsets(self, transactional_id: str, producer_id: int, producer_epoch: int,
                          group_id: str) -> ErrorCode:
        async with self._lock(transactional_id):
            error, txn = self._check(transactional_id, producer_id, producer_epoch)
            if txn is None:
                return error
            txn = self._begin(txn)
            await self._save(replace(txn, groups=txn.groups | {group_id}))
            return ErrorCode.none

    def check_offset_commit(self, transactional_id: str, producer_id: int, producer_epoch: int,
                            group_id: str) -> ErrorCode:
        """TxnOffsetCommit: the producer must be current and have added the group first."""
        error, txn = self._check(transactional_id, producer_id, producer_epoch)
        if txn is None:
            return ErrorCode.invalid_producer_epoch if error == ErrorCode.producer_fenced else error
        if txn.state != ONGOING or group_id not in txn.groups:
            return ErrorCode.invalid_txn_state
        return ErrorCode.none

    async def stage_offsets(self, transactional_id: str, group_id: str,
                            offsets: list[tuple[str, int, int, int, str, int]]) -> None:
        """Remember TxnOffsetCommit offsets durably with the transaction (after check_offset_commit)."""
        async with self._lock(transactional_id):
            txn = self._txns[transactional_id]
            fresh = {(group_id, t, p) for t, p, *_ in offsets}
            kept = tuple(o for o in txn.offsets if (o[0], o[1], o[2]) not in fresh)
            await self._save(replace(txn, offsets=kept + tuple((group_id, *o) for o in offsets)))

    # -- EndTxn ------------------------------------------------------------------------------

    async def end_txn(self, transactional_id: str, producer_id: int, producer_epoch: int,
                      commit: bool) -> ErrorCode:
        async with self._lock(transactional_id):
            txn = self._txns.get(transactional_id)
            if txn is None or txn.producer_id != producer_id:
                return ErrorCode.invalid_producer_id_mapping
            if producer_epoch != txn.producer_epoch:
                return ErrorCode.producer_fenced
            if txn.state == ONGOING:
                txn = await self._save(replace(txn, state=PREPARE_COMMIT if commit else PREPARE_ABORT))
                await self._complete(txn)
                return ErrorCode.none
            if (txn.state, commit) in ((COMPLETE_COMMIT, True), (COMPLETE_ABORT, False)):
                return ErrorCode.none  # a retry of an EndTxn that already finished
            if txn.state in (PREPARE_COMMIT, PREPARE_ABORT):
                return ErrorCode.concurrent_transactions
            return ErrorCode.invalid_txn_state

    async def _complete(self, txn: TxnMetadata) -> TxnMetadata:
        """Phase two: markers to every partition (made durable), then the group offsets."""
        commit = txn.state == PREPARE_COMMIT
        await self._partitions.write_markers(sorted(txn.partitions), txn.producer_id, txn.producer_epoch,
                                                    commit, _now_ms())
        if txn.offsets:
            await self._complete_offsets(txn, commit)
        done = replace(txn, state=COMPLETE_COMMIT if commit else COMPLETE_ABORT,
                       partitions=frozenset(), groups=frozenset(), offsets=())
        return await self._save(done)

    async def _complete_offsets(self, txn: TxnMetadata, commit: bool) -> None:
        from service.groups.coordinator import OffsetAndMetadata

        groups = self._groups
        by_group: dict[str, dict[tuple[str, int], OffsetAndMetadata]] = {}
        for group, topic, partition, offset, epoch, metadata, ts in txn.offsets:
            by_group.setdefault(group, {})[(topic, partition)] = OffsetAndMetadata(offset, epoch, metadata, ts)
        for group, staged in by_group.items():  # again: after a restart only this record has them
            groups.stage_txn_offsets(group, txn.producer_id, txn.producer_epoch, staged)
        await groups.complete_txn_offsets(txn.producer_id, commit)

    # -- timeouts ----------------------------------------------------------------------------

    async def _expire_loop(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.abort_timed_out(_now_ms())
            except Exception:
                log.exception("aborting timed-out transactions failed")

    async def abort_timed_out(self, now_ms: int) -> list[str]:
        aborted = []
        for txn in list(self._txns.values()):
            if txn.state != ONGOING or now_ms - txn.start_ms <= txn.timeout_ms:
                continue
            async with self._lock(txn.transactional_id):
                current = self._txns.get(txn.transactional_id)
                if current is None or current.state != ONGOING:
                    continue
                log.info("aborting transaction of %s: open longer than %d ms",
                         printable(current.transactional_id), current.timeout_ms)
                await self._abort_with_bump(current)
                aborted.append(current.transactional_id)
        return aborted

    # -- DescribeTransactions / ListTransactions ---------------------------------------------

    def describe(self, transactional_id: str) -> TxnMetadata | None:
        return self._txns.get(transactional_id)

    def list(self, states: set[str] | None = None, producer_ids: set[int] | None = None,
             min_duration_ms: int = -1) -> list[TxnMetadata]:
        now = _now_ms()
        return [
            t for t in sorted(self._txns.values(), key=lambda t: t.transactional_id)
            if (not states or t.state in states)
            and (not producer_ids or t.producer_id in producer_ids)
            and (min_duration_ms < 0 or (t.state == ONGOING and now - t.start_ms >= min_duration_ms))
        ]
