"""FramedConnection on a real loopback socket: frames of every size, split any way, come out whole."""

from __future__ import annotations

import asyncio
import os
import struct

import pytest

from service.kafka.framing import FramedConnection, FrameTooLarge


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
