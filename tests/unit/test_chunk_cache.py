"""The remote chunk cache on disk: file work never runs on the event loop, the files never
exceed the byte bound, and the index stays exact under concurrent gets and puts (the same key
included). Slow or gated file operations are injected; nothing waits on a fixed sleep."""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
import time
from pathlib import Path

from tiering.remote.reader import CacheFiles, ChunkCache

GATE_TIMEOUT_S = 10.0


class GatedFiles(CacheFiles):
    """File operations that, once armed, block in their thread until the test releases them.
    Had one run on the event loop, the test could not release it: it would time out instead,
    and `released_in_time` would say so."""

    def __init__(self, gated: set[str]) -> None:
        self.gated = gated
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()
        self.released_in_time: list[bool] = []

    def _gate(self, op: str) -> None:
        if self.armed and op in self.gated:
            self.entered.set()
            self.released_in_time.append(self.release.wait(GATE_TIMEOUT_S))

    def read(self, path: Path) -> bytes:
        self._gate("read")
        return super().read(path)

    def write(self, path: Path, data: bytes) -> None:
        self._gate("write")
        super().write(path, data)

    def unlink(self, path: Path) -> None:
        self._gate("unlink")
        super().unlink(path)


class Ticker:
    """A coroutine that counts how often the loop let it run."""

    def __init__(self) -> None:
        self.ticks = 0
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            self.ticks += 1
            await asyncio.sleep(0)

    async def runs_meanwhile(self) -> bool:
        before = self.ticks
        for _ in range(5):
            await asyncio.sleep(0)
        return self.ticks > before

    def stop(self) -> None:
        self.task.cancel()


def _on_disk(directory: Path) -> tuple[int, int]:
    """(files, bytes) in the cache directory, temporaries included."""
    files = [p for p in directory.iterdir() if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


async def _blocked_while_loop_runs(files: GatedFiles, op: asyncio.Task[object], ticker: Ticker) -> None:
    assert await asyncio.to_thread(files.entered.wait, GATE_TIMEOUT_S)
    assert not op.done() and await ticker.runs_meanwhile()
    files.release.set()
    await op
    assert files.released_in_time and all(files.released_in_time)
    files.entered.clear()
    files.release.clear()
    files.released_in_time.clear()


async def test_eviction_and_writes_run_off_the_event_loop(tmp_path: Path) -> None:
    files = GatedFiles({"unlink", "write", "read"})
    cache = ChunkCache(tmp_path / "cache", 100, files)
    await cache.start()
    await cache.put("a", b"a" * 60)
    ticker = Ticker()
    try:
        files.armed = True
        files.gated = {"unlink"}  # b evicts a: the unlink blocks, the loop goes on
        await _blocked_while_loop_runs(files, asyncio.create_task(cache.put("b", b"b" * 60)), ticker)
        files.gated = {"write"}
        await _blocked_while_loop_runs(files, asyncio.create_task(cache.put("c", b"c" * 30)), ticker)
        files.gated = {"read"}
        get = asyncio.create_task(cache.get("c"))
        await _blocked_while_loop_runs(files, get, ticker)
        assert get.result() == b"c" * 30
        files.gated = {"unlink"}  # a forget is a change like an eviction
        await _blocked_while_loop_runs(files, asyncio.create_task(cache.forget("c")), ticker)
    finally:
        ticker.stop()
    assert await cache.get("a") is None and await cache.get("b") == b"b" * 60 and await cache.get("c") is None
    assert (cache.size, len(cache)) == (60, 1) and _on_disk(tmp_path / "cache") == (1, 60)


class SlowCheckedFiles(CacheFiles):
    """Writes that take a while (a thread sleep of up to 3 ms, so puts overlap) and check,
    before each write, that the new file fits in the bound next to what is on disk."""

    def __init__(self, directory: Path, max_bytes: int, seed: int) -> None:
        self.directory, self.max_bytes = directory, max_bytes
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.over: list[int] = []

    def write(self, path: Path, data: bytes) -> None:
        with self.lock:
            delay = self.rng.random() * 0.003
        time.sleep(delay)
        _, used = _on_disk(self.directory)
        if used + len(data) > self.max_bytes:
            self.over.append(used + len(data))
        super().write(path, data)


def _chunk(key: str) -> bytes:
    """A key's bytes (the same chunk is always the same bytes); 1 to 30 KiB."""
    digest = hashlib.sha256(key.encode()).digest()
    return digest * (1 + int.from_bytes(digest[:2], "big") % 960)


async def test_concurrent_gets_and_puts_keep_the_bound_and_the_index_exact(tmp_path: Path) -> None:
    limit = 64 * 1024
    directory = tmp_path / "cache"
    files = SlowCheckedFiles(directory, limit, seed=3)
    cache = ChunkCache(directory, limit, files)
    await cache.start()
    rng = random.Random(11)
    keys = [f"segment/{i}" for i in range(20)]
    wrong: list[str] = []

    async def reader(key: str) -> None:
        got = await cache.get(key)
        if got is not None and got != _chunk(key):
            wrong.append(key)

    for _ in range(5):
        ops = []
        for _ in range(60):  # keys repeat: the same chunk is put by several readers at once
            key = rng.choice(keys)
            ops.append(cache.put(key, _chunk(key)) if rng.random() < 0.6 else reader(key))
        await asyncio.gather(*ops)
        count, used = _on_disk(directory)
        assert (len(cache), cache.size) == (count, used)
        assert used <= limit
    assert files.over == [] and wrong == []
    for key in keys:
        got = await cache.get(key)
        assert got is None or got == _chunk(key)


async def test_a_put_whose_caller_is_cancelled_still_lands_and_is_counted(tmp_path: Path) -> None:
    files = GatedFiles({"write"})
    cache = ChunkCache(tmp_path / "cache", 100, files)
    await cache.start()
    files.armed = True
    put = asyncio.create_task(cache.put("k", b"k" * 40))
    assert await asyncio.to_thread(files.entered.wait, GATE_TIMEOUT_S)
    put.cancel()
    second = asyncio.create_task(cache.put("j", b"j" * 30))  # waits for the first change to end
    files.gated = set()
    files.release.set()
    await second
    assert put.cancelled()
    assert (cache.size, len(cache)) == (70, 2) and _on_disk(tmp_path / "cache") == (2, 70)
    assert await cache.get("k") == b"k" * 40


async def test_an_entry_evicted_while_it_is_read_is_a_miss(tmp_path: Path) -> None:
    files = GatedFiles({"read"})
    cache = ChunkCache(tmp_path / "cache", 100, files)
    await cache.start()
    await cache.put("old", b"o" * 70)
    files.armed = True
    get = asyncio.create_task(cache.get("old"))
    assert await asyncio.to_thread(files.entered.wait, GATE_TIMEOUT_S)
    await cache.put("new", b"n" * 70)  # evicts "old" while its read waits
    files.release.set()
    assert await get is None
    assert (cache.size, len(cache)) == (70, 1) and _on_disk(tmp_path / "cache") == (1, 70)
