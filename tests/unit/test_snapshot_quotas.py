"""Client quotas travel with the cluster snapshot: exported to the bucket, restored on an empty
data dir; quotas set offline before that first start win over the snapshot's."""

from __future__ import annotations

import asyncio
import json

from service.metadata import MetadataStore
from service.snapshot import SNAPSHOT_KEY, ClusterSnapshots
from tiering.remote.localfs import FileStore

ALICE = (("user", "alice"),)
DEFAULTS = (("client-id", None), ("user", None))


def test_quotas_are_in_the_snapshot_and_come_back(tmp_path):
    async def run() -> None:
        bucket = FileStore(str(tmp_path / "bucket"))
        await bucket.start()
        old = MetadataStore(tmp_path / "old" / "metadata.db")
        await old.start()
        await old.set_meta("cluster.id", "c1")
        await old.alter_client_quotas([(ALICE, "producer_byte_rate", 1024.0), (ALICE, "request_percentage", 5.5),
                                       (DEFAULTS, "consumer_byte_rate", 2048.0)], [])
        assert await ClusterSnapshots(old, bucket, 1000).write()
        snap = json.loads(await bucket.get(SNAPSHOT_KEY))
        assert snap["client_quotas"] == [
            {"entity": [["client-id", None], ["user", None]], "key": "consumer_byte_rate", "value": 2048.0},
            {"entity": [["user", "alice"]], "key": "producer_byte_rate", "value": 1024.0},
            {"entity": [["user", "alice"]], "key": "request_percentage", "value": 5.5},
        ]
        await old.close()

        new = MetadataStore(tmp_path / "new" / "metadata.db")
        await new.start()
        await new.alter_client_quotas([(ALICE, "producer_byte_rate", 1.0)], [])  # set offline before the start
        assert await ClusterSnapshots(new, bucket, 1000).restore_if_fresh()
        assert await new.load_client_quotas() == [
            (DEFAULTS, "consumer_byte_rate", 2048.0),
            (ALICE, "producer_byte_rate", 1.0),
            (ALICE, "request_percentage", 5.5),
        ]
        await new.close()
        await bucket.close()

    asyncio.run(run())


def test_a_snapshot_without_quotas_restores(tmp_path):
    async def run() -> None:
        bucket = FileStore(str(tmp_path / "bucket"))
        await bucket.start()
        old = MetadataStore(tmp_path / "old" / "metadata.db")
        await old.start()
        await old.set_meta("cluster.id", "c1")
        doc = await ClusterSnapshots(old, bucket, 1000).export()
        del doc["client_quotas"]  # as written before quotas existed
        await bucket.put(SNAPSHOT_KEY, json.dumps(doc).encode())
        await old.close()
        new = MetadataStore(tmp_path / "new" / "metadata.db")
        await new.start()
        assert await ClusterSnapshots(new, bucket, 1000).restore_if_fresh()
        assert await new.load_client_quotas() == []
        assert await new.get_meta("cluster.id") == "c1"
        await new.close()
        await bucket.close()

    asyncio.run(run())
