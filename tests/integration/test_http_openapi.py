"""schemathesis against a real broker's /openapi.json: every operation the document describes
(whoever added it) is sent generated requests, valid and invalid, over real HTTP. It must never
answer 5xx, and every answer must be one the document lists for the operation, with that
status's content type, headers and JSON schema.

The run reads the document at the time it runs, so a route added anywhere is covered by adding
its OPENAPI part. Requests reach past the 404s of unknown names through seeds: the real cluster
id, and (half the time) a topic, a consumer group with a live member and committed offsets, and
partition numbers that exist; DELETE operations get throwaway topics instead.

To exclude an operation (only with a reason that holds, e.g. it streams forever by design):
add `("METHOD", "/path/as/in/the/document"): "why"` to EXCLUDED_OPERATIONS; the run then tests
one operation fewer and the count check below expects that. To switch a check off for all
operations, add it to DISABLED_CHECKS with the reason."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from . import ck
from .conftest import Broker
from .http_client import call, cluster_id

EXCLUDED_OPERATIONS: dict[tuple[str, str], str] = {
    # REST Proxy's unsubscribe: the instance's subscription stays readable, empty, which the
    # stateful use_after_free check takes for a deleted resource still served (its per-operation
    # switch does not reach the stateful phase). Covered by tests/integration/test_http_consumers.py.
    ("DELETE", "/consumers/{group}/instances/{instance}/subscription"): "unsubscribing deletes no resource",
}

DISABLED_CHECKS: dict[str, str] = {
    # It takes every 4xx but 401/403/404/409 to a schema-valid request as a defect. REST Proxy
    # answers Kafka's refusals of well-formed requests with 400 and 40002 (the topic exists,
    # a config value or a partition count Kafka refuses, a null config value) and an illegal
    # topic name (".", "..") with 422 and 42206; the API keeps those codes.
    "positive_data_acceptance": "REST Proxy's 400/40002 and 422/42206 for requests Kafka refuses",
}

MAX_EXAMPLES = 30  # per operation and phase; the whole run stays well under a minute
SEED_TOPIC, SEED_GROUP, DOOMED = "seed-a", "seed-group", ["doomed-0", "doomed-1", "doomed-2"]


@dataclass
class Seeds:
    broker: Broker
    cluster_id: str
    member_id: str


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeds]:
    # A low partition bound: generated creates ask for up to 2^31 partitions.
    b = Broker(tmp_path_factory.mktemp("http-openapi"), {"max.broker.partitions": 500,
                                                          "group.initial.rebalance.delay.ms": 0}).start()
    consumer: Consumer | None = None
    try:
        ck.create_topic(b.bootstrap, SEED_TOPIC, partitions=2)
        for t in DOOMED:
            ck.create_topic(b.bootstrap, t)
        p = ck.producer(b.bootstrap)
        for i in range(6):
            p.produce(SEED_TOPIC, value=b"v%d" % i, partition=i % 2)
        assert p.flush(30) == 0
        consumer = Consumer({"bootstrap.servers": b.bootstrap, "group.id": SEED_GROUP, "client.id": "seed-client",
                             "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        consumer.subscribe([SEED_TOPIC])
        deadline = time.monotonic() + 30
        while len(consumer.assignment()) < 2:  # a Stable group with this member assigned both partitions
            assert time.monotonic() < deadline, "the seed consumer was not assigned its partitions"
            consumer.poll(0.2)
        consumer.commit(offsets=[TopicPartition(SEED_TOPIC, 0, 1), TopicPartition(SEED_TOPIC, 1, 2)],
                        asynchronous=False)
        cid = cluster_id(b.http_base)
        yield Seeds(b, cid, consumer.memberid() or "")
    finally:
        if consumer is not None:
            consumer.close()
        b.stop_quietly()


def _toml(value: object) -> str:
    return json.dumps(value)  # a JSON string, list or number is the same TOML value


def config_file(path: Path, seeds: Seeds) -> Path:
    half = 0.5
    lines = ['generation.database = "none"', "seed = 12", "", "[dictionaries]",
              f"topics = {{ values = {_toml([SEED_TOPIC])} }}",
              f"doomed = {{ values = {_toml(DOOMED)} }}",
              f"groups = {{ values = {_toml([SEED_GROUP])} }}",
              f"members = {{ values = {_toml([seeds.member_id])} }}",
              "partitions = { values = [0, 1] }",
              "", "[parameters]",
              f'"path.cluster_id" = {_toml(seeds.cluster_id)}',
              f'"path.topic_name" = {{ dictionary = "topics", probability = {half} }}',
              f'"path.consumer_group_id" = {{ dictionary = "groups", probability = {half} }}',
              f'"path.consumer_id" = {{ dictionary = "members", probability = {half} }}',
              f'"path.partition_id" = {{ dictionary = "partitions", probability = {half} }}',
              "", "[[operations]]", 'include-method = "DELETE"',
              f'parameters = {{ "path.topic_name" = {{ dictionary = "doomed", probability = {half} }} }}']
    for method, op_path in EXCLUDED_OPERATIONS:
        # By the operation's name: include-method and include-path in one block select either.
        lines += ["", "[[operations]]", f"include-name = {_toml(f'{method} {op_path}')}", "enabled = false"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_every_operation_conforms_to_the_document(seeded: Seeds, tmp_path: Path) -> None:
    doc = call("GET", seeded.broker.http_base + "/openapi.json").json()
    methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    total = sum(1 for ops in doc["paths"].values() for m in ops if m in methods)
    assert total >= 27  # at least the admin API's own operations
    # One worker: hypothesis parses lambda sources with ast.parse, which on CPython 3.11 before
    # 3.11.8 is not safe in two threads at once ("AST constructor recursion depth mismatch").
    cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config_file(tmp_path / "st.toml", seeded)),
           "run", seeded.broker.http_base + "/openapi.json", "--max-examples", str(MAX_EXAMPLES), "--workers", "1",
           "--checks", "all", "--no-color", "--request-timeout", "20"]
    if DISABLED_CHECKS:
        cmd += ["--exclude-checks", ",".join(DISABLED_CHECKS)]
    started = time.monotonic()
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    took = time.monotonic() - started
    out = run.stdout + run.stderr
    assert run.returncode == 0, f"schemathesis found failures ({took:.0f} s):\n{out[-20000:]}"
    selected = re.search(r"Selected: (\d+)/(\d+)", out)
    tested = re.search(r"Tested: (\d+)", out)
    assert selected and tested, out[-3000:]
    assert (int(selected[1]), int(selected[2]), int(tested[1])) == (total - len(EXCLUDED_OPERATIONS), total,
                                                                    total - len(EXCLUDED_OPERATIONS)), out[-3000:]
