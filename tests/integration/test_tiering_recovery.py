"""A broker started on an empty data dir with the same bucket and key ring recovers the topics
(same ids), their configs and a group's committed offsets, serves every remote record, and
continues the log after the remote end."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, TopicCollection, TopicPartition
from confluent_kafka.admin import ConfigResource, ResourceType

from security.keys import LocalKeyProvider
from service.snapshot import SNAPSHOT_KEY, open_snapshot

from . import ck
from .helpers import Plan, unique_topic, wait_until
from .test_tiering_helpers import (
    TIERED_TOPIC,
    make_remote,
    new_keyring,
    offsets,
    produce,
    text_plan,
    tiered_factory,  # noqa: F401 - fixture
)

TOPIC_CONFIG = {
    **TIERED_TOPIC,
    "remote.upload.interval.ms": "1000",  # the active segment reaches the bucket too
    "retention.ms": "864000000",
    "max.message.bytes": "500000",
}
COMMITTED = {0: 123, 1: 77}


def _topic_id(bootstrap: str, topic: str) -> str:
    fs = ck.admin(bootstrap).describe_topics(TopicCollection([topic]), request_timeout=15)
    desc = fs[topic].result(20)
    assert len(desc.partitions) == 2
    return str(desc.topic_id)


def _configs(bootstrap: str, topic: str) -> dict[str, str]:
    res = ConfigResource(ResourceType.TOPIC, topic)
    entries = ck.admin(bootstrap).describe_configs([res], request_timeout=15)[res].result(20)
    return {name: e.value for name, e in entries.items()}


def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    req = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in COMMITTED])
    res = ck.admin(bootstrap).list_consumer_group_offsets([req], request_timeout=15)[group].result(20)
    return {tp.partition: tp.offset for tp in res.topic_partitions}


def _snapshot_offsets(remote, ring: Path, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets as the bucket's cluster snapshot holds them."""
    if SNAPSHOT_KEY not in remote.keys():
        return {}
    snap = asyncio.run(open_snapshot(remote.read(SNAPSHOT_KEY), LocalKeyProvider.from_file(ring)))
    rows = snap["offsets"]
    assert isinstance(rows, list), rows
    return {p: o for g, t, p, o, *_ in rows if (g, t) == (group, topic)}


@pytest.mark.parametrize("kind,how", [("file", "stop"), ("s3", "kill")])
def test_new_broker_on_empty_disk_serves_the_bucket(tiered_factory, tmp_path, kind, how):
    remote = make_remote(kind, tmp_path)
    ring = tmp_path / "keys" / "ring.json"
    new_keyring(ring)
    a = tiered_factory(remote, ring, name="first")
    topic = unique_topic("tier-recover")
    group = unique_topic("tier-group")
    ck.create_topic(a.bootstrap, topic, 2, TOPIC_CONFIG)
    plan = text_plan(b"RECOVER", 2, 250)
    produce(a, topic, plan)
    ends = {p: plan.count(p) for p in range(2)}
    topic_id = _topic_id(a.bootstrap, topic)
    configs = _configs(a.bootstrap, topic)
    for key, value in TOPIC_CONFIG.items():
        assert configs[key] == value, (key, configs[key])

    c = ck.consumer(a.bootstrap, **{"group.id": group})
    try:
        c.commit(offsets=[TopicPartition(topic, p, off) for p, off in COMMITTED.items()], asynchronous=False)
    finally:
        c.close()
    assert _committed(a.bootstrap, group, topic) == COMMITTED

    # Everything, the active segments included (remote.upload.interval.ms), is in the bucket.
    for p in range(2):
        wait_until(lambda p=p: remote.remote_end(topic, p) == ends[p], 60, interval=0.2,
                   what=f"{topic}-{p} entirely in the bucket")
    assert any(k.startswith("_cluster/") for k in remote.keys()), remote.keys()[:20]
    if how == "stop":
        a.stop()  # a clean stop writes a last snapshot
    else:
        # Killed, it writes no last snapshot: the periodic one must hold the commit first.
        wait_until(lambda: _snapshot_offsets(remote, ring, group, topic) == COMMITTED, 30,
                   interval=0.2, what="the committed offsets in the bucket's snapshot")
        a.kill()

    b = tiered_factory(remote, ring, name="second")
    assert _topic_id(b.bootstrap, topic) == topic_id
    assert remote.topic_ids(topic) and len(remote.topic_ids(topic)) == 1
    configs = _configs(b.bootstrap, topic)
    for key, value in TOPIC_CONFIG.items():
        assert configs[key] == value, (key, configs[key])
    assert _committed(b.bootstrap, group, topic) == COMMITTED
    for p in range(2):
        o = offsets(b.bootstrap, topic, p)
        assert (o["earliest"], o["latest"]) == (0, ends[p]), o
    got = ck.strip_ts(ck.consume(b.bootstrap, topic, [0, 1], start=0, timeout=90))
    assert got == plan.expected()

    # The local log continues after the remote end.
    more = text_plan(b"AFTER", 2, 40, seed=11, base_ts=plan.max_timestamp() + 10)
    prod = ck.producer(b.bootstrap, **{"acks": "all"})
    offsets_seen = ck.produce_plan(prod, topic, more)
    for part in range(2):
        mine = [off for pp, off in offsets_seen if pp == part]
        assert mine == list(range(ends[part], ends[part] + more.count(part)))
    got = ck.strip_ts(ck.consume(b.bootstrap, topic, [0, 1], start=0, timeout=90))
    assert got == Plan(plan.rounds + more.rounds).expected()
    # The group resumes where it committed.
    c = ck.consumer(b.bootstrap, **{"group.id": group})
    try:
        assert {tp.partition: tp.offset for tp in
                c.committed([TopicPartition(topic, p) for p in COMMITTED], timeout=15)} == COMMITTED
    finally:
        c.close()
