"""Streaming upload: a sealed segment goes up chunk by chunk (read -> cut -> compress -> encrypt
-> store), with the same object and chunk index as the in-memory pipeline, and no more than two
chunks held whatever the segment's size."""

from __future__ import annotations

import io
import itertools
import threading
import types
from pathlib import Path

import pytest

from security.keys import new_data_key
from tests.clock import eventually
from tests.unit.conftest import make_batch
from tiering.log.config import LogConfig
from tiering.log.partition import UnifiedLog
from tiering.log.sealing import BatchCipher
from tiering.remote import transform
from tiering.remote.localfs import FileStore
from tiering.remote.manifest import PartitionManifest
from tiering.remote.transform import TransformError, chunk_batches, file_batches, split_chunks, transform_segment
from tiering.remote.uploader import SegmentFiles, SegmentUploader, UploadSettings

NOW = 1_700_000_000_000
TOPIC_ID = "7b1c0d2e-0000-4000-8000-000000000002"
CHUNK = 4096


def _values(n: int) -> list[bytes]:
    # Text that compresses, of varied lengths so that chunk ends fall at different places.
    return [(b"value-%05d-" % i) * (3 + i % 40) for i in range(n)]


def _log(tmp_path: Path, cipher: BatchCipher | None = None) -> UnifiedLog:
    return UnifiedLog.open(tmp_path / "log" / "orders-0", "orders", 0, LogConfig(index_interval_bytes=64),
                           recover=False, cipher=cipher, seal_appends=cipher is not None)


def _sealed(tmp_path: Path, cipher: BatchCipher | None = None, n: int = 240,
            per_batch: int = 3) -> tuple[UnifiedLog, SegmentFiles]:
    lg = _log(tmp_path, cipher)
    values = _values(n)
    for i in range(0, n, per_batch):
        lg.append(make_batch(values[i:i + per_batch], base_timestamp=NOW + i), now_ms=NOW)
    seg = lg.active_segment
    lg.roll()
    files = SegmentFiles(seg.base_offset, seg.next_offset - 1, seg.max_timestamp, seg.offset_of_max_timestamp,
                         seg.log_path, seg.index_path, seg.time_index_path,
                         open_batch=cipher.open_batch if cipher is not None else None)
    return lg, files


@pytest.fixture
def fixed_nonces(monkeypatch):
    """Counter nonces for the chunk encryption, restartable, so that two runs of the pipeline
    give the same bytes."""
    counter = itertools.count()
    lock = threading.Lock()

    def urandom(n: int) -> bytes:
        with lock:
            return next(counter).to_bytes(n, "big")

    def restart() -> None:
        nonlocal counter
        counter = itertools.count()

    monkeypatch.setattr(transform, "os", types.SimpleNamespace(urandom=urandom))
    return restart


@pytest.mark.parametrize("target", [1, 200, 777, CHUNK, 3 * CHUNK + 5, 1 << 30])
def test_streamed_chunks_are_split_chunks(tmp_path, target):
    _, files = _sealed(tmp_path)
    raw = files.log_path.read_bytes()
    expected = [(c, raw[c.position:c.position + c.size]) for c in split_chunks(raw, target)]
    with open(files.log_path, "rb") as f:
        got = [(c, bytes(data)) for c, data in chunk_batches(file_batches(f, len(raw)), target)]
    assert got == expected
    assert len(got) > 1 or target == 1 << 30


def test_streamed_chunks_refuse_a_partial_batch():
    batches = make_batch([b"a"] * 3) + make_batch([b"b"] * 2, base_offset=3)
    for cut in (len(batches) - 1, len(batches) - 40, len(batches) + 7):
        data = (batches + b"\0" * 20)[:cut]
        with pytest.raises(TransformError):
            list(chunk_batches(file_batches(io.BytesIO(data), len(data)), CHUNK))


async def _upload(store, keys, files: SegmentFiles, uploader: SegmentUploader | None = None):
    up = uploader or SegmentUploader(store, keys, UploadSettings(chunk_size=CHUNK))
    m = PartitionManifest("orders", TOPIC_ID, 0)
    entry = await up.upload(m, files)
    log_key, _ = m.keys_for(entry, "")
    return up, m, entry, await store.get(log_key), await up.read_indexes(m, entry)


@pytest.mark.parametrize("encrypted", [False, True])
async def test_streamed_object_equals_the_in_memory_pipeline(tmp_path, store, keys, fixed_nonces, encrypted):
    _, files = _sealed(tmp_path)
    fixed_nonces()
    up, m, entry, blob, ix = await _upload(store, keys if encrypted else None, files)
    raw = files.log_path.read_bytes()
    data_key = await up.data_key(entry)
    assert (data_key is not None) == encrypted
    fixed_nonces()
    parts, chunks = transform_segment(raw, data_key, entry.segment_uuid, "zstd", CHUNK)
    assert len(chunks) > 5
    assert blob == b"".join(parts)
    assert ix.chunks == chunks
    assert ix.chunks.to_bytes() == chunks.to_bytes()
    assert (entry.size, entry.object_size) == (len(raw), len(blob))
    assert files.index_path is not None  # _sealed hands over the index
    assert ix.offset_index == files.index_path.read_bytes()
    assert await up.download(m, entry) == raw


async def test_locally_encrypted_segment_streams_opened_batches(tmp_path, store, keys, fixed_nonces):
    cipher = BatchCipher(new_data_key())
    lg, files = _sealed(tmp_path, cipher)
    seg = lg.segments[0]
    plain, plain_index = seg.plain_log_and_index()
    assert plain != files.log_path.read_bytes()  # stored sealed
    fixed_nonces()
    up, m, entry, blob, ix = await _upload(store, keys, files)
    data_key = await up.data_key(entry)
    fixed_nonces()
    parts, chunks = transform_segment(plain, data_key, entry.segment_uuid, "zstd", CHUNK)
    assert blob == b"".join(parts)
    assert ix.chunks == chunks
    assert ix.offset_index == plain_index
    assert entry.size == len(plain)
    assert await up.download(m, entry) == plain


class _SlowStore(FileStore):
    """put_stream takes a part only once the pipeline has had every chance to run ahead: it
    waits until the chunk after the one just received is transformed (or all are), then
    records how many transformed chunks the store had not taken yet."""

    def __init__(self, root: str, transformed, total: int) -> None:
        super().__init__(root)
        self.transformed = transformed
        self.total = total
        self.ahead: list[int] = []

    async def put_stream(self, key, parts):
        async def slow():
            taken = 0
            async for part in parts:
                def ran_ahead(taken: int = taken) -> bool:
                    return self.transformed() >= min(taken + 2, self.total)

                await eventually(ran_ahead)
                self.ahead.append(self.transformed() - taken)
                taken += 1
                yield part

        await super().put_stream(key, slow())


async def test_upload_holds_at_most_two_chunks(tmp_path, keys, monkeypatch):
    _, files = _sealed(tmp_path, n=600)
    total = len(split_chunks(files.log_path.read_bytes(), CHUNK))
    assert total > 10
    count = itertools.count(1)
    done = [0]
    real = transform.transform_chunk

    def counting(*args, **kwargs):
        out = real(*args, **kwargs)
        done[0] = next(count)
        return out

    monkeypatch.setattr(transform, "transform_chunk", counting)
    store = _SlowStore(str(tmp_path / "bucket"), lambda: done[0], total)
    await store.start()
    try:
        up, m, entry, blob, ix = await _upload(store, keys, files)
    finally:
        await store.close()
    assert len(ix.chunks) == total == len(store.ahead)
    # The store was handed each chunk with at most one more transformed behind it.
    assert max(store.ahead) == 2
    assert up.meter.peak == 2 and up.meter.held == 0
    assert await up.download(m, entry) == files.log_path.read_bytes()


async def test_failed_store_stops_the_pipeline_and_releases_its_chunks(tmp_path, keys):
    _, files = _sealed(tmp_path, n=600)

    class Failing(FileStore):
        async def put_stream(self, key, parts):
            async for _ in parts:
                raise OSError("store gone")

    store = Failing(str(tmp_path / "bucket"))
    await store.start()
    up = SegmentUploader(store, keys, UploadSettings(chunk_size=CHUNK))
    try:
        with pytest.raises(OSError):
            await up.upload(PartitionManifest("orders", TOPIC_ID, 0), files)
    finally:
        await store.close()
    assert up.meter.held == 0
