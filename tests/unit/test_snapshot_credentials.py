"""SCRAM credentials travel in the bucket's cluster snapshot and come back on an empty data dir."""

from __future__ import annotations

import json

from security.credentials import SCRAM_SHA_256, SCRAM_SHA_512, new_credential, verify_password
from service.metadata import MetadataStore
from service.snapshot import SNAPSHOT_KEY, ClusterSnapshots
from tiering.remote.localfs import FileStore


async def test_credentials_round_trip_through_the_snapshot(tmp_path):
    objects = FileStore(str(tmp_path / "bucket"))
    await objects.start()
    first = MetadataStore(tmp_path / "a" / "metadata.db")
    await first.start()
    await first.set_meta("cluster.id", "c1")
    await first.put_scram_credential("alice", "SCRAM-SHA-512", new_credential(SCRAM_SHA_512, "pw-a", 8192))
    await first.put_scram_credential("bob", "SCRAM-SHA-256", new_credential(SCRAM_SHA_256, "pw-b"))
    assert await ClusterSnapshots(first, objects, 1000).write()
    body = await objects.get(SNAPSHOT_KEY)
    assert b"pw-a" not in body and b"pw-b" not in body
    assert {c["name"] for c in json.loads(body)["credentials"]} == {"alice", "bob"}
    await first.close()

    fresh = MetadataStore(tmp_path / "b" / "metadata.db")
    await fresh.start()
    offline = new_credential(SCRAM_SHA_256, "pw-b-new")  # added with `sediment users add` before start
    await fresh.put_scram_credential("bob", "SCRAM-SHA-256", offline)
    assert await ClusterSnapshots(fresh, objects, 1000).restore_if_fresh()
    got = {(n, m): c for n, m, c in await fresh.load_scram_credentials()}
    assert set(got) == {("alice", "SCRAM-SHA-512"), ("bob", "SCRAM-SHA-256")}
    assert verify_password(SCRAM_SHA_512, got[("alice", "SCRAM-SHA-512")], "pw-a")
    assert got[("alice", "SCRAM-SHA-512")].iterations == 8192
    assert got[("bob", "SCRAM-SHA-256")] == offline  # the offline one wins
    await fresh.close()
    await objects.close()
