"""MetadataStore: durable broker state other than segments (SQLite, WAL mode, under the data dir).

Handlers never see SQL: the broker reads everything into memory at start and writes through
these async methods, which run the blocking calls in a thread. A multi-broker mode later adds
another implementation of the same methods.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from security.acl import AclBinding
from security.credentials import ScramCredential

if TYPE_CHECKING:
    from service.txn.coordinator import TxnMetadata


# A client quota entity as Kafka names one: (entity type, name) pairs sorted by type, where a
# None name is the type's default (e.g. (("client-id", None), ("user", "alice"))).
QuotaEntity = tuple[tuple[str, str | None], ...]


def quota_entity_json(entity: QuotaEntity) -> str:
    return json.dumps([list(pair) for pair in sorted(entity)])


def quota_entity_from_json(text: str) -> QuotaEntity:
    return tuple(sorted((str(t), None if n is None else str(n)) for t, n in json.loads(text)))


@dataclass
class TopicRecord:
    name: str
    topic_id: uuid.UUID
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)  # explicit topic overrides only


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS transactions (
    transactional_id TEXT PRIMARY KEY,
    state TEXT NOT NULL  -- JSON of the coordinator's TxnMetadata
);
CREATE TABLE IF NOT EXISTS topics (
    name TEXT PRIMARY KEY,
    topic_id TEXT NOT NULL UNIQUE,
    partitions INTEGER NOT NULL,
    configs TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS group_offsets (
    group_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    committed_offset INTEGER NOT NULL,
    leader_epoch INTEGER NOT NULL,
    metadata TEXT NOT NULL,
    commit_timestamp INTEGER NOT NULL,
    PRIMARY KEY (group_id, topic, partition)
);
CREATE TABLE IF NOT EXISTS group_states (
    group_id TEXT PRIMARY KEY,
    protocol_type TEXT NOT NULL,
    empty_since INTEGER
);
CREATE TABLE IF NOT EXISTS acls (
    resource_type INTEGER NOT NULL,
    resource_name TEXT NOT NULL,
    pattern_type INTEGER NOT NULL,
    principal TEXT NOT NULL,
    host TEXT NOT NULL,
    operation INTEGER NOT NULL,
    permission INTEGER NOT NULL,
    PRIMARY KEY (resource_type, resource_name, pattern_type, principal, host, operation, permission)
);
CREATE TABLE IF NOT EXISTS scram_credentials (  -- salted forms only, never passwords
    name TEXT NOT NULL,
    mechanism TEXT NOT NULL,  -- SCRAM-SHA-256 | SCRAM-SHA-512
    salt BLOB NOT NULL,
    stored_key BLOB NOT NULL,
    server_key BLOB NOT NULL,
    iterations INTEGER NOT NULL,
    PRIMARY KEY (name, mechanism)
);
CREATE TABLE IF NOT EXISTS client_quotas (
    entity TEXT NOT NULL,  -- JSON [[type, name], ...] sorted by type; a null name is the type's default
    quota_key TEXT NOT NULL,  -- producer_byte_rate, consumer_byte_rate, request_percentage, ...
    value REAL NOT NULL,
    PRIMARY KEY (entity, quota_key)
);
"""


# One caller's writes: statements with their rows, applied together (executemany each).
Statements = Sequence[tuple[str, Sequence[tuple[object, ...]]]]


class GroupCommitWriter:
    """Shares transactions between concurrent writers (group commit).

    Callers queue their statements and await their own future; while one transaction runs in
    a thread, later callers gather behind it and all go in the next one. Writes are applied in
    the order they were queued (a batch holds them in queue order, batches run one at a time),
    so of two writes to one row the later call always wins, and a caller is answered only once
    the transaction holding its writes has committed.
    """

    def __init__(self, apply: Callable[[list[Statements]], list[BaseException | None]]) -> None:
        # apply runs in a thread: one transaction for the batch, an outcome per caller.
        self._apply = apply
        self._pending: list[tuple[Statements, asyncio.Future[None]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def write(self, statements: Statements) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((statements, future))
        if self._drainer is None:
            self._drainer = asyncio.create_task(self._drain())
        await future

    async def idle(self) -> None:
        """Wait until every queued write has been applied (before closing the database)."""
        while self._drainer is not None:
            await asyncio.shield(self._drainer)

    async def _drain(self) -> None:
        batch: list[tuple[Statements, asyncio.Future[None]]] = []
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    outcomes = await asyncio.to_thread(self._apply, [stmts for stmts, _ in batch])
                except Exception as e:
                    outcomes = [e] * len(batch)
                for (_, future), error in zip(batch, outcomes):
                    _settle(future, error)
                batch = []
        except BaseException:
            # Cancelled: nobody will report these writes as done.
            for _, future in batch + self._pending:
                _settle(future, RuntimeError("metadata writer stopped"))
            self._pending = []
            raise
        finally:
            self._drainer = None


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return  # the caller was cancelled: its writes still went in, in order
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class MetadataStore:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        # Committed offsets of all groups share transactions (and so the WAL syncs).
        self._offsets = GroupCommitWriter(self._apply_batch)

    async def start(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await asyncio.to_thread(self._open)

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        return db

    async def close(self) -> None:
        await self._offsets.idle()
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.to_thread(db.close)

    # A row's values are whatever SQLite stored (column affinity, not a static type): callers convert.
    def _run(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        assert self._db is not None, "MetadataStore used before start()"
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    async def _exec(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        return await asyncio.to_thread(self._run, sql, args)

    async def get_meta(self, key: str) -> str | None:
        rows = await self._exec("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    async def set_meta(self, key: str, value: str) -> None:
        await self._exec("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    async def load_topics(self) -> list[TopicRecord]:
        rows = await self._exec("SELECT name, topic_id, partitions, configs FROM topics")
        return [TopicRecord(str(n), uuid.UUID(str(i)), int(p), json.loads(str(c)))
                for n, i, p, c in rows]

    async def put_topic(self, topic: TopicRecord) -> None:
        await self._exec(
            "INSERT OR REPLACE INTO topics (name, topic_id, partitions, configs) VALUES (?, ?, ?, ?)",
            (topic.name, str(topic.topic_id), topic.partitions, json.dumps(topic.configs, sort_keys=True)),
        )

    async def delete_topic(self, name: str) -> None:
        await self._exec("DELETE FROM topics WHERE name = ?", (name,))

    # -- producer ids --------------------------------------------------------------------------

    def _allocate(self, key: str, count: int) -> int:
        assert self._db is not None, "MetadataStore used before start()"
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
                start = int(row[0]) if row else 0
                self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                 (key, str(start + count)))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return start

    async def allocate_producer_ids(self, count: int) -> int:
        """Reserve a block of `count` producer ids and return its first. The high mark is
        committed before the ids are used, so no id is ever handed out twice, even across
        restarts (the unused rest of a block is skipped, as with Kafka's id blocks)."""
        return await asyncio.to_thread(self._allocate, "producer.id.next", count)

    # -- consumer groups: committed offsets and when each group became empty ----------------

    def _run_many(self, sql: str, rows: list[tuple[object, ...]]) -> None:
        assert self._db is not None, "MetadataStore used before start()"
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(sql, rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    async def load_offsets(self) -> list[tuple[str, str, int, int, int, str, int]]:
        rows = await self._exec("SELECT group_id, topic, partition, committed_offset, leader_epoch, "
                                "metadata, commit_timestamp FROM group_offsets")
        return [(str(g), str(t), int(p), int(o), int(e), str(m), int(ts))
                for g, t, p, o, e, m, ts in rows]

    def _apply_batch(self, batch: list[Statements]) -> list[BaseException | None]:
        """One transaction for every caller's statements, in order. Should it fail, each
        caller's statements are retried in a transaction of their own, so one bad write does
        not fail the others. Blocking: runs in a thread."""
        try:
            self._transaction(batch)
            return [None] * len(batch)
        except sqlite3.Error:
            if len(batch) == 1:
                raise
        outcomes: list[BaseException | None] = []
        for stmts in batch:
            try:
                self._transaction([stmts])
                outcomes.append(None)
            except sqlite3.Error as e:
                outcomes.append(e)
        return outcomes

    def _transaction(self, batch: list[Statements]) -> None:
        assert self._db is not None, "MetadataStore used before start()"
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for stmts in batch:
                    for sql, rows in stmts:
                        self._db.executemany(sql, rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    async def put_offsets(self, group_id: str, rows: list[tuple[str, int, int, int, str, int]]) -> None:
        """(topic, partition, offset, leader_epoch, metadata, commit_timestamp) rows, in one
        transaction, shared with other groups' concurrent writes; returns once committed."""
        await self._offsets.write([(
            "INSERT OR REPLACE INTO group_offsets (group_id, topic, partition, committed_offset, "
            "leader_epoch, metadata, commit_timestamp) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(group_id, *r) for r in rows])])

    async def delete_offsets(self, group_id: str, partitions: list[tuple[str, int]] | None) -> None:
        """Delete these partitions' offsets of the group, or all of them (None). Queued with
        the commits, so a commit made before (after) it is deleted (kept)."""
        if partitions is None:
            await self._offsets.write([("DELETE FROM group_offsets WHERE group_id = ?", [(group_id,)])])
            return
        await self._offsets.write([("DELETE FROM group_offsets WHERE group_id = ? AND topic = ? AND partition = ?",
                                    [(group_id, t, p) for t, p in partitions])])

    async def load_group_states(self) -> list[tuple[str, str, int | None]]:
        rows = await self._exec("SELECT group_id, protocol_type, empty_since FROM group_states")
        return [(str(g), str(pt), None if e is None else int(e)) for g, pt, e in rows]

    async def put_group_state(self, group_id: str, protocol_type: str, empty_since: int | None) -> None:
        await self._exec("INSERT OR REPLACE INTO group_states (group_id, protocol_type, empty_since) "
                         "VALUES (?, ?, ?)", (group_id, protocol_type, empty_since))

    async def delete_group_state(self, group_id: str) -> None:
        await self._exec("DELETE FROM group_states WHERE group_id = ?", (group_id,))

    async def load_transactions(self) -> list[TxnMetadata]:
        from service.txn.coordinator import txn_from_json

        rows = await self._exec("SELECT state FROM transactions")
        return [txn_from_json(json.loads(str(raw))) for (raw,) in rows]

    async def put_transaction(self, txn: TxnMetadata) -> None:
        from service.txn.coordinator import txn_to_json

        d = txn_to_json(txn)
        await self._exec("INSERT OR REPLACE INTO transactions (transactional_id, state) VALUES (?, ?)",
                         (txn.transactional_id, json.dumps(d)))

    # -- ACLs ----------------------------------------------------------------------------------

    async def load_acls(self) -> list[AclBinding]:
        rows = await self._exec("SELECT resource_type, resource_name, pattern_type, principal, host, "
                                "operation, permission FROM acls")
        return [AclBinding.from_row(r) for r in rows]

    async def put_acls(self, bindings: list[AclBinding]) -> None:
        """Add bindings in one transaction (existing ones stay as they are)."""
        await asyncio.to_thread(
            self._run_many, "INSERT OR IGNORE INTO acls (resource_type, resource_name, pattern_type, "
            "principal, host, operation, permission) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [b.as_row() for b in bindings])

    async def delete_acls(self, bindings: list[AclBinding]) -> None:
        await asyncio.to_thread(
            self._run_many, "DELETE FROM acls WHERE resource_type = ? AND resource_name = ? AND "
            "pattern_type = ? AND principal = ? AND host = ? AND operation = ? AND permission = ?",
            [b.as_row() for b in bindings])

    # -- SCRAM credentials ---------------------------------------------------------------------

    async def load_scram_credentials(self) -> list[tuple[str, str, ScramCredential]]:
        rows = await self._exec("SELECT name, mechanism, salt, stored_key, server_key, iterations "
                                "FROM scram_credentials ORDER BY name, mechanism")
        return [(str(n), str(m), ScramCredential(bytes(s), bytes(sk), bytes(vk), int(i)))
                for n, m, s, sk, vk, i in rows]

    async def put_scram_credential(self, name: str, mechanism: str, cred: ScramCredential) -> None:
        await self._exec("INSERT OR REPLACE INTO scram_credentials (name, mechanism, salt, stored_key, server_key, "
                         "iterations) VALUES (?, ?, ?, ?, ?, ?)",
                         (name, mechanism, cred.salt, cred.stored_key, cred.server_key, cred.iterations))

    async def delete_scram_credential(self, name: str, mechanism: str | None = None) -> int:
        """Delete one mechanism's credential of the user, or all of them (None); returns how many."""
        if mechanism is None:
            rows = await self._exec("DELETE FROM scram_credentials WHERE name = ? RETURNING name", (name,))
        else:
            rows = await self._exec("DELETE FROM scram_credentials WHERE name = ? AND mechanism = ? RETURNING name",
                                    (name, mechanism))
        return len(rows)

    # -- client quotas ---------------------------------------------------------------------------

    async def load_client_quotas(self) -> list[tuple[QuotaEntity, str, float]]:
        rows = await self._exec("SELECT entity, quota_key, value FROM client_quotas ORDER BY entity, quota_key")
        return [(quota_entity_from_json(str(e)), str(k), float(v)) for e, k, v in rows]

    async def alter_client_quotas(self, put: list[tuple[QuotaEntity, str, float]],
                                  remove: list[tuple[QuotaEntity, str]]) -> None:
        """Set and remove quota values in one transaction (an AlterClientQuotas request is atomic)."""
        await asyncio.to_thread(self._transaction, [[
            ("INSERT OR REPLACE INTO client_quotas (entity, quota_key, value) VALUES (?, ?, ?)",
             [(quota_entity_json(e), k, v) for e, k, v in put]),
            ("DELETE FROM client_quotas WHERE entity = ? AND quota_key = ?",
             [(quota_entity_json(e), k) for e, k in remove]),
        ]])
