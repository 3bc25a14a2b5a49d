"""The HTTP API: health probes now; REST, replay and metrics build on this app."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from service.broker import Broker

BROKER_KEY: web.AppKey["Broker"] = web.AppKey("broker")


async def live(request: web.Request) -> web.Response:
    return web.json_response({"status": "live"})


async def ready(request: web.Request) -> web.Response:
    broker = request.app[BROKER_KEY]
    if not broker.ready:
        return web.json_response({"status": "starting"}, status=503)
    return web.json_response({"status": "ready", "node_id": broker.cluster.node_id if broker.cluster else None})


def make_app(broker: "Broker") -> web.Application:
    app = web.Application()
    app[BROKER_KEY] = broker
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    return app


class HttpServer:
    def __init__(self, broker: "Broker", host: str, port: int) -> None:
        self._app = make_app(broker)
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port, reuse_address=True).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
