"""moto's S3 server as a subprocess, and a fault-injecting HTTP proxy in front of it.

Used by the fault trials (`python -m loadtest.faults`), the replay benchmark and the
integration tests (through tests/moto_server.py, which re-exports these names).

Faults the proxy injects, per request: an S3 error answer (503 SlowDown or 500
InternalError), a connection reset (RST, nothing answered), a stall (the request is held
`delay_s` before it is served; longer than the client's timeout, that is a timeout), and an
outage (`outage=True`: every request fails the configured way until it is turned off).
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO


class MotoServer:
    """`moto_server` on a free 127.0.0.1 port; `port` and `url` once started."""

    def __init__(self) -> None:
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self._output: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        """moto binds port 0 itself and prints the port it got: no other process can take a
        port between our choosing it and moto binding it."""
        exe = Path(sys.executable).parent / "moto_server"
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "moto.server"]
        # Its output goes to a file, not a pipe nobody reads: moto logs every request.
        self._output = tempfile.TemporaryFile()  # noqa: SIM115 - outlives this call, closed with the server
        self.proc = subprocess.Popen(
            cmd + ["-H", "127.0.0.1", "-p", "0"],
            stdout=self._output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            self.port = self.port or self._announced_port()
            if self.port and self._answers():
                return
            time.sleep(0.1)  # poll interval while it boots
        output = self._printed()
        self.stop()
        raise RuntimeError(f"moto_server did not answer in time: {output[-400:]!r}")

    def _printed(self) -> bytes:
        assert self._output is not None
        self._output.seek(0)
        return self._output.read()

    def _announced_port(self) -> int:
        """The port from werkzeug's ` * Running on http://127.0.0.1:PORT` line; 0 until then."""
        found = re.search(rb"Running on http://127\.0\.0\.1:(\d+)", self._printed())
        return int(found.group(1)) if found else 0

    def _answers(self) -> bool:
        try:
            urllib.request.urlopen(self.url + "/moto-api/", timeout=1).close()
        except urllib.error.HTTPError:
            return True  # an error status is an answer
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self._output is not None:
            self._output.close()
            self._output = None


SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class FaultProxy:
    """An HTTP proxy in front of `upstream` that fails the first `fail_next` requests.

    Failed requests get `fail_status` with an S3 SlowDown body (or an InternalError for 500).
    Every connection carries one request (the proxy asks both sides to close), which keeps the
    counting exact even though the client pools connections.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.fail_next = 0  # fail this many next requests; -1: fail all
        self.fail_every = 0  # when > 0, also fail every fail_every-th request
        self.fail_when: Callable[[bytes], bool] | None = None  # or a predicate on the request line, e.g. a part number
        self._handlers: set[asyncio.Task] = set()
        self.fail_status = 503
        # "status": answer fail_status; "reset": drop the connection with an RST instead.
        self.fail_mode = "status"
        # An outage: every request fails (fail_mode), as fail_next = -1, but switchable alone.
        self.outage = False
        self.resets = 0
        # Slow store: hold matching requests this long before serving them (0: never). With
        # delay_when None every request is held; a delay longer than the client's timeout is a
        # timeout as the client sees it.
        self.delay_s = 0.0
        self.delay_when: Callable[[bytes], bool] | None = None
        self.delayed = 0
        self.requests = 0
        self.failed = 0
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # a connection handler runs as a task
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            writer.close()  # stopped: asyncio would report a cancelled handler as an error
        finally:
            self._handlers.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        self.requests += 1
        lines = head[:-4].split(b"\r\n")
        if self.delay_s > 0 and (self.delay_when is None or self.delay_when(lines[0])):
            self.delayed += 1
            await asyncio.sleep(self.delay_s)
        headers = [l for l in lines[1:] if not l.lower().startswith(b"connection:")]
        fields = {l.split(b":", 1)[0].strip().lower(): l.split(b":", 1)[1].strip() for l in headers}
        try:
            every = self.fail_every > 0 and self.requests % self.fail_every == 0
            every = every or (self.fail_when is not None and self.fail_when(lines[0]))
            if self.fail_next != 0 or every or self.outage:
                if self.fail_next > 0 and not every:
                    self.fail_next -= 1
                self.failed += 1
                if self.fail_mode == "reset":
                    self.resets += 1
                    _reset(writer)
                    return
                if b"100-continue" not in fields.get(b"expect", b"").lower():
                    length = int(fields.get(b"content-length", b"0"))
                    if length:
                        await reader.readexactly(length)
                if self.fail_status == 500:
                    status, body = b"500 Internal Server Error", SLOW_DOWN.replace(
                        b"SlowDown", b"InternalError"
                    )
                else:
                    status, body = b"503 Slow Down", SLOW_DOWN
                writer.write(
                    b"HTTP/1.1 " + status + b"\r\nContent-Type: application/xml\r\n"
                    b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
                    # An answer to HEAD has no body, as S3 answers it (a client would reject one).
                    + (b"" if lines[0].startswith(b"HEAD ") else body)
                )
                await writer.drain()
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            up_writer.write(b"\r\n".join([lines[0], *headers, b"Connection: close"]) + b"\r\n\r\n")
            to_upstream = asyncio.create_task(_pipe(reader, up_writer))
            try:
                while True:  # interim 100 Continue answers, then the final head
                    rhead = await up_reader.readuntil(b"\r\n\r\n")
                    rlines = rhead[:-4].split(b"\r\n")
                    if b" 100 " in rlines[0] + b" ":
                        writer.write(rhead)
                        continue
                    rlines = [rlines[0]] + [
                        l for l in rlines[1:] if not l.lower().startswith(b"connection:")
                    ] + [b"Connection: close"]
                    writer.write(b"\r\n".join(rlines) + b"\r\n\r\n")
                    break
                while chunk := await up_reader.read(65536):
                    writer.write(chunk)
                    await writer.drain()
            finally:
                to_upstream.cancel()
                up_writer.close()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0, so the peer sees ECONNRESET rather than an orderly close."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass


class ThreadedFaultProxy(FaultProxy):
    """A FaultProxy on its own event loop in a daemon thread, for synchronous tests (a broker
    process talks to it). Set the fault attributes from the test thread; `stop()` at the end."""

    def start_in_thread(self) -> ThreadedFaultProxy:
        import threading

        self._loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self.start())
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def clear_faults(self) -> None:
        self.fail_next = 0
        self.fail_every = 0
        self.fail_when = None
        self.fail_mode = "status"
        self.outage = False
        self.delay_s = 0.0
        self.delay_when = None

    def stop_thread(self) -> None:
        self.clear_faults()
        future = asyncio.run_coroutine_threadsafe(self.stop(), self._loop)
        try:
            future.result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
