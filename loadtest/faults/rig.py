"""What the scenarios run against: brokers (real `sediment serve` processes), moto's S3 server
behind the fault proxy, key rings, topic settings, /metrics, and reading a topic back."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from ..broker import BrokerProcess, sediment_command
from ..faultproxy import MotoServer, ThreadedFaultProxy
from .ledger import Records

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_CONFIG_FILE": "/nonexistent/sediment-faults-aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/sediment-faults-aws-credentials",
}
SEGMENT_BYTES = 32 * 1024
PREFIX = "faults"
SNAPSHOT_KEY = f"{PREFIX}/_cluster/metadata.json"

# Short intervals so that rolls, retention, uploads and snapshots happen all the time.
BROKER_BASE = {
    "log.flush.policy": "always",
    "log.retention.check.interval.ms": "200",
    "group.initial.rebalance.delay.ms": "0",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "500",
}
BROKER_TIERED = {
    "remote.upload.check.interval.ms": "100",
    "remote.snapshot.interval.ms": "300",
    "remote.fetch.max.wait.ms": "2000",
    "remote.s3.region": "us-east-1",
    "remote.s3.path.style": "true",
}
TOPIC_PLAIN = {"segment.bytes": str(SEGMENT_BYTES)}
TOPIC_TIERED = {
    **TOPIC_PLAIN,
    "remote.storage.enable": "true",
    "local.retention.bytes": str(SEGMENT_BYTES),
    "retention.bytes": "-1",
    "remote.upload.interval.ms": "500",
}


class RigError(RuntimeError):
    """A scenario could not set up or finish what it depends on (not a durability finding)."""


@dataclass
class ObjectStore:
    """moto's S3 server with the fault proxy in front; the broker talks to the proxy."""

    moto: MotoServer = field(default_factory=MotoServer)
    proxy: ThreadedFaultProxy | None = None
    buckets: int = 0

    def start(self) -> ObjectStore:
        self.moto.start(timeout=30)
        self.proxy = ThreadedFaultProxy(self.moto.port).start_in_thread()
        return self

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop_thread()
            self.proxy = None
        self.moto.stop()

    def new_bucket(self) -> str:
        import boto3

        self.buckets += 1
        name = f"sediment-faults-{self.buckets}-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=self.moto.url, region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket=name)
        return name

    def etag(self, bucket: str, key: str) -> str | None:
        """The ETag of an object, read from moto directly (not through the proxy)."""
        import boto3
        from botocore.exceptions import ClientError

        client = boto3.client("s3", endpoint_url=self.moto.url, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        try:
            return client.head_object(Bucket=bucket, Key=key)["ETag"]
        except ClientError:
            return None

    def broker_settings(self, bucket: str) -> dict[str, str]:
        assert self.proxy is not None
        return {**BROKER_TIERED, "remote.url": f"s3://{bucket}/{PREFIX}", "remote.s3.endpoint": self.proxy.url}


def new_keyring(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(sediment_command() + ["keys", "generate", str(path)],
                         capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise RigError(f"sediment keys generate failed: {res.stderr.strip()}")
    return path


def broker(work: Path, settings: dict[str, str]) -> BrokerProcess:
    """A broker on a fixed data dir under work (kept across kills and restarts)."""
    return BrokerProcess(data_dir=work / "data", settings={**BROKER_BASE, **settings}, env=AWS_ENV)


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def create_topic(bootstrap: str, topic: str, partitions: int, config: dict[str, str]) -> None:
    a = admin(bootstrap)  # held until the answer: a collected client fails its futures
    fs = a.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config)], operation_timeout=15)
    fs[topic].result(30)


def delete_topic(bootstrap: str, topic: str) -> None:
    a = admin(bootstrap)
    a.delete_topics([topic], operation_timeout=15)[topic].result(30)


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RigError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{[^}]*\})?\s+(\S+)")


def metrics(http_url: str) -> dict[str, float]:
    """Every sample of /metrics, summed over labels."""
    with urllib.request.urlopen(http_url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and not line.startswith("#"):
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def consumer(bootstrap: str, isolation: str = "read_uncommitted", **conf: object) -> Consumer:
    return Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"faults-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False, "enable.partition.eof": True, "auto.offset.reset": "earliest",
        "isolation.level": isolation, "fetch.error.backoff.ms": 50, **conf})


def read_back(bootstrap: str, topic: str, partitions: int, isolation: str = "read_uncommitted",
              timeout: float = 120) -> Records:
    """Everything from the log start to the end of every partition, in read order."""
    c = consumer(bootstrap, isolation)
    out: Records = {p: [] for p in range(partitions)}
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        at_eof: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(at_eof) < partitions:
            if time.monotonic() > deadline:
                raise RigError(f"read back of {topic} timed out: eof on {sorted(at_eof)}")
            msg = c.poll(0.5)
            if msg is None:
                continue
            # A record and an end-of-partition event both name their partition; a record its offset.
            err, partition, offset = msg.error(), msg.partition(), msg.offset()
            assert partition is not None
            if err:
                if err.code() == KafkaError._PARTITION_EOF:
                    at_eof.add(partition)
                    continue
                raise RigError(f"read back of {topic}: {err}")
            assert offset is not None
            at_eof.discard(partition)
            out[partition].append((offset, msg.value() or b""))
    finally:
        c.close()
    return out


def first_fetch(bootstrap: str, topic: str, timeout: float = 60) -> float:
    """Monotonic time at which a fetch of the topic's partition 0 first returns a record."""
    c = consumer(bootstrap)
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = c.poll(0.2)
            if msg is not None and not msg.error():
                return time.monotonic()
        raise RigError(f"no fetch of {topic} succeeded within {timeout:.0f}s")
    finally:
        c.close()
