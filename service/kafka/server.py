"""Kafka listeners: framing, per-connection request loop, in-order pipelined responses.

Each connection reads frames as they arrive and starts a handler task per request, so pipelined
requests (and their fsyncs) overlap; a sender task writes the answers strictly in request order.
Handlers that must act in arrival order (produce appends) do so before their first await: tasks
start in creation order. A frame that is oversized or does not parse closes that connection only.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import TYPE_CHECKING, Any

from kio.schema.request_header.v1.header import RequestHeader as RequestHeaderV1
from kio.schema.request_header.v2.header import RequestHeader as RequestHeaderV2
from kio.serial import entity_reader

from service.config import Listener
from service.kafka.apis import HANDLERS
from service.kafka.apis.api_versions import unsupported_version_answer
from service.kafka.context import Connection, RequestContext, SplicedResponse
from service.kafka.framing import FrameTooLarge, FramedConnection
from service.kafka.messages import encode_response, request_reader, response_schema
from service.kafka.versions import API_RANGES, api_name

if TYPE_CHECKING:
    from service.broker import Broker

log = logging.getLogger("sediment.kafka")

_HEAD = struct.Struct(">hhi")
_SIZE = struct.Struct(">i")
_read_header_v1 = entity_reader(RequestHeaderV1)
_read_header_v2 = entity_reader(RequestHeaderV2)


class _Close(Exception):
    """Close this connection (after the answers already queued)."""


class KafkaServer:
    def __init__(self, broker: "Broker", listeners: list[Listener]) -> None:
        self._broker = broker
        self._listeners = listeners
        self._servers: list[asyncio.Server] = []
        self._connections: set[asyncio.Task[None]] = set()
        self._max_request = int(broker.config["socket.request.max.bytes"])
        self._queue_depth = int(broker.config["queued.max.requests"])
        self.bound: dict[str, tuple[str, int]] = {}

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for listener in self._listeners:
            server = await loop.create_server(
                lambda l=listener: FramedConnection(self._max_request, _HEAD.size,
                                                    lambda c, l=l: self._on_connect(l, c)),
                listener.host, listener.port, reuse_address=True,
            )
            self._servers.append(server)
            self.bound[listener.name] = server.sockets[0].getsockname()[:2]
            log.info("listening on %s", listener)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()

    async def _on_connect(self, listener: Listener, framed: FramedConnection) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = framed.get_extra_info("peername") or ("?", 0)
        conn = Connection(listener.name, str(peer[0]), int(peer[1]),
                          plaintext=framed.get_extra_info("sslcontext") is None)
        try:
            await self._serve(conn, framed)
        finally:
            self._connections.discard(task)
            framed.close()

    async def _serve(self, conn: Connection, framed: FramedConnection) -> None:
        pending: asyncio.Queue[asyncio.Future[Any] | None] = asyncio.Queue(self._queue_depth)
        sender = asyncio.create_task(self._send_loop(conn, framed, pending))
        try:
            while not sender.done():
                frame = await framed.read_frame()
                try:
                    await pending.put(self._dispatch(conn, frame))
                except _Close as e:
                    log.warning("closing %s:%d: %s", conn.client_host, conn.client_port, e)
                    break
        except FrameTooLarge as e:
            log.warning("closing %s:%d: frame of %d bytes (socket.request.max.bytes=%d)",
                        conn.client_host, conn.client_port, e.size, self._max_request)
        except ConnectionError:
            pass
        finally:
            if not sender.done():
                await pending.put(None)
            try:
                await sender
            except asyncio.CancelledError:
                pass

    def _dispatch(self, conn: Connection, frame: bytes | memoryview) -> asyncio.Future[Any]:
        api_key, version, correlation_id = _HEAD.unpack_from(frame)
        rng = API_RANGES.get(api_key)
        if api_key == 18 and (rng is None or not rng.served(version)):
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            done.set_result(unsupported_version_answer(correlation_id))
            return done
        if rng is None or api_key not in HANDLERS:
            raise _Close(f"unknown API key {api_key}")
        if not rng.served(version):
            raise _Close(f"unsupported {rng.name} version {version}")
        try:
            read_body, flexible = request_reader(api_key, version)
            header, offset = (_read_header_v2 if flexible else _read_header_v1)(frame, 0)
            request, _ = read_body(frame, offset)
        except Exception as e:  # kio raises many kinds (KeyError for unknown tags, ValueError...)
            raise _Close(f"malformed {rng.name} v{version} request: {type(e).__name__}: {e}") from None
        ctx = RequestContext(
            broker=self._broker, conn=conn, api_key=api_key, version=version,
            correlation_id=correlation_id, client_id=header.client_id,
            schema=response_schema(api_key, version),
        )
        return asyncio.create_task(self._run(ctx, request))

    async def _run(self, ctx: RequestContext, request: Any) -> bytes | SplicedResponse | None:
        name = api_name(ctx.api_key)
        with self._broker.telemetry.request_span(name, ctx) as span:
            try:
                response = await HANDLERS[ctx.api_key](ctx, request)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.exception("%s v%d from %s failed", name, ctx.version, ctx.client_id)
                span.record_exception(e)
                raise _Close(f"{name} handler failed: {e}") from e
            for k, v in ctx.span_attributes.items():
                span.set_attribute(k, v)
        if response is None or isinstance(response, (bytes, SplicedResponse)):
            return response
        return encode_response(ctx.correlation_id, response)

    async def _send_loop(self, conn: Connection, writer: FramedConnection,
                         pending: asyncio.Queue[asyncio.Future[Any] | None]) -> None:
        loop = asyncio.get_running_loop()
        try:
            while (fut := await pending.get()) is not None:
                try:
                    answer = await fut
                except _Close as e:
                    log.warning("closing %s:%d: %s", conn.client_host, conn.client_port, e)
                    break
                if answer is None:  # acks=0 produce: no response at all
                    continue
                if isinstance(answer, bytes):
                    writer.write(_SIZE.pack(len(answer)) + answer)
                    await writer.drain()
                    continue
                try:
                    await self._send_spliced(loop, writer, answer)
                finally:
                    answer.close()
        except (ConnectionError, OSError):
            pass
        finally:
            self._cancel_pending(pending)
            writer.close()

    @staticmethod
    async def _send_spliced(loop: asyncio.AbstractEventLoop, writer: FramedConnection,
                            answer: SplicedResponse) -> None:
        writer.write(_SIZE.pack(answer.size))
        for part in answer.parts:
            if isinstance(part, (bytes, bytearray)):
                writer.write(part)
                continue
            await writer.drain()
            with open(part.fd, "rb", buffering=0, closefd=False) as f:
                await loop.sendfile(writer.transport, f, part.position, part.size)
        await writer.drain()

    @staticmethod
    def _cancel_pending(pending: asyncio.Queue[asyncio.Future[Any] | None]) -> None:
        while not pending.empty():
            fut = pending.get_nowait()
            if fut is not None:
                fut.cancel()
                if fut.done() and not fut.cancelled():
                    result = fut.result() if fut.exception() is None else None
                    if isinstance(result, SplicedResponse):
                        result.close()


