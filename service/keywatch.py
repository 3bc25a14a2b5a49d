"""Key re-wrapping: data keys follow the key ring's current KEK.

`sediment keys rotate` adds a new current KEK to the ring file. The broker re-wraps at start and
whenever the ring file changes (its mtime is polled every remote.keyring.check.interval.ms): it
reloads the ring, rewraps every partition key file (local encryption at rest) and every remote
manifest entry not under the current KEK, and logs the counts. Only the small wrapped keys
change; segments and objects stay as they are. Once the log line says everything is under the
current key, older keys may be removed from the ring.

With AWS KMS there is no ring file: the configured key is the current one and KMS rotates its
backing key material itself, so nothing is re-wrapped.
"""

from __future__ import annotations

import asyncio
import logging

from security.files import FileStamp, file_stamp
from security.keys import KeyProvider, KeysError, LocalKeyProvider, load_keyring
from service.config import BrokerConfig
from tiering.log.data_keys import DataKeyError
from tiering.log.manager import LogManager
from tiering.tier import TierManager

log = logging.getLogger("sediment.keys")


class KeyRingWatcher:
    def __init__(self, config: BrokerConfig, keys: KeyProvider | None, logs: LogManager,
                 tier: TierManager | None) -> None:
        self._path: str | None = config["remote.keyring"] or None
        self._interval = config["remote.keyring.check.interval.ms"] / 1000
        self._keys = keys
        self._logs = logs
        self._tier = tier
        self._mtime: FileStamp | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not isinstance(self._keys, LocalKeyProvider) or self._path is None:
            return
        self._mtime = file_stamp(self._path)
        self._task = asyncio.create_task(self._loop(self._path))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self, path: str) -> None:
        pending = True  # a pass at start: a rotation while the broker was down
        while True:
            if not pending:
                await asyncio.sleep(self._interval)
                mtime = file_stamp(path)
                if mtime is None or mtime == self._mtime:
                    continue
                self._mtime = mtime
                try:
                    ring = await asyncio.to_thread(load_keyring, path)
                except KeysError as e:
                    log.error("key ring changed but cannot be loaded; keeping the old one: %s", e)
                    continue
                assert isinstance(self._keys, LocalKeyProvider)
                self._keys.ring = ring
                log.info("key ring reloaded: current key %s, %d keys", ring.current_id, len(ring.ids))
            pending = False
            try:
                await self.rewrap()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.error("re-wrapping data keys failed (retried when the key ring changes "
                          "or the broker restarts): %s", e)

    async def rewrap(self) -> tuple[int, int]:
        """Rewrap local partition keys and remote manifest entries under the current KEK."""
        assert self._keys is not None
        try:
            local = await self._logs.rewrap_keys()
        except DataKeyError as e:
            raise KeysError(str(e)) from None
        remote = await self._tier.rewrap_keys(self._keys) if self._tier is not None else 0
        current = self._keys.current_id
        if local or remote:
            log.info("re-wrapped %d partition data keys and %d remote segment keys under key %s",
                     local, remote, current)
        log.info("every data key is wrapped under the current key %s: older keys may be removed "
                 "from the key ring", current)
        return local, remote
