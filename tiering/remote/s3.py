"""An S3-compatible object store on aiobotocore.

Credentials come from the usual AWS chain only (environment, shared profile, container or
instance role); they are never part of Sediment's configuration. The endpoint comes from the
`endpoint_url` option or, when that is not given, from botocore's own resolution, which honours
AWS_ENDPOINT_URL_S3 and AWS_ENDPOINT_URL.

Retries are ours, not botocore's: botocore's retry mode is switched off (total_max_attempts=1)
because botocore cannot retry a failure that happens while the response body is read, cannot
bound a call by an overall deadline, and would multiply attempts with any retry layered on top.
One loop here retries throttling, 5xx and connection errors with exponential backoff and full
jitter, and raises StoreUnavailable when the attempts or the time run out.

Large objects go up as multipart uploads. An upload that fails is aborted; set a bucket
lifecycle rule with AbortIncompleteMultipartUpload (e.g. after 1 day) as a backstop for uploads
orphaned by a crash, which no abort can reach.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, IncompleteReadError, ResponseStreamingError
from botocore.exceptions import ConnectionError as BotoConnectionError

from tiering.clock import Clock, SystemClock

from .store import ObjectInfo, ObjectNotFound, StoreError, StoreUnavailable, check_range, normalize_prefix, validate_key

log = logging.getLogger(__name__)

T = TypeVar("T")

MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB  # S3's minimum for every part but the last
MAX_PARTS = 10_000
DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys

RETRYABLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "BandwidthLimitExceeded",
        "ServiceUnavailable",
        "InternalError",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
    }
)


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _http_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


class _PartialDelete(Exception):
    """DeleteObjects answered, but some keys failed with a retryable per-key error."""


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, _PartialDelete):
        return True
    if isinstance(exc, ClientError):
        status = _http_status(exc)
        return _error_code(exc) in RETRYABLE_CODES or status == 429 or status >= 500
    return isinstance(
        exc,
        (
            HTTPClientError,  # connect/read timeouts, connection closed, endpoint unreachable
            BotoConnectionError,
            IncompleteReadError,
            ResponseStreamingError,
            aiohttp.ClientError,
            ConnectionError,
            TimeoutError,  # our per-attempt timeout; asyncio.TimeoutError is the same class
        ),
    )


class RateLimiter:
    """A token bucket in bytes per second; rate 0 means unlimited.

    The bucket starts empty and holds at most a quarter second of tokens, so bursts after an
    idle spell stay small. Large requests take their tokens in bucket-sized steps, one caller
    at a time, so concurrent uploads share the rate fairly.
    """

    def __init__(self, rate: float, clock: Clock | None = None) -> None:
        if rate < 0:
            raise ValueError("upload rate limit must be >= 0 bytes/s")
        self.rate = float(rate)
        self.capacity = max(self.rate / 4, 1.0)
        self._clock: Clock = clock or SystemClock()
        self._tokens = 0.0
        self._stamp = self._clock.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self, nbytes: int) -> None:
        if self.rate <= 0 or nbytes <= 0:
            return
        async with self._lock:
            remaining = float(nbytes)
            while remaining > 0:
                step = min(remaining, self.capacity)
                self._refill()
                if self._tokens < step:
                    await self._clock.sleep((step - self._tokens) / self.rate)
                    self._refill()
                self._tokens -= step
                remaining -= step


def _endpoint_from_env() -> str | None:
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return None
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


class S3Store:
    list_page_size = 1000  # S3's own maximum; tests lower it to exercise pagination
    delete_batch = DELETE_BATCH

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        addressing_style: str | None = None,
        max_attempts: int = 6,
        backoff_base: float = 0.1,
        backoff_max: float = 5.0,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        attempt_timeout: float = 60.0,
        call_timeout: float | None = None,
        part_size: int = 8 * MIB,
        upload_concurrency: int = 2,
        upload_rate_bytes: float = 0,
        max_pool_connections: int = 32,
        checksums: str = "when_supported",
        profile: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not bucket:
            raise ValueError("S3 store needs a bucket name")
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum)")
        if addressing_style not in (None, "auto", "path", "virtual"):
            raise ValueError("addressing_style must be 'auto', 'path' or 'virtual'")
        if checksums not in ("when_supported", "when_required"):
            raise ValueError("checksums must be 'when_supported' or 'when_required'")
        self.bucket = bucket
        self.prefix = normalize_prefix(prefix)
        self.endpoint_url = endpoint_url or None
        self.region = region
        self.addressing_style = addressing_style
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.attempt_timeout = attempt_timeout
        self.call_timeout = call_timeout
        self.part_size = part_size
        if upload_concurrency < 1:
            raise ValueError("upload_concurrency must be >= 1")
        self.upload_concurrency = upload_concurrency
        self.clock: Clock = clock or SystemClock()
        self.limiter = RateLimiter(upload_rate_bytes, self.clock)
        self.max_pool_connections = max_pool_connections
        self.checksums = checksums
        self.profile = profile
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None  # aiobotocore's S3 client: untyped

    def __repr__(self) -> str:
        return f"S3Store(s3://{self.bucket}/{self.prefix})"

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self._client is not None:
            return
        session = get_session()
        if self.profile:
            session.set_config_variable("profile", self.profile)
        region = (
            self.region
            or session.get_config_variable("region")  # AWS_DEFAULT_REGION, then the profile
            or os.environ.get("AWS_REGION")
            or "us-east-1"
        )
        style = self.addressing_style
        if style is None:
            # Custom endpoints (MinIO, Ceph, moto, ...) rarely resolve bucket subdomains.
            style = "path" if (self.endpoint_url or _endpoint_from_env()) else "auto"
        config = Config(
            region_name=region,
            signature_version="s3v4",
            s3={"addressing_style": style},
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            max_pool_connections=self.max_pool_connections,
            request_checksum_calculation=self.checksums,
            response_checksum_validation=self.checksums,
        )
        stack = contextlib.AsyncExitStack()
        kwargs = {"config": config, "region_name": region}
        if self.endpoint_url:
            kwargs["endpoint_url"] = self.endpoint_url
        self._client = await stack.enter_async_context(session.create_client("s3", **kwargs))
        self._stack = stack

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    @property
    def client(self):
        if self._client is None:
            raise StoreError(f"{self!r} is not started")
        return self._client

    # -- helpers ----------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2**attempt)]."""
        return random.uniform(0, min(self.backoff_max, self.backoff_base * (2**attempt)))

    async def _call(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """Run `op` with retries; `op` is one whole attempt, body read included.

        A ClientError that is not worth retrying is raised as is (callers map 404 and the
        like); any other failure that is not worth retrying becomes a StoreError.
        """
        deadline = None if self.call_timeout is None else self.clock.monotonic() + self.call_timeout
        last: BaseException | None = None
        attempts = 0
        while attempts < self.max_attempts:
            timeout = self.attempt_timeout
            if deadline is not None:
                timeout = min(timeout, deadline - self.clock.monotonic())
                if timeout <= 0:
                    break
            attempts += 1
            try:
                async with asyncio.timeout(timeout):
                    return await op()
            except ClientError as exc:
                if not is_retryable(exc):
                    raise
                last = exc
            except (_PartialDelete, BotoCoreError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                if not is_retryable(exc):
                    raise StoreError(f"{what} on s3://{self.bucket} failed: {exc!r}") from exc
                last = exc
            if attempts < self.max_attempts:
                pause = self._backoff(attempts - 1)
                if deadline is not None:
                    pause = min(pause, max(0.0, deadline - self.clock.monotonic()))
                log.debug("%s: attempt %d failed (%r); retrying in %.3fs", what, attempts, last, pause)
                await self.clock.sleep(pause)
        raise StoreUnavailable(
            f"{what} on s3://{self.bucket}: gave up after {attempts} attempt(s): {last!r}"
        ) from last

    @staticmethod
    def _wrap(what: str, exc: Exception) -> StoreError:
        if isinstance(exc, StoreError):
            return exc
        return StoreError(f"{what} failed: {exc!r}")

    # -- writes -----------------------------------------------------------------------------

    async def put(self, key: str, data: bytes) -> None:
        full = self._key(key)
        body = bytes(data)

        async def attempt():
            await self.limiter.acquire(len(body))
            await self.client.put_object(Bucket=self.bucket, Key=full, Body=body)

        try:
            await self._call(f"PutObject {full}", attempt)
        except ClientError as exc:
            raise self._wrap(f"PutObject {full}", exc) from exc

    async def put_stream(self, key: str, parts: AsyncIterator[bytes]) -> None:
        """Buffer chunks into parts of `part_size`; up to `upload_concurrency` parts are in
        flight while the next one is read. Streams that end before one part fills go up as a
        single PutObject."""
        full = self._key(key)
        buf = bytearray()
        upload_id: str | None = None
        done: list[dict] = []
        inflight: set[asyncio.Task] = set()
        number = 0

        async def settle(limit: int) -> None:
            while len(inflight) > limit:
                finished, _ = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    inflight.discard(task)
                    done.append(task.result())  # raises the part's failure

        try:
            async for chunk in parts:
                buf += chunk
                while len(buf) > self.part_size:
                    if upload_id is None:
                        upload_id = await self._create_upload(full)
                    piece = bytes(buf[: self.part_size])
                    del buf[: self.part_size]
                    await settle(self.upload_concurrency - 1)
                    number += 1
                    inflight.add(asyncio.create_task(self._upload_part(full, upload_id, number, piece)))
            if upload_id is None:
                await self.put(key, bytes(buf))
                return
            number += 1
            inflight.add(asyncio.create_task(self._upload_part(full, upload_id, number, bytes(buf))))
            del buf[:]
            await settle(0)
            done.sort(key=lambda part: part["PartNumber"])
            await self._complete_upload(full, upload_id, done)
        except BaseException as exc:
            for task in inflight:
                task.cancel()
            if inflight:
                await asyncio.gather(*inflight, return_exceptions=True)
            if upload_id is not None:
                await asyncio.shield(self._abort_upload(full, upload_id))
            if isinstance(exc, ClientError):
                raise self._wrap(f"multipart upload {full}", exc) from exc
            raise

    async def _create_upload(self, full: str) -> str:
        async def attempt():
            resp = await self.client.create_multipart_upload(Bucket=self.bucket, Key=full)
            return resp["UploadId"]

        return await self._call(f"CreateMultipartUpload {full}", attempt)

    async def _upload_part(self, full: str, upload_id: str, number: int, body: bytes) -> dict:
        if number > MAX_PARTS:
            raise StoreError(f"{full}: more than {MAX_PARTS} parts; raise part_size")

        async def attempt():
            await self.limiter.acquire(len(body))
            resp = await self.client.upload_part(
                Bucket=self.bucket, Key=full, UploadId=upload_id, PartNumber=number, Body=body
            )
            part = {"PartNumber": number, "ETag": resp["ETag"]}
            for field in ("ChecksumCRC32", "ChecksumCRC32C", "ChecksumCRC64NVME", "ChecksumSHA1", "ChecksumSHA256"):
                if resp.get(field):
                    part[field] = resp[field]
            return part

        return await self._call(f"UploadPart {full} #{number}", attempt)

    async def _complete_upload(self, full: str, upload_id: str, done: list[dict]) -> None:
        async def attempt():
            await self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=full, UploadId=upload_id, MultipartUpload={"Parts": done}
            )

        await self._call(f"CompleteMultipartUpload {full}", attempt)

    async def _abort_upload(self, full: str, upload_id: str) -> None:
        async def attempt():
            await self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)

        try:
            await self._call(f"AbortMultipartUpload {full}", attempt)
        except ClientError as exc:
            if _error_code(exc) != "NoSuchUpload":
                log.warning("could not abort multipart upload of %s (%s): %r", full, upload_id, exc)
        except Exception as exc:  # the lifecycle rule is the backstop
            log.warning("could not abort multipart upload of %s (%s): %r", full, upload_id, exc)

    # -- reads ------------------------------------------------------------------------------

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        check_range(key, start, end)
        full = self._key(key)
        if end is not None and end == start:
            if await self.head(key) is None:
                raise ObjectNotFound(key)
            return b""
        kwargs = {"Bucket": self.bucket, "Key": full}
        if start or end is not None:
            kwargs["Range"] = f"bytes={start}-" + ("" if end is None else str(end - 1))

        async def attempt():
            resp = await self.client.get_object(**kwargs)
            async with resp["Body"] as body:
                data = await body.read()
            return data

        try:
            return await self._call(f"GetObject {full}", attempt)
        except ClientError as exc:
            code, status = _error_code(exc), _http_status(exc)
            if code in ("NoSuchKey", "404") or status == 404:
                raise ObjectNotFound(key) from None
            if code == "InvalidRange" or status == 416:
                return b""  # the object exists but is shorter than `start`
            raise self._wrap(f"GetObject {full}", exc) from exc

    async def head(self, key: str) -> ObjectInfo | None:
        full = self._key(key)

        async def attempt():
            return await self.client.head_object(Bucket=self.bucket, Key=full)

        try:
            resp = await self._call(f"HeadObject {full}", attempt)
        except ClientError as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound") or _http_status(exc) == 404:
                return None
            raise self._wrap(f"HeadObject {full}", exc) from exc
        return ObjectInfo(
            key,
            int(resp["ContentLength"]),
            resp["LastModified"].timestamp(),
            (resp.get("ETag") or "").strip('"') or None,
        )

    async def list(self, prefix: str) -> list[ObjectInfo]:
        if prefix.startswith("/"):
            raise ValueError(f"list prefix must be relative: {prefix!r}")
        full_prefix = self.prefix + prefix
        out: list[ObjectInfo] = []
        token: str | None = None
        while True:
            kwargs = {"Bucket": self.bucket, "Prefix": full_prefix, "MaxKeys": self.list_page_size}
            if token:
                kwargs["ContinuationToken"] = token

            async def attempt(kwargs=kwargs):
                return await self.client.list_objects_v2(**kwargs)

            try:
                resp = await self._call(f"ListObjectsV2 {full_prefix}", attempt)
            except ClientError as exc:
                raise self._wrap(f"ListObjectsV2 {full_prefix}", exc) from exc
            for item in resp.get("Contents", ()):
                out.append(
                    ObjectInfo(
                        item["Key"][len(self.prefix):],
                        int(item["Size"]),
                        item["LastModified"].timestamp(),
                        (item.get("ETag") or "").strip('"') or None,
                    )
                )
            if not resp.get("IsTruncated"):
                break
            token = resp.get("NextContinuationToken")
            if not token:
                break
        out.sort(key=lambda info: info.key)
        return out

    # -- deletes ----------------------------------------------------------------------------

    async def delete(self, keys: builtins.list[str]) -> None:
        fulls = list(dict.fromkeys(self._key(k) for k in keys))
        for i in range(0, len(fulls), self.delete_batch):
            pending = fulls[i : i + self.delete_batch]
            failed: list[dict] = []

            async def attempt():
                nonlocal pending
                resp = await self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in pending], "Quiet": True},
                )
                errors = [e for e in resp.get("Errors", ()) if e.get("Code") != "NoSuchKey"]
                retry = [e for e in errors if e.get("Code") in RETRYABLE_CODES]
                failed.extend(e for e in errors if e.get("Code") not in RETRYABLE_CODES)  # noqa: B023 - awaited in this iteration
                if retry:
                    # Only the keys that were throttled or hit an internal error go again.
                    pending = [e["Key"] for e in retry]
                    raise _PartialDelete(f"{len(retry)} key(s) failed, e.g. {retry[0].get('Code')}")

            try:
                await self._call(f"DeleteObjects ({len(pending)} keys)", attempt)
            except ClientError as exc:
                raise self._wrap("DeleteObjects", exc) from exc
            if failed:
                first = failed[0]
                raise StoreError(
                    f"DeleteObjects: {len(failed)} key(s) not deleted, e.g. "
                    f"{first.get('Key')!r}: {first.get('Code')} {first.get('Message')}"
                )
