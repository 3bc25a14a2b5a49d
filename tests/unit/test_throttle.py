"""The request-time meter of service/kafka/throttle.py: it counts the loop time a handler's
steps take, not the time it waits, and passes results and cancellations through."""

from __future__ import annotations

import asyncio
import datetime
import time

import pytest

from service.kafka.messages import response_schema
from service.kafka.throttle import LoopMeter, _Timed, with_throttle_time


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_meter_counts_steps_not_waits():
    async def handler(waiting: asyncio.Event, gate: asyncio.Event) -> str:
        _spin(0.02)
        waiting.set()
        await gate.wait()  # waiting: not the handler's loop time
        _spin(0.02)
        return "answer"

    async def run() -> tuple[str, LoopMeter, float]:
        waiting, gate = asyncio.Event(), asyncio.Event()
        meter = LoopMeter()
        task = asyncio.ensure_future(_Timed(handler(waiting, gate), meter))
        await waiting.wait()
        started = time.perf_counter()
        _spin(0.2)  # other work on the loop while the handler waits: not its time either
        gate.set()
        result = await task
        return result, meter, time.perf_counter() - started

    result, meter, waited = asyncio.run(run())
    assert result == "answer"
    assert 0.04 <= meter.busy < 0.15, meter.busy  # the 0.2 s wait is not in it
    assert waited >= 0.2
    # Once the handler is done, time passing is not its time.
    assert meter.percent() == meter.busy * 100


def test_cancellation_and_errors_reach_the_handler():
    seen: list[str] = []

    async def handler(waiting: asyncio.Event) -> None:
        try:
            waiting.set()
            await asyncio.Event().wait()  # never set: only the cancellation ends it
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def failing(gate: asyncio.Event) -> None:
        await gate.wait()  # the error comes in a later step than the first
        raise ValueError("bad")

    async def run() -> None:
        waiting = asyncio.Event()
        task = asyncio.ensure_future(_Timed(handler(waiting), LoopMeter()))
        await waiting.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gate = asyncio.Event()
        asyncio.get_running_loop().call_soon(gate.set)
        with pytest.raises(ValueError, match="bad"):
            await _Timed(failing(gate), LoopMeter())

    asyncio.run(run())
    assert seen == ["cancelled"]


def test_throttle_time_set_where_the_version_has_it():
    s = response_schema(3, 12)  # Metadata v12
    response = s.response(throttle_time=0, brokers=(), cluster_id=None, controller_id=0, topics=())
    assert with_throttle_time(response, 250).throttle_time == datetime.timedelta(milliseconds=250)
    assert with_throttle_time(b"raw", 250) == b"raw"
