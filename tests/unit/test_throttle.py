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
    async def handler(gate: asyncio.Event) -> str:
        _spin(0.02)
        await gate.wait()  # waiting: not the handler's loop time
        _spin(0.02)
        return "answer"

    async def run() -> tuple[str, LoopMeter, float]:
        gate = asyncio.Event()
        meter = LoopMeter()
        task = asyncio.ensure_future(_Timed(handler(gate), meter))
        await asyncio.sleep(0.01)
        started = time.perf_counter()
        await asyncio.sleep(0.2)
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

    async def handler() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def failing() -> None:
        await asyncio.sleep(0)
        raise ValueError("bad")

    async def run() -> None:
        task = asyncio.ensure_future(_Timed(handler(), LoopMeter()))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(ValueError, match="bad"):
            await _Timed(failing(), LoopMeter())

    asyncio.run(run())
    assert seen == ["cancelled"]


def test_throttle_time_set_where_the_version_has_it():
    s = response_schema(3, 12)  # Metadata v12
    response = s.response(throttle_time=0, brokers=(), cluster_id=None, controller_id=0, topics=())
    assert with_throttle_time(response, 250).throttle_time == datetime.timedelta(milliseconds=250)
    assert with_throttle_time(b"raw", 250) == b"raw"
