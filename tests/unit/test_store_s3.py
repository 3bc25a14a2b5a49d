"""S3 store pieces that need no server: error classification, backoff, rate limit, options."""

from __future__ import annotations

import asyncio
import time

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from tiering.remote.s3 import MIN_PART_SIZE, RateLimiter, S3Store, is_retryable
from tiering.remote.store import StoreError, StoreUnavailable


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


async def test_call_attempt_and_overall_timeouts():
    s = S3Store("b", max_attempts=100, backoff_base=0.001, attempt_timeout=0.05, call_timeout=0.3)

    async def hangs():
        await asyncio.sleep(10)

    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await s._call("op", hangs)
    assert time.monotonic() - started < 1.0


async def test_non_retryable_local_failures_become_store_errors():
    s = S3Store("b", max_attempts=3)

    async def bad():
        raise PermissionError("no")

    with pytest.raises(StoreError):
        await s._call("op", bad)


async def test_rate_limiter():
    limiter = RateLimiter(1_000_000)
    started = time.monotonic()
    await limiter.acquire(300_000)
    await limiter.acquire(200_000)
    assert time.monotonic() - started >= 0.45
    unlimited = RateLimiter(0)
    started = time.monotonic()
    await unlimited.acquire(10**12)
    assert time.monotonic() - started < 0.1
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
