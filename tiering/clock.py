"""The clock seam: a monotonic time source and a sleep that go together.

Parts whose behaviour depends on elapsed time take a Clock so that tests can hand in a fake
one that advances only when asked and records the sleeps requested, instead of measuring the
wall clock on a busy machine.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: time.monotonic and asyncio.sleep."""

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
