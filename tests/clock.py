"""A fake clock for tests: time moves only when a sleep or the test moves it."""

from __future__ import annotations

import asyncio


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
