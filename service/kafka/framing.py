"""Kafka framing over asyncio: int32 size-prefixed frames in, bytes and file ranges out.

A BufferedProtocol lets the kernel copy a large request straight into that request's own buffer
(StreamReader would copy it twice more: into its buffer, then out of it). Small frames share one
receive buffer. Reading pauses while frames wait to be taken, so a client that pipelines more
than the broker handles is held back by TCP, not by the heap; it also pauses while the broker-wide
`queued.max.request.bytes` is used up (`RequestMemory`), and while the server mutes the connection.
A connection idle for `connections.max.idle.ms` (nothing read, nothing written, the server not
busy with it) is handed to `on_idle`.
"""

from __future__ import annotations

import asyncio
import collections
import os
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.kafka.limits import RequestMemory

_RECV_BUFFER = 256 * 1024
_MAX_QUEUED_FRAMES = 4


class FrameTooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(f"frame of {size} bytes")
        self.size = size


class FramedConnection(asyncio.BufferedProtocol):
    def __init__(self, max_frame: int, min_frame: int,
                 on_connect: Callable[[FramedConnection], Coroutine[Any, Any, None]], *,
                 memory: RequestMemory | None = None, idle_s: float | None = None) -> None:
        self._max_frame = max_frame
        self._min_frame = min_frame
        self._on_connect = on_connect
        self._buf = bytearray(_RECV_BUFFER)
        self._start = self._end = 0
        self._big: bytearray | None = None  # a frame larger than the receive buffer
        self._big_pos = 0
        self._frames: collections.deque[bytes | memoryview] = collections.deque()
        self._queued = 0  # bytes of the frames waiting to be taken
        self._error: BaseException | None = None  # delivered after the queued frames
        self._read_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._lost: asyncio.Future[None] | None = None  # set when the connection is gone
        # Why reading is paused: "frames" (enough wait to be taken), "error" (after a bad size
        # prefix), "memory" (queued.max.request.bytes used up), or the server's own reasons.
        self._mutes: set[str] = set()
        self._memory = memory
        self._held = 0  # request memory taken for the partly read large frame
        self._done = False  # the server is finished with it: take no more request memory
        self._idle_s = idle_s
        self._idle_timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()  # protocols are made by the loop they serve
        self.last_active = 0.0  # loop time of the last byte read or written
        self.busy: Callable[[], bool] = lambda: False  # the server is handling a request of it
        self.on_idle: Callable[[], None] = self.abort
        self.on_lost: Callable[[], None] | None = None  # e.g. give back the connection's slot
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None

    # -- protocol callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream server's transport is a Transport
        loop = self._loop
        self._lost = loop.create_future()
        self.last_active = loop.time()
        if self._idle_s is not None:
            self._idle_timer = loop.call_later(self._idle_s, self._check_idle)
        self.task = loop.create_task(self._on_connect(self))

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._big is not None:
            return memoryview(self._big)[self._big_pos:]
        return memoryview(self._buf)[self._end:]

    def buffer_updated(self, nbytes: int) -> None:
        self.mark_active()
        if self._big is not None:
            self._big_pos += nbytes
            if self._big_pos == len(self._big):
                self._held = 0  # the frame's memory goes with it to the server
                self._push(memoryview(self._big).toreadonly())  # the codec takes read-only buffers
                self._big = None
            return
        self._end += nbytes
        self._split()

    def eof_received(self) -> bool:
        self._fail(ConnectionResetError("connection closed by the client"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("connection closed"))
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        # Let go of the receive buffer and the transport (with TLS, its own 256 KiB buffer and
        # the OpenSSL session) now: this object lives on in reference cycles with its tasks
        # until the cycle collector runs, and thousands of short hostile connections would
        # otherwise hold half a MiB each until then, and fragment the heap.
        self._buf = bytearray()
        self._big = None
        self.transport = None
        for w in self._drain_waiters:
            if not w.done():
                w.set_exception(ConnectionResetError("connection lost"))
        self._drain_waiters.clear()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self.on_lost is not None:
            self.on_lost()
            self.on_lost = None

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self.mark_active()  # the client reads its answers
        self._write_paused = False
        for w in self._drain_waiters:
            if not w.done():
                w.set_result(None)
        self._drain_waiters.clear()

    def set_min_frame(self, size: int) -> None:
        """Raw SASL token frames (SaslHandshake v0) may be shorter than a request header."""
        self._min_frame = size

    # -- reading on and off, idleness --------------------------------------------------------

    def mute(self, reason: str) -> None:
        self._mutes.add(reason)
        self.sync_reading()

    def unmute(self, reason: str) -> None:
        self._mutes.discard(reason)
        self.sync_reading()

    def sync_reading(self) -> None:
        """Make the transport read exactly while nothing mutes it."""
        t = self.transport
        if t is None or t.is_closing():
            return
        if self._mutes:
            if t.is_reading():
                t.pause_reading()
        elif not t.is_reading():
            t.resume_reading()

    def mark_active(self) -> None:
        self.last_active = self._loop.time()

    def _check_idle(self) -> None:
        self._idle_timer = None
        if self.transport is None or self._idle_s is None:
            return
        loop = asyncio.get_running_loop()
        due = self.last_active + self._idle_s
        if self.busy():  # a request is being handled (a long poll, an fsync): not idle
            due = loop.time() + self._idle_s
        elif due <= loop.time():
            self.on_idle()
            return
        self._idle_timer = loop.call_at(due, self._check_idle)

    def release_held(self) -> None:
        """The server is done with this connection: give back the request memory of frames it
        will not take (and of a partly read one)."""
        self._done = True
        if self._memory is None:
            return
        self._memory.forget(self)
        held = self._held + self._queued
        self._held = self._queued = 0
        self._frames.clear()
        if held:
            self._memory.release(held)

    def _take_memory(self, size: int) -> bool:
        if self._memory is None or self._memory.take(size):
            return True
        if not self._done:  # read on once requests in flight finish
            self._mutes.add("memory")
            self._memory.wait(self, self._memory_back)
            self.sync_reading()
        return False

    def _memory_back(self) -> None:
        self._mutes.discard("memory")
        if self._done:
            return
        if self._big is None:
            self._split()  # frames already received that found no memory
        self.sync_reading()

    # -- frames in -----------------------------------------------------------------------------

    def _split(self) -> None:
        buf = self._buf
        while self._error is None and self._end - self._start >= 4 and "memory" not in self._mutes:
            size = int.from_bytes(buf[self._start:self._start + 4], "big", signed=True)
            if size < self._min_frame or size > self._max_frame:
                self._fail(FrameTooLarge(size))
                return
            body = self._start + 4
            if self._end - body >= size:
                if not self._take_memory(size):
                    break
                self._push(bytes(memoryview(buf)[body:body + size]))  # one copy, not a slice's two
                self._start = body + size
                continue
            if size > len(buf) - 4:
                if not self._take_memory(size):  # taken before the large buffer is, as Kafka does
                    break
                self._held = size
                have = self._end - body
                self._big = bytearray(size)
                self._big[:have] = buf[body:self._end]
                self._big_pos = have
                self._start = self._end = 0
                return
            break
        self._compact()

    def _compact(self) -> None:
        if self._start:
            n = self._end - self._start
            self._buf[:n] = self._buf[self._start:self._end]
            self._start, self._end = 0, n

    def _push(self, frame: bytes | memoryview) -> None:
        self._frames.append(frame)
        self._queued += len(frame)
        # A few small frames, or one as large as the receive buffer, wait at most: a connection
        # whose requests are not being taken holds one large request, not several.
        if (len(self._frames) >= _MAX_QUEUED_FRAMES or self._queued >= _RECV_BUFFER) and "frames" not in self._mutes:
            self.mute("frames")
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
            if isinstance(exc, FrameTooLarge):
                self.mute("error")  # nothing after a bad size prefix is read
        self._wake()

    def _wake(self) -> None:
        if self._read_waiter is not None and not self._read_waiter.done():
            self._read_waiter.set_result(None)

    @property
    def frame_ready(self) -> bool:
        """Whether read_frame would return at once."""
        return bool(self._frames)

    async def read_frame(self) -> bytes | memoryview:
        """The next whole frame (without its size). Raises ConnectionError at the end of the
        stream and FrameTooLarge for a size outside the allowed range. With request memory,
        the caller gives the frame's length back to it once the request is answered."""
        while not self._frames:
            if self._error is not None:
                raise self._error
            self._read_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._read_waiter
            finally:
                self._read_waiter = None
        frame = self._frames.popleft()
        self._queued -= len(frame)
        if "frames" in self._mutes and len(self._frames) < _MAX_QUEUED_FRAMES // 2 and self._queued < _RECV_BUFFER // 2:
            self.unmute("frames")
        return frame

    # -- bytes out -----------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        # asyncio drops writes to a closing transport; uvloop raises RuntimeError: one error
        # for both, the one the senders expect.
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("connection closed")
        self.mark_active()
        self.transport.write(data)

    async def drain(self) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("connection closed")
        if self._write_paused:
            w: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(w)
            await w

    async def flushed(self) -> None:
        """Wait until everything written so far has gone to the kernel."""
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("connection closed")
        if not self.transport.get_write_buffer_size():
            return
        low, high = self.transport.get_write_buffer_limits()
        self.transport.set_write_buffer_limits(high=0, low=0)  # pauses now, resumes when empty
        try:
            await self.drain()
        finally:
            self.transport.set_write_buffer_limits(high=high, low=low)

    async def sendfile(self, fd: int, position: int, size: int) -> None:
        """Send a file range with the sendfile system call, after what is already written.

        Our own rather than loop.sendfile: uvloop has none, and asyncio's pauses reading on
        the connection while it sends, which pipelined requests need not wait for. The
        socket's descriptor is duplicated because a loop refuses to watch a transport's own."""
        await self.flushed()
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        sock = os.dup(self.transport.get_extra_info("socket").fileno())
        try:
            while size:
                try:
                    n = os.sendfile(sock, fd, position, size)
                except BlockingIOError:
                    await self._writable(loop, sock)
                    continue
                if n == 0:
                    raise ConnectionResetError(f"file ended {size} bytes before the range did")
                position += n
                size -= n
                self.mark_active()  # the client takes what is sent: not idle
        finally:
            os.close(sock)

    async def _writable(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        """Until the socket takes more bytes; raises if the connection is lost meanwhile (the
        duplicated descriptor would otherwise keep a closed connection's socket waiting)."""
        assert self._lost is not None  # made when the connection was
        ready: asyncio.Future[None] = loop.create_future()
        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_writer(fd, wake)
        try:
            await asyncio.wait((ready, self._lost), return_when=asyncio.FIRST_COMPLETED)
        finally:
            loop.remove_writer(fd)
            ready.cancel()
        if self._lost.done() or self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("connection closed")

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default) if self.transport else default

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        """Close at once, dropping what is still buffered (part of an answer that cannot be
        finished)."""
        if self.transport is not None:
            self.transport.abort()

