"""The S3 object store against moto's S3 server, with a fault-injecting proxy for retries."""

from __future__ import annotations

import socket
import uuid

import pytest
from aiobotocore.session import get_session

from tests.clock import FakeClock
from tests.moto_server import FaultProxy, MotoServer
from tiering.remote.s3 import S3Store
from tiering.remote.store import ObjectNotFound, ObjectStore, StoreUnavailable, open_store

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def moto():
    server = MotoServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def aws_env(monkeypatch, tmp_path):
    """Fake credentials from the environment, and nothing from the host's AWS config."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def s3(moto):
    """A raw client for checking what really is in the bucket."""
    async with get_session().create_client(
        "s3", endpoint_url=moto.url, region_name="us-east-1"
    ) as client:
        yield client


@pytest.fixture
async def bucket(s3):
    name = f"sediment-{uuid.uuid4().hex[:12]}"
    await s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
async def store(moto, bucket):
    s = open_store(f"s3://{bucket}/tier/prod/", endpoint_url=moto.url, part_size=5 * MIB)
    await s.start()
    yield s
    await s.close()


@pytest.fixture
async def proxy(moto):
    p = FaultProxy(moto.port)
    await p.start()
    yield p
    await p.stop()


async def raw_keys(s3, bucket) -> list[str]:
    resp = await s3.list_objects_v2(Bucket=bucket)
    return [o["Key"] for o in resp.get("Contents", [])]


async def test_put_get_head_list_delete(store, s3, bucket):
    assert isinstance(store, ObjectStore)
    await store.put("t-1/0/00000000000000000000-a.log", b"segment bytes")
    await store.put("t-1/0/manifest.json", b"{}")
    await store.put("t-1/1/manifest.json", b"{ }")
    await store.put("_cluster/topics", b"")

    assert await store.get("t-1/0/00000000000000000000-a.log") == b"segment bytes"
    assert await store.get("_cluster/topics") == b""
    info = await store.head("t-1/0/manifest.json")
    assert info is not None
    assert (info.key, info.size) == ("t-1/0/manifest.json", 2)
    assert info.last_modified > 0 and info.etag
    assert await store.head("t-1/0/nope") is None
    with pytest.raises(ObjectNotFound):
        await store.get("t-1/0/nope")
    with pytest.raises(ObjectNotFound):
        await store.get("t-1/0/nope", 3, 3)

    assert [i.key for i in await store.list("")] == [
        "_cluster/topics",
        "t-1/0/00000000000000000000-a.log",
        "t-1/0/manifest.json",
        "t-1/1/manifest.json",
    ]
    assert [i.key for i in await store.list("t-1/0/")] == [
        "t-1/0/00000000000000000000-a.log",
        "t-1/0/manifest.json",
    ]
    assert [(i.key, i.size) for i in await store.list("t-1/1")] == [("t-1/1/manifest.json", 3)]
    # The prefix is in the bucket, not in what callers see.
    assert sorted(await raw_keys(s3, bucket)) == [
        "tier/prod/_cluster/topics",
        "tier/prod/t-1/0/00000000000000000000-a.log",
        "tier/prod/t-1/0/manifest.json",
        "tier/prod/t-1/1/manifest.json",
    ]

    await store.delete(["t-1/0/manifest.json", "t-1/0/missing", "_cluster/topics"])
    assert [i.key for i in await store.list("")] == [
        "t-1/0/00000000000000000000-a.log",
        "t-1/1/manifest.json",
    ]
    await store.delete([])
    with pytest.raises(ValueError):
        await store.put("../x", b"")
    with pytest.raises(ValueError):
        await store.get("/abs")


async def test_ranges(store):
    data = bytes(range(256)) * 64
    await store.put("r", data)
    assert await store.get("r", 0, 10) == data[:10]
    assert await store.get("r", 100, 3000) == data[100:3000]
    assert await store.get("r", 16000) == data[16000:]
    assert await store.get("r", 16000, 99999) == data[16000:]
    assert await store.get("r", 7, 7) == b""
    assert await store.get("r", len(data)) == b""
    assert await store.get("r", len(data) + 10, len(data) + 20) == b""
    await store.put("empty", b"")
    assert await store.get("empty", 0, 10) == b""
    assert await store.get("empty", 5) == b""


async def test_list_paginates_and_delete_batches(store, monkeypatch):
    monkeypatch.setattr(store, "list_page_size", 3)
    monkeypatch.setattr(store, "delete_batch", 4)
    keys = [f"p/{i:03d}" for i in range(10)]
    for k in keys:
        await store.put(k, k.encode())
    await store.put("q/other", b"x")
    assert [i.key for i in await store.list("p/")] == keys
    await store.delete(keys[:9] + ["p/missing"])
    assert [i.key for i in await store.list("")] == ["p/009", "q/other"]


async def test_multipart_round_trip(store, s3, bucket):
    data = bytes((i * 7 + i // 1000) & 0xFF for i in range(12 * MIB))

    async def chunks():
        step = MIB + 7  # chunk boundaries do not line up with part boundaries
        for i in range(0, len(data), step):
            yield data[i : i + step]

    await store.put_stream("big/segment.log", chunks())
    assert await store.get("big/segment.log") == data
    assert await store.get("big/segment.log", 5 * MIB - 3, 5 * MIB + 3) == data[5 * MIB - 3 : 5 * MIB + 3]
    head = await s3.head_object(Bucket=bucket, Key="tier/prod/big/segment.log")
    assert head["ETag"].strip('"').endswith("-3")  # 5 + 5 + 2 MiB
    assert (await store.head("big/segment.log")).size == 12 * MIB


async def test_small_stream_is_a_single_put(store, s3, bucket):
    async def chunks():
        yield b"a" * 1000
        yield b""
        yield b"b" * 1000

    await store.put_stream("small", chunks())
    assert await store.get("small") == b"a" * 1000 + b"b" * 1000
    head = await s3.head_object(Bucket=bucket, Key="tier/prod/small")
    assert "-" not in head["ETag"]

    async def nothing():
        return
        yield

    await store.put_stream("empty", nothing())
    assert await store.get("empty") == b""


async def test_failed_stream_leaves_nothing(store, s3, bucket):
    async def chunks():
        for _ in range(7):
            yield b"z" * MIB
        raise RuntimeError("segment file vanished")

    with pytest.raises(RuntimeError, match="vanished"):
        await store.put_stream("big/broken.log", chunks())

    async def short():
        yield b"q" * 1000
        raise RuntimeError("vanished early")

    with pytest.raises(RuntimeError, match="vanished"):
        await store.put_stream("small/broken.log", short())
    assert await store.list("") == []
    assert await raw_keys(s3, bucket) == []
    uploads = await s3.list_multipart_uploads(Bucket=bucket)
    assert uploads.get("Uploads", []) == []


async def through(proxy, bucket, **options) -> S3Store:
    s = S3Store(
        bucket, "pfx", endpoint_url=proxy.url, backoff_base=0.01, backoff_max=0.05,
        part_size=5 * MIB, **options,
    )
    await s.start()
    return s


@pytest.mark.parametrize("status", [503, 500])
async def test_retries_then_succeeds(proxy, bucket, status):
    s = await through(proxy, bucket)
    try:
        proxy.fail_status = status
        proxy.fail_next = 3
        data = bytes(range(256)) * 100
        await s.put("a/b", data)
        assert proxy.failed == 3
        proxy.fail_next = 2
        assert await s.get("a/b", 10, 20000) == data[10:20000]
        proxy.fail_next = 2
        assert [i.key for i in await s.list("a/")] == ["a/b"]
        proxy.fail_next = 1
        info = await s.head("a/b")
        assert info is not None and info.size == len(data)
        assert proxy.failed == 8
    finally:
        await s.close()


async def test_multipart_retries_each_step(proxy, bucket, s3):
    s = await through(proxy, bucket, upload_concurrency=1)
    data = bytes(range(256)) * (11 * MIB // 256)

    async def chunks():
        for i in range(0, len(data), MIB):
            proxy.fail_next = 1  # fail the next request, whichever it is
            yield data[i : i + MIB]
        proxy.fail_next = 1

    try:
        await s.put_stream("m", chunks())
        proxy.fail_next = 0
        assert await s.get("m") == data
        assert proxy.failed == 3  # CreateMultipartUpload, UploadPart #2, UploadPart #3
        assert (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads", []) == []
    finally:
        await s.close()


async def test_concurrent_parts_with_faults(proxy, bucket, s3):
    s = await through(proxy, bucket, upload_concurrency=3)
    data = bytes((i * 13) & 0xFF for i in range(23 * MIB))

    async def chunks():
        for i in range(0, len(data), 3 * MIB):
            yield data[i : i + 3 * MIB]

    try:
        proxy.fail_every = 3
        await s.put_stream("c", chunks())
        proxy.fail_every = 0
        assert await s.get("c") == data
        assert proxy.failed >= 2
        head = await s3.head_object(Bucket=bucket, Key="pfx/c")
        assert head["ETag"].strip('"').endswith("-5")  # 4 x 5 MiB + 3 MiB
        assert (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads", []) == []
    finally:
        await s.close()


async def test_failed_part_aborts_the_upload(proxy, bucket, s3):
    s = await through(proxy, bucket, upload_concurrency=2, max_attempts=2)

    async def chunks():
        for i in range(4):
            yield bytes([i]) * (3 * MIB)

    proxy.fail_when = lambda line: b"partNumber=2" in line  # every attempt at part 2
    try:
        with pytest.raises(StoreUnavailable):
            await s.put_stream("doomed", chunks())
        assert proxy.failed == 2
        proxy.fail_when = None
        assert await s.list("") == []
        assert (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads", []) == []
    finally:
        await s.close()


async def test_gives_up_after_max_attempts(proxy, bucket):
    clock = FakeClock()
    s = await through(proxy, bucket, max_attempts=3, clock=clock)
    try:
        proxy.fail_next = -1  # fail everything
        with pytest.raises(StoreUnavailable):
            await s.put("x", b"data")
        assert proxy.requests == 3
        with pytest.raises(StoreUnavailable):
            await s.get("x")
        assert proxy.requests == 6
        # Two jittered backoffs per call, each within its full-jitter bound; none after the last.
        bounds = [0.01, 0.02, 0.01, 0.02]
        assert len(clock.sleeps) == len(bounds)
        assert all(0 <= pause <= bound for pause, bound in zip(clock.sleeps, bounds))
    finally:
        await s.close()


async def test_unreachable_endpoint_is_unavailable(bucket):
    # A port bound but never listened on refuses connections, and while we hold it no other
    # process can start serving on it.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        s = S3Store(bucket, endpoint_url=f"http://127.0.0.1:{held.getsockname()[1]}", max_attempts=2,
                    backoff_base=0.01, connect_timeout=1)
        await s.start()
        try:
            with pytest.raises(StoreUnavailable):
                await s.head("x")
        finally:
            await s.close()


async def test_upload_rate_limit(moto, bucket):
    """Single PUTs and multipart parts both wait on the limiter: 4 MiB/s in 1 MiB buckets."""
    clock = FakeClock()
    s = S3Store(bucket, endpoint_url=moto.url, upload_rate_bytes=4 * MIB, part_size=5 * MIB,
                clock=clock)
    await s.start()
    try:
        await s.put("limited", b"r" * (2 * MIB))
        assert clock.sleeps == [0.25, 0.25]
        assert await s.get("limited") == b"r" * (2 * MIB)

        async def parts():
            yield b"m" * (5 * MIB)
            yield b"m" * (2 * MIB)

        await s.put_stream("limited-multipart", parts())
        assert clock.sleeps == [0.25] * 9
        assert await s.get("limited-multipart") == b"m" * (7 * MIB)
    finally:
        await s.close()


async def test_endpoint_from_environment(moto, bucket, monkeypatch):
    """botocore itself honours AWS_ENDPOINT_URL_S3; path-style follows from it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto.url)
    s = open_store(f"s3://{bucket}")
    assert isinstance(s, S3Store)
    await s.start()
    try:
        assert s.client.meta.endpoint_url == moto.url
        assert s.client.meta.config.s3["addressing_style"] == "path"
        await s.put("via-env", b"ok")
        assert await s.get("via-env") == b"ok"
    finally:
        await s.close()
