"""Cluster metadata snapshots in the bucket (`_cluster/metadata.json`), and restoring from one.

The snapshot is an export of the MetadataStore (cluster id, producer-id high mark, topics with
ids and configs, committed offsets, transactions, ACLs, salted SCRAM credentials, client
quotas), so a broker started on an empty data dir with the same bucket comes back with every
topic and the offsets of the last snapshot. What is lost with a disk: committed offsets newer
than the last snapshot (remote.snapshot.interval.ms) and the unsealed tail not yet uploaded
(bounded by remote.upload.interval.ms).

With a key provider (remote.keyring or remote.kms.key.id) the JSON body is envelope-encrypted:
a fresh data key per write seals it with AES-256-GCM, and the object under the same key holds
only a small JSON wrapper (wrapped data key, KEK id, nonce, ciphertext), so the bucket reveals
no topic name, config or group. Restore reads either form.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import secrets
import uuid
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from security.acl import AclBinding
from security.credentials import ScramCredential
from security.keys import KeyProvider, KeysError, WrappedKey, new_data_key
from service.config import ConfigError
from service.metadata import MetadataStore, TopicRecord
from service.quotas import entity_of
from service.txn.coordinator import txn_from_json, txn_to_json
from tiering.remote.store import ObjectStore

log = logging.getLogger("sediment.snapshot")

SNAPSHOT_KEY = "_cluster/metadata.json"
FORMAT_VERSION = 1
_META_KEYS = ("cluster.id", "producer.id.next")
ENCRYPTED_FORMAT = "sediment-encrypted-snapshot-v1"
_AAD = SNAPSHOT_KEY.encode()
_THREAD_BYTES = 1 << 20  # seal larger bodies in a worker thread


async def seal_snapshot(body: bytes, keys: KeyProvider) -> bytes:
    data_key = new_data_key()
    wrapped = await keys.wrap(data_key)
    nonce = secrets.token_bytes(12)
    seal = lambda: AESGCM(data_key).encrypt(nonce, body, _AAD)  # noqa: E731
    ciphertext = await asyncio.to_thread(seal) if len(body) > _THREAD_BYTES else seal()
    return json.dumps({"format": ENCRYPTED_FORMAT, "key_id": wrapped.key_id, "wrapped": wrapped.blob_b64(),
                       "nonce": base64.b64encode(nonce).decode(),
                       "ciphertext": base64.b64encode(ciphertext).decode()}).encode()


async def open_snapshot(raw: bytes, keys: KeyProvider | None) -> dict[str, object]:
    """The snapshot's JSON document from the stored object, plain or sealed."""
    doc = json.loads(raw)
    if doc.get("format") != ENCRYPTED_FORMAT:
        return doc
    if keys is None:
        raise ConfigError("remote.keyring", f"the bucket's {SNAPSHOT_KEY} is encrypted under key "
                          f"{doc.get('key_id')!r}: configure the key ring (or remote.kms.key.id) "
                          "that wrote it")
    try:
        data_key = await keys.unwrap(WrappedKey.from_b64(str(doc["key_id"]), str(doc["wrapped"])))
        body = AESGCM(data_key).decrypt(base64.b64decode(doc["nonce"]), base64.b64decode(doc["ciphertext"]), _AAD)
    except (KeysError, InvalidTag, ValueError, KeyError) as e:
        raise ConfigError("remote.keyring", f"the bucket's {SNAPSHOT_KEY} cannot be opened with the "
                          f"configured keys ({type(e).__name__}: {e or 'authentication failed'})") from None
    return json.loads(body)


class ClusterSnapshots:
    def __init__(self, store: MetadataStore, objects: ObjectStore, interval_ms: int,
                 keys: KeyProvider | None = None) -> None:
        self._store = store
        self._keys = keys
        self._written_key_id: str | None = None  # KEK of the last sealed snapshot written
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
        quotas = [{"entity": [list(pair) for pair in entity], "key": key, "value": value}
                  for entity, key, value in await self._store.load_client_quotas()]
        return {"format_version": FORMAT_VERSION, "meta": {k: v for k, v in meta.items() if v is not None},
                "topics": topics, "offsets": offsets, "transactions": txns, "acls": acls,
                "credentials": credentials, "client_quotas": quotas}

    async def write(self) -> bool:
        """Upload a snapshot if anything changed since the last one; True when one was written."""
        body = json.dumps(await self.export(), sort_keys=True).encode()
        digest = hashlib.sha256(body).hexdigest()
        current = self._keys.current_id if self._keys is not None else None
        if digest == self._last_digest and current == self._written_key_id:
            return False  # unchanged, and (after a key rotation) already under the current key
        stored = await seal_snapshot(body, self._keys) if self._keys is not None else body
        await self._objects.put(SNAPSHOT_KEY, stored)
        self._last_digest = digest
        self._written_key_id = current
        return True

    async def restore_if_fresh(self) -> bool:
        """On a data dir with no cluster id and no topics, load the bucket's snapshot."""
        if await self._store.get_meta("cluster.id") or await self._store.load_topics():
            return False
        if await self._objects.head(SNAPSHOT_KEY) is None:
            return False
        snap: dict[str, Any] = await open_snapshot(await self._objects.get(SNAPSHOT_KEY), self._keys)
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
        # Client quotas (absent from snapshots written before them); those set offline before
        # this start win, as credentials do.
        have_quotas = {(e, k) for e, k, _ in await self._store.load_client_quotas()}
        restored = []
        for d in snap.get("client_quotas", ()):
            entity = entity_of((str(t), None if n is None else str(n)) for t, n in d["entity"])
            if (entity, str(d["key"])) not in have_quotas:
                restored.append((entity, str(d["key"]), float(d["value"])))
        if restored:
            await self._store.alter_client_quotas(restored, [])
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


def _credential_from_json(d: dict[str, Any]) -> ScramCredential:
    return ScramCredential(base64.b64decode(str(d["salt"])), base64.b64decode(str(d["stored_key"])),
                           base64.b64decode(str(d["server_key"])), int(d["iterations"]))
