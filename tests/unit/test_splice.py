"""The sendfile splice must produce exactly the bytes kio would have written with the records."""

import os
import struct
import uuid

import pytest
from kio.index import load_response_schema

from service.kafka.context import FileRange
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
            out += os.pread(part.fd, part.size, part.position)
    spliced.close()
    assert out == expected
    assert spliced.size == len(expected)
    assert load_response_schema(1, version).__flexible__ == (version >= 12)
