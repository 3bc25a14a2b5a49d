"""S3 store pieces that need no server: error classification, backoff, rate limit, options."""

from __future__ import annotations

import asyncio

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from tests.clock import FakeClock
from tiering.remote.s3 import MIN_PART_SIZE, RateLimiter, S3Store, is_retryable
from tiering.remote.store import StoreError, StoreUnavailable

MIB = 1024 * 1024


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )


@pytest.mark.parametrize(
    "exc",
    [
        client_error("SlowDown", 503),
        client_error("RequestLimitExceeded", 400),
        client_error("Throttling", 400),
        client_error("InternalError", 500),
        client_error("Whatever", 502),
        client_error("TooManyRequests", 429),
        EndpointConnectionError(endpoint_url="http://x"),
        ReadTimeoutError(endpoint_url="http://x"),
        ConnectionResetError(),
        TimeoutError(),
    ],
)
def test_retryable(exc):
    assert is_retryable(exc)


@pytest.mark.parametrize(
    "exc",
    [client_error("NoSuchKey", 404), client_error("AccessDenied", 403), ValueError("x")],
)
def test_not_retryable(exc):
    assert not is_retryable(exc)


def test_backoff_is_jittered_and_bounded():
    s = S3Store("b", backoff_base=0.1, backoff_max=1.0)
    for attempt in range(10):
        for _ in range(20):
            assert 0 <= s._backoff(attempt) <= min(1.0, 0.1 * 2**attempt)


async def test_call_retries_then_gives_up():
    s = S3Store("b", max_attempts=4, backoff_base=0.001)
    calls = 0

    async def always_throttled():
        nonlocal calls
        calls += 1
        raise client_error("SlowDown", 503)

    with pytest.raises(StoreUnavailable, match="4 attempt"):
        await s._call("op", always_throttled)
    assert calls == 4

    calls = 0

    async def denied():
        nonlocal calls
        calls += 1
        raise client_error("AccessDenied", 403)

    with pytest.raises(ClientError):
        await s._call("op", denied)
    assert calls == 1


async def test_attempt_timeout_cuts_each_hanging_attempt():
    clock = FakeClock()
    s = S3Store("b", max_attempts=3, backoff_base=0.001, attempt_timeout=0.05, clock=clock)
    calls = 0

    async def hangs():
        nonlocal calls
        calls += 1
        await asyncio.Event().wait()  # never answers: only the attempt timeout ends it

    with pytest.raises(StoreUnavailable, match="3 attempt"):
        await s._call("op", hangs)
    assert calls == 3
    assert len(clock.sleeps) == 2  # a backoff between attempts, none after the last


async def test_call_timeout_bounds_all_attempts():
    clock = FakeClock()
    s = S3Store("b", max_attempts=100, backoff_base=0, attempt_timeout=60, call_timeout=0.5, clock=clock)
    calls = 0

    async def slow_failure():
        nonlocal calls
        calls += 1
        clock.advance(0.125)  # each attempt spends an eighth of a second, then fails
        raise TimeoutError()

    with pytest.raises(StoreUnavailable, match="4 attempt"):
        await s._call("op", slow_failure)
    assert calls == 4  # 4 x 0.125 s reach the 0.5 s deadline; no fifth attempt starts
    assert clock.sleeps == [0.0, 0.0, 0.0, 0.0]


async def test_non_retryable_local_failures_become_store_errors():
    s = S3Store("b", max_attempts=3)

    async def bad():
        raise PermissionError("no")

    with pytest.raises(StoreError):
        await s._call("op", bad)


# Rates and sizes are powers of two so that every expected sleep is an exact float.
RATE = 4 * MIB  # bytes/s; the bucket holds a quarter second: 1 MiB


async def test_rate_limiter_starts_empty_and_waits_per_bucket():
    clock = FakeClock()
    limiter = RateLimiter(RATE, clock)
    assert limiter.capacity == MIB
    await limiter.acquire(2 * MIB)
    assert clock.sleeps == [0.25, 0.25]
    await limiter.acquire(MIB + MIB // 2)
    assert clock.sleeps == [0.25, 0.25, 0.25, 0.125]
    assert clock.now == 0.875


async def test_rate_limiter_refills_with_time_up_to_capacity():
    clock = FakeClock()
    limiter = RateLimiter(RATE, clock)
    clock.advance(0.125)  # half a bucket
    await limiter.acquire(MIB)
    assert clock.sleeps == [0.125]
    clock.advance(10.0)  # a long idle spell fills one bucket, no more
    await limiter.acquire(2 * MIB)
    assert clock.sleeps == [0.125, 0.25]


async def test_rate_limiter_serves_concurrent_callers_in_turn():
    clock = FakeClock()
    limiter = RateLimiter(RATE, clock)
    await asyncio.gather(limiter.acquire(MIB), limiter.acquire(MIB), limiter.acquire(MIB // 2))
    assert clock.sleeps == [0.25, 0.25, 0.125]
    assert clock.now == 0.625


async def test_rate_limiter_unlimited_and_invalid():
    clock = FakeClock()
    unlimited = RateLimiter(0, clock)
    await unlimited.acquire(10**12)
    limited = RateLimiter(RATE, clock)
    await limited.acquire(0)
    assert clock.sleeps == []
    with pytest.raises(ValueError):
        RateLimiter(-1)


def test_options_validated():
    with pytest.raises(ValueError):
        S3Store("b", part_size=MIN_PART_SIZE - 1)
    with pytest.raises(ValueError):
        S3Store("b", max_attempts=0)
    with pytest.raises(ValueError):
        S3Store("b", addressing_style="sideways")
    with pytest.raises(ValueError):
        S3Store("")
    assert S3Store("b", prefix="/x//y").prefix == "x/y/"


async def test_unstarted_store_says_so():
    with pytest.raises(StoreError, match="not started"):
        await S3Store("b").head("k")
