"""Client quotas against a real broker: DescribeClientQuotas and AlterClientQuotas from
kafka-python (its protocol classes over its own connection: its KafkaAdminClient, like
confluent-kafka's AdminClient, has no client-quota methods yet), the `sediment quotas` CLI,
persistence across a restart and through the bucket's snapshot onto an empty disk, ACLs; and
throttling seen by confluent-kafka and kafka-python producers and consumers.

Brokers here measure rates over quota.window.num=2 windows of 1 s: Kafka's sampled rate lets a
client that is over its quota burst (samples - 1) windows' worth each time a sample expires, so
its rate is its quota averaged over whole periods of samples x window; 2 s periods keep the
measured windows short.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request

from confluent_kafka import KafkaError, TopicPartition
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KafkaTopicPartition
from kafka.protocol.admin.client_quotas import AlterClientQuotasRequest, DescribeClientQuotasRequest

from loadtest.quotas import Client

from . import ck
from .conftest import sediment_command
from .helpers import unique_topic, wait_until

INVALID_REQUEST, CLUSTER_AUTHORIZATION_FAILED, UNSUPPORTED_VERSION = 42, 31, 35
QUOTA_SETTINGS = {"quota.window.num": "2", "quota.window.size.seconds": "1"}
PERIOD_S = 2  # quota.window.num x quota.window.size.seconds
MIB = 1 << 20

_E = AlterClientQuotasRequest.EntryData
_C = DescribeClientQuotasRequest.ComponentData


class QuotaAdmin:
    """AlterClientQuotas and DescribeClientQuotas sent by kafka-python."""

    def __init__(self, bootstrap: str) -> None:
        self._admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="quota-admin")

    def close(self) -> None:
        self._admin.close()

    def _send(self, request):
        return self._admin._manager.run(self._admin._manager.send, request)

    def alter(self, entries: list[tuple[dict[str, str | None], dict[str, float | None]]],
              validate_only: bool = False) -> list[tuple[dict, int, str | None]]:
        req = AlterClientQuotasRequest(validate_only=validate_only, entries=[
            _E(entity=[_E.EntityData(entity_type=t, entity_name=n) for t, n in entity.items()],
               ops=[_E.OpData(key=k, value=0.0 if v is None else v, remove=v is None) for k, v in ops.items()])
            for entity, ops in entries])
        resp = self._send(req)
        return [({e.entity_type: e.entity_name for e in entry.entity}, entry.error_code, entry.error_message)
                for entry in resp.entries]

    def set(self, entity: dict[str, str | None], ops: dict[str, float | None]) -> None:
        assert self.alter([(entity, ops)]) == [(entity, 0, None)]

    def describe(self, components: list[tuple[str, int, str | None]], strict: bool = False):
        resp = self._send(DescribeClientQuotasRequest(strict=strict, components=[
            _C(entity_type=t, match_type=m, match=n) for t, m, n in components]))
        if resp.error_code:
            return resp.error_code, resp.error_message
        return sorted((tuple(sorted((e.entity_type, e.entity_name or "<default>") for e in entry.entity)),
                       {v.key: v.value for v in entry.values}) for entry in resp.entries)


EXACT, DEFAULT, SPECIFIED = 0, 1, 2


def test_alter_and_describe_with_kafka_python(broker_factory):
    b = broker_factory(QUOTA_SETTINGS)
    q = QuotaAdmin(b.bootstrap)
    try:
        assert q.describe([]) == []
        results = q.alter([
            ({"user": "alice"}, {"producer_byte_rate": 1048576.0, "request_percentage": 25.5}),
            ({"user": "alice", "client-id": "app"}, {"consumer_byte_rate": 2048.0}),
            ({"user": None}, {"producer_byte_rate": 4096.0}),
            ({"client-id": None}, {"consumer_byte_rate": 8192.0}),
            ({"user": "bob"}, {"producer_byte_rate": -1.0}),
            ({"user": "bob", "client-id": "x"}, {"nope": 1.0}),
            ({"group": "g"}, {"producer_byte_rate": 1.0}),
            ({"user": "carol"}, {"producer_byte_rate": 10.5}),
        ])
        assert results == [
            ({"user": "alice"}, 0, None),
            ({"user": "alice", "client-id": "app"}, 0, None),
            ({"user": None}, 0, None),
            ({"client-id": None}, 0, None),
            ({"user": "bob"}, INVALID_REQUEST, "Quota producer_byte_rate must be greater than 0"),
            ({"user": "bob", "client-id": "x"}, INVALID_REQUEST, "Invalid configuration key nope"),
            ({"group": "g"}, INVALID_REQUEST, "Unhandled client quota entity type: group"),
            ({"user": "carol"}, INVALID_REQUEST, "producer_byte_rate cannot be a fractional value."),
        ]
        alice = ((("user", "alice"),), {"producer_byte_rate": 1048576.0, "request_percentage": 25.5})
        alice_app = ((("client-id", "app"), ("user", "alice")), {"consumer_byte_rate": 2048.0})
        default_user = ((("user", "<default>"),), {"producer_byte_rate": 4096.0})
        default_client = ((("client-id", "<default>"),), {"consumer_byte_rate": 8192.0})
        assert q.describe([]) == sorted([alice, alice_app, default_user, default_client])
        # kafka-configs.sh --describe --entity-type users: strict, any user
        assert q.describe([("user", SPECIFIED, None)], strict=True) == sorted([alice, default_user])
        assert q.describe([("user", SPECIFIED, None)]) == sorted([alice, alice_app, default_user])
        assert q.describe([("user", EXACT, "alice")], strict=True) == [alice]
        assert q.describe([("user", EXACT, "alice")]) == sorted([alice, alice_app])
        assert q.describe([("user", EXACT, "alice"), ("client-id", SPECIFIED, None)], strict=True) == [alice_app]
        assert q.describe([("client-id", DEFAULT, None)]) == [default_client]
        assert q.describe([("user", DEFAULT, None)], strict=True) == [default_user]
        assert q.describe([("user", EXACT, "nobody")]) == []
        # Kafka's refusals of bad filters
        assert q.describe([("group", SPECIFIED, None)]) == (UNSUPPORTED_VERSION, "Unsupported entity type group")
        assert q.describe([("user", EXACT, None)]) == (
            INVALID_REQUEST, "Request specified MATCH_TYPE_EXACT, but set match string to null.")
        assert q.describe([("user", SPECIFIED, None), ("user", DEFAULT, None)]) == (
            INVALID_REQUEST, "Entity type user cannot appear more than once in the filter.")

        # validate_only: checked, answered, not applied
        assert q.alter([({"user": "alice"}, {"producer_byte_rate": None}), ({"user": "dave"},
                        {"producer_byte_rate": 5.0}), ({"user": "erin"}, {"producer_byte_rate": 0.0})],
                       validate_only=True) == [
            ({"user": "alice"}, 0, None), ({"user": "dave"}, 0, None),
            ({"user": "erin"}, INVALID_REQUEST, "Quota producer_byte_rate must be greater than 0")]
        assert q.describe([("user", SPECIFIED, None)], strict=True) == sorted([alice, default_user])
        # remove one key, then the last key of an entity: the entity is gone
        q.set({"user": "alice"}, {"request_percentage": None})
        q.set({"user": None}, {"producer_byte_rate": None})
        assert q.describe([("user", SPECIFIED, None)], strict=True) == [
            ((("user", "alice"),), {"producer_byte_rate": 1048576.0})]
    finally:
        q.close()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(sediment_command() + ["quotas", *args], capture_output=True, text=True, timeout=60)


def test_quotas_survive_a_restart_and_the_cli_manages_them(broker_factory):
    b = broker_factory(QUOTA_SETTINGS)
    q = QuotaAdmin(b.bootstrap)
    q.set({"user": "alice", "client-id": None}, {"producer_byte_rate": 1024.0})
    q.close()
    b.stop()
    listed = _cli("list", "--data-dir", str(b.data_dir))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [
        "Quota configs for user-principal 'alice', the default client-id are producer_byte_rate=1024.0"]
    done = _cli("set", "--data-dir", str(b.data_dir), "--client", "batch", "--add-config",
                "consumer_byte_rate=65536,request_percentage=12.5")
    assert done.returncode == 0, done.stderr
    bad = _cli("set", "--data-dir", str(b.data_dir), "--user", "x", "--add-config", "producer_byte_rate=-3")
    assert (bad.returncode, bad.stderr.strip().splitlines()[-1]) == (
        2, "sediment: Quota producer_byte_rate must be greater than 0")
    b.start()
    q = QuotaAdmin(b.bootstrap)
    try:
        assert q.describe([]) == [
            ((("client-id", "<default>"), ("user", "alice")), {"producer_byte_rate": 1024.0}),
            ((("client-id", "batch"),), {"consumer_byte_rate": 65536.0, "request_percentage": 12.5}),
        ]
    finally:
        q.close()


def test_quotas_come_back_from_the_bucket_on_an_empty_disk(broker_factory, tmp_path):
    remote = {"remote.url": (tmp_path / "bucket").as_uri(), "remote.snapshot.interval.ms": "100", **QUOTA_SETTINGS}
    a = broker_factory(remote)
    q = QuotaAdmin(a.bootstrap)
    q.set({"user": "tenant-1"}, {"producer_byte_rate": 5242880.0, "consumer_byte_rate": 10485760.0})
    q.set({"client-id": None, "user": None}, {"request_percentage": 50.0})
    q.close()

    def snapshot_quotas():
        path = tmp_path / "bucket" / "_cluster" / "metadata.json"
        return json.loads(path.read_text()).get("client_quotas") if path.exists() else None

    wait_until(lambda: snapshot_quotas() == [
        {"entity": [["client-id", None], ["user", None]], "key": "request_percentage", "value": 50.0},
        {"entity": [["user", "tenant-1"]], "key": "consumer_byte_rate", "value": 10485760.0},
        {"entity": [["user", "tenant-1"]], "key": "producer_byte_rate", "value": 5242880.0},
    ], 30, what="the quotas in the bucket's snapshot")
    a.kill()  # no final snapshot: the periodic one holds the quotas
    b = broker_factory(remote)  # a new data dir, the same bucket
    assert b.data_dir != a.data_dir
    q = QuotaAdmin(b.bootstrap)
    try:
        assert q.describe([]) == [
            ((("client-id", "<default>"), ("user", "<default>")), {"request_percentage": 50.0}),
            ((("user", "tenant-1"),), {"consumer_byte_rate": 10485760.0, "producer_byte_rate": 5242880.0}),
        ]
    finally:
        q.close()


def test_quota_apis_need_describe_configs_and_alter_configs_on_the_cluster(broker_factory):
    b = broker_factory({"authorizer.enable": "true", **QUOTA_SETTINGS})
    q = QuotaAdmin(b.bootstrap)
    try:
        assert q.describe([]) == (CLUSTER_AUTHORIZATION_FAILED, "Cluster authorization failed.")
        assert q.alter([({"user": "a"}, {"producer_byte_rate": 1.0}), ({"client-id": None}, {"x": 1.0})]) == [
            ({"user": "a"}, CLUSTER_AUTHORIZATION_FAILED, "Cluster authorization failed."),
            ({"client-id": None}, CLUSTER_AUTHORIZATION_FAILED, "Cluster authorization failed.")]
    finally:
        q.close()
    b.stop()
    grant = subprocess.run(sediment_command() + ["acls", "add", "--data-dir", str(b.data_dir), "--allow-principal",
                                                  "User:ANONYMOUS", "--operation", "DescribeConfigs", "--cluster"],
                           capture_output=True, text=True, timeout=60)
    assert grant.returncode == 0, grant.stderr
    assert _cli("set", "--data-dir", str(b.data_dir), "--user", "a", "--add-config",
                "producer_byte_rate=100").returncode == 0
    b.start()
    q = QuotaAdmin(b.bootstrap)
    try:
        assert q.describe([]) == [((("user", "a"),), {"producer_byte_rate": 100.0})]
        assert q.alter([({"user": "a"}, {"producer_byte_rate": None})]) == [
            ({"user": "a"}, CLUSTER_AUTHORIZATION_FAILED, "Cluster authorization failed.")]
        assert q.describe([]) == [((("user", "a"),), {"producer_byte_rate": 100.0})]
    finally:
        q.close()


# -- throttling --------------------------------------------------------------------------------------


def _tenant(bootstrap: str, topic: str, client_id: str) -> Client:
    """The benchmark's producer, with librdkafka's statistics every 500 ms."""
    return Client(bootstrap, topic, client_id, value_size=1000, **{"batch.size": 65536, "statistics.interval.ms": 500})


def _mib_per_s(tenant: Client, nbytes: int) -> float:
    """Time a tenant takes to deliver nbytes more, as MiB/s."""
    start, t0 = tenant.delivered(), time.monotonic()
    wait_until(lambda: tenant.delivered() - start >= nbytes, 120, interval=0.05, what=f"{nbytes} bytes delivered")
    return (tenant.delivered() - start) / (time.monotonic() - t0) / MIB


def test_a_produce_quota_holds_one_tenant_and_not_the_other(broker_factory):
    b = broker_factory(QUOTA_SETTINGS)
    topic = unique_topic("quota-produce")
    ck.create_topic(b.bootstrap, topic, 2)
    q = QuotaAdmin(b.bootstrap)
    q.set({"client-id": "limited"}, {"producer_byte_rate": float(MIB)})
    q.close()

    free = _tenant(b.bootstrap, topic, "free").start()
    try:
        alone = _mib_per_s(free, 16 * MIB)
        limited = _tenant(b.bootstrap, topic, "limited").start()
        try:
            # Measured over whole periods of the sampled rate, once the first (the burst a new
            # client is allowed, and the throttle that follows it) is over.
            wait_until(lambda: limited.throttles, 30, interval=0.05, what="a throttle of the limited tenant")
            t0 = time.monotonic() + PERIOD_S
            beside = _mib_per_s(free, 16 * MIB)
            t1 = t0 + 4 * PERIOD_S
            wait_until(lambda: limited.last_delivery() > t1, 30, interval=0.05, what="the measured window to pass")
            limited_rate = limited.rate_between(t0, t1) / MIB
        finally:
            limited.stop()
    finally:
        free.stop()
    assert limited.errors == [] and free.errors == []
    # The quota counts request bytes (record and batch overhead included), values are counted here.
    assert 0.9 <= limited_rate <= 1.1, f"limited tenant at {limited_rate:.3f} MiB/s, quota 1 MiB/s"
    # The other tenant is never throttled. How much of its rate it keeps is loadtest/quotas.py's
    # to measure (two cores shared by the broker and both clients here): it stays far above the quota.
    assert free.throttles == [] and free.stats_throttle_max == 0
    assert beside > 10, f"free tenant: {alone:.1f} MiB/s alone, {beside:.1f} beside"
    # librdkafka reported the throttle times the broker answered, in throttle_cb (0 when a
    # throttle ends) and its statistics.
    assert {name for name, _ in limited.throttles} == {f"127.0.0.1:{b.port}"}, limited.throttles[:5]
    assert all(0 <= ms <= 5000 for _, ms in limited.throttles) and max(ms for _, ms in limited.throttles) > 0
    wait_until(lambda: limited.stats_throttle_max > 0, 10, what="a throttle in librdkafka's statistics")
    # The broker's metrics per quota entity (a client-id quota: the user is not part of it).
    with urllib.request.urlopen(b.http_base + "/metrics", timeout=10) as r:
        metrics = dict(line.rsplit(" ", 1) for line in r.read().decode().splitlines() if not line.startswith("#"))
    labels = '{quota_type="Produce",user="",client_id="limited"}'
    assert float(metrics["sediment_quota_limit" + labels]) == MIB
    assert float(metrics["sediment_quota_throttled_total" + labels]) > 0
    assert float(metrics["sediment_quota_throttle_time_ms_total" + labels]) > 0
    assert not any("free" in k for k in metrics)


def test_kafka_python_producer_and_consumer_are_throttled(broker_factory):
    b = broker_factory(QUOTA_SETTINGS)
    topic = unique_topic("quota-kp")
    ck.create_topic(b.bootstrap, topic, 1)
    q = QuotaAdmin(b.bootstrap)
    q.set({"client-id": "kp-producer"}, {"producer_byte_rate": 262144.0})
    q.set({"client-id": "kp-consumer"}, {"consumer_byte_rate": 262144.0})
    q.close()
    values = [f"{i:06d}".encode() * 170 for i in range(1200)]  # ~1.2 MB: several times the quota
    p = KafkaProducer(bootstrap_servers=b.bootstrap, client_id="kp-producer", batch_size=16384, linger_ms=5)
    try:
        futures = [p.send(topic, v) for v in values]
        p.flush(120)
        assert [f.get(30).offset for f in futures] == list(range(len(values)))
        metrics = p.metrics()["producer-metrics"]
        assert metrics["throttle-time-max"] > 0, metrics
    finally:
        p.close()
    c = KafkaConsumer(bootstrap_servers=b.bootstrap, client_id="kp-consumer", auto_offset_reset="earliest",
                      enable_auto_commit=False, max_partition_fetch_bytes=65536, fetch_max_bytes=65536)
    try:
        c.assign([KafkaTopicPartition(topic, 0)])
        got: list[bytes] = []
        deadline = time.monotonic() + 120
        while len(got) < len(values) and time.monotonic() < deadline:
            for records in c.poll(timeout_ms=500).values():
                got.extend(r.value for r in records)
        assert got == values
        metrics = c.metrics()["consumer-metrics"]
        assert metrics["throttle-time-max"] > 0, metrics
    finally:
        c.close()


def test_a_fetch_quota_throttles_a_confluent_consumer_without_losing_records(broker_factory):
    b = broker_factory(QUOTA_SETTINGS)
    topic = unique_topic("quota-fetch")
    ck.create_topic(b.bootstrap, topic, 1)
    values = [bytes([i % 251]) * 2000 for i in range(2000)]  # 4 MB
    p = ck.producer(b.bootstrap)
    for v in values:
        p.produce(topic, v)
    assert p.flush(60) == 0
    q = QuotaAdmin(b.bootstrap)
    q.set({"client-id": "slow-reader"}, {"consumer_byte_rate": float(MIB)})
    q.close()
    throttles: list[int] = []
    c = ck.consumer(b.bootstrap, **{"client.id": "slow-reader", "throttle_cb":
                                    lambda e: throttles.append(int(e.throttle_time * 1000))})
    got: list[bytes | None] = []
    t0 = time.monotonic()
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        deadline = t0 + 120
        while len(got) < len(values) and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            err = m.error()
            if err and err.code() == KafkaError._PARTITION_EOF:
                continue
            assert err is None, err
            got.append(m.value())
    finally:
        c.close()
    elapsed = time.monotonic() - t0
    assert got == values
    assert throttles and max(throttles) > 0
    # Past the first window's worth, 1 MiB/s: the ~4 MB cannot come in much under 2 s.
    assert elapsed >= (4_000_000 - 2 * MIB) / MIB * 0.8, elapsed


def test_request_time_quota_throttles_every_api_and_mutes_the_connection(broker_factory):
    from .helpers import compact_string, connect, frame, parse_api_versions_v3, recv_frame, request_header_v2

    b = broker_factory(QUOTA_SETTINGS)
    q = QuotaAdmin(b.bootstrap)
    q.set({"client-id": "busy"}, {"request_percentage": 0.0001})  # 1 us of the loop per second
    q.close()

    def api_versions(sock, client_id: str, cid: int) -> int:
        sock.sendall(frame(request_header_v2(18, 3, cid, client_id) + compact_string("t") + compact_string("1")
                           + b"\x00"))
        resp = recv_frame(sock)
        assert int.from_bytes(resp[:4], "big") == cid
        error, _, throttle = parse_api_versions_v3(resp[4:])
        assert error == 0
        return throttle

    with connect(b.bootstrap) as busy, connect(b.bootstrap) as other:
        # Over the quota at once: the throttle is capped at one window (1 s), as in Kafka.
        assert api_versions(busy, "busy", 1) == 1000
        t0 = time.monotonic()
        assert api_versions(busy, "busy", 2) == 1000
        # The connection was muted: the second request was only read once the first throttle was over.
        assert time.monotonic() - t0 >= 0.9
        assert api_versions(other, "someone-else", 3) == 0

