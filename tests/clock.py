"""Fake clocks and condition waits for tests: no test measures the wall clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class FakeClock:
    """Satisfies tiering.clock.Clock; records every sleep requested, in order."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)  # still a suspension point, as a real sleep is


class LoopClock:
    """Stands in for a running event loop's clock: loop time moves only when advanced, so
    call_later timers (session timeouts, rebalance delays) fire exactly when a test says.

    Nothing may sleep on the loop while it is installed: a sleep would never end.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.now = loop.time()

    def time(self) -> float:
        return self.now

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        # Due timers run in the next loop iteration; the second yield lets them finish.
        await asyncio.sleep(0)
        await asyncio.sleep(0)


async def until(predicate: Callable[[], bool], max_yields: int = 1000) -> None:
    """Yield to the loop until predicate holds: for tasks that need a few loop iterations
    to get going. Counts iterations, not time, so a busy machine cannot break it."""
    for _ in range(max_yields):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"not true after {max_yields} loop iterations")


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.01) -> None:
    """Wait until predicate holds, for work done by threads or timers on the real clock: the
    asyncio twin of wait_until in tests/integration/helpers.py. The timeout only bounds a
    failing test; a passing one returns as soon as the condition holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true after {timeout}s")
        await asyncio.sleep(interval)
