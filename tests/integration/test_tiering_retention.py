"""Remote retention and topic deletion remove objects from the bucket (in-process broker, real
directory store, real segments)."""

from __future__ import annotations

from service.broker import Broker
from service.config import load_config
from tests.unit.conftest import make_batch

NOW = 1_700_000_000_000


def _objects(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".sediment-tmp" not in str(p))


async def test_retention_and_delete_topic_remove_remote_objects(tmp_path):
    remote = tmp_path / "bucket"
    config = load_config(None, {
        "data.dir": str(tmp_path / "data"), "listeners": "PLAINTEXT://127.0.0.1:0",
        "http.listener": "127.0.0.1:0", "remote.url": remote.as_uri(),
        "remote.upload.check.interval.ms": "600000"}, environ={})
    broker = Broker(config)
    await broker.start()
    try:
        await broker.topics.create("t", 1, {"remote.storage.enable": "true", "segment.bytes": "1024",
                                           "local.retention.bytes": "1"})
        log = broker.log("t", 0)
        assert log is not None
        tier = broker.tier
        assert tier is not None  # remote.url is set
        for i in range(12):  # ~400-byte batches: a roll every two or three
            log.append(make_batch([b"v-%02d-" % i + b"x" * 300], base_timestamp=NOW + i), now_ms=NOW)
        log.roll()
        await tier.run_once(now_ms=NOW)
        m = await tier.manifest(broker.topics.tiered_topics()[0], 0)
        entries = m.committed()
        assert entries[0].base_offset == 0 and entries[-1].last_offset == 11
        assert len(entries) >= 4
        segment_objects = [k for k in _objects(remote) if k.endswith((".log", ".indexes"))]
        assert len(segment_objects) == 2 * len(entries)

        # retention.bytes over local + remote: only the newest segments' worth stays.
        keep = entries[-1].size + entries[-2].size
        await broker.topics.set_configs("t", {"remote.storage.enable": "true", "segment.bytes": "1024",
                                             "local.retention.bytes": "1", "retention.bytes": str(keep)})
        await tier.run_once(now_ms=NOW)
        # Retention changes a copy of the manifest, which replaces the view once saved.
        left = (await tier.manifest(broker.topics.tiered_topics()[0], 0)).committed()
        assert [e.segment_uuid for e in m.committed()] == [e.segment_uuid for e in entries]
        assert [e.segment_uuid for e in left] == [e.segment_uuid for e in entries[-2:]]
        assert len([k for k in _objects(remote) if k.endswith((".log", ".indexes"))]) == 4
        assert tier.metrics.segments_deleted == len(entries) - 2
        assert broker.partitions.log_start_offset(log) == log.log_start_offset == entries[-2].base_offset

        await broker.topics.delete("t")
        assert [k for k in _objects(remote) if k.startswith("t-")] == []
    finally:
        await broker.close()
