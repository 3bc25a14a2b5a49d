"""Client quotas on the Kafka listener: what is recorded for each request, and the throttle.

As Kafka does since KIP-219, a request that takes its client over a quota is answered at once
with the throttle time in the response's throttle_time_ms, and the connection is muted: nothing
more is read from it until that time has passed (the server checks `Connection.throttled_until`
before it takes the next request). Clients that know KIP-219 also hold back by themselves;
older ones are held back by the muted connection. Which quota and what counts, as in Kafka:
- Produce: the request's bytes against producer_byte_rate, as soon as it is read (so that a
  throttle mutes the connection before its next frame is taken); its request time against
  request_percentage unless acks=0; the larger throttle of the two is answered.
- Fetch: the response's bytes against consumer_byte_rate (a fetch is capped at what the quota
  allows in one window); with either throttle the fetch is answered without records, and its
  bytes are taken back from the rate. A follower's fetch is exempt.
- Every other request: its request time against request_percentage. SASL authentication is not
  throttled (Kafka handles it before requests reach its quota managers).

Request time is the event loop's time spent running the request's handler: every step of the
handler coroutine (what runs between two awaits) is timed, so time spent waiting (a long poll,
an fsync, the bucket) is not counted, as Kafka counts only its request-handler thread's time.
Kafka's quota is a share of one handler thread; here it is a share of the one event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Generic, TypeVar

from service.kafka.context import Connection, RequestContext, Response
from service.quotas import quota_user

_EXEMPT = frozenset((17, 36))  # SaslHandshake, SaslAuthenticate
T = TypeVar("T")


class LoopMeter:
    """The event-loop time one request has taken: the steps run so far plus the current one."""

    __slots__ = ("busy", "step_start", "recorded")

    def __init__(self) -> None:
        self.busy = 0.0  # the steps done
        self.step_start: float | None = None  # the step running now, if one is
        self.recorded = False  # the handler recorded its request time itself (produce, fetch)

    def percent(self) -> float:
        """Kafka's unit: seconds of handler time as a percentage of one second."""
        running = 0.0 if self.step_start is None else time.perf_counter() - self.step_start
        return (self.busy + running) * 100.0


class _Timed(Generic[T]):
    """Drives a handler coroutine step by step, adding each step's duration to the meter.
    Awaiting it is awaiting the coroutine: values and exceptions (a cancellation) pass through."""

    def __init__(self, coro: Coroutine[Any, Any, T], meter: LoopMeter) -> None:
        self._coro = coro
        self._meter = meter

    def __await__(self) -> Generator[Any, Any, T]:
        coro, meter = self._coro, self._meter
        value: Any = None
        error: BaseException | None = None
        while True:
            meter.step_start = start = time.perf_counter()
            try:
                yielded = coro.send(value) if error is None else coro.throw(error)
            except StopIteration as done:
                return done.value
            finally:
                meter.busy += time.perf_counter() - start
                meter.step_start = None
            try:
                value, error = (yield yielded), None
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as e:  # thrown in by the task (a cancellation): the handler's to handle
                value, error = None, e


async def unmuted(conn: Connection) -> None:
    """Before a throttled connection's next request is taken: wait out its throttle (and any
    a request still in progress adds meanwhile)."""
    while (wait := conn.throttled_until - time.monotonic()) > 0:
        await asyncio.sleep(wait)
    conn.throttled_until = 0.0


def arrived(ctx: RequestContext) -> None:
    """A request was read (while quotas are configured). A produce's bytes are recorded against
    producer_byte_rate now, before the server reads the connection's next frame, so a throttle
    mutes the connection at once: recorded in the handler, it would come after the frames
    already buffered were all taken."""
    if ctx.api_key == 0:
        ctx.throttle_ms = produce_bytes(ctx)


def mute(ctx: RequestContext, ms: int) -> None:
    """Read nothing more from this connection for ms (Kafka mutes the channel)."""
    conn = ctx.conn
    conn.throttled_until = max(conn.throttled_until, time.monotonic() + ms / 1000.0)


def _who(ctx: RequestContext) -> tuple[str, str]:
    return quota_user(ctx.conn.principal), ctx.client_id or ""


async def run(ctx: RequestContext, handler: Callable[[RequestContext, Any], Awaitable[Response]],
              request: Any) -> Response:
    """Run a handler under a request_percentage quota (the server calls this only when one is
    configured): measure it, record its time unless it did so itself, and answer the throttle."""
    if ctx.api_key in _EXEMPT or not ctx.conn.authenticated:
        return await handler(ctx, request)
    meter = ctx.meter = LoopMeter()
    coro = handler(ctx, request)
    assert isinstance(coro, Coroutine)
    response = await _Timed(coro, meter)
    if meter.recorded:
        return response
    ms = ctx.quotas.request.record(*_who(ctx), meter.percent())
    if ms <= 0:
        return response
    mute(ctx, ms)
    return with_throttle_time(response, ms)


def with_throttle_time(response: T, ms: int) -> T:
    """The response with its throttle_time_ms set (versions without the field stay as they are)."""
    if dataclasses.is_dataclass(response) and not isinstance(response, type) and any(
            f.name == "throttle_time" for f in dataclasses.fields(response)):
        return dataclasses.replace(response, throttle_time=datetime.timedelta(milliseconds=ms))
    return response


def produce_bytes(ctx: RequestContext) -> int:
    """Record a produce request's bytes against producer_byte_rate: the throttle time."""
    quotas = ctx.quotas
    if not quotas.produce.enabled:
        return 0
    ms = quotas.produce.record(*_who(ctx), ctx.size)
    if ms > 0:
        mute(ctx, ms)
    return ms


def produce_time(ctx: RequestContext, acks: int) -> int:
    """Record a produce request's time (once appended) against request_percentage; acks=0 is
    exempt, as in Kafka. The throttle time."""
    meter = ctx.meter
    if meter is None:
        return 0
    meter.recorded = True
    if acks == 0:
        return 0
    ms = ctx.quotas.request.record(*_who(ctx), meter.percent())
    if ms > 0:
        mute(ctx, ms)
    return ms


def fetch_max_bytes(ctx: RequestContext, max_bytes: int) -> int:
    """A consumer's fetch is capped at what its consumer_byte_rate allows in one whole window
    (Kafka's maxValueInQuotaWindow)."""
    fetch = ctx.quotas.fetch
    if not fetch.enabled:
        return max_bytes
    most = fetch.max_value_in_window(*_who(ctx))
    return max_bytes if most is None else max(min(max_bytes, int(most)), 0)


def fetch(ctx: RequestContext, response_bytes: int) -> int:
    """Record a consumer's fetch against consumer_byte_rate and request_percentage: the
    throttle time; when it is not 0 the caller answers without records and the bytes are taken
    back from the rate, as Kafka does."""
    quotas, meter = ctx.quotas, ctx.meter
    user, client_id = _who(ctx)
    ms = 0
    if meter is not None:
        meter.recorded = True
        ms = quotas.request.record(user, client_id, meter.percent())
    if quotas.fetch.enabled:
        ms = max(ms, quotas.fetch.record(user, client_id, response_bytes))
        if ms > 0:
            quotas.fetch.unrecord(user, client_id, response_bytes)
    if ms > 0:
        mute(ctx, ms)
    return ms


def exempt(ctx: RequestContext) -> None:
    """This request is not measured against the request quota (a follower's fetch)."""
    if ctx.meter is not None:
        ctx.meter.recorded = True
