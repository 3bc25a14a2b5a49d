"""Cluster metadata snapshots in the bucket (`_cluster/metadata.json`), and restoring from one.

The snapshot is an export of the MetadataStore (cluster id, producer-id high mark, topics with
ids and configs, committed offsets, transactions, ACLs, salted SCRAM credentials), so a broker
started on an empty data dir with
the same bucket comes back with every topic and the offsets of the last snapshot. What is lost
with a disk: committed offsets newer than the last snapshot (remote.snapshot.interval.ms) and the
unsealed tail not yet uploaded (bounded by remote.upload.interval.ms).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import uuid

from security.acl import AclBinding
from security.credentials import ScramCredential
from tiering.remote.store import ObjectStore

from service.metadata import MetadataStore, TopicRecord
from service.txn.coordinator import txn_from_json, txn_to_json

log = logging.getLogger("sediment.snapshot")

SNAPSHOT_KEY = "_cluster/metadata.json"
FORMAT_VERSION = 1
_META_KEYS = ("cluster.id", "producer.id.next")


class ClusterSnapshots:
    def __init__(self, store: MetadataStore, objects: ObjectStore, interval_ms: int) -> None:
        self._store = store
        self._objects = objects
        self._interval = interval_ms / 1000
        self._last_digest: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def export(self) -> dict[str, object]:
        meta = {k: await self._store.get_meta(k) for k in _META_KEYS}
        topics = [{"name": t.name, "topic_id": str(t.topic_id), "partitions": t.partitions, "configs": t.configs}
                  for t in sorted(await self._store.load_topics(), key=lambda t: t.name)]
        offsets = [list(row) for row in sorted(await self._store.load_offsets())]
        txns = [txn_to_json(t) for t in await self._store.load_transactions()]
        acls = sorted(list(b.as_row()) for b in await self._store.load_acls())
        credentials = [_credential_to_json(n, m, c) for n, m, c in await self._store.load_scram_credentials()]
        return {"format_version": FORMAT_VERSION, "meta": {k: v for k, v in meta.items() if v is not None},
                "topics": topics, "offsets": offsets, "transactions": txns, "acls": acls,
                "credentials": credentials}

    async def write(self) -> bool:
        """Upload a snapshot if anything changed since the last one; True when one was written."""
        body = json.dumps(await self.export(), sort_keys=True).encode()
        digest = hashlib.sha256(body).hexdigest()
        if digest == self._last_digest:
            return False
        await self._objects.put(SNAPSHOT_KEY, body)
        self._last_digest = digest
        return True

    async def restore_if_fresh(self) -> bool:
        """On a data dir with no cluster id and no topics, load the bucket's snapshot."""
        if await self._store.get_meta("cluster.id") or await self._store.load_topics():
            return False
        if await self._objects.head(SNAPSHOT_KEY) is None:
            return False
        snap = json.loads(await self._objects.get(SNAPSHOT_KEY))
        if snap.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{SNAPSHOT_KEY}: unsupported format_version {snap.get('format_version')!r}")
        for key, value in snap["meta"].items():
            await self._store.set_meta(key, str(value))
        for t in snap["topics"]:
            await self._store.put_topic(TopicRecord(t["name"], uuid.UUID(t["topic_id"]), int(t["partitions"]),
                                                    dict(t["configs"])))
        by_group: dict[str, list[tuple[str, int, int, int, str, int]]] = {}
        for group, topic, partition, offset, epoch, metadata, ts in snap["offsets"]:
            by_group.setdefault(group, []).append((topic, int(partition), int(offset), int(epoch), metadata, int(ts)))
        for group, rows in by_group.items():
            await self._store.put_offsets(group, rows)
        for d in snap.get("transactions", ()):
            await self._store.put_transaction(txn_from_json(d))
        await self._store.put_acls([AclBinding.from_row(row) for row in snap.get("acls", ())])
        have = {(n, m) for n, m, _ in await self._store.load_scram_credentials()}
        for d in snap.get("credentials", ()):
            if (d["name"], d["mechanism"]) not in have:  # users added offline before this start win
                await self._store.put_scram_credential(d["name"], d["mechanism"], _credential_from_json(d))
        log.info("restored %d topics and the offsets of %d groups from the bucket's snapshot",
                 len(snap["topics"]), len(by_group))
        return True

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.write()
            except Exception as e:  # the next pass retries; the bucket may be briefly unavailable
                log.warning("cluster snapshot failed: %s", e)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            await self.write()
        except Exception as e:
            log.warning("final cluster snapshot failed: %s", e)


def _credential_to_json(name: str, mechanism: str, cred: ScramCredential) -> dict[str, object]:
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return {"name": name, "mechanism": mechanism, "salt": b64(cred.salt), "stored_key": b64(cred.stored_key),
            "server_key": b64(cred.server_key), "iterations": cred.iterations}


def _credential_from_json(d: dict[str, object]) -> ScramCredential:
    return ScramCredential(base64.b64decode(str(d["salt"])), base64.b64decode(str(d["stored_key"])),
                           base64.b64decode(str(d["server_key"])), int(d["iterations"]))  # type: ignore[call-overload]
