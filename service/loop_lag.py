"""Event-loop lag: how late a periodic wake-up fires.

Blocking work on the loop (a synchronous fsync, a large read) delays every timer behind it;
the delay of a timer that should fire every `interval` seconds measures that directly. The
broker exports the latest and the largest observed lag on /metrics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

DEFAULT_INTERVAL_S = 0.25


class LoopLagMonitor:
    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._sleep = sleep
        self.current_s = 0.0  # lag of the latest wake-up
        self.max_s = 0.0  # largest lag since start
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def run(self) -> None:
        while True:
            due = self._clock() + self.interval_s
            await self._sleep(self.interval_s)
            self.record(self._clock() - due)

    def record(self, lag_s: float) -> None:
        lag_s = max(lag_s, 0.0)  # a timer never fires early; clock granularity can say so
        self.current_s = lag_s
        self.max_s = max(self.max_s, lag_s)
        self.samples += 1
