"""Kafka listeners: framing, per-connection request loop, in-order pipelined responses.

Each connection reads frames as they arrive and starts a handler task per request, so pipelined
requests (and their fsyncs) overlap; a sender task writes the answers strictly in request order.
Handlers that must act in arrival order (produce appends) do so before their first await: tasks
start in creation order (and the bound on unread answers holds them back first in, first out).
A frame that is oversized or does not parse closes that connection only.

TLS listeners swap the TLS context current at that moment into each handshake, so reloaded
certificates apply to new connections. SASL listeners run each connection's
SASL state machine (service.kafka.sasl) before serving anything else; SSL listeners take the
principal from the client certificate.

Each listener has its own accept loop, so that Kafka's connection limits (service.kafka.limits)
can hold accepting back, as Kafka's acceptor does: an asyncio or uvloop server accepts whatever
arrives and cannot be paused. A connection's requests and answers are bounded three ways:
`queued.max.requests` requests handled at once, `queued.max.request.bytes` of requests held over
all connections (the framing stops reading), and `connection.queued.max.response.bytes` of
answers it has not taken (no further request of it is read). `connections.max.idle.ms` closes a
connection nothing moved on.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import socket
import ssl
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from service.config import BrokerConfig, ConfigError, Listener, parse_ip_overrides
from service.kafka import throttle
from service.kafka.apis import HANDLERS
from service.kafka.apis.api_versions import unsupported_version_answer
from service.kafka.context import Connection, FileRange, LazyPart, RequestContext, SplicedResponse
from service.kafka.decoding import MalformedRequest, decode_request
from service.kafka.framing import FramedConnection, FrameTooLarge
from service.kafka.limits import ConnectionQuotas, ConnectionSettings, RequestMemory, Slot, Throttled, client_ip
from service.kafka.messages import encode_response, response_schema
from service.kafka.sasl import SASL_HANDSHAKE, NotAllowed, SaslSession, Stage
from service.kafka.versions import API_RANGES, api_name
from service.logsafe import printable

if TYPE_CHECKING:
    from service.auth import Authentication
    from service.services import Services
    from service.telemetry import Telemetry

log = logging.getLogger("sediment.kafka")

_HEAD = struct.Struct(">hhi")
_SIZE = struct.Struct(">i")
_SASL_HANDSHAKE_KEY = SASL_HANDSHAKE.to_bytes(2, "big")  # a re-authentication starts with it
_TLS_HANDSHAKE_TIMEOUT_S = 10.0
_COPY_CHUNK = 1 << 20  # file ranges sent over TLS are copied this much at a time
_LINGER_S = 1.0  # after a failed authentication's answer, how long the client may take to close
_BACKLOG = 100  # the listen backlog, asyncio's default: where connections wait while accepting is held
_ACCEPT_RETRY_S = 1.0  # after accept() fails for want of descriptors, as asyncio's own server waits


class _Close(Exception):
    """Close this connection (after the answers already queued)."""


@dataclass(eq=False)
class _Session:
    """The server's side of one connection: the requests it is handling and the answers it owes."""

    conn: Connection
    framed: FramedConnection
    in_flight: int = 0  # requests being handled
    unsent: int = 0  # bytes of answers made and not yet handed to the socket
    paid: asyncio.Event = field(default_factory=asyncio.Event)  # set whenever unsent drops
    # Requests read before the bound was reached, waiting to make their answers, in order.
    gate: collections.deque[asyncio.Future[None]] = field(default_factory=collections.deque)
    gate_turn: bool = False  # one of them was let through and has not yet made its answer
    muted_logged: bool = False
    task: asyncio.Task[None] | None = None
    sender: asyncio.Task[None] | None = None


@dataclass
class ServerStats:
    """What /metrics shows of the Kafka listeners beyond the connection counts."""

    unsent_peak: int = 0  # the most bytes of unsent answers any one connection has held


def _answer_size(answer: Any) -> int:
    """Bytes an answer puts on the wire (a spliced one's file ranges included: each holds an
    open file descriptor until it is sent)."""
    if answer is None:
        return 0
    if isinstance(answer, SplicedResponse):
        return answer.size
    return len(answer) + 4


class _PartFailed(Exception):
    """A lazy part could not make its bytes after the answer's length went out."""


def _server_name_hook(previous: Callable[[Any], object]) -> Callable[[Any], object]:
    """A TLS listener's ClientHello callback runs only once CPython has decoded the client's
    server name (SNI) as ASCII. A name that is not ASCII (a broken or hostile client) never
    reaches it: CPython reports an "Exception ignored" traceback on stderr and fails the
    handshake with an alert. The refusal is right; this makes its report one warning line."""

    def hook(unraisable: Any) -> None:
        e = unraisable.exc_value
        if isinstance(e, UnicodeDecodeError) and e.encoding == "ascii" and isinstance(unraisable.object, bytes):
            log.warning("TLS handshake refused: the client's server name %s is not ASCII",
                        printable(unraisable.object[:256]))
            return
        previous(unraisable)
    return hook


class KafkaServer:
    """The Kafka listeners: `bind()` takes the ports (a port-0 listener gets one from the
    system), `serve(services)` starts accepting, once the broker knows what to advertise."""

    def __init__(self, config: BrokerConfig, auth: Authentication, telemetry: Telemetry,
                 listeners: list[Listener] | None = None) -> None:
        self._auth = auth
        self._telemetry = telemetry
        self._listeners = config.listeners if listeners is None else listeners
        self._services: Services | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._handshakes: set[asyncio.Task[None]] = set()  # TLS handshakes of accepted connections
        self._previous_hook: Callable[[Any], object] | None = None  # sys.unraisablehook before bind()
        self._max_reauth_ms = int(config["connections.max.reauth.ms"])
        self._failed_auth_delay_ms = int(config["connection.failed.authentication.delay.ms"])
        self._max_request = int(config["socket.request.max.bytes"])
        self._queue_depth = int(config["queued.max.requests"])
        self._config = config
        idle_ms = int(config["connections.max.idle.ms"])
        self._idle_s = idle_ms / 1000 if idle_ms >= 0 else None
        self._idle_ms = idle_ms
        self._max_unsent = int(config["connection.queued.max.response.bytes"])
        self.memory = RequestMemory(int(config["queued.max.request.bytes"]))
        names = [l.name for l in self._listeners]
        self.limits = ConnectionQuotas(ConnectionSettings.from_config(config, names), names)
        self.stats = ServerStats()
        self._sockets: list[tuple[Listener, list[socket.socket]]] = []
        self._acceptors: list[asyncio.Task[None]] = []
        self._throttled: dict[socket.socket, asyncio.TimerHandle] = {}
        self._sessions: set[_Session] = set()
        self._tls: dict[str, ssl.SSLContext] = {}  # the TLS listeners' contexts
        self.bound: dict[str, tuple[str, int]] = {}

    async def bind(self) -> None:
        if any(l.security_protocol in ("SSL", "SASL_SSL") for l in self._listeners):
            self._previous_hook = sys.unraisablehook
            sys.unraisablehook = _server_name_hook(self._previous_hook)
        self.limits.set_ip_overrides(await _resolve_overrides(self._config["max.connections.per.ip.overrides"]))
        for listener in self._listeners:
            socks = await _listen(listener)
            self._sockets.append((listener, socks))
            self.bound[listener.name] = socks[0].getsockname()[:2]
            if (context := self._tls_context(listener)) is not None:
                self._tls[listener.name] = context

    async def serve(self, services: Services) -> None:
        self._services = services
        loop = asyncio.get_running_loop()
        for listener, socks in self._sockets:
            for sock in socks:
                self._acceptors.append(loop.create_task(self._accept_loop(listener, sock)))
            log.info("listening on %s://%s:%d", listener.name, *self.bound[listener.name])

    async def _accept_loop(self, listener: Listener, lsock: socket.socket) -> None:
        """Kafka's acceptor: accept, wait while a limit holds the listener back, then refuse the
        address if it is over its own limits, else serve the connection."""
        loop = asyncio.get_running_loop()
        tls = listener.security_protocol in ("SSL", "SASL_SSL")
        while True:
            try:
                sock, addr = await loop.sock_accept(lsock)
            except (ConnectionAbortedError, ConnectionResetError):  # gone before it was accepted
                continue
            except OSError as e:  # out of descriptors, most likely: let some close first
                log.warning("accepting a connection on %s failed: %s; trying again in %.0f s", listener.name, e,
                            _ACCEPT_RETRY_S)
                await asyncio.sleep(_ACCEPT_RETRY_S)
                continue
            # As Kafka's acceptor: the one connection just accepted waits here while a limit holds
            # (the next ones wait in the listen backlog).
            try:
                slot = await self.limits.acquire(listener.name)
            except BaseException:
                sock.close()
                raise
            refused = self.limits.admit(slot, str(addr[0]))
            if isinstance(refused, Throttled):
                log.info("refused connection from %s on %s: over its connection creation rate of %d/s; closing "
                         "it in %d ms", client_ip(str(addr[0])), listener.name, refused.rate,
                         refused.delay_s * 1000)
                self._throttled[sock] = loop.call_later(refused.delay_s, self._close_throttled, sock)
                continue
            if refused is not None:
                # Kafka's line: "Rejected connection from <ip>, address already has the configured maximum".
                log.info("refused connection from %s on %s: the address already has the %d connections "
                         "max.connections.per.ip%s allows", client_ip(str(addr[0])), listener.name, refused.limit,
                         ".overrides" if refused.override else "")
                sock.close()
                continue
            if tls:  # the handshake runs beside the accept loop, not in its way
                task = loop.create_task(self._tls_handshake(listener, sock, addr, slot))
                self._handshakes.add(task)
                task.add_done_callback(self._handshakes.discard)
                continue
            framed = self._framed(listener, slot)
            try:
                # mypy cannot infer a lambda whose default binds the protocol as a protocol factory
                await loop.connect_accepted_socket(lambda f=framed: f, sock)  # type: ignore[misc]
            except OSError as e:
                log.info("connection from %s on %s lost before it was served: %s", addr[0], listener.name, e)
                sock.close()
                slot.release()

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

    def _close_throttled(self, sock: socket.socket) -> None:
        self._throttled.pop(sock, None)
        sock.close()

    def _framed(self, listener: Listener, slot: Slot) -> FramedConnection:
        framed = FramedConnection(self._max_request, _HEAD.size, lambda c: self._on_connect(listener, c),
                                  memory=self.memory, idle_s=self._idle_s)
        framed.on_lost = slot.release
        return framed

    async def _tls_handshake(self, listener: Listener, sock: socket.socket, peer: Any, slot: Slot) -> None:
        """TLS over an accepted connection; the framing starts once the handshake is done. On
        failure the transport made for the handshake closes the socket."""
        framed = self._framed(listener, slot)
        context = self._tls[listener.name]
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: framed, sock, ssl=context, ssl_handshake_timeout=_TLS_HANDSHAKE_TIMEOUT_S)
        except (TimeoutError, ssl.SSLError, ConnectionError, OSError) as e:
            # An untrusted or missing client certificate ends here (the client sees the alert).
            log.warning("TLS handshake with %s:%s on %s failed: %s", peer[0], peer[1], listener.name, e)
            slot.release()
        except BaseException:
            slot.release()
            raise

    async def close(self) -> None:
        if self._previous_hook is not None:
            sys.unraisablehook = self._previous_hook
            self._previous_hook = None
        for task in self._acceptors:
            task.cancel()
        await asyncio.gather(*self._acceptors, return_exceptions=True)
        for _, socks in self._sockets:
            for sock in socks:
                sock.close()
        for sock, handle in list(self._throttled.items()):
            handle.cancel()
            sock.close()
        self._throttled.clear()
        for task in list(self._handshakes):
            task.cancel()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)

    @property
    def unsent_bytes(self) -> int:
        """Bytes of answers made and not yet handed to a socket, over all connections."""
        return sum(s.unsent for s in self._sessions)

    async def _on_connect(self, listener: Listener, framed: FramedConnection) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = framed.get_extra_info("peername") or ("?", 0)
        conn = Connection(listener.name, str(peer[0]), int(peer[1]),
                          plaintext=framed.get_extra_info("sslcontext") is None)
        session = _Session(conn, framed, task=task)
        self._sessions.add(session)
        # Busy: a request is being handled, not waiting for the client to read its answers.
        framed.busy = lambda: session.in_flight > len(session.gate)
        framed.on_idle = lambda: self._expire(listener, session)
        try:
            if not self._authenticate_transport(listener, conn, framed):
                return
            await self._serve(session)
        finally:
            self._connections.discard(task)
            self._sessions.discard(session)
            framed.release_held()
            framed.close()

    def _expire(self, listener: Listener, s: _Session) -> None:
        """connections.max.idle.ms passed with nothing read or written and no request in hand."""
        log.info("closing connection from %s:%d on %s: idle for connections.max.idle.ms=%d",
                 s.conn.client_host, s.conn.client_port, listener.name, self._idle_ms)
        self.limits.stats[listener.name].closed_idle += 1
        # The sender first: cancelling it takes a sendfile in progress off the socket before the
        # socket goes. Answers not taken are dropped (a client that reads nothing gets nothing).
        if s.sender is not None:
            s.sender.cancel()
        if s.task is not None:
            s.task.cancel()
        s.framed.abort()

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
                            listener.name, printable(e))
                return False
            log.debug("client %s:%d on %s is %s", conn.client_host, conn.client_port, listener.name, conn.principal)
        return True

    async def _serve(self, s: _Session) -> None:
        conn, framed = s.conn, s.framed
        pending: asyncio.Queue[asyncio.Future[Any] | None] = asyncio.Queue(self._queue_depth)
        s.sender = sender = asyncio.create_task(self._send_loop(s, pending))
        try:
            while not sender.done():
                frame = await framed.read_frame()
                if conn.throttled_until or s.unsent > self._max_unsent:
                    try:
                        if conn.throttled_until:
                            await throttle.unmuted(conn)  # a throttled connection takes no request until its time is up
                        if s.unsent > self._max_unsent:
                            await self._wait_paid(s)
                    except BaseException:
                        self.memory.release(len(frame))  # the frame is dropped
                        raise
                sasl = conn.sasl
                serial = sasl is not None and (sasl.serial or bytes(frame[:2]) == _SASL_HANDSHAKE_KEY)
                try:
                    fut = self._start(s, frame)
                except _Close as e:
                    log.warning("closing %s:%d: %s", conn.client_host, conn.client_port, printable(e))
                    break
                await pending.put(fut)
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
        except asyncio.CancelledError:
            sender.cancel()  # closing: answers not yet sent are dropped
            raise
        finally:
            if not sender.done():
                # Answer what is queued, then stop; the sender may be gone meanwhile.
                put = asyncio.ensure_future(pending.put(None))
                await asyncio.wait([put, sender], return_when=asyncio.FIRST_COMPLETED)
                put.cancel()
            try:
                await sender
            except asyncio.CancelledError:
                pass

    def _start(self, s: _Session, frame: bytes | memoryview) -> asyncio.Future[Any]:
        """Start handling a request; its request memory goes back when the handling ends."""
        size = len(frame)
        try:
            fut = self._dispatch(s, frame)
        except BaseException:
            self.memory.release(size)
            raise
        s.in_flight += 1

        def finished(_: asyncio.Future[Any]) -> None:
            s.in_flight -= 1
            self.memory.release(size)

        fut.add_done_callback(finished)
        return fut

    def _log_unread(self, s: _Session) -> None:
        if not s.muted_logged:
            s.muted_logged = True
            log.info("connection from %s:%d holds %d bytes of answers it has not read "
                     "(connection.queued.max.response.bytes=%d): reading no more of its requests until it does",
                     s.conn.client_host, s.conn.client_port, s.unsent, self._max_unsent)

    async def _wait_paid(self, s: _Session) -> None:
        """The reader's half of the bound: read no further request while it is exceeded."""
        self._log_unread(s)
        while s.unsent > self._max_unsent and s.sender is not None and not s.sender.done():
            s.paid.clear()
            await s.paid.wait()

    async def _answer_turn(self, s: _Session) -> None:
        """The handlers' half: requests read before the bound was reached (a pipelined burst is
        taken whole before any of its answers exists) make their answers one at a time, in
        order, while the answers already made exceed it. Callers check first: a request under
        the bound, with none waiting, goes straight on."""
        self._log_unread(s)
        fut = asyncio.get_running_loop().create_future()
        s.gate.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.cancelled():
                if fut in s.gate:
                    s.gate.remove(fut)
            else:  # let through, then cancelled: pass the turn on
                s.gate_turn = False
                self._open_gate(s)
            raise
        s.gate_turn = False
        # The next one's turn is looked at after this handler's first step: an answer made at
        # once is counted by then.
        asyncio.get_running_loop().call_soon(self._open_gate, s)

    def _open_gate(self, s: _Session) -> None:
        if s.gate and not s.gate_turn and s.unsent <= self._max_unsent:
            s.gate_turn = True
            s.gate.popleft().set_result(None)

    def _owe(self, s: _Session, answer: Any) -> None:
        s.unsent += _answer_size(answer)
        if s.unsent > self.stats.unsent_peak:
            self.stats.unsent_peak = s.unsent

    def _pay(self, s: _Session, size: int) -> None:
        s.unsent -= size
        s.paid.set()
        if s.gate:
            self._open_gate(s)

    def _dispatch(self, s: _Session, frame: bytes | memoryview) -> asyncio.Future[Any]:
        conn = s.conn
        if conn.sasl is not None and conn.sasl.stage is Stage.RAW_TOKENS:
            return asyncio.create_task(self._raw_token(s, bytes(frame)))
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
            self._owe(s, done.result())
            return done
        if rng is None or api_key not in HANDLERS:
            raise _Close(f"unknown API key {api_key}")
        if not rng.served(version):
            raise _Close(f"unsupported {rng.name} version {version}")
        try:
            header, request = decode_request(api_key, version, frame)
        except MalformedRequest as e:  # as Kafka: an unparseable request closes its connection
            raise _Close(f"malformed {rng.name} v{version} request: {e}") from None
        assert self._services is not None, "a connection before serve()"
        ctx = RequestContext(
            services=self._services, conn=conn, api_key=api_key, version=version,
            correlation_id=correlation_id, client_id=header.client_id,
            schema=response_schema(api_key, version), size=len(frame),
        )
        if self._services.quotas.active:
            throttle.arrived(ctx)  # a produce's bytes count now: a throttle mutes before the next frame
        return asyncio.create_task(self._run(ctx, request, s))

    async def _raw_token(self, s: _Session, token: bytes) -> bytes | None:
        """A SASL token without a Kafka header (after SaslHandshake v0); the answer is raw too."""
        conn = s.conn
        assert conn.sasl is not None
        if s.gate or s.unsent > self._max_unsent:
            await self._answer_turn(s)
        out = await conn.sasl.authenticate(conn, token)
        answer = None if out.error_code else out.auth_bytes  # a failure just closes (after the delay)
        self._owe(s, answer)
        return answer

    async def _run(self, ctx: RequestContext, request: Any, s: _Session) -> bytes | SplicedResponse | None:
        """The request's answer, counted as owed to the connection the moment it is made."""
        if s.gate or s.unsent > self._max_unsent:  # (checked here: no coroutine per request under the bound)
            await self._answer_turn(s)
        name = api_name(ctx.api_key)
        with self._telemetry.request_span(name, ctx) as span:
            try:
                handler = HANDLERS[ctx.api_key]
                response = await (throttle.run(ctx, handler, request) if ctx.quotas.request.enabled
                                  else handler(ctx, request))
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.exception("%s v%d from %s failed", name, ctx.version, printable(ctx.client_id))
                span.record_exception(e)
                raise _Close(f"{name} handler failed: {e}") from e
            for k, v in ctx.span_attributes.items():
                span.set_attribute(k, v)
        if response is None or isinstance(response, (bytes, SplicedResponse)):
            answer = response
        else:
            try:
                answer = encode_response(ctx.correlation_id, response)
            except Exception as e:  # a handler built what its version cannot carry: a bug, logged as one
                log.exception("%s v%d from %s: the answer cannot be encoded", name, ctx.version,
                              printable(ctx.client_id))
                raise _Close(f"{name} answer cannot be encoded: {e}") from e
        self._owe(s, answer)
        return answer

    async def _send_loop(self, s: _Session, pending: asyncio.Queue[asyncio.Future[Any] | None]) -> None:
        conn, writer = s.conn, s.framed
        loop = asyncio.get_running_loop()
        try:
            while (fut := await pending.get()) is not None:
                try:
                    answer = await fut
                except _Close as e:
                    log.warning("closing %s:%d: %s", conn.client_host, conn.client_port, printable(e))
                    break
                size = _answer_size(answer)
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
                    self._pay(s, size)
                    continue
                try:
                    await self._send_spliced(loop, writer, answer, conn.plaintext)
                    self._pay(s, size)
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
            s.paid.set()  # a reader waiting for answers to go out: none will
            writer.close()

    async def _linger(self, framed: FramedConnection) -> None:
        """Let the client read a failure answer and close first: some clients drop an answer
        that arrives together with the server's close. Frames sent meanwhile are ignored."""
        try:
            async with asyncio.timeout(_LINGER_S):
                while True:
                    self.memory.release(len(await framed.read_frame()))
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


async def _listen(listener: Listener) -> list[socket.socket]:
    """The listening sockets of a listener, bound as asyncio's create_server binds them (every
    address of the host, SO_REUSEADDR, IPv6 sockets IPv6 only); a port-0 listener's addresses all
    take the port the first one got."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(listener.host, listener.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    port = listener.port
    for family, kind, proto, _, addr in dict.fromkeys(infos):
        sock = socket.socket(family, kind, proto)
        socks.append(sock)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((addr[0], port, *addr[2:]))
            port = sock.getsockname()[1]
            sock.listen(_BACKLOG)
            sock.setblocking(False)
        except OSError as e:
            for s in socks:
                s.close()
            raise OSError(e.errno, f"error while attempting to bind on address {(addr[0], port)!r}: "
                                   f"{(e.strerror or str(e)).lower()}") from None
    return socks


async def _resolve_overrides(value: str) -> dict[str, int]:
    """max.connections.per.ip.overrides by address: a host name counts for each of its addresses
    (Kafka resolves it once, at start-up, too)."""
    loop = asyncio.get_running_loop()
    out: dict[str, int] = {}
    for host, count in parse_ip_overrides(value).items():
        try:
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError as e:
            raise ConfigError("max.connections.per.ip.overrides", f"cannot resolve host {host!r}: {e}") from None
        for info in infos:
            out[client_ip(str(info[4][0]))] = count
    return out
