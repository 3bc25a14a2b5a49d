"""Producer ids: unique for the cluster's life, reserved from the metadata store in blocks."""

from __future__ import annotations

import asyncio

from service.metadata import MetadataStore

PRODUCER_ID_BLOCK = 1000  # producer ids reserved in the metadata store at a time


class ProducerIds:
    def __init__(self, store: MetadataStore, block: int = PRODUCER_ID_BLOCK) -> None:
        self._store = store
        self._block = block
        self._lock = asyncio.Lock()
        self._next = self._end = 0

    async def allocate(self) -> int:
        """A producer id never handed out before (InitProducerId, the transaction coordinator)."""
        async with self._lock:
            if self._next >= self._end:
                self._next = await self._store.allocate_producer_ids(self._block)
                self._end = self._next + self._block
            pid = self._next
            self._next += 1
            return pid
