"""REST Proxy v3 produce over a real broker: records sent over HTTP (one per request, and many
streamed in one chunked body) read back byte-exact by confluent-kafka, keyed records on the
partition librdkafka's murmur2 (the Java client's choice) picks, results flowing back while the
body is still being sent, Confluent's error bodies, the topic ACL and the produce quota."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
)
from confluent_kafka.admin import ResourceType as RT

from service.http.v3_records import format_timestamp

from . import ck
from .conftest import Broker, sediment_command
from .helpers import unique_topic
from .http_client import Answer, basic, call, cluster_id
from .security_helpers import add_user

JSON_TYPE = {"Content-Type": "application/json"}
ADMIN, ADMIN_PW = "admin", "admin-Secret-0"
ALICE, ALICE_PW = "alice", "alice-Secret-1"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    # A small quota window, so the quota test's throttles are short.
    b = Broker(tmp_path_factory.mktemp("http-produce"))
    b.start()
    yield b
    b.stop_quietly()


def records_url(b: Broker, topic: str) -> str:
    return f"{b.http_base}/v3/clusters/{cluster_id(b.http_base)}/topics/{topic}/records"


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[Answer, list[dict[str, Any]]]:
    """One request; its answer and, for a 200, the results (each ends with CRLF)."""
    answer = call("POST", url, raw=body, headers={**JSON_TYPE, **(headers or {})})
    if answer.status != 200:
        return answer, []
    assert answer.body.endswith(b"\r\n"), answer.body
    return answer, [json.loads(line) for line in answer.body.split(b"\r\n")[:-1]]


def concat(records: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() for r in records)


def test_records_are_read_byte_exact_by_confluent_kafka(broker: Broker) -> None:
    topic = unique_topic("http-exact")
    ck.create_topic(broker.bootstrap, topic, partitions=3)
    url, cid = records_url(broker, topic), cluster_id(broker.http_base)
    binary = bytes(range(256))
    sent: list[dict[str, Any]] = [
        {"partition_id": 0, "key": {"type": "BINARY", "data": b64(binary)},
         "value": {"type": "BINARY", "data": b64(binary[::-1])},
         "headers": [{"name": "bin", "value": b64(b"\x00\xff\x80")}, {"name": "nothing", "value": None},
                     {"name": "bin", "value": b64(b"again")}],
         "timestamp": "2021-02-05T19:14:42.123Z"},
        {"partition_id": 1, "key": {"type": "STRING", "data": "clé €"},
         "value": {"type": "JSON", "data": {"a": [1, 2.5, None, True], "s": "é"}},
         "timestamp": "2001-09-09T01:46:40+00:00"},
        {"partition_id": 2, "key": {"type": "JSON", "data": 42}, "value": {"type": "STRING", "data": ""},
         "timestamp": "2021-02-05T20:14:42.999+01:00"},
        {"partition_id": 0, "value": {"type": "STRING", "data": "no key"}, "timestamp": "2022-01-01T00:00:00Z"},
        {"partition_id": 0, "key": {"type": "BINARY", "data": None}, "value": None,
         "timestamp": "2022-01-01T00:00:00.001Z"},
    ]
    expected_bytes = [
        (binary, binary[::-1], [("bin", b"\x00\xff\x80"), ("nothing", None), ("bin", b"again")], 1612552482123),
        ("clé €".encode(), '{"a":[1,2.5,null,true],"s":"é"}'.encode(), [], 1000000000000),
        (b"42", b"", [], 1612552482999),
        (None, b"no key", [], 1640995200000),
        (None, None, [], 1640995200001),
    ]
    # The first two as requests of their own, the rest streamed in one body.
    results = [post(url, json.dumps(r).encode())[1][0] for r in sent[:2]]
    answer, streamed = post(url, concat(sent[2:]))
    assert answer.status == 200 and answer.headers["Content-Type"] == "application/json"
    assert answer.headers["Transfer-Encoding"] == "chunked"
    results += streamed
    assert results == [
        {"error_code": 200, "cluster_id": cid, "topic_name": topic, "partition_id": 0, "offset": 0,
         "timestamp": "2021-02-05T19:14:42.123Z", "key": {"type": "BINARY", "size": 256},
         "value": {"type": "BINARY", "size": 256}},
        {"error_code": 200, "cluster_id": cid, "topic_name": topic, "partition_id": 1, "offset": 0,
         "timestamp": "2001-09-09T01:46:40Z", "key": {"type": "STRING", "size": 8},
         "value": {"type": "JSON", "size": 32}},
        {"error_code": 200, "cluster_id": cid, "topic_name": topic, "partition_id": 2, "offset": 0,
         "timestamp": "2021-02-05T19:14:42.999Z", "key": {"type": "JSON", "size": 2},
         "value": {"type": "STRING", "size": 0}},
        {"error_code": 200, "cluster_id": cid, "topic_name": topic, "partition_id": 0, "offset": 1,
         "timestamp": "2022-01-01T00:00:00Z", "value": {"type": "STRING", "size": 6}},
        {"error_code": 200, "cluster_id": cid, "topic_name": topic, "partition_id": 0, "offset": 2,
         "timestamp": "2022-01-01T00:00:00.001Z", "key": {"type": "BINARY", "size": -1}},
    ]
    read = {(p, o): (k, v, h, ts) for p, o, k, v, h, ts in ck.consume(broker.bootstrap, topic, range(3))}
    assert len(read) == 5
    for result, (key, value, headers, ts) in zip(results, expected_bytes):
        assert read[(result["partition_id"], result["offset"])] == (key, value, headers, (TIMESTAMP_CREATE_TIME, ts))


def test_records_without_timestamps_get_the_time_they_arrived(broker: Broker) -> None:
    topic = unique_topic("http-now")
    ck.create_topic(broker.bootstrap, topic, partitions=1)
    _, [result] = post(records_url(broker, topic), b'{"value": {"type": "STRING", "data": "now"}}')
    [(_, offset, _, value, _, (kind, ts))] = ck.consume(broker.bootstrap, topic, [0])
    assert (offset, value, kind) == (result["offset"], b"now", TIMESTAMP_CREATE_TIME)
    assert format_timestamp(ts) == result["timestamp"]


def test_a_log_append_time_topic_answers_the_append_time(broker: Broker) -> None:
    topic = unique_topic("http-append-time")
    ck.create_topic(broker.bootstrap, topic, partitions=1, config={"message.timestamp.type": "LogAppendTime"})
    _, [result] = post(records_url(broker, topic), json.dumps(
        {"value": {"type": "STRING", "data": "t"}, "timestamp": "2001-09-09T01:46:40Z"}).encode())
    [(_, _, _, _, _, (kind, ts))] = ck.consume(broker.bootstrap, topic, [0])
    assert kind == TIMESTAMP_LOG_APPEND_TIME and ts > 1_000_000_000_000
    assert result["timestamp"] == format_timestamp(ts) != "2001-09-09T01:46:40Z"


def test_keyed_records_land_where_murmur2_puts_them(broker: Broker) -> None:
    """librdkafka's murmur2_random is the Java client's default partitioner for keyed records."""
    ours, theirs = unique_topic("http-keys"), unique_topic("ck-keys")
    for topic in (ours, theirs):
        ck.create_topic(broker.bootstrap, topic, partitions=7)
    keys = [f"key-{i}".encode() for i in range(300)] + [bytes([i, 255 - i, i * 7 % 256]) for i in range(1, 200)]
    _, results = post(records_url(broker, ours), concat(
        [{"key": {"type": "BINARY", "data": b64(k)}, "value": {"type": "STRING", "data": str(i)}}
         for i, k in enumerate(keys)]))
    assert [r["error_code"] for r in results] == [200] * len(keys)
    producer = ck.producer(broker.bootstrap, partitioner="murmur2_random")
    placed: dict[bytes, int] = {}

    def delivered(err: Any, msg: Any) -> None:
        assert err is None, err
        placed[msg.key()] = msg.partition()

    for k in keys:
        producer.produce(theirs, key=k, value=b"x", on_delivery=delivered)
    assert producer.flush(30) == 0
    assert {k: r["partition_id"] for k, r in zip(keys, results)} == placed
    assert len(set(placed.values())) == 7
    # And where confluent-kafka reads them.
    read = {(p, o): k for p, o, k, *_ in ck.consume(broker.bootstrap, ours, range(7))}
    assert {read[(r["partition_id"], r["offset"])] for r in results} == set(keys)


def test_unkeyed_records_stick_to_a_partition_for_a_batch(broker: Broker) -> None:
    topic = unique_topic("http-sticky")
    ck.create_topic(broker.bootstrap, topic, partitions=4)
    value = {"type": "BINARY", "data": b64(b"v" * 1000)}
    _, results = post(records_url(broker, topic), concat([{"value": value}] * 64))
    partitions = [r["partition_id"] for r in results]
    # 16 KiB (batch.size) to one partition, then another pick: runs of 17 records of 1000 bytes.
    runs = [partitions[i:i + 17] for i in range(0, 64, 17)]
    assert all(len(set(run)) == 1 for run in runs), partitions


async def _open(session: aiohttp.ClientSession, url: str, body: AsyncIterator[bytes]) -> aiohttp.ClientResponse:
    """POST a streamed (chunked) body; the answer once its status has come (bounded: a broker
    that read the whole body before answering would never send it here)."""
    return await asyncio.wait_for(session.post(url, data=body, headers=JSON_TYPE), 30)


async def _lines(resp: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    while line := await resp.content.readuntil(b"\r\n"):
        yield json.loads(line)


async def test_a_streamed_body_of_1000_records_gets_1000_results_in_order(broker: Broker) -> None:
    topic = unique_topic("http-stream")
    ck.create_topic(broker.bootstrap, topic, partitions=2)

    async def body() -> AsyncIterator[bytes]:
        data = concat([{"partition_id": 1, "value": {"type": "STRING", "data": f"record {i}"}} for i in range(1000)])
        for i in range(0, len(data), 3001):  # pieces that cut records anywhere
            yield data[i:i + 3001]

    async with aiohttp.ClientSession() as session, await _open(session, records_url(broker, topic), body()) as resp:
        assert resp.status == 200
        results = [r async for r in _lines(resp)]
    assert [(r["error_code"], r["partition_id"]) for r in results] == [(200, 1)] * 1000
    assert [r["offset"] for r in results] == list(range(1000))
    read = ck.consume(broker.bootstrap, topic, [1])
    assert [(o, v) for _, o, _, v, _, _ in read] == [(i, f"record {i}".encode()) for i in range(1000)]


async def test_a_slow_producer_gets_each_result_before_it_sends_the_next(broker: Broker) -> None:
    """The body is read as it comes and each record answered once written: the client sends a
    record (in two pieces), waits for its result, and only then sends the next."""
    topic = unique_topic("http-slow")
    ck.create_topic(broker.bootstrap, topic, partitions=1)
    pieces: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def body() -> AsyncIterator[bytes]:
        while (piece := await pieces.get()) is not None:
            yield piece

    def send(i: int) -> None:
        record = json.dumps({"value": {"type": "STRING", "data": f"slow {i}"}}).encode()
        pieces.put_nowait(record[:10])
        pieces.put_nowait(record[10:] + b"\n")

    send(0)
    async with aiohttp.ClientSession() as session, await _open(session, records_url(broker, topic), body()) as resp:
        assert resp.status == 200
        for i in range(5):
            line = await asyncio.wait_for(resp.content.readuntil(b"\r\n"), 30)
            assert json.loads(line)["offset"] == i
            if i < 4:
                send(i + 1)
        pieces.put_nowait(None)
        assert await resp.content.read() == b""
    assert [v for *_, v, _, _ in ck.consume(broker.bootstrap, topic, [0])] == [f"slow {i}".encode() for i in range(5)]


def test_errors_are_confluents_and_nothing_is_written_for_a_bad_record(broker: Broker) -> None:
    topic = unique_topic("http-errors")
    ck.create_topic(broker.bootstrap, topic, partitions=2, config={"max.message.bytes": "1000"})
    url, cid = records_url(broker, topic), cluster_id(broker.http_base)
    ok = {"partition_id": 0, "value": {"type": "STRING", "data": "ok"}}
    body = b"".join([
        json.dumps(ok).encode(),
        json.dumps({"partition_id": 0, "value": {"type": "BINARY", "data": b64(b"x" * 2000)}}).encode(),
        json.dumps({"partition_id": 5, "value": {"type": "STRING", "data": "nowhere"}}).encode(),
        b'{"partition_id": 0, "value": {"type": "STRING", "data": "x",}}',  # a trailing comma
        json.dumps({"value": {"type": "BINARY", "data": "fooba"}}).encode(),
        json.dumps({"value": {"type": "TEXT", "data": "x"}}).encode(),
        json.dumps(ok).encode(),
    ])
    answer, results = post(url, body)
    assert answer.status == 200
    good = {"error_code": 200, "cluster_id": cid, "topic_name": topic, "partition_id": 0,
            "value": {"type": "STRING", "size": 2}}
    assert [{k: v for k, v in r.items() if k != "timestamp"} for r in results] == [
        {**good, "offset": 0},
        {"error_code": 42201, "message": "batch of 2070 bytes exceeds max.message.bytes 1000"},
        {"error_code": 40402, "message": "Partition not found."},
        {"error_code": 400, "message": "Bad Request: The record is not valid JSON: Expecting property name "
                                       "enclosed in double quotes at line 1 column 61"},
        {"error_code": 400, "message": 'Bad Request: data="fooba" is not a valid base64 string.'},
        {"error_code": 400, "message": 'Bad Request: value.type="TEXT" is not one of BINARY, JSON, STRING'},
        {**good, "offset": 1},
    ]
    assert [(o, v) for _, o, _, v, _, _ in ck.consume(broker.bootstrap, topic, [0, 1])] == [(0, b"ok"), (1, b"ok")]

    # What concerns the whole request has its HTTP status.
    missing = call("POST", records_url(broker, "no-such-topic"), raw=json.dumps(ok).encode(), headers=JSON_TYPE)
    assert (missing.status, missing.json()) == (404, {"error_code": 40401, "message": "Topic not found."})
    other = call("POST", f"{broker.http_base}/v3/clusters/other/topics/{topic}/records", raw=b"{}", headers=JSON_TYPE)
    assert (other.status, other.json()) == (404, {"error_code": 404, "message": "Cluster other cannot be found."})
    empty = call("POST", url, raw=b" \r\n", headers=JSON_TYPE)
    assert (empty.status, empty.json()) == (422, {"error_code": 422, "message": "Payload error. Request body is "
                                                                                  "empty. Data is required."})
    form = call("POST", url, raw=b"{}", content_type="application/x-www-form-urlencoded")
    assert (form.status, form.json()) == (415, {"error_code": 415, "message": "HTTP 415 Unsupported Media Type"})
    # A body that cannot be split further ends with an error for what is left.
    one = json.dumps(ok).encode()
    _, tail = post(url, one + b" [1, 2]")
    assert [r["error_code"] for r in tail] == [200, 400]
    assert tail[1]["message"] == (f"Bad Request: Expected a JSON object at character {len(one) + 1} of the body, "
                                  "found '[1, 2]'")
    _, cut = post(url, one + b'{"value": ')
    assert cut[1] == {"error_code": 400, "message": "Bad Request: The body ends within the JSON object that "
                                                    f"starts at character {len(one)}"}
    assert ck.watermarks(broker.bootstrap, topic, 0) == (0, 4)
    assert ck.watermarks(broker.bootstrap, topic, 1) == (0, 0)


def test_one_record_not_streamed_is_answered_with_its_own_status(broker: Broker) -> None:
    """Confluent's non-streaming mode: a body of one record with a Content-Length (not chunked)
    gets that record's status; the same record in a chunked stream is answered inside a 200."""
    topic = unique_topic("http-single")
    ck.create_topic(broker.bootstrap, topic, partitions=2, config={"max.message.bytes": "1000"})
    url = records_url(broker, topic)
    cases = [
        ({"partition_id": 5, "value": {"type": "STRING", "data": "x"}}, 404,
         {"error_code": 40402, "message": "Partition not found."}),
        ({"value": {"type": "TEXT", "data": "x"}}, 400,
         {"error_code": 400, "message": 'Bad Request: value.type="TEXT" is not one of BINARY, JSON, STRING'}),
        ({"partition_id": 0, "value": {"type": "BINARY", "data": b64(b"x" * 2000)}}, 422,
         {"error_code": 42201, "message": "batch of 2070 bytes exceeds max.message.bytes 1000"}),
    ]
    for record, status, body in cases:
        answer = call("POST", url, raw=json.dumps(record).encode(), headers=JSON_TYPE)
        assert (answer.status, answer.json()) == (status, body), record
        assert answer.body.endswith(b"\r\n")
    ok = call("POST", url, raw=json.dumps({"partition_id": 1, "value": {"type": "STRING", "data": "ok"}}).encode(),
              headers=JSON_TYPE)
    assert ok.status == 200 and ok.json()["offset"] == 0 and ok.json()["partition_id"] == 1
    # Chunked (urllib chunks a body given as an iterable): the stream's answer is 200 whatever
    # its records' results.
    req = urllib.request.Request(url, data=iter([json.dumps(cases[0][0]).encode()]), method="POST", headers=JSON_TYPE)
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200 and r.read() == json.dumps(cases[0][2], separators=(",", ":")).encode() + b"\r\n"
    assert ck.watermarks(broker.bootstrap, topic, 0) == (0, 0)
    assert ck.watermarks(broker.bootstrap, topic, 1) == (0, 1)


def test_a_produce_quota_holds_the_client_back_and_loses_nothing(tmp_path_factory: pytest.TempPathFactory) -> None:
    """producer_byte_rate for the X-Client-Id: the stream is throttled (read more slowly), the
    throttles show in /metrics under that client-id, and every record is written."""
    b = Broker(tmp_path_factory.mktemp("http-quota"), {"quota.window.num": "2"})
    b.data_dir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([*sediment_command(), "quotas", "set", "--data-dir", str(b.data_dir),
                           "--client", "http-tenant", "--add-config", "producer_byte_rate=40000"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    b.start()
    try:
        topic = unique_topic("http-quota")
        ck.create_topic(b.bootstrap, topic, partitions=1)
        record = {"value": {"type": "BINARY", "data": b64(b"q" * 1000)}}
        answer, results = post(records_url(b, topic), concat([record] * 100), {"X-Client-Id": "http-tenant"})
        assert [r["offset"] for r in results] == list(range(100))
        metrics = call("GET", b.http_base + "/metrics").body.decode()
        throttled = [line for line in metrics.splitlines() if line.startswith("sediment_quota_throttled_total")]
        # Tagged as Kafka tags them: by the entity whose quota applies (a client-id's alone here).
        assert throttled and 'quota_type="Produce",user="",client_id="http-tenant"' in throttled[0]
        assert int(float(throttled[0].rsplit(" ", 1)[1])) >= 1, throttled
        assert ck.watermarks(b.bootstrap, topic, 0) == (0, 100)
    finally:
        b.stop_quietly()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("http-produce-acl"),
               {"authorizer.enable": "true", "super.users": f"User:{ADMIN}", "http.authentication.methods": "BASIC"},
               ["SASL_PLAINTEXT"])
    add_user(b.data_dir, ADMIN, ADMIN_PW, "SCRAM-SHA-512")
    add_user(b.data_dir, ALICE, ALICE_PW, "SCRAM-SHA-512")
    b.start()
    yield b
    b.stop_quietly()


def test_producing_needs_write_on_the_topic(secured: Broker) -> None:
    admin = AdminClient(secured.sasl_conf(ADMIN, ADMIN_PW))
    admin.create_topics([NewTopic("acl-topic", 1, 1)])["acl-topic"].result(15)
    cid = admin.list_topics(timeout=10).cluster_id
    base = f"{secured.http_base}/v3/clusters/{cid}/topics"
    body = json.dumps({"value": {"type": "STRING", "data": "hi"}}).encode()
    alice = {**basic(ALICE, ALICE_PW), **JSON_TYPE}
    denied = call("POST", f"{base}/acl-topic/records", raw=body, headers=alice)
    assert (denied.status, denied.json()) == (403, {"error_code": 40301,
                                                    "message": "Not authorized to write topic 'acl-topic'"})
    # An unknown topic is not revealed to who may not write it.
    hidden = call("POST", f"{base}/no-such-topic/records", raw=body, headers=alice)
    assert (hidden.status, hidden.json()["error_code"]) == (403, 40301)
    assert call("POST", f"{base}/acl-topic/records", raw=body, headers=JSON_TYPE).status == 401
    grant = AclBinding(RT.TOPIC, "acl-topic", ResourcePatternType.LITERAL, f"User:{ALICE}", "*",
                       AclOperation.WRITE, AclPermissionType.ALLOW)
    for f in admin.create_acls([grant]).values():
        f.result(timeout=10)
    answer = call("POST", f"{base}/acl-topic/records", raw=body, headers=alice)
    assert answer.status == 200 and json.loads(answer.body)["offset"] == 0
    still_hidden = call("POST", f"{base}/no-such-topic/records", raw=body, headers=alice)
    assert (still_hidden.status, still_hidden.json()["error_code"]) == (403, 40301)


def test_the_route_is_described(broker: Broker) -> None:
    doc = call("GET", broker.http_base + "/openapi.json").json()
    op = doc["paths"]["/v3/clusters/{cluster_id}/topics/{topic_name}/records"]["post"]
    assert op["operationId"] == "produceRecords"
    assert set(op["responses"]) == {"200", "400", "401", "403", "404", "413", "415", "422", "500"}
    assert {"ProduceRequest", "ProduceResponse"} <= set(doc["components"]["schemas"])
