"""The event-loop lag monitor, driven by an injected clock and sleep: no real time passes."""

from __future__ import annotations

import asyncio

from service.loop_lag import LoopLagMonitor


class FakeTime:
    """A clock that a fake sleep advances by the requested interval plus a scripted delay
    (what a blocked loop adds); the monitor is stopped once the script is used up."""

    def __init__(self, delays: list[float]) -> None:
        self.now = 100.0
        self.delays = list(delays)
        self.done = asyncio.Event()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if not self.delays:
            self.done.set()
            await asyncio.Event().wait()  # parked until the monitor is cancelled
        self.now += seconds + self.delays.pop(0)


async def test_lag_is_how_late_each_wake_up_fires() -> None:
    fake = FakeTime([0.0, 0.75, 0.125, -0.001])
    monitor = LoopLagMonitor(0.5, clock=fake.clock, sleep=fake.sleep)
    seen: list[tuple[float, float]] = []
    record = monitor.record

    def spy(lag_s: float) -> None:
        record(lag_s)
        seen.append((monitor.current_s, monitor.max_s))

    monitor.record = spy  # type: ignore[method-assign]  # a spy around the real method
    monitor.start()
    await asyncio.wait_for(fake.done.wait(), 10)
    await monitor.close()
    assert monitor.samples == 4
    # Early by clock granularity counts as on time; the max holds the worst wake-up.
    assert seen == [(0.0, 0.0), (0.75, 0.75), (0.125, 0.75), (0.0, 0.75)]


async def test_close_stops_the_task() -> None:
    fake = FakeTime([])
    monitor = LoopLagMonitor(0.5, clock=fake.clock, sleep=fake.sleep)
    monitor.start()
    await asyncio.wait_for(fake.done.wait(), 10)
    await monitor.close()
    assert monitor.samples == 0 and monitor.current_s == 0.0 and monitor.max_s == 0.0
