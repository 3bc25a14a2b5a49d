"""Kafka listeners: framing, per-connection request loop, in-order pipelined responses.

Each connection reads frames as they arrive and starts a handler task per request, so pipelined
requests (and their fsyncs) overlap; a sender task writes the answers strictly in request order.
Handlers that must act in arrival order (produce appends) do so before their first await: tasks
start in creation order. A frame that is oversized or does not parse closes that connection only.

TLS listeners swap the TLS context current at that moment into each handshake, so reloaded
certificates apply to new connections. SASL listeners run each connection's
SASL state machine (service.kafka.sasl) before serving anything else; SSL listeners take the
principal from the client certificate.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import struct
from typing import TYPE_CHECKING, Any

from kio.schema.request_header.v1.header import RequestHeader as RequestHeaderV1
from kio.schema.request_header.v2.header import RequestHeader as RequestHeaderV2
from kio.serial import entity_reader

from service.config import BrokerConfig, Listener
from service.kafka import throttle
from service.kafka.apis import HANDLERS
from service.kafka.apis.api_versions import unsupported_version_answer
from service.kafka.context import Connection, FileRange, LazyPart, RequestContext, SplicedResponse
from service.kafka.framing import FramedConnection, FrameTooLarge
from service.kafka.messages import encode_response, request_reader, response_schema
from service.kafka.sasl import SASL_HANDSHAKE, NotAllowed, SaslSession, Stage
from service.kafka.versions import API_RANGES, api_name

if TYPE_CHECKING:
    from service.auth import Authentication
    from service.services import Services
    from service.telemetry import Telemetry

log = logging.getLogger("sediment.kafka")

_HEAD = struct.Struct(">hhi")
_SIZE = struct.Struct(">i")
_read_header_v1 = entity_reader(RequestHeaderV1)
_read_header_v2 = entity_reader(RequestHeaderV2)
_SASL_HANDSHAKE_KEY = SASL_HANDSHAKE.to_bytes(2, "big")  # a re-authentication starts with it
_TLS_HANDSHAKE_TIMEOUT_S = 10.0
_COPY_CHUNK = 1 << 20  # file ranges sent over TLS are copied this much at a time
_LINGER_S = 1.0  # after a failed authentication's answer, how long the client may take to close


class _Close(Exception):
    """Close this connection (after the answers already queued)."""


class _PartFailed(Exception):
    """A lazy part could not make its bytes after the answer's length went out."""


class KafkaServer:
    """The Kafka listeners: `bind()` takes the ports (a port-0 listener gets one from the
    system), `serve(services)` starts accepting, once the broker knows what to advertise."""

    def __init__(self, config: BrokerConfig, auth: Authentication, telemetry: Telemetry,
                 listeners: list[Listener] | None = None) -> None:
        self._auth = auth
        self._telemetry = telemetry
        self._listeners = config.listeners if listeners is None else listeners
        self._services: Services | None = None
        self._servers: list[asyncio.Server] = []
        self._connections: set[asyncio.Task[None]] = set()
        self._max_reauth_ms = int(config["connections.max.reauth.ms"])
        self._failed_auth_delay_ms = int(config["connection.failed.authentication.delay.ms"])
        self._max_request = int(config["socket.request.max.bytes"])
        self._queue_depth = int(config["queued.max.requests"])
        self.bound: dict[str, tuple[str, int]] = {}

    async def bind(self) -> None:
        loop = asyncio.get_running_loop()
        for listener in self._listeners:
            context = self._tls_context(listener)
            server = await loop.create_server(
                lambda l=listener: self._framed(l),
                listener.host, listener.port, reuse_address=True, start_serving=False, ssl=context,
                ssl_handshake_timeout=_TLS_HANDSHAKE_TIMEOUT_S if context is not None else None)
            self._servers.append(server)
            self.bound[listener.name] = server.sockets[0].getsockname()[:2]

    async def serve(self, services: Services) -> None:
        self._services = services
        for listener, server in zip(self._listeners, self._servers, strict=True):
            await server.start_serving()
            log.info("listening on %s://%s:%d", listener.name, *self.bound[listener.name])

    def _framed(self, listener: Listener) -> FramedConnection:
        return FramedConnection(self._max_request, _HEAD.size, lambda c: self._on_connect(listener, c))

    def _tls_context(self, listener: Listener) -> ssl.SSLContext | None:
        """A TLS listener's context: each handshake swaps in the context current at that
        moment (from its ClientHello callback, which runs with or without SNI), so reloaded
        certificates apply to new connections."""
        if listener.security_protocol not in ("SSL", "SASL_SSL"):
            return None
        tls = self._auth.tls
        assert tls is not None, "TLS listener without a TLS context"
        client_auth = listener.security_protocol == "SSL"
        first = tls.current(client_auth=client_auth)

        def current(sslobj: ssl.SSLObject, _server_name: str | None, _ctx: ssl.SSLContext) -> None:
            sslobj.context = tls.current(client_auth=client_auth)

        first.sni_callback = current
        return first

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
            if not self._authenticate_transport(listener, conn, framed):
                return
            await self._serve(conn, framed)
        finally:
            self._connections.discard(task)
            framed.close()

    def _authenticate_transport(self, listener: Listener, conn: Connection, framed: FramedConnection) -> bool:
        """Set the connection's principal (SSL: the client certificate) or its SASL state machine."""
        protocol = listener.security_protocol
        if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
            assert self._auth.sasl is not None, "SASL listener without SASL mechanisms"
            conn.authenticated = False
            conn.sasl = SaslSession(self._auth.sasl, self._max_reauth_ms, self._failed_auth_delay_ms)
        elif protocol == "SSL":
            ssl_object = framed.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            try:
                conn.principal = self._auth.principal_mapper.principal_of(der)
            except ValueError as e:
                log.warning("authentication failed: client %s:%d on %s: %s", conn.client_host, conn.client_port,
                            listener.name, e)
                return False
            log.debug("client %s:%d on %s is %s", conn.client_host, conn.client_port, listener.name, conn.principal)
        return True

    async def _serve(self, conn: Connection, framed: FramedConnection) -> None:
        pending: asyncio.Queue[asyncio.Future[Any] | None] = asyncio.Queue(self._queue_depth)
        sender = asyncio.create_task(self._send_loop(conn, framed, pending))
        try:
            while not sender.done():
                frame = await framed.read_frame()
                if conn.throttled_until:
                    await throttle.unmuted(conn)  # a throttled connection takes no request until its time is up
                sasl = conn.sasl
                serial = sasl is not None and (sasl.serial or bytes(frame[:2]) == _SASL_HANDSHAKE_KEY)
                try:
                    fut = self._dispatch(conn, frame)
                    await pending.put(fut)
                except _Close as e:
                    log.warning("closing %s:%d: %s", conn.client_host, conn.client_port, e)
                    break
                if serial and sasl is not None:
                    await asyncio.wait([fut])
                    if sasl.stage is Stage.FAILED:
                        break
                    framed.set_min_frame(0 if sasl.stage is Stage.RAW_TOKENS else _HEAD.size)
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
        if conn.sasl is not None and conn.sasl.stage is Stage.RAW_TOKENS:
            return asyncio.create_task(self._raw_token(conn, bytes(frame)))
        api_key, version, correlation_id = _HEAD.unpack_from(frame)
        if conn.sasl is not None:
            try:
                conn.sasl.admit(conn, api_key)
            except NotAllowed as e:
                raise _Close(str(e)) from None
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
        assert self._services is not None, "a connection before serve()"
        ctx = RequestContext(
            services=self._services, conn=conn, api_key=api_key, version=version,
            correlation_id=correlation_id, client_id=header.client_id,
            schema=response_schema(api_key, version), size=len(frame),
        )
        if self._services.quotas.active:
            throttle.arrived(ctx)  # a produce's bytes count now: a throttle mutes before the next frame
        return asyncio.create_task(self._run(ctx, request))

    @staticmethod
    async def _raw_token(conn: Connection, token: bytes) -> bytes | None:
        """A SASL token without a Kafka header (after SaslHandshake v0); the answer is raw too."""
        assert conn.sasl is not None
        out = await conn.sasl.authenticate(conn, token)
        return None if out.error_code else out.auth_bytes  # a failure just closes (after the delay)

    async def _run(self, ctx: RequestContext, request: Any) -> bytes | SplicedResponse | None:
        name = api_name(ctx.api_key)
        with self._telemetry.request_span(name, ctx) as span:
            try:
                handler = HANDLERS[ctx.api_key]
                response = await (throttle.run(ctx, handler, request) if ctx.quotas.request.enabled
                                  else handler(ctx, request))
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
                if conn.sasl is not None and conn.sasl.close_delay_s is not None:
                    # Failed authentication: answer late (slows password guessing), then close.
                    await asyncio.sleep(conn.sasl.close_delay_s)
                    if isinstance(answer, bytes):
                        writer.write(_SIZE.pack(len(answer)) + answer)
                        await writer.drain()
                    await self._linger(writer)
                    break
                if answer is None:  # acks=0 produce: no response at all
                    continue
                if isinstance(answer, bytes):
                    writer.write(_SIZE.pack(len(answer)) + answer)
                    await writer.drain()
                    continue
                try:
                    await self._send_spliced(loop, writer, answer, conn.plaintext)
                except _PartFailed as e:
                    # The frame is cut short: the client drops it with the connection and
                    # retries (as after a broker restart); it never reads bytes that are not
                    # the records'. Answers queued behind this one go unanswered too.
                    log.error("closing %s:%d in the middle of an answer: %s", conn.client_host,
                              conn.client_port, e)
                    writer.abort()
                    break
                finally:
                    answer.close()
        except (ConnectionError, OSError):
            pass
        finally:
            self._cancel_pending(pending)
            writer.close()

    @staticmethod
    async def _linger(framed: FramedConnection) -> None:
        """Let the client read a failure answer and close first: some clients drop an answer
        that arrives together with the server's close. Frames sent meanwhile are ignored."""
        try:
            async with asyncio.timeout(_LINGER_S):
                while True:
                    await framed.read_frame()
        except (ConnectionError, FrameTooLarge, TimeoutError):
            pass

    @staticmethod
    async def _send_spliced(loop: asyncio.AbstractEventLoop, writer: FramedConnection,
                            answer: SplicedResponse, plaintext: bool) -> None:
        writer.write(_SIZE.pack(answer.size))
        for part in answer.parts:
            if isinstance(part, (bytes, bytearray, memoryview)):  # encoded, or a view of remote bytes
                writer.write(part)
                continue
            await writer.drain()
            if not isinstance(part, FileRange):
                await KafkaServer._send_lazy(writer, part)
            elif not plaintext:  # TLS encrypts in user space: copy the range, a chunk at a time
                for pos in range(part.position, part.position + part.size, _COPY_CHUNK):
                    n = min(_COPY_CHUNK, part.position + part.size - pos)
                    writer.write(await asyncio.to_thread(os.pread, part.fd, n, pos))
                    await writer.drain()
            else:
                await writer.sendfile(part.fd, part.position, part.size)
        await writer.drain()

    @staticmethod
    async def _send_lazy(writer: FramedConnection, part: LazyPart) -> None:
        """Write a lazy part's pieces one at a time, each drained before the next is taken,
        so a slow reader holds back the opening instead of piling up opened bytes."""
        pieces = part.pieces()
        sent = 0
        try:
            while True:
                try:
                    piece = await anext(pieces)
                except StopAsyncIteration:
                    break
                except Exception as e:  # whatever it is, the announced bytes cannot follow
                    raise _PartFailed(str(e) or type(e).__name__) from e
                sent += len(piece)
                if sent > part.size:
                    raise _PartFailed(f"a lazy part made more than its {part.size} bytes")
                writer.write(piece)
                del piece
                await writer.drain()
        finally:
            await pieces.aclose()
        if sent != part.size:
            raise _PartFailed(f"a lazy part made {sent} of its {part.size} bytes")

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


