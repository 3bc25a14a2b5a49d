"""ACLs travel with the cluster snapshot: exported to the bucket, restored on an empty data dir."""

from __future__ import annotations

import asyncio
import json

from security.acl import AclBinding, AclOperation, AclPermission, PatternType, ResourceType
from service.metadata import MetadataStore
from service.snapshot import SNAPSHOT_KEY, ClusterSnapshots
from tiering.remote.localfs import FileStore

ACLS = [
    AclBinding(ResourceType.TOPIC, "orders-", PatternType.PREFIXED, "User:alice", "*", AclOperation.READ,
               AclPermission.ALLOW),
    AclBinding(ResourceType.CLUSTER, "kafka-cluster", PatternType.LITERAL, "User:*", "10.0.0.1",
               AclOperation.ALTER, AclPermission.DENY),
]


def test_acls_are_in_the_snapshot_and_come_back(tmp_path):
    async def run() -> None:
        bucket = FileStore(str(tmp_path / "bucket"))
        await bucket.start()
        old = MetadataStore(tmp_path / "old" / "metadata.db")
        await old.start()
        await old.set_meta("cluster.id", "c1")
        await old.put_acls(ACLS)
        await old.put_acls(ACLS[:1])  # idempotent
        assert await ClusterSnapshots(old, bucket, 1000).write()
        snap = json.loads(await bucket.get(SNAPSHOT_KEY))
        assert snap["acls"] == sorted(list(b.as_row()) for b in ACLS)
        await old.delete_acls(ACLS[1:])
        assert await old.load_acls() == ACLS[:1]
        await old.close()

        new = MetadataStore(tmp_path / "new" / "metadata.db")
        await new.start()
        assert await ClusterSnapshots(new, bucket, 1000).restore_if_fresh()
        assert sorted(await new.load_acls(), key=AclBinding.as_row) == sorted(ACLS, key=AclBinding.as_row)
        await new.close()
        await bucket.close()

    asyncio.run(run())
