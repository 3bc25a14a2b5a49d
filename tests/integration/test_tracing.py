"""Every Kafka request runs inside an OpenTelemetry span (in-process broker, real socket, real client)."""

from __future__ import annotations

from collections.abc import Mapping

from aiokafka import AIOKafkaProducer
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util.types import AnyValue

from service.broker import Broker
from service.config import load_config
from service.telemetry import Telemetry


def _attributes(span: ReadableSpan) -> Mapping[str, AnyValue]:
    assert span.attributes is not None, f"span {span.name} has no attributes"
    return span.attributes


async def test_each_request_gets_a_span_with_api_version_client_and_topics(tmp_path):
    # Port 0: the broker binds whatever port is free and advertises that one.
    config = load_config(None, {"data.dir": str(tmp_path), "listeners": "PLAINTEXT://127.0.0.1:0",
                                "http.listener": "127.0.0.1:0"}, environ={})
    exporter = InMemorySpanExporter()
    broker = Broker(config, Telemetry(span_exporter=exporter))
    await broker.start()
    try:
        port = broker.kafka.bound["PLAINTEXT"][1]
        assert broker.cluster is not None  # set by start()
        assert broker.cluster.endpoint_for("PLAINTEXT").port == port
        producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{port}", client_id="tracer-test")
        await producer.start()
        try:
            meta = await producer.send_and_wait("traced", b"v", partition=0)
            assert meta.offset == 0
        finally:
            await producer.stop()
    finally:
        await broker.close()
    spans = exporter.get_finished_spans()
    by_api: dict[AnyValue, list[ReadableSpan]] = {}
    for s in spans:
        by_api.setdefault(_attributes(s)["kafka.api"], []).append(s)
    assert {"ApiVersions", "Metadata", "Produce"} <= set(by_api)
    produce = by_api["Produce"][0]
    assert produce.name == "kafka.Produce"
    assert _attributes(produce)["messaging.client.id"] == "tracer-test"
    assert _attributes(produce)["messaging.kafka.topics"] == "traced"
    version = _attributes(produce)["kafka.api.version"]
    assert isinstance(version, int) and version >= 3
    assert all(_attributes(s)["messaging.system"] == "kafka" for s in spans)
