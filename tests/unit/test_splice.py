"""The sendfile splice must produce exactly the bytes kio would have written with the records."""

import os
import uuid

import pytest
from kio.index import load_response_schema

from service.kafka.context import FileRange, Part
from service.kafka.messages import encode_response, response_schema
from service.kafka.splice import new_marker, splice


def _fetch_response(version: int, records: list[bytes]):
    s = response_schema(1, version)
    parts = tuple(
        s("PartitionData", partition_index=i, error_code=0, high_watermark=10, last_stable_offset=10,
          log_start_offset=0, aborted_transactions=(), preferred_read_replica=-1, records=r)
        for i, r in enumerate(records))
    topic = s("FetchableTopicResponse", topic="t", topic_id=uuid.UUID(int=7), partitions=parts)
    return s.response(throttle_time=0, error_code=0, session_id=0, responses=(topic,))


@pytest.mark.parametrize("version", [4, 11, 12, 13, 16])
def test_spliced_equals_inline(tmp_path, version):
    payloads = [b"a" * 300, b"", b"xyz" * 50]  # 300 bytes forces a 2-byte uvarint in flexible versions
    f = tmp_path / "seg"
    f.write_bytes(b"HEAD" + b"".join(payloads))
    expected = encode_response(99, _fetch_response(version, payloads))

    fd = os.open(f, os.O_RDONLY)
    markers, ranges, pos = [], [], 4
    for p in payloads:
        if p:
            m = new_marker()
            markers.append(m)
            ranges.append((m, FileRange(os.dup(fd), pos, len(p))))
        else:
            markers.append(b"")
        pos += len(p)
    os.close(fd)
    spliced = splice(99, _fetch_response(version, markers), version >= 12, ranges)
    out = b""
    for part in spliced.parts:
        if isinstance(part, bytes):
            out += part
        else:
            assert isinstance(part, FileRange), part
            out += os.pread(part.fd, part.size, part.position)
    spliced.close()
    assert out == expected
    assert spliced.size == len(expected)
    assert load_response_schema(1, version).__flexible__ == (version >= 12)


class _Pieces:
    """A lazy part: its bytes made in pieces only when the writer asks."""

    def __init__(self, data: bytes, piece: int) -> None:
        self._data, self._piece = data, piece
        self.size = len(data)
        self.closed = False

    async def pieces(self):
        for at in range(0, len(self._data), self._piece):
            yield self._data[at:at + self._piece]

    def close(self) -> None:
        self.closed = True


async def _spliced_bytes(spliced) -> bytes:
    out = bytearray()
    for part in spliced.parts:
        if isinstance(part, (bytes, bytearray, memoryview)):
            out += part
        elif isinstance(part, FileRange):
            out += os.pread(part.fd, part.size, part.position)
        else:
            async for piece in part.pieces():
                out += piece
    return bytes(out)


@pytest.mark.parametrize("version", [4, 11, 12, 13, 16])
async def test_lazy_parts_splice_like_inline_bytes(tmp_path, version):
    payloads = [b"b" * 300, b"", b"q" * 70_000, b"z"]  # 70 000: a 3-byte uvarint in flexible versions
    expected = encode_response(41, _fetch_response(version, payloads))
    f = tmp_path / "seg"
    f.write_bytes(payloads[3])
    fd = os.open(f, os.O_RDONLY)
    markers, lazies = [], []
    ranges: list[tuple[bytes, Part]] = []
    for i, p in enumerate(payloads):
        if not p:
            markers.append(b"")
            continue
        m = new_marker()
        markers.append(m)
        if i == 3:  # a file range beside lazy parts
            ranges.append((m, FileRange(os.dup(fd), 0, len(p))))
        else:
            lazies.append(_Pieces(p, 4096))
            ranges.append((m, lazies[-1]))
    os.close(fd)
    spliced = splice(41, _fetch_response(version, markers), version >= 12, ranges)
    assert await _spliced_bytes(spliced) == expected
    assert spliced.size == len(expected)
    spliced.close()
    assert all(lz.closed for lz in lazies)


@pytest.mark.parametrize("version", [4, 12])
async def test_a_sealed_range_splices_as_its_opened_batches(tmp_path, version):
    from security.keys import new_data_key
    from tests.unit.conftest import make_batch
    from tiering.log.sealed_read import SealedRange, plan_pieces
    from tiering.log.sealing import BatchCipher
    from tiering.records import validate_batches

    cipher = BatchCipher(new_data_key())
    plain = b"".join(make_batch([b"v%d-" % i + b"x" * (i * 900)] * 3, base_offset=3 * i) for i in range(12))
    sealed, _ = cipher.seal_batches(plain, validate_batches(plain, 1 << 30))
    f = tmp_path / "sealed"
    f.write_bytes(b"JUNK" + sealed)  # the range starts past other bytes, as in a segment
    fd = os.open(f, os.O_RDONLY)
    pieces = plan_pieces(fd, 4, len(sealed), piece_bytes=16_000)
    assert len(pieces) > 3 and sum(p.size for p in pieces) == len(sealed)
    lazy = SealedRange(fd, pieces, cipher, inline_bytes=8_000)  # some pieces in a thread, some not
    m = new_marker()
    spliced = splice(9, _fetch_response(version, [b"", m]), version >= 12, [(m, lazy)])
    assert lazy.size == len(plain)
    assert await _spliced_bytes(spliced) == encode_response(9, _fetch_response(version, [b"", plain]))
    spliced.close()


def _inline(part: Part) -> bytes:
    assert isinstance(part, (bytes, bytearray, memoryview)), part
    return bytes(part)


@pytest.mark.parametrize("version", [4, 16])
def test_one_records_field_from_several_views(version):
    """A remote read answers with views of the chunks its batches lie in: one records field,
    its length prefix the views' total, the views sent one after the other as they are."""
    payloads = [b"q" * 200 + b"r" * 150, b"s" * 40]
    expected = encode_response(7, _fetch_response(version, payloads))
    chunk_a, chunk_b = bytearray(b"q" * 200), bytearray(b"r" * 150)
    views = [memoryview(chunk_a), memoryview(chunk_b)]
    m1, m2 = new_marker(), new_marker()
    spliced = splice(7, _fetch_response(version, [m1, m2]), version >= 12, [(m1, views), (m2, b"s" * 40)])
    assert any(p is views[0] for p in spliced.parts) and any(p is views[1] for p in spliced.parts)
    assert b"".join(_inline(p) for p in spliced.parts) == expected
    assert spliced.size == len(expected)
