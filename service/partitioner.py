"""Which partition a record goes to when its producer does not say: Kafka's default
partitioner, for the producers inside the broker (the HTTP API's produce).

- A keyed record: murmur2 of the key bytes, made positive, modulo the partition count, exactly as
  the Java client (`BuiltInPartitioner.partitionForKey`) and librdkafka's `murmur2_random`, so a
  key lands where a Kafka client would put it.
- An unkeyed record: sticky, as the Java client since KIP-480 / KIP-794: one partition takes
  records until `batch.size` bytes have gone to it, then a random partition is picked.

murmur2 is written here (a dozen lines, from Kafka's `Utils.murmur2`): the packages that offer
it are either a whole Kafka client or small unmaintained bindings whose seed and tail handling
would need the same checking as this.
"""

from __future__ import annotations

import random
import struct

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK = 0xFFFFFFFF
DEFAULT_BATCH_SIZE = 16384  # the Java producer's batch.size default


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (Utils.murmur2) as an unsigned 32-bit value."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length & ~3
    for (k,) in struct.iter_unpack("<I", data[:whole]):
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length & 3
    if tail:
        if tail == 3:
            h ^= data[whole + 2] << 16
        if tail >= 2:
            h ^= data[whole + 1] << 8
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def partition_for_key(key: bytes, partitions: int) -> int:
    """Kafka's `Utils.toPositive(Utils.murmur2(key)) % numPartitions`."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class StickyPartitioner:
    """Unkeyed records of one producer and topic: stay on a partition for batch_size bytes."""

    def __init__(self, batch_size: int = DEFAULT_BATCH_SIZE, rng: random.Random | None = None) -> None:
        self._batch_size = batch_size
        self._rng = rng or random.Random()
        self._current = -1
        self._bytes = 0

    def partition(self, partitions: int, size: int) -> int:
        """The partition for an unkeyed record of size bytes among `partitions`."""
        if self._current < 0 or self._current >= partitions or self._bytes >= self._batch_size:
            self._current = self._rng.randrange(partitions)
            self._bytes = 0
        self._bytes += size
        return self._current
