"""The directory-backed object store and object-store URL parsing."""

from __future__ import annotations

import os

import pytest

from tiering.remote.localfs import TMP_DIR, FileStore
from tiering.remote.store import ObjectNotFound, ObjectStore, StoreError, normalize_prefix, open_store


async def test_is_an_object_store(store):
    assert isinstance(store, ObjectStore)


async def test_put_get_head(store):
    await store.put("t-1/0/00000000000000000000-a.log", b"hello world")
    assert await store.get("t-1/0/00000000000000000000-a.log") == b"hello world"
    info = await store.head("t-1/0/00000000000000000000-a.log")
    assert info is not None
    assert (info.key, info.size) == ("t-1/0/00000000000000000000-a.log", 11)
    assert info.last_modified > 0
    assert await store.head("t-1/0/missing") is None
    assert await store.head("t-1/0") is None  # a directory is not an object


async def test_overwrite_replaces_whole_object(store):
    await store.put("k", b"a" * 100)
    await store.put("k", b"b" * 10)
    assert await store.get("k") == b"b" * 10


async def test_ranges(store):
    data = bytes(range(256)) * 4
    await store.put("r", data)
    assert await store.get("r", 0, 10) == data[:10]
    assert await store.get("r", 100, 300) == data[100:300]
    assert await store.get("r", 1000) == data[1000:]
    assert await store.get("r", 1000, 5000) == data[1000:]
    assert await store.get("r", 2000, 3000) == b""
    assert await store.get("r", 5, 5) == b""
    with pytest.raises(ValueError):
        await store.get("r", 10, 5)
    with pytest.raises(ValueError):
        await store.get("r", -1)


async def test_missing_object(store):
    with pytest.raises(ObjectNotFound):
        await store.get("nope")
    with pytest.raises(ObjectNotFound):
        await store.get("a/b/nope", 0, 10)
    assert issubclass(ObjectNotFound, StoreError)


async def test_list_sorted_by_key_and_prefix(store):
    keys = ["b/2", "a/1", "a/10/x", "a/2", "ab", "c"]
    for k in keys:
        await store.put(k, k.encode())
    assert [i.key for i in await store.list("")] == sorted(keys)
    assert [i.key for i in await store.list("a/")] == ["a/1", "a/10/x", "a/2"]
    assert [i.key for i in await store.list("a")] == ["a/1", "a/10/x", "a/2", "ab"]
    assert [i.key for i in await store.list("a/1")] == ["a/1", "a/10/x"]
    assert [i.key for i in await store.list("zz/")] == []
    sizes = {i.key: i.size for i in await store.list("")}
    assert sizes == {k: len(k) for k in keys}


async def test_delete(store):
    for k in ["p/1", "p/2", "p/q/3", "r"]:
        await store.put(k, b"x")
    await store.delete(["p/1", "p/q/3", "missing", "p/none/deeper"])
    assert [i.key for i in await store.list("")] == ["p/2", "r"]
    # emptied directories go too
    assert not os.path.exists(os.path.join(store.root, "p", "q"))
    await store.delete([])
    await store.delete(["p/2", "r"])
    assert await store.list("") == []
    await store.put("p/q/3", b"again")
    assert await store.get("p/q/3") == b"again"


async def test_put_stream(store):
    async def chunks():
        for i in range(10):
            yield bytes([i]) * 1000

    await store.put_stream("s/obj", chunks())
    assert await store.get("s/obj") == b"".join(bytes([i]) * 1000 for i in range(10))


async def test_failed_stream_leaves_nothing(store):
    await store.put("s/obj", b"old")

    async def chunks():
        yield b"x" * 1000
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError):
        await store.put_stream("s/obj", chunks())
    with pytest.raises(RuntimeError):
        await store.put_stream("s/new", chunks())
    assert await store.get("s/obj") == b"old"
    assert [i.key for i in await store.list("")] == ["s/obj"]
    assert os.listdir(os.path.join(store.root, TMP_DIR)) == []


async def test_no_temp_files_visible(store, monkeypatch):
    """An in-flight write is invisible: the temp file lives outside the key space."""
    import tiering.remote.localfs as localfs

    seen = []
    original = localfs.os.replace

    def spying_replace(src, dst):
        seen.append(sorted(i.key for i in store._list("")))
        return original(src, dst)

    monkeypatch.setattr(localfs.os, "replace", spying_replace)
    await store.put("a/obj", b"1" * 4096)
    await store.put("b/obj", b"2")
    assert seen == [[], ["a/obj"]]
    assert [i.key for i in await store.list("")] == ["a/obj", "b/obj"]


async def test_start_clears_interrupted_writes(tmp_path):
    root = tmp_path / "b"
    (root / TMP_DIR).mkdir(parents=True)
    (root / TMP_DIR / "leftover").write_bytes(b"partial")
    s = FileStore(str(root))
    await s.start()
    assert os.listdir(root / TMP_DIR) == []
    assert await s.list("") == []


async def test_fsync_option(tmp_path):
    s = FileStore(str(tmp_path / "b"), fsync=True)
    await s.start()
    await s.put("x/y", b"durable")
    assert await s.get("x/y") == b"durable"


@pytest.mark.parametrize(
    "key",
    ["", "/abs", "../escape", "a/../../b", "a/./b", "a//b", "a/", "a\\b", f"{TMP_DIR}/x", "a\x00b"],
)
async def test_bad_keys_rejected(store, key):
    with pytest.raises(ValueError):
        await store.put(key, b"x")
    with pytest.raises(ValueError):
        await store.get(key)
    with pytest.raises(ValueError):
        await store.delete([key])


async def test_bad_list_prefix(store):
    with pytest.raises(ValueError):
        await store.list("../")
    with pytest.raises(ValueError):
        await store.list("/etc")


def test_open_store_file(tmp_path):
    s = open_store(f"file://{tmp_path}/data")
    assert isinstance(s, FileStore)
    assert s.root == f"{tmp_path}/data"
    s = open_store(f"file://{tmp_path}/data/", fsync=True)
    assert isinstance(s, FileStore)
    assert s.root == f"{tmp_path}/data" and s.fsync


def test_open_store_s3():
    S3Store = pytest.importorskip("tiering.remote.s3").S3Store

    s = open_store("s3://my-bucket/tiered/prod/")
    assert isinstance(s, S3Store)
    assert (s.bucket, s.prefix) == ("my-bucket", "tiered/prod/")

    def prefix(url: str) -> str:
        s = open_store(url)
        assert isinstance(s, S3Store)
        return s.prefix

    assert prefix("s3://my-bucket") == ""
    assert prefix("s3://my-bucket/") == ""
    assert prefix("s3://my-bucket//a//b") == "a/b/"


@pytest.mark.parametrize(
    "url",
    [
        "",
        "/plain/path",
        "file://relative/dir",
        "file:relative",
        "http://example.com/x",
        "gs://bucket/x",
        "s3://",
        "s3:///prefix",
        "s3://key:secret@bucket/x",
        "s3://bucket/a/../b",
    ],
)
def test_open_store_rejects(url):
    with pytest.raises(ValueError) as info:
        open_store(url)
    assert str(info.value)


def test_normalize_prefix():
    assert normalize_prefix("") == ""
    assert normalize_prefix("/") == ""
    assert normalize_prefix("/a/b/") == "a/b/"
    assert normalize_prefix("a") == "a/"
