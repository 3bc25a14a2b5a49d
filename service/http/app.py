"""The HTTP listener: health probes, /metrics and the REST API. Each API module keeps its own
route table (v3_clusters, ...); they reach the broker only through `api.services()`, the same
narrow services the Kafka handlers use, and are authorized by the same ACLs."""

from __future__ import annotations

import logging
import ssl
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from service.http import (
    openapi,
    replay,
    v2_consumers,
    v3_brokers,
    v3_clusters,
    v3_configs,
    v3_groups,
    v3_partitions,
    v3_records,
    v3_topics,
)
from service.http.api import SERVICES_KEY
from service.http.auth import HttpAuthenticator, auth_middleware
from service.http.errors import error_middleware
from service.logsafe import printable
from service.quotas import SensorView

if TYPE_CHECKING:
    from service.broker import Broker

log = logging.getLogger("sediment.http")
# What aiohttp's connection handlers log (AppRunner's `logger`), instead of "aiohttp.server".
server_log = logging.getLogger("sediment.http.server")

_REASON_MAX = 300  # characters of aiohttp's description of a malformed request, which quotes its bytes


class _MalformedRequests(logging.Filter):
    """aiohttp answers a request it cannot parse (a NUL byte in a header, a broken chunked body,
    a duplicate Content-Length) with 400 itself, in RequestHandler.handle_error, before any
    middleware sees it, and logs that as an error with a traceback. The bytes were the client's:
    the record becomes one INFO line naming the peer and aiohttp's reason. Anything else (an
    exception of the server's own) is left as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        # handle_error logs "Error handling request from %s" with the peer's address.
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else "an unknown peer"
        lines = (line.strip() for line in exc.message.splitlines())
        reason = " ".join(line for line in lines if line.strip("^~ "))  # not the caret under the bad byte
        if len(reason) > _REASON_MAX:
            reason = reason[:_REASON_MAX] + "..."
        log.info("malformed HTTP request from %s: %s", printable(peer), printable(reason))
        return False


server_log.addFilter(_MalformedRequests())

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
    kafka = broker.kafka
    listeners = kafka.limits.stats.items()
    metric("sediment_connections", "gauge", "Open Kafka connections per listener.",
           [(f'{{listener="{n}"}}', st.open) for n, st in listeners])
    metric("sediment_connections_accepted_total", "counter", "Kafka connections accepted per listener.",
           [(f'{{listener="{n}"}}', st.accepted) for n, st in listeners])
    metric("sediment_connections_refused_total", "counter",
           "Connections closed at once for their address's limit (max.connections.per.ip or its overrides) "
           "or connection creation rate.",
           [sample for n, st in listeners
            for sample in ((f'{{listener="{n}",limit="max.connections.per.ip"}}', st.refused_per_ip),
                           (f'{{listener="{n}",limit="connection_creation_rate"}}', st.refused_ip_rate))])
    metric("sediment_connections_idle_closed_total", "counter", "Connections closed by connections.max.idle.ms.",
           [(f'{{listener="{n}"}}', st.closed_idle) for n, st in listeners])
    metric("sediment_connection_accept_wait_seconds_total", "counter",
           "Time accepting was held back by max.connections or max.connection.creation.rate.",
           [(f'{{listener="{n}"}}', st.accept_wait_s) for n, st in listeners])
    metric("sediment_queued_request_bytes", "gauge",
           "Bytes of requests read and not yet answered (bounded by queued.max.request.bytes).",
           [("", kafka.memory.used)])
    metric("sediment_queued_request_bytes_peak", "gauge", "The most bytes of requests held at once since the start.",
           [("", kafka.memory.peak)])
    metric("sediment_unsent_response_bytes", "gauge",
           "Bytes of answers made and not yet handed to the sockets, over all connections.",
           [("", kafka.unsent_bytes)])
    metric("sediment_unsent_response_bytes_peak", "gauge",
           "The most bytes of unsent answers one connection has held (bounded by "
           "connection.queued.max.response.bytes).", [("", kafka.stats.unsent_peak)])
    sensors = broker.quotas.sensors()
    if sensors:  # clients measured against a quota (Kafka's per user/client-id quota metrics)
        def labels(v: SensorView) -> str:
            return f'{{quota_type="{v.kind}",user="{_escape(v.user)}",client_id="{_escape(v.client_id)}"}}'
        metric("sediment_quota_rate", "gauge", "Rate measured against a client quota: bytes/s (Produce, Fetch) "
               "or percent of the event loop (Request).", [(labels(v), v.rate) for v in sensors])
        metric("sediment_quota_limit", "gauge", "The client quota that applies.",
               [(labels(v), v.limit) for v in sensors])
        metric("sediment_quota_throttled_total", "counter", "Requests answered with a throttle time.",
               [(labels(v), v.throttled) for v in sensors])
        metric("sediment_quota_throttle_time_ms_total", "counter", "Throttle time given, in ms.",
               [(labels(v), v.throttle_ms_total) for v in sensors])
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


def _escape(value: str) -> str:
    """A Prometheus label value: client-ids are the clients' to choose."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition format."""
    lines = _metric_lines(request.app[BROKER_KEY]) + request.app[replay.REPLAYS_KEY].metric_lines()
    body = "\n".join(lines) + "\n"
    return web.Response(text=body, content_type="text/plain", charset="utf-8")


def make_app(broker: Broker) -> web.Application:
    config = broker.config
    auth = HttpAuthenticator(list(config["http.authentication.methods"]), broker.credentials, broker.auth.jwt)
    app = web.Application(middlewares=[error_middleware, auth_middleware(auth)],
                          client_max_size=config["http.max.request.bytes"])
    app[BROKER_KEY] = broker
    app[SERVICES_KEY] = lambda: broker.services if broker.ready else None
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/metrics", metrics)
    # Each resource module: its routes and its part of the API description.
    modules = [v3_clusters, v3_records]
    modules += [v3_brokers, v3_topics, v3_partitions, v3_configs, v3_groups]
    modules += [replay]
    replay.install(app)
    modules += [v2_consumers]
    v2_consumers.install(app, config)
    for module in modules:
        app.add_routes(module.routes)
    app.add_routes(openapi.routes([m.OPENAPI for m in modules]))
    return app


class HttpServer:
    def __init__(self, broker: Broker, host: str, port: int) -> None:
        self._app = make_app(broker)
        self._broker = broker
        self._host, self._port = host, port
        self.port = port
        self._runner: web.AppRunner | None = None

    def _tls_context(self) -> ssl.SSLContext | None:
        """Like a Kafka SASL_SSL listener's (no client certificate: callers authenticate with a
        header): each handshake swaps in the context current then, so reloaded certificates
        apply to new connections."""
        tls = self._broker.auth.tls
        if not self._broker.config["http.ssl.enable"] or tls is None:
            return None

        def current(sslobj: ssl.SSLObject, _server_name: str | None, _ctx: ssl.SSLContext) -> None:
            sslobj.context = tls.current(client_auth=False)

        first = tls.current(client_auth=False)
        first.sni_callback = current
        return first

    async def start(self) -> None:
        self._runner = web.AppRunner(self._app, access_log=None, logger=server_log)
        await self._runner.setup()
        context = self._tls_context()
        await web.TCPSite(self._runner, self._host, self._port, reuse_address=True, ssl_context=context).start()
        self.port = self._runner.addresses[0][1]  # the real one when port 0 was asked for
        log.info("HTTP API on %s:%d%s", self._host, self.port, " (TLS)" if context else "")

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

