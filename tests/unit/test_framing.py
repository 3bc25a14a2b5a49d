"""FramedConnection on a real loopback socket: frames of every size, split any way, come out whole."""

from __future__ import annotations

import asyncio
import os
import struct

import pytest

from service.kafka.framing import FramedConnection, FrameTooLarge
from tests.clock import eventually


async def _serve(max_frame: int):
    got: asyncio.Queue = asyncio.Queue()

    async def on_connect(conn: FramedConnection) -> None:
        try:
            while True:
                await got.put(bytes(await conn.read_frame()))
        except (ConnectionError, FrameTooLarge) as e:
            await got.put(e)
        finally:
            conn.close()

    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FramedConnection(max_frame, 8, on_connect), "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], got


def _frame(body: bytes) -> bytes:
    return struct.pack(">i", len(body)) + body


async def test_frames_split_and_merged_arrive_whole():
    server, port, got = await _serve(8 << 20)
    bodies = [os.urandom(n) for n in (8, 100, 300_000, 12, 5 << 20, 70_000, 9)]
    stream = b"".join(_frame(b) for b in bodies)
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    pos, step = 0, 1
    while pos < len(stream):  # chunk sizes 1, 3, 9, ... up to 1 MiB: splits land everywhere
        writer.write(stream[pos:pos + step])
        await writer.drain()
        pos += step
        step = min(step * 3, 1 << 20)
    writer.write_eof()
    for body in bodies:
        assert await asyncio.wait_for(got.get(), 10) == body
    assert isinstance(await asyncio.wait_for(got.get(), 10), ConnectionError)
    writer.close()
    server.close()


@pytest.mark.parametrize("size", [1 << 20 + 1, -5, 3])
async def test_bad_size_prefix_fails_after_earlier_frames(size):
    server, port, got = await _serve(1 << 20)
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_frame(b"first-ok") + struct.pack(">i", size) + b"x" * 64)
    await writer.drain()
    assert await asyncio.wait_for(got.get(), 10) == b"first-ok"
    err = await asyncio.wait_for(got.get(), 10)
    assert isinstance(err, FrameTooLarge) and err.size == size
    writer.close()
    server.close()


# -- sendfile: on asyncio's loop and on uvloop, after what was written, whatever the socket takes --

def _on_loop(kind: str, main) -> None:
    import uvloop
    loop = uvloop.new_event_loop() if kind == "uvloop" else asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


async def _sending_server(send):
    """A server whose connection runs `send(conn)`; returns it, its port and the send's outcome."""
    outcome: asyncio.Future = asyncio.get_running_loop().create_future()

    async def on_connect(conn: FramedConnection) -> None:
        try:
            await send(conn)
            outcome.set_result(None)
        except BaseException as e:  # the test looks at what it was
            outcome.set_result(e)
        finally:
            conn.close()

    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FramedConnection(1 << 20, 8, on_connect), "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], outcome


@pytest.mark.parametrize("kind", ["asyncio", "uvloop"])
def test_sendfile_follows_written_bytes_through_a_slow_reader(tmp_path, kind, monkeypatch):
    data = os.urandom(24 << 20)  # far more than the socket buffers: sendfile must wait for room
    (tmp_path / "seg").write_bytes(data)
    real_sendfile, full = os.sendfile, []

    def sendfile(out_fd: int, in_fd: int, offset: int, count: int) -> int:
        try:
            return real_sendfile(out_fd, in_fd, offset, count)
        except BlockingIOError:
            full.append(offset)
            raise

    monkeypatch.setattr(os, "sendfile", sendfile)

    async def main():
        fd = os.open(tmp_path / "seg", os.O_RDONLY)

        async def send(conn: FramedConnection) -> None:
            conn.write(b"head" * 100_000)  # queued in the transport before the file range
            await conn.sendfile(fd, 1000, len(data) - 2000)
            conn.write(b"tail")
            await conn.drain()

        server, port, outcome = await _sending_server(send)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await eventually(lambda: bool(full))  # nothing read yet: the sender meets a full socket
        got = bytearray()
        while chunk := await reader.read(64 * 1024):
            got += chunk
        assert await outcome is None
        assert bytes(got) == b"head" * 100_000 + data[1000:-1000] + b"tail"
        writer.close()
        server.close()
        os.close(fd)

    _on_loop(kind, main)


@pytest.mark.parametrize("kind", ["asyncio", "uvloop"])
@pytest.mark.parametrize("closer", ["client", "broker"])
def test_sendfile_to_a_reader_that_never_reads_ends_when_either_side_closes(tmp_path, kind, closer):
    """The client goes away without reading, or the broker closes the connection (an idle or
    limit close) while the answer waits for room: the send fails instead of waiting on."""
    (tmp_path / "seg").write_bytes(os.urandom(32 << 20))

    async def main():
        fd = os.open(tmp_path / "seg", os.O_RDONLY)
        sending = asyncio.Event()
        conns: list[FramedConnection] = []

        async def send(conn: FramedConnection) -> None:
            conns.append(conn)
            sending.set()  # the peer never reads: the send blocks once the buffers are full
            await conn.sendfile(fd, 0, 32 << 20)

        server, port, outcome = await _sending_server(send)
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        await sending.wait()
        if closer == "client":
            writer.transport.abort()
        else:
            conns[0].abort()
        result = await asyncio.wait_for(outcome, 10)
        assert isinstance(result, ConnectionError), result
        writer.close()
        server.close()
        os.close(fd)

    _on_loop(kind, main)


async def test_lost_connection_lets_go_of_its_buffers_at_once():
    """A connection object can outlive its socket in reference cycles until the cycle
    collector runs: its receive buffer and transport (with TLS, OpenSSL's session and another
    buffer) must go when the connection is lost, or hostile short connections pile them up."""
    conns: list[FramedConnection] = []
    got: asyncio.Queue = asyncio.Queue()

    async def on_connect(conn: FramedConnection) -> None:
        conns.append(conn)
        try:
            while True:
                await got.put(bytes(await conn.read_frame()))
        except ConnectionError as e:
            await got.put(e)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FramedConnection(1 << 20, 8, on_connect), "127.0.0.1", 0)
    _, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    writer.write(_frame(b"last words"))
    await writer.drain()
    assert await asyncio.wait_for(got.get(), 10) == b"last words"
    writer.transport.abort()
    assert isinstance(await asyncio.wait_for(got.get(), 10), ConnectionError)
    (conn,) = conns
    assert conn.transport is None
    assert len(conn.get_buffer(-1)) == 0
    with pytest.raises(ConnectionResetError):  # an answer still on its way fails as the senders expect
        conn.write(b"dropped")
    with pytest.raises(ConnectionResetError):
        await conn.drain()
    server.close()
