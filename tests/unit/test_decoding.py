"""Strict request decoding: what kio alone lets through is refused before it reaches a handler."""

from __future__ import annotations

import dataclasses
import struct
import subprocess
import sys

import pytest
from kio.index import load_request_schema

from loadtest.fuzz_corpus import SEEDS_DIR, example, request_frame, seeds
from service.kafka.decoding import MAX_ELEMENTS, MalformedRequest, decode_request, prepare
from service.kafka.messages import encode
from service.kafka.versions import API_RANGES

METADATA, PRODUCE, API_VERSIONS, CREATE_PARTITIONS = 3, 0, 18, 37


def _h1(api: int, version: int, client: bytes = b"cli") -> bytes:
    return struct.pack(">hhih", api, version, 7, len(client)) + client


def _h2(api: int, version: int) -> bytes:
    return _h1(api, version) + b"\x00"


def _refused(api: int, version: int, frame: bytes) -> MalformedRequest:
    with pytest.raises(MalformedRequest) as info:
        decode_request(api, version, frame)
    return info.value


def test_every_served_version_compiles_and_its_seed_round_trips() -> None:
    for key, rng in API_RANGES.items():
        for version in range(rng.usable_min, rng.max + 1):
            prepare(key, version)
            body = example(load_request_schema(key, version))
            frame = request_frame(key, version, body)
            header, request = decode_request(key, version, frame)
            assert (header.request_api_key, header.request_api_version, header.client_id) == (key, version, "fuzz-seed")
            assert request == body, (key, version)
            assert frame.endswith(encode(request))


def test_checked_in_seed_corpus_is_current() -> None:
    """`python -m loadtest.fuzz_corpus` rewrites it after the served versions change."""
    on_disk = {p.name: p.read_bytes() for p in SEEDS_DIR.iterdir()}
    assert on_disk == seeds()


def test_null_array_where_schema_allows_none_is_refused() -> None:
    # Metadata v0: topics is not nullable (v1+ says null = all topics).
    e = _refused(METADATA, 0, _h1(METADATA, 0) + struct.pack(">i", -1))
    assert e.kind == "null" and "MetadataRequest.topics" in str(e)
    _, req = decode_request(METADATA, 1, _h1(METADATA, 1) + struct.pack(">i", -1))
    assert req.topics is None
    # CreatePartitions v2 (flexible): compact length 0 is null, not allowed for topics.
    e = _refused(CREATE_PARTITIONS, 2, _h2(CREATE_PARTITIONS, 2) + b"\x00" + struct.pack(">i", 1000) + b"\x01\x00")
    assert e.kind == "null" and "topics" in str(e)


def test_null_string_and_negative_lengths_are_refused() -> None:
    one_topic = _h1(METADATA, 0) + struct.pack(">i", 1)
    assert _refused(METADATA, 0, one_topic + struct.pack(">h", -1)).kind == "null"
    assert _refused(METADATA, 0, one_topic + struct.pack(">h", -2)).kind == "negative length"
    assert _refused(METADATA, 0, _h1(METADATA, 0) + struct.pack(">i", -7)).kind == "negative length"
    assert _refused(METADATA, 0, one_topic + struct.pack(">h", 9) + b"abc").kind == "length"


def test_array_longer_than_the_frame_is_refused_before_it_is_allocated() -> None:
    """kio allocates the claimed length first: 2^32 elements abort the process (not an
    exception), so this runs in a child process and must come back refused."""
    code = (
        "from service.kafka.decoding import decode_request, MalformedRequest\n"
        "import struct\n"
        "cases = [(3, 12, struct.pack('>hhih', 3, 12, 1, 0) + b'\\x00' + bytes.fromhex('ffffffff0f000000')),\n"
        "         (3, 0, struct.pack('>hhih', 3, 0, 1, 0) + struct.pack('>i', 0x7fffffff))]\n"
        "for k, v, f in cases:\n"
        "    try:\n"
        "        decode_request(k, v, f)\n"
        "    except MalformedRequest as e:\n"
        "        print(e.kind, e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == [
        "length MetadataRequest.topics: 4294967294 elements cannot fit in 3 bytes",
        "length MetadataRequest.topics: 2147483647 elements cannot fit in 0 bytes",
    ]


def test_records_longer_than_the_frame_are_refused() -> None:
    body = struct.pack(">hhi", -1, 1, 1000) + struct.pack(">i", 1) + struct.pack(">h", 1) + b"t"
    body += struct.pack(">i", 1) + struct.pack(">i", 0) + struct.pack(">i", 1 << 30) + b"x" * 10
    e = _refused(PRODUCE, 3, _h1(PRODUCE, 3) + body)
    assert e.kind == "length" and "records" in str(e)


def test_trailing_bytes_are_ignored_as_kafka_does() -> None:
    """librdkafka's all-topics Metadata v9+ writes a 4-byte placeholder where the compact null
    array (1 byte) goes: Kafka reads the null and ignores what is left, and so must we."""
    frame = _h2(METADATA, 12)[:-1] + b"\x00" + bytes.fromhex("0000000001 0000".replace(" ", ""))
    _, req = decode_request(METADATA, 12, frame)
    assert req.topics is None


def test_tagged_fields_unknown_duplicate_or_of_the_wrong_size_are_refused() -> None:
    base = _h2(API_VERSIONS, 3) + b"\x03sw\x021"  # client software name and version
    assert decode_request(API_VERSIONS, 3, base + b"\x00")[1].client_software_name == "sw"
    assert _refused(API_VERSIONS, 3, base + b"\x01\x63\x01\x00").kind == "tagged field"  # tag 99
    # Metadata v12's topic has no tags either; the header has none: an unknown one in the header.
    hdr = _h1(METADATA, 12) + b"\x01\x07\x00"
    assert _refused(METADATA, 12, hdr + b"\x01\x00\x00\x00").kind == "tagged field"
    # Fetch v12 has one tagged field on the request: cluster_id (tag 0, a compact string).
    no_tags = request_frame(1, 12, dataclasses.replace(example(load_request_schema(1, 12)), cluster_id=None))
    assert no_tags.endswith(b"\x00")
    prefix, value = no_tags[:-1], b"\x04abc"  # compact string "abc": 4 bytes
    assert decode_request(1, 12, prefix + b"\x01\x00\x04" + value)[1].cluster_id == "abc"
    wrong_size = prefix + b"\x01\x00\x06" + value + b"\x00\x00"
    assert "declares 6 bytes, its value takes 4" in str(_refused(1, 12, wrong_size))
    past_end = prefix + b"\x01\x00\x09" + value
    assert _refused(1, 12, past_end).kind == "length"
    twice = prefix + b"\x02\x00\x04" + value + b"\x00\x04" + value
    assert "given twice" in str(_refused(1, 12, twice))


def test_memoryview_frames_decode() -> None:
    frame = request_frame(PRODUCE, 11, example(load_request_schema(PRODUCE, 11)))
    _, req = decode_request(PRODUCE, 11, memoryview(bytearray(frame)).toreadonly())
    assert req.topic_data[0].partition_data[0].records.startswith(b"\x00" * 8)


def test_invalid_utf8_and_booleans_are_refused_by_kio() -> None:
    assert _refused(METADATA, 0, _h1(METADATA, 0) + struct.pack(">ih", 1, 2) + b"\xff\xfe").kind == "value"
    assert _refused(METADATA, 12, _h2(METADATA, 12) + b"\x01\x02\x00\x00").kind == "value"


def test_more_array_elements_than_the_budget_are_refused() -> None:
    """Decoding runs on the event loop at about 1 us per element: a 30 MB Metadata request of
    10 million one-letter topics held it for 7 s. The budget counts all arrays together."""
    def metadata_v0(n: int) -> bytes:
        return _h1(METADATA, 0) + struct.pack(">i", n) + (struct.pack(">h", 1) + b"t") * n

    _, req = decode_request(METADATA, 0, metadata_v0(MAX_ELEMENTS))
    assert len(req.topics) == MAX_ELEMENTS
    e = _refused(METADATA, 0, metadata_v0(MAX_ELEMENTS + 1))
    assert e.kind == "too many elements"
    # Nested arrays share the budget: ListOffsets v1, 2 topics of MAX_ELEMENTS // 2 + 1 partitions.
    half = MAX_ELEMENTS // 2 + 1
    topic = struct.pack(">h", 1) + b"t" + struct.pack(">i", half) + struct.pack(">iq", 0, -1) * half
    body = struct.pack(">i", -1) + struct.pack(">i", 2) + topic * 2
    assert _refused(2, 1, _h1(2, 1) + body).kind == "too many elements"
    # The budget is per request: the next one starts afresh.
    assert len(decode_request(METADATA, 0, metadata_v0(3))[1].topics) == 3
