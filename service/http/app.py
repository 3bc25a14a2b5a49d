"""The HTTP listener: health probes and /metrics. The REST API and replay are to be built on
this app, calling the same partition layer as the Kafka handlers."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from service.broker import Broker

log = logging.getLogger("sediment.http")

BROKER_KEY: web.AppKey[Broker] = web.AppKey("broker")


async def live(request: web.Request) -> web.Response:
    return web.json_response({"status": "live"})


async def ready(request: web.Request) -> web.Response:
    broker = request.app[BROKER_KEY]
    if not broker.ready:
        return web.json_response({"status": "starting"}, status=503)
    return web.json_response({"status": "ready", "node_id": broker.cluster.node_id if broker.cluster else None})


def _metric_lines(broker: Broker) -> list[str]:
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        # A sample's "labels" part is also where a summary's _sum / _count suffix goes.
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{labels} {value}" for labels, value in samples)

    lag = broker.loop_lag
    metric("sediment_event_loop_lag_seconds", "gauge",
           "How late the latest periodic wake-up of the event loop fired.", [("", lag.current_s)])
    metric("sediment_event_loop_lag_max_seconds", "gauge",
           "The largest event-loop wake-up delay since the broker started.", [("", lag.max_s)])
    tier = broker.tier
    if tier is not None:
        m = tier.metrics
        lag_segments, lag_bytes = tier.upload_lag()
        metric("sediment_remote_segments_uploaded_total", "counter", "Segments committed to the bucket.",
               [("", m.segments_uploaded)])
        metric("sediment_remote_bytes_uploaded_total", "counter", "Object bytes written for segments.",
               [("", m.bytes_uploaded)])
        metric("sediment_remote_upload_failures_total", "counter", "Segment uploads that failed and will be retried.",
               [("", m.upload_failures)])
        metric("sediment_remote_upload_seconds", "summary", "Time spent uploading segments.",
               [("_sum", m.upload_seconds), ("_count", m.segments_uploaded)])
        metric("sediment_remote_upload_lag_segments", "gauge", "Sealed segments not yet in the bucket.",
               [("", lag_segments)])
        metric("sediment_remote_upload_lag_bytes", "gauge", "Bytes of sealed segments not yet in the bucket.",
               [("", lag_bytes)])
        metric("sediment_remote_segments_deleted_total", "counter", "Remote segments removed by retention.",
               [("", m.segments_deleted)])
        metric("sediment_remote_reads_total", "counter", "Reads served from the bucket.", [("", m.remote_reads)])
        metric("sediment_remote_read_timeouts_total", "counter", "Remote reads past remote.fetch.max.wait.ms.",
               [("", m.remote_read_timeouts)])
        metric("sediment_remote_bytes", "gauge", "Object bytes held in the bucket per partition.",
               [(f'{{topic="{t}",partition="{p}"}}', v) for (t, p), v in sorted(m.remote_bytes.items())])
    return lines


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition format."""
    body = "\n".join(_metric_lines(request.app[BROKER_KEY])) + "\n"
    return web.Response(text=body, content_type="text/plain", charset="utf-8")


def make_app(broker: Broker) -> web.Application:
    app = web.Application()
    app[BROKER_KEY] = broker
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/metrics", metrics)
    return app


class HttpServer:
    def __init__(self, broker: Broker, host: str, port: int) -> None:
        self._app = make_app(broker)
        self._host, self._port = host, port
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port, reuse_address=True).start()
        self.port = self._runner.addresses[0][1]  # the real one when port 0 was asked for
        log.info("HTTP API on %s:%d", self._host, self.port)

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
