"""Offset commits of many groups share metadata-store transactions, keep each group's request
order, and are answered only once their transaction has committed. The slow write is the
store's database connection wrapped so that its first COMMIT waits on an event."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from service.groups import GroupCoordinator, OffsetAndMetadata
from service.metadata import MetadataStore
from tests.clock import until

WAIT = 10.0  # seconds: a bound on waits for the writer thread, never a pause


class SlowCommitDb:
    """The store's connection, recording the group ids written by each transaction and
    holding the first COMMIT until released."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.transactions: list[list[str]] = []
        self._current: list[str] | None = None
        self.entered = threading.Event()
        self.release = threading.Event()

    def execute(self, sql: str, args: Any = ()) -> sqlite3.Cursor:
        if sql == "BEGIN":
            self._current = []
        elif sql == "COMMIT" and self._current is not None:
            self.transactions.append(self._current)
            self._current = None
            if len(self.transactions) == 1:
                self.entered.set()
                assert self.release.wait(WAIT)
        return self.db.execute(sql, args)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        rows = list(rows)
        if self._current is not None:
            self._current += [str(r[0]) for r in rows]
        return self.db.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


@pytest.fixture
async def store(tmp_path: Path):
    s = MetadataStore(tmp_path / "metadata.db")
    await s.start()
    yield s
    await s.close()


@pytest.fixture
async def coord(store: MetadataStore):
    c = GroupCoordinator(store, initial_rebalance_delay_ms=0)
    await c.start()
    yield c
    await c.close()


def slow_db(store: MetadataStore) -> SlowCommitDb:
    db = store._db
    assert db is not None  # the store is started
    slow = SlowCommitDb(db)
    store._db = slow  # type: ignore[assignment]  # a recording stand-in for the connection
    return slow


def commit(coord: GroupCoordinator, group: str, offset: int, partition: int = 0) -> asyncio.Task[dict]:
    return asyncio.create_task(coord.commit_offsets(
        group, -1, "", None, {("t", partition): OffsetAndMetadata(offset, -1, "", 1000)}))


def committed(coord: GroupCoordinator, group: str) -> int:
    """The group's committed offset of t-0; there must be one."""
    got, _ = coord.fetch_offsets(group, [("t", 0)])[("t", 0)]
    assert got is not None, f"{group} has no committed offset for t-0"
    return got.offset


async def queued(store: MetadataStore, n: int) -> None:
    """Until n writes wait behind the one in flight (each task ran to its wait)."""
    await until(lambda: len(store._offsets._pending) == n)


async def stored(tmp_path: Path) -> dict[tuple[str, str, int], int]:
    """What a fresh store reads back from disk."""
    again = MetadataStore(tmp_path / "metadata.db")
    await again.start()
    try:
        return {(g, t, p): o for g, t, p, o, *_ in await again.load_offsets()}
    finally:
        await again.close()


async def test_many_groups_commit_at_once_and_each_keeps_its_last(coord: GroupCoordinator,
                                                                  tmp_path: Path) -> None:
    # 50 groups, 4 commits each over 2 partitions, all outstanding together, interleaved.
    order = [(g, i) for i in range(4) for g in range(50)]
    results = await asyncio.gather(*(commit(coord, f"g{g}", 100 * g + i, partition=i % 2) for g, i in order))
    assert results == [{("t", i % 2): 0} for _, i in order]
    expected = {}
    for g in range(50):
        expected[(f"g{g}", "t", 0)] = 100 * g + 2
        expected[(f"g{g}", "t", 1)] = 100 * g + 3
        fetched = coord.fetch_offsets(f"g{g}", [("t", 0), ("t", 1)])
        assert {tp: o.offset for tp, (o, _) in fetched.items() if o} == {("t", 0): 100 * g + 2,
                                                                           ("t", 1): 100 * g + 3}
    assert await stored(tmp_path) == expected


async def test_commits_of_two_groups_share_one_transaction_behind_a_slow_one(
        coord: GroupCoordinator, store: MetadataStore, tmp_path: Path) -> None:
    slow = slow_db(store)
    first = commit(coord, "a", 1)
    assert await asyncio.to_thread(slow.entered.wait, WAIT)
    later = [commit(coord, "b", 2), commit(coord, "c", 3), commit(coord, "a", 4)]
    await queued(store, 3)
    assert not any(t.done() for t in [first, *later])  # nothing answered before its COMMIT
    slow.release.set()
    await asyncio.gather(first, *later)
    assert slow.transactions == [["a"], ["b", "c", "a"]]
    assert committed(coord, "a") == 4
    assert await stored(tmp_path) == {("a", "t", 0): 4, ("b", "t", 0): 2, ("c", "t", 0): 3}


async def test_offset_delete_after_a_commit_in_flight_removes_it(coord: GroupCoordinator, store: MetadataStore,
                                                                tmp_path: Path) -> None:
    await coord.commit_offsets("keep", -1, "", None, {("t", 0): OffsetAndMetadata(7)})
    slow = slow_db(store)
    blocker = commit(coord, "other", 1)
    assert await asyncio.to_thread(slow.entered.wait, WAIT)
    committed = commit(coord, "g", 5)
    await queued(store, 1)
    deleted = asyncio.create_task(coord.delete_offsets("g", [("t", 0)]))
    await queued(store, 2)
    slow.release.set()
    assert await committed == {("t", 0): 0}
    assert await deleted == (0, {("t", 0): 0})
    await blocker
    assert coord.fetch_offsets("g", [("t", 0)])[("t", 0)] == (None, 0)
    assert await stored(tmp_path) == {("keep", "t", 0): 7, ("other", "t", 0): 1}


async def test_commit_after_delete_groups_survives_it(coord: GroupCoordinator, store: MetadataStore,
                                                     tmp_path: Path) -> None:
    await coord.commit_offsets("g", -1, "", None, {("t", 0): OffsetAndMetadata(3)})
    slow = slow_db(store)
    blocker = commit(coord, "other", 1)
    assert await asyncio.to_thread(slow.entered.wait, WAIT)
    dropped = asyncio.create_task(coord.delete_groups(["g"]))
    await queued(store, 1)
    again = commit(coord, "g", 9)
    await queued(store, 2)
    slow.release.set()
    assert await dropped == {"g": 0}
    assert await again == {("t", 0): 0}
    await blocker
    assert committed(coord, "g") == 9
    assert await stored(tmp_path) == {("g", "t", 0): 9, ("other", "t", 0): 1}


async def test_a_failing_write_fails_only_its_own_caller(store: MetadataStore, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    slow = slow_db(store)
    real = store._transaction

    def refuse_bad(batch: Any) -> None:
        if any(str(row[0]) == "bad" for stmts in batch for _, rows in stmts for row in rows):
            raise sqlite3.OperationalError("disk I/O error")
        real(batch)

    monkeypatch.setattr(store, "_transaction", refuse_bad)
    first = asyncio.create_task(store.put_offsets("a", [("t", 0, 1, -1, "", 0)]))
    assert await asyncio.to_thread(slow.entered.wait, WAIT)
    waiting = [asyncio.create_task(store.put_offsets(g, [("t", 0, 2, -1, "", 0)])) for g in ("b", "bad", "c")]
    await queued(store, 3)
    slow.release.set()
    results = await asyncio.gather(first, *waiting, return_exceptions=True)
    assert results[:2] == [None, None] and results[3] is None
    assert isinstance(results[2], sqlite3.OperationalError)
    # The shared transaction failed as a whole; each caller was then retried alone.
    assert slow.transactions == [["a"], ["b"], ["c"]]
    assert await stored(tmp_path) == {("a", "t", 0): 1, ("b", "t", 0): 2, ("c", "t", 0): 2}
