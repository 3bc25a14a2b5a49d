"""The transaction coordinator finishes what a stopped broker left in PrepareCommit/PrepareAbort,
and aborts transactions open past their timeout. In-process broker on a real socket and disk."""

from __future__ import annotations

from service.broker import Broker
from service.config import load_config
from service.errors import ErrorCode
from service.txn.coordinator import COMPLETE_ABORT, COMPLETE_COMMIT, ONGOING, PREPARE_ABORT, PREPARE_COMMIT, TxnMetadata
from tests.unit.conftest import make_batch
from tiering.log.partition import UnifiedLog


def _config(data_dir, **extra):
    return load_config(None, {"data.dir": str(data_dir), "listeners": "PLAINTEXT://127.0.0.1:0",
                              "http.listener": "127.0.0.1:0", **extra}, environ={})


def _log(broker: Broker, topic: str, partition: int) -> UnifiedLog:
    log = broker.log(topic, partition)
    assert log is not None, f"no log for {topic}-{partition}"
    return log


def _txn(broker: Broker, transactional_id: str) -> TxnMetadata:
    txn = broker.txn.describe(transactional_id)
    assert txn is not None, f"no transaction {transactional_id}"
    return txn


async def _broker_with_open_txn(data_dir, state: str) -> tuple[int, int]:
    """A broker that stops with producer 7000's transaction in `state` on t-0 and t-1 and
    TxnOffsetCommit offsets staged for group g; returns the open transaction's first offsets."""
    broker = Broker(_config(data_dir))
    await broker.start()
    try:
        await broker.topics.create("t", 2)
        firsts = []
        for p in (0, 1):
            log = _log(broker, "t", p)
            log.append(make_batch([b"before"], base_offset=0), now_ms=1000)  # non-transactional
            r = log.append(make_batch([b"txn-a", b"txn-b"], producer_id=7000, producer_epoch=3,
                                      base_sequence=0, attributes=0x10), now_ms=1000)
            firsts.append(r.base_offset)
            assert log.last_stable_offset == r.base_offset  # held back by the open transaction
        txn = TxnMetadata("app-1", 7000, 3, 60000, state=state, partitions=frozenset({("t", 0), ("t", 1)}),
                          groups=frozenset({"g"}), start_ms=1000,
                          offsets=(("g", "in", 0, 42, -1, "meta", 1000),))
        await broker.store.put_transaction(txn)
    finally:
        await broker.close()
    return firsts[0], firsts[1]


async def test_prepare_commit_is_finished_after_restart(tmp_path):
    first0, first1 = await _broker_with_open_txn(tmp_path, PREPARE_COMMIT)
    broker = Broker(_config(tmp_path))
    await broker.start()
    try:
        txn = _txn(broker, "app-1")
        assert (txn.state, txn.partitions, txn.offsets) == (COMPLETE_COMMIT, frozenset(), ())
        for p, first in ((0, first0), (1, first1)):
            log = _log(broker, "t", p)
            assert log.log_end_offset == first + 3  # two records and the COMMIT marker
            assert log.last_stable_offset == log.high_watermark
            assert log.aborted_transactions(0, log.log_end_offset) == []
        offsets = broker.groups.fetch_offsets("g", [("in", 0)])
        committed, error = offsets[("in", 0)]
        assert error == 0 and committed is not None and (committed.offset, committed.metadata) == (42, "meta")
    finally:
        await broker.close()


async def test_prepare_abort_is_finished_after_restart(tmp_path):
    first0, _ = await _broker_with_open_txn(tmp_path, PREPARE_ABORT)
    broker = Broker(_config(tmp_path))
    await broker.start()
    try:
        assert _txn(broker, "app-1").state == COMPLETE_ABORT
        log = _log(broker, "t", 0)
        assert log.last_stable_offset == log.high_watermark == first0 + 3
        assert log.aborted_transactions(0, log.log_end_offset) == [(7000, first0)]
        assert broker.groups.fetch_offsets("g", [("in", 0)])[("in", 0)] == (None, 0)
    finally:
        await broker.close()


async def test_open_transaction_past_its_timeout_is_aborted_and_its_producer_fenced(tmp_path):
    broker = Broker(_config(tmp_path, **{"transaction.abort.timed.out.transaction.cleanup.interval.ms": "60000"}))
    await broker.start()
    try:
        await broker.topics.create("t", 1)
        error, pid, epoch = await broker.txn.init_producer_id("slow-app", 1000)
        assert error == 0
        assert await broker.txn.add_partitions("slow-app", pid, epoch, [("t", 0)]) == {("t", 0): 0}
        log = _log(broker, "t", 0)
        r = log.append(make_batch([b"never-committed"], producer_id=pid, producer_epoch=epoch,
                                  base_sequence=0, attributes=0x10), now_ms=1000)
        assert _txn(broker, "slow-app").state == ONGOING
        start = _txn(broker, "slow-app").start_ms
        assert await broker.txn.abort_timed_out(start + 999) == []  # not yet past the timeout
        assert await broker.txn.abort_timed_out(start + 1001) == ["slow-app"]
        txn = _txn(broker, "slow-app")
        assert (txn.state, txn.producer_epoch) == (COMPLETE_ABORT, epoch + 1)
        assert log.aborted_transactions(0, log.log_end_offset) == [(pid, r.base_offset)]
        assert log.last_stable_offset == log.high_watermark
        assert await broker.txn.end_txn("slow-app", pid, epoch, True) == ErrorCode.producer_fenced
    finally:
        await broker.close()
