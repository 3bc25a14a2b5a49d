"""Record batch v2, handled as bytes.

The broker never decodes individual records on the produce or fetch path: it reads the fixed
61-byte batch header, checks the CRC-32C, and patches the base offset (and, for LogAppendTime,
the max timestamp) in place. Layout (big-endian):

    baseOffset int64 @0, batchLength int32 @8, partitionLeaderEpoch int32 @12, magic int8 @16,
    crc uint32 @17 (CRC-32C of bytes 21..end), attributes int16 @21, lastOffsetDelta int32 @23,
    baseTimestamp int64 @27, maxTimestamp int64 @35, producerId int64 @43, producerEpoch int16 @51,
    baseSequence int32 @53, recordCount int32 @57, then the records.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

import crc32c as _crc32c

HEADER_SIZE = 61
# batchLength counts the bytes after itself: the header minus baseOffset and batchLength.
MIN_BATCH_LENGTH = HEADER_SIZE - 12
LOG_OVERHEAD = 12  # baseOffset + batchLength
MAGIC_V2 = 2

BASE_OFFSET_OFFSET = 0
LENGTH_OFFSET = 8
MAGIC_OFFSET = 16
CRC_OFFSET = 17
ATTRIBUTES_OFFSET = 21
BASE_TIMESTAMP_OFFSET = 27
MAX_TIMESTAMP_OFFSET = 35

COMPRESSION_MASK = 0x07
TIMESTAMP_TYPE_MASK = 0x08
TRANSACTIONAL_MASK = 0x10
CONTROL_MASK = 0x20

NO_TIMESTAMP = -1

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
NO_SEQUENCE = -1
INT32_MAX = (1 << 31) - 1

# Control record types (the int16 after the version in a control record's key).
CONTROL_ABORT = 0
CONTROL_COMMIT = 1

_HEADER = struct.Struct(">qiibIhiqqqhii")
_INT64 = struct.Struct(">q")
_UINT32 = struct.Struct(">I")
_INT16 = struct.Struct(">h")
_TIMESTAMPS = struct.Struct(">qq")
_LENGTH_MAGIC = struct.Struct(">i4xb")  # batchLength @8, magic @16 (relative to @8)

assert _HEADER.size == HEADER_SIZE


class Rejection(enum.Enum):
    """Why a write was refused. Storage speaks no protocol: the service maps each reason to the
    error code its clients expect (service/errors.py)."""

    CORRUPT = "corrupt"  # truncated, a bad length or CRC, a malformed varint
    TOO_LARGE = "too large"  # a batch over max.message.bytes
    UNSUPPORTED_FORMAT = "unsupported format"  # not a v2 (magic 2) batch
    INVALID = "invalid"  # well formed, but not allowed (empty, a client's control batch, ...)
    # Idempotent and transactional producers (raised by the producer state of a partition log).
    OUT_OF_ORDER_SEQUENCE = "out of order sequence"
    STALE_PRODUCER_EPOCH = "stale producer epoch"  # older than the epoch the partition has seen
    TXN_STATE = "transaction state"  # a plain write while the producer has a transaction open
    STALE_COORDINATOR_EPOCH = "stale coordinator epoch"  # a marker from a deposed coordinator


class InvalidRecordError(Exception):
    """A write Kafka would reject; `reason` says why, for the service to answer with."""

    def __init__(self, reason: Rejection, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class BatchHeader:
    position: int  # byte position in the buffer (or file) it was read from
    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size(self) -> int:
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def compression(self) -> int:
        return self.attributes & COMPRESSION_MASK

    @property
    def is_log_append_time(self) -> bool:
        return bool(self.attributes & TIMESTAMP_TYPE_MASK)

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_MASK)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_MASK)

    @property
    def has_producer_id(self) -> bool:
        return self.producer_id > NO_PRODUCER_ID

    @property
    def last_sequence(self) -> int:
        return NO_SEQUENCE if self.base_sequence < 0 else increment_sequence(
            self.base_sequence, self.last_offset_delta)


def increment_sequence(sequence: int, increment: int) -> int:
    """Producer sequences are int32 and wrap from INT32_MAX to 0, as in Kafka."""
    if sequence > INT32_MAX - increment:
        return increment - (INT32_MAX - sequence) - 1
    return sequence + increment


def in_sequence(last_sequence: int, next_sequence: int) -> bool:
    return next_sequence == last_sequence + 1 or (next_sequence == 0 and last_sequence == INT32_MAX)


def crc32c(data: bytes | bytearray | memoryview) -> int:
    return _crc32c.crc32c(data)


def read_header(buf: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    """Header of the batch at pos; the caller makes sure HEADER_SIZE bytes are there."""
    return BatchHeader(pos, *_HEADER.unpack_from(buf, pos))


def iter_batches(buf: bytes | bytearray | memoryview, start: int = 0) -> Iterator[BatchHeader]:
    """Whole batches from start; stops silently at an incomplete (or nonsensical) tail."""
    end = len(buf)
    pos = start
    unpack = _HEADER.unpack_from
    while pos + HEADER_SIZE <= end:
        fields = unpack(buf, pos)
        length = fields[1]
        if length < MIN_BATCH_LENGTH or pos + length + LOG_OVERHEAD > end:
            return
        yield BatchHeader(pos, *fields)
        pos += length + LOG_OVERHEAD


def validate_batches(
    buf: bytes | bytearray | memoryview, max_message_bytes: int
) -> list[BatchHeader]:
    """Check that buf is a sequence of whole, intact v2 batches, in Kafka's order of checks.

    Raises InvalidRecordError saying why.
    """
    end = len(buf)
    if end == 0:
        raise InvalidRecordError(Rejection.INVALID, "empty record set")
    view = memoryview(buf)
    unpack = _HEADER.unpack_from
    headers: list[BatchHeader] = []
    pos = 0
    while pos < end:
        remaining = end - pos
        # Magic sits at the same place in v0/v1 message sets, so read it before trusting lengths.
        if remaining < MAGIC_OFFSET + 1:
            raise InvalidRecordError(Rejection.CORRUPT, f"truncated batch at byte {pos}")
        length, magic = _LENGTH_MAGIC.unpack_from(buf, pos + LENGTH_OFFSET)
        if magic != MAGIC_V2:
            raise InvalidRecordError(
                Rejection.UNSUPPORTED_FORMAT, f"magic {magic} at byte {pos}; only v2 batches"
            )
        if length < MIN_BATCH_LENGTH or remaining < HEADER_SIZE:
            raise InvalidRecordError(Rejection.CORRUPT, f"bad batch length {length} at byte {pos}")
        size = length + LOG_OVERHEAD
        if size > remaining:
            raise InvalidRecordError(
                Rejection.CORRUPT, f"batch at byte {pos} claims {size} bytes, {remaining} present"
            )
        if size > max_message_bytes:
            raise InvalidRecordError(
                Rejection.TOO_LARGE, f"batch of {size} bytes exceeds max.message.bytes {max_message_bytes}"
            )
        fields = unpack(buf, pos)
        if _crc32c.crc32c(view[pos + ATTRIBUTES_OFFSET : pos + size]) != fields[4]:
            raise InvalidRecordError(Rejection.CORRUPT, f"CRC mismatch in batch at byte {pos}")
        last_delta = fields[6]
        count = fields[12]
        # Kafka: the offsets a client batch spans must match its record count.
        if count < 1 or last_delta < 0 or count != last_delta + 1:
            raise InvalidRecordError(
                Rejection.INVALID,
                f"batch at byte {pos}: recordCount {count}, lastOffsetDelta {last_delta}",
            )
        headers.append(BatchHeader(pos, *fields))
        pos += size
    return headers


def leading_batches(
    pieces: Iterable[bytes | memoryview], *, from_offset: int = -1, max_bytes: int | None = None,
    min_one: bool = False, below: int | None = None,
) -> tuple[list[memoryview], int | None]:
    """The whole batches of pieces (no batch spans two) from the one holding from_offset on,
    within max_bytes (but at least one batch with min_one) and ending below offset `below`:
    as views of the pieces, never copied, and the offset after the last batch taken (None
    when none is)."""
    out: list[memoryview] = []
    taken = 0
    next_offset = None
    for piece in pieces:
        view = memoryview(piece)
        start = end = None
        stopped = False
        for h in iter_batches(view):
            if h.last_offset < from_offset:
                continue
            if start is None:
                start = h.position
            size = taken + h.position + h.size - start
            if (max_bytes is not None and size > max_bytes and not (min_one and next_offset is None)) \
                    or (below is not None and h.last_offset >= below):
                stopped = True
                break
            end = h.position + h.size
            next_offset = h.last_offset + 1
        if start is not None and end is not None:
            out.append(view[start:end])
            taken += end - start
        if stopped:
            break
    return out, next_offset


def offset_pieces(
    data: bytes, headers: list[BatchHeader], base_offset: int
) -> tuple[list[bytes | memoryview], list[BatchHeader]]:
    """The batches of `data` with baseOffsets consecutive from base_offset, as pieces for one
    writev: each batch's new 8-byte baseOffset, then the rest of the batch as a view of data.
    The records are never copied (assign_offsets patches a bytearray copy instead); baseOffset
    lies outside the CRC, so the batches stay valid. Also the headers with their new offsets."""
    view = memoryview(data)
    pieces: list[bytes | memoryview] = []
    stamped: list[BatchHeader] = []
    offset = base_offset
    for h in headers:
        pieces.append(_INT64.pack(offset))
        pieces.append(view[h.position + BASE_OFFSET_OFFSET + 8 : h.position + h.size])
        stamped.append(replace(h, base_offset=offset))
        offset += h.last_offset_delta + 1
    return pieces, stamped


def assign_offsets(
    buf: bytearray,
    headers: list[BatchHeader],
    base_offset: int,
    log_append_time_ms: int | None,
) -> int:
    """Patch baseOffset of each batch in place, consecutively from base_offset.

    baseOffset lies outside the CRC, so plain offset assignment needs no CRC work. With
    log_append_time_ms, the batch becomes LogAppendTime: the timestampType bit is set and
    maxTimestamp is overwritten (consumers then use maxTimestamp for every record), which
    does change CRC-covered bytes. Like Kafka's in-place path (DefaultRecordBatch.setMaxTimestamp),
    baseTimestamp is left alone so record timestamp deltas stay meaningful.
    Returns the last offset assigned.
    """
    offset = base_offset
    view = memoryview(buf) if log_append_time_ms is not None else None
    for h in headers:
        pos = h.position
        _INT64.pack_into(buf, pos + BASE_OFFSET_OFFSET, offset)
        if view is not None:
            _INT16.pack_into(buf, pos + ATTRIBUTES_OFFSET, h.attributes | TIMESTAMP_TYPE_MASK)
            _INT64.pack_into(buf, pos + MAX_TIMESTAMP_OFFSET, log_append_time_ms)
            crc = _crc32c.crc32c(view[pos + ATTRIBUTES_OFFSET : pos + h.size])
            _UINT32.pack_into(buf, pos + CRC_OFFSET, crc)
        offset += h.last_offset_delta + 1
    if view is not None:
        view.release()
    return offset - 1



def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Zig-zag varint (records v2 use signed varints) -> (value, next position)."""
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise InvalidRecordError(Rejection.CORRUPT, "varint too long")


def record_timestamps(batch: bytes | bytearray | memoryview) -> list[tuple[int, int]]:
    """(offset, timestamp) of every record in one whole batch.

    Decodes (and decompresses) the batch, so it is for rare paths such as ListOffsets by
    timestamp, never for produce or fetch. LogAppendTime batches give every record the
    batch's max timestamp, as Kafka does.
    """
    from tiering.compression import decompress

    h = read_header(batch, 0)
    if h.is_log_append_time:
        return [(h.base_offset + i, h.max_timestamp) for i in range(h.last_offset_delta + 1)]
    body = bytes(memoryview(batch)[HEADER_SIZE:h.size])
    if h.compression:
        body = decompress(h.compression, body)
    out = []
    pos = 0
    for _ in range(h.record_count):
        length, pos = _varint(body, pos)
        end = pos + length
        ts_delta, p = _varint(body, pos + 1)  # skip the attributes byte
        offset_delta, _ = _varint(body, p)
        out.append((h.base_offset + offset_delta, h.base_timestamp + ts_delta))
        pos = end
    return out


@dataclass(slots=True)
class RecordColumns:
    """Decoded records, a list per field (what a columnar or line encoder reads). Headers are
    flattened: record i has header_counts[i] of them, in order, in header_keys/header_values.
    Header keys stay bytes (Kafka's are UTF-8 strings; decoding is the reader's choice)."""

    offsets: list[int]
    timestamps: list[int]
    keys: list[bytes | None]
    values: list[bytes | None]
    header_counts: list[int]
    header_keys: list[bytes]
    header_values: list[bytes | None]

    @classmethod
    def empty(cls) -> RecordColumns:
        return cls([], [], [], [], [], [], [])

    def __len__(self) -> int:
        return len(self.offsets)


def decode_records(batch: bytes | bytearray | memoryview, out: RecordColumns, start: int = 0,
                   end: int = 1 << 63, *, max_decompressed: int) -> None:
    """Append to `out` the records of one whole batch whose offsets lie in [start, end); control
    batches are the caller's to skip or read, as are aborted transactions. LogAppendTime batches
    give every record the batch's max timestamp, as Kafka's consumers do. Raises
    InvalidRecordError when the batch is not v2, does not decompress, would decompress to more
    than max_decompressed bytes, or its records do not parse as their lengths say (header
    lengths included, even of records outside the range); the message names no offset, the
    caller knows the batch.

    For records read on a client's behalf (HTTP replay and consumers), never the Kafka fetch
    path, and bounded because producers choose what a batch opens to (tiering/compression.py).
    Written here rather than taken from a client library: the Python decoders of kafka-python
    and kio build an object per record (kio also rounds timestamps to whole seconds), and the
    fast ones are C inside clients (librdkafka, aiokafka's extension) that the broker does not
    depend on. This one appends straight into the lists the replay's encoders read, with the
    one- and two-byte varints (nearly all deltas and lengths) decoded inline: a function call
    per varint was a third of the time."""
    from tiering.compression import DecompressionError, decompress_bounded

    h = read_header(batch, 0)
    if h.magic != MAGIC_V2:
        raise InvalidRecordError(Rejection.UNSUPPORTED_FORMAT, f"batch of magic {h.magic}")
    view = memoryview(batch)[HEADER_SIZE:h.size]
    try:
        body = decompress_bounded(h.compression, view, max_decompressed) if h.compression else bytes(view)
    except DecompressionError as e:
        raise InvalidRecordError(Rejection.CORRUPT, str(e)) from None
    size = len(body)
    base_offset, base_ts = h.base_offset, h.base_timestamp
    fixed_ts = h.max_timestamp if h.is_log_append_time else None
    offsets, timestamps, keys, values = out.offsets, out.timestamps, out.keys, out.values
    header_counts, header_keys, header_values = out.header_counts, out.header_keys, out.header_values
    varint = _varint
    pos = 0
    try:
        for _ in range(h.record_count):
            # Each `z` block reads one zig-zag varint at pos (inline for one or two bytes).
            z = body[pos]
            if z < 0x80:
                pos += 1
            elif body[pos + 1] < 0x80:
                z, pos = (z & 0x7F) | (body[pos + 1] << 7), pos + 2
            else:
                z, pos = _zigzag(*varint(body, pos))
            length = (z >> 1) ^ -(z & 1)
            record_end = pos + length
            pos += 1  # attributes (unused in v2)
            z = body[pos]
            if z < 0x80:
                pos += 1
            elif body[pos + 1] < 0x80:
                z, pos = (z & 0x7F) | (body[pos + 1] << 7), pos + 2
            else:
                z, pos = _zigzag(*varint(body, pos))
            timestamp = base_ts + ((z >> 1) ^ -(z & 1)) if fixed_ts is None else fixed_ts
            z = body[pos]
            if z < 0x80:
                pos += 1
            elif body[pos + 1] < 0x80:
                z, pos = (z & 0x7F) | (body[pos + 1] << 7), pos + 2
            else:
                z, pos = _zigzag(*varint(body, pos))
            offset = base_offset + ((z >> 1) ^ -(z & 1))
            if length < 0:
                raise IndexError("negative record length")
            if offset < start or offset >= end:
                if record_end > size:
                    raise IndexError(f"a record of {length} bytes at byte {record_end - length} overruns the batch")
                pos = record_end
                continue
            z = body[pos]
            if z < 0x80:
                pos += 1
            elif body[pos + 1] < 0x80:
                z, pos = (z & 0x7F) | (body[pos + 1] << 7), pos + 2
            else:
                z, pos = _zigzag(*varint(body, pos))
            if z & 1:  # negative: -1 is a null key
                key = None
            else:
                key = body[pos:pos + (z >> 1)]
                pos += z >> 1
            z = body[pos]
            if z < 0x80:
                pos += 1
            elif body[pos + 1] < 0x80:
                z, pos = (z & 0x7F) | (body[pos + 1] << 7), pos + 2
            else:
                z, pos = _zigzag(*varint(body, pos))
            if z & 1:
                value = None
            else:
                value = body[pos:pos + (z >> 1)]
                pos += z >> 1
            if body[pos] == 0:  # no headers, the common case
                count, pos = 0, pos + 1
            else:
                count, pos = varint(body, pos)
            if count < 0:
                raise IndexError("negative header count")
            for _ in range(count):
                n, pos = varint(body, pos)
                if n < 0:
                    raise IndexError("null header key")
                header_keys.append(body[pos:pos + n])
                pos += n
                n, pos = varint(body, pos)
                if n < 0:
                    header_values.append(None)
                else:
                    header_values.append(body[pos:pos + n])
                    pos += n
            # Slices stop short at the end of the body: a length that overran its record (or
            # the body) left pos past the record's end.
            if pos != record_end or pos > size:
                raise IndexError(f"record ends at byte {pos}, its length says {record_end}")
            offsets.append(offset)
            timestamps.append(timestamp)
            keys.append(key)
            values.append(value)
            header_counts.append(count)
    except IndexError as e:
        # Python's own IndexError (reading past the end of the body) says only "index out of range".
        detail = "cut short" if e.args == ("index out of range",) else str(e)
        raise InvalidRecordError(Rejection.CORRUPT, f"records do not parse ({detail})") from None


def _zigzag(value: int, pos: int) -> tuple[int, int]:
    """A decoded signed varint back to its zig-zag form (the rare long varints of decode_records)."""
    return (value << 1) ^ (value >> 63), pos


def _write_varint(value: int, out: bytearray) -> None:
    zigzag = (value << 1) ^ (value >> 63)
    if zigzag < 0x80:  # most lengths and deltas of small records: one byte
        out.append(zigzag)
        return
    while True:
        byte = zigzag & 0x7F
        zigzag >>= 7
        if zigzag:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


_CONTROL_KEY = struct.Struct(">hh")
_CONTROL_VALUE = struct.Struct(">hi")
_BODY_HEADER = struct.Struct(">hiqqqhii")  # attributes .. recordCount (bytes 21..60)
_PREFIX = struct.Struct(">qiibI")  # baseOffset .. crc


def build_control_batch(
    producer_id: int, producer_epoch: int, commit: bool, coordinator_epoch: int, timestamp_ms: int,
    base_offset: int = 0,
) -> bytes:
    """A transaction marker: one control record in a transactional control batch (records v2).

    Key: version int16 (0), type int16 (0 ABORT, 1 COMMIT); value: version int16 (0),
    coordinator epoch int32. This is Kafka's EndTransactionMarker.
    """
    key = _CONTROL_KEY.pack(0, CONTROL_COMMIT if commit else CONTROL_ABORT)
    value = _CONTROL_VALUE.pack(0, coordinator_epoch)
    record = bytearray([0])  # record attributes
    _write_varint(0, record)  # timestamp delta
    _write_varint(0, record)  # offset delta
    _write_varint(len(key), record)
    record += key
    _write_varint(len(value), record)
    record += value
    _write_varint(0, record)  # no headers
    records = bytearray()
    _write_varint(len(record), records)
    records += record
    body = _BODY_HEADER.pack(
        CONTROL_MASK | TRANSACTIONAL_MASK, 0, timestamp_ms, timestamp_ms,
        producer_id, producer_epoch, NO_SEQUENCE, 1,
    ) + bytes(records)
    length = len(body) + 9  # partitionLeaderEpoch + magic + crc
    return _PREFIX.pack(base_offset, length, 0, MAGIC_V2, _crc32c.crc32c(body)) + body


@dataclass(frozen=True, slots=True)
class Record:
    """One record to write: key and value bytes (None is Kafka's null), its CreateTime and its
    headers (name, value or None)."""

    key: bytes | None
    value: bytes | None
    timestamp: int
    headers: tuple[tuple[str, bytes | None], ...] = ()


def encode_record(offset_delta: int, timestamp_delta: int, record: Record) -> bytes:
    """One record of a v2 batch (Kafka's DefaultRecord): its length, attributes (0), the
    timestamp and offset deltas, key, value and headers, every length a zig-zag varint."""
    body = bytearray(b"\x00")
    _write_varint(timestamp_delta, body)
    _write_varint(offset_delta, body)
    for part in (record.key, record.value):
        if part is None:
            _write_varint(-1, body)
        else:
            _write_varint(len(part), body)
            body += part
    _write_varint(len(record.headers), body)
    for name, value in record.headers:
        raw = name.encode("utf-8")
        _write_varint(len(raw), body)
        body += raw
        if value is None:
            _write_varint(-1, body)
        else:
            _write_varint(len(value), body)
            body += value
    out = bytearray()
    _write_varint(len(body), out)
    out += body
    return bytes(out)


class BatchBuilder:
    """A v2 batch as a plain producer writes it (no compression, CreateTime, no producer id,
    partitionLeaderEpoch -1), filled one record at a time within a size bound. The broker's own
    encoder, beside build_control_batch: the protocol codec (kio) carries batches as opaque
    bytes, and a client library's builder would bring a whole Kafka client into the broker."""

    __slots__ = ("records", "size", "base_timestamp", "max_timestamp")

    def __init__(self) -> None:
        self.records: list[bytes] = []
        self.size = HEADER_SIZE
        self.base_timestamp = self.max_timestamp = NO_TIMESTAMP

    def encode(self, record: Record) -> bytes:
        """The record as it would be appended next (its deltas depend on its place)."""
        base = record.timestamp if not self.records else self.base_timestamp
        return encode_record(len(self.records), record.timestamp - base, record)

    def add(self, record: Record, encoded: bytes) -> None:
        if not self.records:
            self.base_timestamp = self.max_timestamp = record.timestamp
        self.max_timestamp = max(self.max_timestamp, record.timestamp)
        self.records.append(encoded)
        self.size += len(encoded)

    def build(self) -> bytes:
        body = _BODY_HEADER.pack(0, len(self.records) - 1, self.base_timestamp, self.max_timestamp,
                                 NO_PRODUCER_ID, NO_PRODUCER_EPOCH, NO_SEQUENCE, len(self.records))
        body += b"".join(self.records)
        return _PREFIX.pack(0, len(body) + 9, -1, MAGIC_V2, _crc32c.crc32c(body)) + body


def build_batch(records: Iterable[Record]) -> bytes:
    """One batch of all these records, whatever its size."""
    builder = BatchBuilder()
    for r in records:
        builder.add(r, builder.encode(r))
    return builder.build()


def control_record_type(batch: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(type, coordinator epoch) of the control record in a whole control batch; for tests and
    tools (the log tracks markers from batch headers plus this one small record)."""
    h = read_header(batch, 0)
    if not h.is_control:
        raise InvalidRecordError(Rejection.INVALID, "not a control batch")
    body = bytes(memoryview(batch)[HEADER_SIZE:h.size])
    _, pos = _varint(body, 0)  # record length
    pos += 1  # attributes
    _, pos = _varint(body, pos)  # timestamp delta
    _, pos = _varint(body, pos)  # offset delta
    key_len, pos = _varint(body, pos)
    if key_len < 4:
        raise InvalidRecordError(Rejection.INVALID, "control record key too short")
    _, kind = _CONTROL_KEY.unpack_from(body, pos)
    pos += key_len
    value_len, pos = _varint(body, pos)
    epoch = -1
    if value_len >= 6:
        epoch = _CONTROL_VALUE.unpack_from(body, pos)[1]
    return kind, epoch
