"""HTTP replay (`GET /v1/topics/{t}/records`) against a real broker: a topic produced by
confluent-kafka (keys, headers, timestamps, zstd and lz4, an aborted and a committed
transaction) has mostly sunk to moto's S3 server, with its local segments encrypted at rest; a
time range of it, and the whole of it, is read back as NDJSON, Server-Sent Events and Arrow and
compared field by field with what a read_committed confluent-kafka consumer reads. Then a slow
reader (the broker holds two chunks, measured by its own gauge while it waits), a client that
goes away, and the exact error bodies; a broker with ACLs and without pyarrow for 401, 403 and
406."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.ipc
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, AdminClient, ResourcePatternType
from confluent_kafka.admin import ResourceType as RT

from . import ck
from .conftest import Broker, sediment_command
from .helpers import Plan, unique_topic, wait_until
from .http_client import Answer, basic, call
from .security_helpers import add_user
from .test_tiering_helpers import (
    TIERED_TOPIC,
    RemoteView,
    TieredBroker,
    get_metrics,
    metric,
    new_keyring,
    produce,
    text_plan,
    tiered_broker,
    wait_offloaded,
    wait_settled,
)

NDJSON, SSE, ARROW = "application/x-ndjson", "text/event-stream", "application/vnd.apache.arrow.stream"
PARTITIONS = 2
PER_PARTITION = 600  # plain records per partition (text_plan), ~600 B values
SPLIT = 240  # the first SPLIT of each partition go with zstd, then the transactions, then the rest with lz4
TXN_RECORDS = 4  # per partition and transaction
END = PER_PARTITION + 2 * (TXN_RECORDS + 1)  # each transaction adds its marker
BASE_TS = (int(datetime.now(UTC).timestamp()) - 3600) * 1000

Row = tuple[int, int, bytes | None, bytes | None, list[tuple[str, bytes | None]], int]


def rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Loaded:
    broker: TieredBroker
    topic: str
    expected: list[Row]  # what confluent-kafka reads with read_committed, partition by partition
    ts: list[int]  # the timestamp of each plain record (by its index within its partition)

    def url(self, query: str = "", topic: str | None = None) -> str:
        return f"{self.broker.http_base}/v1/topics/{topic or self.topic}/records{query}"


def _transactions(b: Broker, topic: str) -> None:
    """An aborted, then a committed transaction of TXN_RECORDS on each partition (timestamped
    now, as their markers are)."""
    p = Producer({"bootstrap.servers": b.bootstrap, "transactional.id": f"replay-{uuid.uuid4().hex[:8]}",
                  "linger.ms": 5})
    p.init_transactions(30)
    for name, commit in (("ABORTED", False), ("COMMITTED", True)):
        p.begin_transaction()
        for part in range(PARTITIONS):
            for j in range(TXN_RECORDS):
                p.produce(topic, key=f"{name}-{part}-{j}".encode(), value=f"{name} {part} {j}".encode(),
                          partition=part, headers=[("txn", name.encode())])
        p.flush(30)  # abort_transaction() would purge records not yet sent
        if commit:
            p.commit_transaction(30)
        else:
            p.abort_transaction(30)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    base = tmp_path_factory.mktemp("http-replay")
    remote = RemoteView.s3()
    keyring = base / "keys" / "ring.json"
    new_keyring(keyring)
    b = tiered_broker(base / "broker", remote, keyring, settings={"log.encryption.enable": "true"})
    b.start(30)
    try:
        topic = unique_topic("replay")
        ck.create_topic(b.bootstrap, topic, PARTITIONS, TIERED_TOPIC)
        # Timestamps rise with offsets across the transactions: the first records are a minute
        # old, the markers get the broker's clock, the records after them are a second ahead of it.
        first = int(time.time() * 1000) - 60_000
        plan = text_plan(b"REPLAY", PARTITIONS, PER_PARTITION, value_chars=600, base_ts=first)
        cut = SPLIT // 15  # text_plan's rounds hold 15 records per partition
        produce(b, topic, Plan(plan.rounds[:cut]), **{"compression.type": "zstd"})
        _transactions(b, topic)
        shift = int(time.time() * 1000) + 1000 - (first + 10 * SPLIT)
        later = [[replace(r, timestamp=(r.timestamp or 0) + shift) for r in rnd] for rnd in plan.rounds[cut:]]
        produce(b, topic, Plan(later), **{"compression.type": "lz4"})
        ts = [first + 10 * i + (shift if i >= SPLIT else 0) for i in range(PER_PARTITION)]
        for p in range(PARTITIONS):
            wait_offloaded(b, remote, topic, p, at_least=int(END * 0.8), local_start_at_least=int(END * 0.8))
            wait_settled(b, remote, topic, p)
        read_committed: dict[str, Any] = {"isolation.level": "read_committed"}
        got = ck.consume(b.bootstrap, topic, range(PARTITIONS), **read_committed)
        expected = [(p, o, k, v, h, ts) for p, o, k, v, h, (_, ts) in got]
        assert len(expected) == PARTITIONS * (PER_PARTITION + TXN_RECORDS)
        yield Loaded(b, topic, expected, ts)
    except BaseException:
        print(b.log_tail(80))
        raise
    finally:
        b.stop_quietly()


# --------------------------------------------------------------------------------------------
# Reading the three formats back
# --------------------------------------------------------------------------------------------


def _unb64(value: str | None) -> bytes | None:
    return None if value is None else base64.b64decode(value, validate=True)


def _row(obj: dict[str, Any]) -> Row:
    assert list(obj) == ["partition", "offset", "timestamp", "key", "value", "headers"], obj
    return (obj["partition"], obj["offset"], _unb64(obj["key"]), _unb64(obj["value"]),
            [(h["key"], _unb64(h["value"])) for h in obj["headers"]], obj["timestamp"])


def ndjson_rows(body: bytes) -> list[Row]:
    assert body.endswith(b"\n") or not body
    return [_row(json.loads(line)) for line in body.decode().splitlines()]


def sse_events(body: bytes) -> list[dict[str, str]]:
    assert body.endswith(b"\n\n")
    events = []
    for block in body.decode().split("\n\n")[:-1]:
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append(fields)
    return events


def arrow_rows(table: pa.Table) -> list[Row]:
    cols = table.to_pydict()
    ts = table.column("timestamp").cast(pa.int64()).to_pylist()
    return [(p, o, k, v, [(h["key"], h["value"]) for h in hs], t)
            for p, o, k, v, hs, t in zip(cols["partition"], cols["offset"], cols["key"], cols["value"],
                                         cols["headers"], ts)]


def get(url: str, accept: str | None = None, headers: dict[str, str] | None = None) -> Answer:
    return call("GET", url, headers={**({"Accept": accept} if accept else {}), **(headers or {})}, timeout=60)


# --------------------------------------------------------------------------------------------
# Ranges, formats, tiers
# --------------------------------------------------------------------------------------------


def test_time_range_mostly_remote_as_ndjson_sse_and_arrow(loaded: Loaded) -> None:
    lo, hi = loaded.ts[100], loaded.ts[400]
    expected = [r for r in loaded.expected if lo <= r[5] < hi]
    # The range as confluent-kafka's offsetsForTimes resolves it: [100, 410) on each partition (410 =
    # 400 + the two transactions' records and markers), less the aborted records and the markers.
    c = Consumer({"bootstrap.servers": loaded.broker.bootstrap, "group.id": f"replay-{uuid.uuid4().hex[:6]}"})
    try:
        for bound, offset in ((lo, 100), (hi, 410)):
            found = c.offsets_for_times([TopicPartition(loaded.topic, p, bound) for p in range(PARTITIONS)], 10)
            assert [tp.offset for tp in found] == [offset] * PARTITIONS
    finally:
        c.close()
    aborted = set(range(SPLIT, SPLIT + TXN_RECORDS + 1)) | {SPLIT + 2 * TXN_RECORDS + 1}
    assert [(r[0], r[1]) for r in expected] == [(p, o) for p in range(PARTITIONS) for o in range(100, 410)
                                                if o not in aborted]
    assert any(r[2] is None for r in expected) and any(r[3] is None for r in expected)
    assert any(len(r[4]) == 3 for r in expected) and any(r[3] == b"COMMITTED 1 0" for r in expected)

    reads_before = metric(loaded.broker.metrics(), "sediment_remote_reads_total")
    # The local log starts past the range: all of it comes from the bucket.
    query = f"?from={quote(rfc3339(lo))}&to={quote(rfc3339(hi))}"
    answer = get(loaded.url(query))
    assert answer.status == 200 and answer.headers["Content-Type"] == NDJSON
    assert ndjson_rows(answer.body) == expected
    assert metric(loaded.broker.metrics(), "sediment_remote_reads_total") > reads_before

    # The same instants written with another UTC offset (+ escaped as %2B).
    shifted = datetime.fromtimestamp(lo / 1000, timezone(timedelta(hours=2))).isoformat(timespec="milliseconds")
    assert shifted.endswith("+02:00")
    other = get(loaded.url(f"?from={quote(shifted, safe='')}&to={quote(rfc3339(hi))}"))
    assert other.status == 200 and other.body == answer.body

    events = get(loaded.url(query), SSE)
    assert events.status == 200 and events.headers["Content-Type"] == SSE
    parsed = sse_events(events.body)
    assert parsed[-1] == {"event": "end", "data": "{}"}
    assert [e["id"] for e in parsed[:-1]] == [f"{r[0]}:{r[1]}" for r in expected]
    assert [_row(json.loads(e["data"])) for e in parsed[:-1]] == expected

    req = http.client.HTTPConnection("127.0.0.1", loaded.broker.http_port, timeout=60)
    try:
        req.request("GET", f"/v1/topics/{loaded.topic}/records{query}", headers={"Accept": ARROW})
        resp = req.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Type") == ARROW
        table = pyarrow.ipc.open_stream(resp).read_all()  # straight off the HTTP response
    finally:
        req.close()
    assert arrow_rows(table) == expected
    assert table.schema.field("timestamp").type == pa.timestamp("ms", tz="UTC")


def test_whole_topic_across_both_tiers(loaded: Loaded) -> None:
    answer = get(loaded.url())
    assert answer.status == 200
    assert ndjson_rows(answer.body) == loaded.expected
    table = pyarrow.ipc.open_stream(get(loaded.url(), ARROW).body).read_all()
    assert arrow_rows(table) == loaded.expected
    assert not any(b"ABORTED" in (r[3] or b"") for r in loaded.expected)


def test_offsets_partitions_and_text_formats(loaded: Loaded) -> None:
    # to is exclusive; partitions come in ascending order however they are listed.
    want = [r for r in loaded.expected if 230 <= r[1] < 260]
    for query in ("?from=230&to=260", "?partition=1&partition=0&from=230&to=260", "?partition=1,0&from=230&to=260"):
        assert ndjson_rows(get(loaded.url(query)).body) == want, query
    one = ndjson_rows(get(loaded.url("?partition=1&from=598&to=1000000")).body)
    assert [r[1] for r in one] == list(range(598, END))  # past the end: to the end
    assert get(loaded.url("?from=5000")).body == b""

    # format=string: the same records, keys, values and header values as text.
    text = get(loaded.url("?partition=0&from=238&to=252&format=string")).body
    lines = [json.loads(line) for line in text.splitlines()]
    want = [r for r in loaded.expected if r[0] == 0 and 238 <= r[1] < 252]
    assert [x["offset"] for x in lines] == [238, 239, 245, 246, 247, 248, 250, 251]  # no aborted records, no markers
    assert [(x["offset"], x["key"], x["value"], [(h["key"], h["value"]) for h in x["headers"]]) for x in lines] == [
        (o, None if k is None else k.decode(), None if v is None else v.decode(),
         [(hk, None if hv is None else hv.decode()) for hk, hv in h]) for _, o, k, v, h, _ in want]
    assert [x["value"] for x in lines[2:6]] == [f"COMMITTED 0 {j}" for j in range(TXN_RECORDS)]

    # format=json on values that are not JSON: null, and their bytes in value_base64 beside it.
    mixed = [json.loads(line) for line in
             get(loaded.url("?partition=0&from=244&to=246&format=json&key_format=string")).body.splitlines()]
    [committed] = [r for r in loaded.expected if r[0] == 0 and r[1] == 245]
    assert mixed == [{"partition": 0, "offset": 245, "timestamp": committed[5], "key": "COMMITTED-0-0",
                      "value": None, "value_base64": base64.b64encode(b"COMMITTED 0 0").decode(),
                      "headers": [{"key": "txn", "value": "COMMITTED"}]}]


def test_sse_resumes_after_last_event_id(loaded: Loaded) -> None:
    query = "?from=100&to=110"
    full = sse_events(get(loaded.url(query), SSE).body)
    ids = [e["id"] for e in full[:-1]]
    assert ids == [f"{p}:{o}" for p in range(PARTITIONS) for o in range(100, 110)]
    rest = sse_events(get(loaded.url(query), SSE, {"Last-Event-ID": "0:104"}).body)
    assert [e["id"] for e in rest[:-1]] == ids[5:] and rest[-1]["event"] == "end"
    done = get(loaded.url(query), SSE, {"Last-Event-ID": ids[-1]})
    assert (done.status, done.body) == (204, b"")  # EventSource stops reconnecting on 204
    wrong = get(loaded.url(query), SSE, {"Last-Event-ID": "zero"})
    assert (wrong.status, wrong.json()) == (400, {
        "error_code": 400, "message": "Last-Event-ID must be partition:offset as this stream's event ids, not 'zero'"})


def test_error_bodies(loaded: Loaded) -> None:
    t = loaded.topic
    cases: list[tuple[str, str | None, int, dict[str, Any]]] = [
        ("?from=yesterday", None, 400, {"error_code": 400, "message":
            "from must be an offset (an integer >= 0) or an RFC 3339 time such as 2024-05-01T12:00:00Z, "
            "not 'yesterday'"}),
        ("?to=2024-05-01T12:00:00", None, 400, {"error_code": 400, "message":
            "to must be an offset (an integer >= 0) or an RFC 3339 time such as 2024-05-01T12:00:00Z, not "
            "'2024-05-01T12:00:00' (with its UTC offset: Z or +hh:mm)"}),
        ("?from=2024-05-01T12:00:00+02:00", None, 400, {"error_code": 400, "message":
            "from must be an offset (an integer >= 0) or an RFC 3339 time such as 2024-05-01T12:00:00Z, not "
            "'2024-05-01T12:00:00 02:00' (a + in a URL must be written %2B)"}),
        ("?from=10&to=5", None, 400, {"error_code": 400, "message": "from (10) is after to (5)"}),
        ("?from=1&from=2", None, 400, {"error_code": 400, "message": "from may be given once"}),
        ("?partition=zero", None, 400, {"error_code": 400, "message":
            "partition must be a partition number (an integer >= 0), not 'zero'"}),
        ("?format=avro", None, 400, {"error_code": 400, "message":
            "format must be one of base64, string, json, not 'avro'"}),
        ("?format=string&key_format=", None, 400, {"error_code": 400, "message":
            "key_format must be one of base64, string, json, not ''"}),
        ("?partition=0,7", None, 404, {"error_code": 40402, "message": f"Partition 7 of topic '{t}' not found"}),
        ("", "application/json", 406, {"error_code": 406, "message":
            "None of the accepted media types is served here; this resource is application/x-ndjson, "
            "text/event-stream, application/vnd.apache.arrow.stream"}),
    ]
    for query, accept, status, body in cases:
        answer = get(loaded.url(query), accept)
        assert (answer.status, answer.json()) == (status, body), query
        assert answer.headers["Content-Type"].startswith("application/json")
    missing = get(loaded.url(topic="no-such-topic"))
    assert (missing.status, missing.json()) == (404, {"error_code": 40401,
                                                      "message": "Topic 'no-such-topic' not found"})
    head = call("HEAD", loaded.url())
    assert head.status == 405  # a HEAD would read the whole range for nothing

    spec = call("GET", loaded.broker.http_base + "/openapi.json").json()
    op = spec["paths"]["/v1/topics/{topic_name}/records"]["get"]
    assert set(op["responses"]["200"]["content"]) == {NDJSON, SSE, ARROW}
    assert {p["name"] for p in op["parameters"]} == {"topic_name", "from", "to", "partition", "format", "X-Client-Id",
                                                     "key_format", "Last-Event-ID"}
    assert "ReplayRecord" in spec["components"]["schemas"]


# --------------------------------------------------------------------------------------------
# Back-pressure and going away, on a larger topic (local segments, encrypted at rest)
# --------------------------------------------------------------------------------------------

BIG_RECORDS = 3072
BIG_VALUE = 8192  # 24 MiB of values: an NDJSON answer of ~32 MiB, far more than the sockets hold
BOUND = 3 << 20  # two encoded chunks: 2 x (1 MiB + one 64 KiB batch) x 4/3 (base64), and the JSON
KERNEL = 8 << 20  # the most the sockets can take in before the broker waits (4 MiB send buffer, 32 KiB receive)


@dataclass
class Big:
    loaded: Loaded
    topic: str
    values: list[bytes]


@pytest.fixture(scope="module")
def big(loaded: Loaded) -> Big:
    topic = unique_topic("replay-big")
    ck.create_topic(loaded.broker.bootstrap, topic, 1)
    values = [os.urandom(BIG_VALUE) for _ in range(BIG_RECORDS)]
    p = ck.producer(loaded.broker.bootstrap, **{"batch.size": 65536, "linger.ms": 5, "acks": "all"})
    for i, v in enumerate(values):
        p.produce(topic, key=b"%d" % i, value=v, partition=0)
        if i % 256 == 255:
            p.poll(0)
    assert p.flush(60) == 0
    return Big(loaded, topic, values)


class SmallWindow(http.client.HTTPConnection):
    """A client whose receive buffer is small (set before connecting, so the kernel keeps it)."""

    def connect(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.settimeout(self.timeout)
        sock.connect((self.host, self.port))
        self.sock = sock


def _replay_gauges(b: Broker) -> dict[str, float]:
    m = get_metrics(b)
    names = ("streams", "waiting_streams", "buffered_bytes", "buffered_bytes_peak", "sent_bytes_total",
             "records_total")
    out = {n: metric(m, f"sediment_http_replay_{n}") for n in names}
    for outcome in ("complete", "failed", "disconnected"):
        out[outcome] = metric(m, "sediment_http_replay_streams_ended_total", outcome=outcome)
    return out


def _blocked(b: Broker) -> dict[str, float]:
    """Wait until the one stream waits on its client with the next chunk ready."""

    def blocked() -> dict[str, float] | None:
        g = _replay_gauges(b)
        return g if g["waiting_streams"] == 1 else None

    found: dict[str, float] = wait_until(blocked, 30, interval=0.05, what="the replay to block on its reader")
    return found


def test_slow_reader_holds_two_chunks(big: Big) -> None:
    b = big.loaded.broker
    before = _replay_gauges(b)
    conn = SmallWindow("127.0.0.1", b.http_port, timeout=60)
    try:
        conn.request("GET", f"/v1/topics/{big.topic}/records", headers={"Accept": NDJSON})
        resp = conn.getresponse()
        assert resp.status == 200
        lines = [resp.readline() for _ in range(3)]
        taken = sum(len(line) for line in lines)
        g = _blocked(b)
        sent = g["sent_bytes_total"] - before["sent_bytes_total"]
        print(f"blocked after {taken} bytes read: {g['buffered_bytes']:.0f} held, {sent:.0f} sent")
        total = BIG_RECORDS * len(lines[1])  # every line is about this long
        assert total > 30 << 20
        assert 0 < g["buffered_bytes"] <= BOUND, g
        assert sent <= taken + KERNEL, (sent, g)  # the rest of the range was not read
        assert g["records_total"] - before["records_total"] < BIG_RECORDS / 4

        more = resp.read(6 << 20)  # a reader that takes a while, then stops again
        taken += len(more)
        g = _blocked(b)
        assert 0 < g["buffered_bytes"] <= BOUND, g
        assert taken <= g["sent_bytes_total"] - before["sent_bytes_total"] <= taken + KERNEL, g

        rest = resp.read()
    finally:
        conn.close()
    body = b"".join(lines) + more + rest
    rows = ndjson_rows(body)
    assert [r[1] for r in rows] == list(range(BIG_RECORDS))
    assert [r[3] for r in rows] == big.values and [r[2] for r in rows] == [b"%d" % i for i in range(BIG_RECORDS)]
    after = wait_until(lambda: _replay_gauges(b) if _replay_gauges(b)["streams"] == 0 else None, 30,
                       what="the stream to end")
    assert after["complete"] == before["complete"] + 1 and after["buffered_bytes"] == 0
    assert after["buffered_bytes_peak"] <= BOUND
    assert after["sent_bytes_total"] - before["sent_bytes_total"] == len(body)


def test_client_going_away_ends_the_stream(big: Big) -> None:
    b = big.loaded.broker
    before = _replay_gauges(b)
    conn = SmallWindow("127.0.0.1", b.http_port, timeout=60)
    conn.request("GET", f"/v1/topics/{big.topic}/records", headers={"Accept": ARROW})
    resp = conn.getresponse()
    assert resp.status == 200
    resp.read(100_000)
    _blocked(b)
    resp.close()
    conn.close()  # unread bytes in the receive buffer: the kernel resets the connection

    def ended() -> dict[str, float] | None:
        g = _replay_gauges(b)
        return g if g["streams"] == 0 and g["disconnected"] == before["disconnected"] + 1 else None

    g = wait_until(ended, 30, what="the stream to end after its client left")
    assert g["buffered_bytes"] == 0 and g["complete"] == before["complete"]
    assert g["sent_bytes_total"] - before["sent_bytes_total"] <= 100_000 + KERNEL
    assert g["records_total"] - before["records_total"] < BIG_RECORDS / 4  # the rest was never read
    log = b.log_path.read_text(errors="replace")
    for sign in ("Task was destroyed but it is pending", "Traceback", "Task exception was never retrieved",
                 "Error handling request"):
        assert sign not in log


def test_failure_in_the_middle_cuts_the_response(loaded: Loaded) -> None:
    """The topic is deleted under a stream blocked on its reader: what was read ahead still goes
    out, then the error record, and the response ends without its last chunk."""
    b = loaded.broker
    topic = unique_topic("replay-doomed")
    ck.create_topic(b.bootstrap, topic, 1)
    p = ck.producer(b.bootstrap, **{"batch.size": 65536, "linger.ms": 5})
    for i in range(1536):  # 12 MiB: more than the sockets hold
        p.produce(topic, value=os.urandom(BIG_VALUE), partition=0)
        if i % 256 == 255:
            p.poll(0)
    assert p.flush(60) == 0
    before = _replay_gauges(b)
    conn = SmallWindow("127.0.0.1", b.http_port, timeout=60)
    try:
        conn.request("GET", f"/v1/topics/{topic}/records", headers={"Accept": NDJSON})
        resp = conn.getresponse()
        first = resp.readline()
        _blocked(b)
        ck.admin(b.bootstrap).delete_topics([topic], operation_timeout=10)[topic].result(15)
        with pytest.raises(http.client.IncompleteRead) as cut:
            resp.read()
    finally:
        conn.close()
    lines = (first + cut.value.partial).decode().splitlines()
    *records, last = lines
    assert [json.loads(line)["offset"] for line in records] == list(range(len(records)))
    assert 0 < len(records) < 1536
    assert json.loads(last) == {"error_code": 40401, "message": f"partition 0 at offset {len(records)}: "
                                                                 "unknown topic or partition"}
    g = wait_until(lambda: _replay_gauges(b) if _replay_gauges(b)["streams"] == 0 else None, 30,
                   what="the failed stream to end")
    assert g["failed"] == before["failed"] + 1 and g["buffered_bytes"] == 0


def test_broker_stop_ends_open_streams(tmp_path: Path) -> None:
    """SIGTERM with a stream blocked on its reader: the broker ends the stream and exits within
    the suite's stop bound (aiohttp alone would wait 60 s for the handler), and the client sees an
    incomplete response."""
    b = Broker(tmp_path).start()
    try:
        ck.create_topic(b.bootstrap, "long", 1)
        p = ck.producer(b.bootstrap, **{"batch.size": 65536, "linger.ms": 5})
        for i in range(1536):
            p.produce("long", value=os.urandom(BIG_VALUE), partition=0)
            if i % 256 == 255:
                p.poll(0)
        assert p.flush(60) == 0
        conn = SmallWindow("127.0.0.1", b.http_port, timeout=60)
        try:
            conn.request("GET", "/v1/topics/long/records", headers={"Accept": SSE})
            resp = conn.getresponse()
            resp.readline()
            _blocked(b)
            assert b.stop() == 0  # raises if the broker is still up after STOP_TIMEOUT_S
            with pytest.raises(http.client.IncompleteRead):
                resp.read()
        finally:
            conn.close()
        log = b.log_path.read_text(errors="replace")
        assert "Task was destroyed but it is pending" not in log and "Traceback" not in log
    finally:
        b.stop_quietly()


# --------------------------------------------------------------------------------------------
# Authentication, ACLs, and a broker without pyarrow
# --------------------------------------------------------------------------------------------

ADMIN, ADMIN_PW = "admin", "admin-Secret-0"
ALICE, ALICE_PW = "alice", "alice-Secret-1"
QUOTA_CLIENT, QUOTA_RATE = "replay-tenant", 1_000_000  # consumer_byte_rate, bytes/s


class NoArrowBroker(Broker):
    """A broker whose Python finds a `pyarrow` that fails to import, as if it were not installed."""

    def __init__(self, base_dir: Path, settings: dict[str, object], listeners: list[str]) -> None:
        super().__init__(base_dir, settings, listeners)
        self.shadow = self.base_dir / "shadow"
        (self.shadow / "pyarrow").mkdir(parents=True, exist_ok=True)
        (self.shadow / "pyarrow" / "__init__.py").write_text(
            'raise ImportError("No module named \'pyarrow\' (hidden by the test)")\n')

    def command(self) -> list[str]:
        path = os.pathsep.join(p for p in (str(self.shadow), os.environ.get("PYTHONPATH", "")) if p)
        return ["env", f"PYTHONPATH={path}"] + super().command()


@dataclass
class Secured:
    broker: NoArrowBroker
    topic: str
    produced: list[Row]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    base = tmp_path_factory.mktemp("http-replay-acl")
    b = NoArrowBroker(base, {"authorizer.enable": "true", "super.users": f"User:{ADMIN}",
                             "http.authentication.methods": "BASIC", "quota.window.num": "2"}, ["SASL_PLAINTEXT"])
    add_user(b.data_dir, ADMIN, ADMIN_PW)
    add_user(b.data_dir, ALICE, ALICE_PW)
    done = subprocess.run([*sediment_command(), "quotas", "set", "--data-dir", str(b.data_dir),
                           "--client", QUOTA_CLIENT, "--add-config", f"consumer_byte_rate={QUOTA_RATE}"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    b.start()
    try:
        s = Secured(b, unique_topic("replay-acl"), [])
        conf = s.broker.sasl_conf(ADMIN, ADMIN_PW)
        admin = AdminClient(conf)
        from confluent_kafka.admin import NewTopic

        admin.create_topics([NewTopic(s.topic, 1, 1)])[s.topic].result(15)
        p = Producer({**conf, "linger.ms": 5})
        for i in range(20):
            p.produce(s.topic, key=b"k%d" % i, value=b"v%d" % i, headers=[("i", b"%d" % i)],
                      timestamp=BASE_TS + i, partition=0)
        assert p.flush(30) == 0
        s.produced = [(0, i, b"k%d" % i, b"v%d" % i, [("i", b"%d" % i)], BASE_TS + i) for i in range(20)]
        yield s
    finally:
        b.stop_quietly()


def test_authentication_acls_and_no_pyarrow(secured: Secured) -> None:
    url = f"{secured.broker.http_base}/v1/topics/{secured.topic}/records"
    nobody = get(url)
    assert (nobody.status, nobody.json()) == (401, {"error_code": 40101, "message": "Authentication required"})
    alice = basic(ALICE, ALICE_PW)
    denied = get(url, headers=alice)
    assert (denied.status, denied.json()) == (403, {"error_code": 40301,
                                                    "message": f"Not authorized to read topic '{secured.topic}'"})
    hidden = get(f"{secured.broker.http_base}/v1/topics/no-such-topic/records", headers=alice)
    assert (hidden.status, hidden.json()) == (403, {"error_code": 40301,
                                                    "message": "Not authorized to read topic 'no-such-topic'"})

    admin = AdminClient(secured.broker.sasl_conf(ADMIN, ADMIN_PW))
    describe_only = AclBinding(RT.TOPIC, secured.topic, ResourcePatternType.LITERAL, f"User:{ALICE}", "*",
                               AclOperation.DESCRIBE, AclPermissionType.ALLOW)
    for f in admin.create_acls([describe_only]).values():
        f.result(timeout=10)
    assert get(url, headers=alice).status == 403  # READ, as Fetch
    read = AclBinding(RT.TOPIC, secured.topic, ResourcePatternType.LITERAL, f"User:{ALICE}", "*",
                      AclOperation.READ, AclPermissionType.ALLOW)
    for f in admin.create_acls([read]).values():
        f.result(timeout=10)
    allowed = get(url, headers=alice)
    assert allowed.status == 200 and ndjson_rows(allowed.body) == secured.produced  # local, sendfile ranges

    arrow = get(url, ARROW, alice)
    assert (arrow.status, arrow.json()) == (406, {"error_code": 406, "message":
        "application/vnd.apache.arrow.stream needs pyarrow on the broker (pip install 'sediment[analytics]'); "
        "application/x-ndjson and text/event-stream are served without it"})
    fallback = get(url, f"{ARROW}, {NDJSON};q=0.5", alice)
    assert fallback.status == 200 and fallback.headers["Content-Type"] == NDJSON
    assert ndjson_rows(fallback.body) == secured.produced


def _grant_read(s: Secured, topic: str) -> None:
    admin = AdminClient(s.broker.sasl_conf(ADMIN, ADMIN_PW))
    read = AclBinding(RT.TOPIC, topic, ResourcePatternType.LITERAL, f"User:{ALICE}", "*", AclOperation.READ,
                      AclPermissionType.ALLOW)
    for f in admin.create_acls([read]).values():
        f.result(timeout=10)


def test_fetch_quota_slows_the_stream_and_loses_nothing(secured: Secured) -> None:
    """consumer_byte_rate for the X-Client-Id: 2.5 MiB at 1 MB/s is throttled (the next chunk
    waits), the throttles show in /metrics under that client-id, and every record arrives."""
    conf = secured.broker.sasl_conf(ADMIN, ADMIN_PW)
    topic = unique_topic("replay-quota")
    from confluent_kafka.admin import NewTopic

    admin = AdminClient(conf)  # kept: the futures of a client already gone fail with _DESTROY
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(15)
    values = [os.urandom(BIG_VALUE) for _ in range(320)]
    p = Producer({**conf, "linger.ms": 5, "batch.size": 65536})
    for v in values:
        p.produce(topic, value=v, partition=0)
    assert p.flush(30) == 0
    _grant_read(secured, topic)
    url = f"{secured.broker.http_base}/v1/topics/{topic}/records"
    answer = get(url, headers={**basic(ALICE, ALICE_PW), "X-Client-Id": QUOTA_CLIENT})
    assert answer.status == 200 and [r[3] for r in ndjson_rows(answer.body)] == values
    throttled = [(labels, v) for labels, v in get_metrics(secured.broker).get("sediment_quota_throttled_total", [])
                 if labels.get("quota_type") == "Fetch"]
    # Tagged as Kafka tags them: by the entity whose quota applies (a client-id's alone here).
    assert [labels for labels, _ in throttled] == [{"quota_type": "Fetch", "user": "", "client_id": QUOTA_CLIENT}]
    assert throttled[0][1] >= 1
