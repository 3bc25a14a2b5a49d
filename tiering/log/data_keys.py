"""Per-partition data keys for local segment encryption (`partition.key` in the partition dir).

The file holds only the wrapped data key, never the key itself:

    {"version": 1, "key_id": "<KEK id>", "wrapped": "<base64 blob>"}

It is created (a random 256-bit key wrapped by the current KEK) the first time a partition is
opened with log.encryption.enable, and from then on decides that the partition may hold sealed
batches: it is read whenever the partition opens, whatever the flag says now. Re-wrapping
rewrites it under the current KEK (atomically, by rename); the data key, and so the segments,
stay as they are.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from security.keys import KeyProvider, KeysError, WrappedKey, new_data_key
from tiering.log.files import write_atomically
from tiering.log.sealing import BatchCipher

log = logging.getLogger("sediment.log.keys")

KEY_FILE = "partition.key"
_VERSION = 1


class DataKeyError(Exception):
    """A partition key file that cannot be read or unwrapped."""


def read_key_file(directory: Path) -> WrappedKey | None:
    path = directory / KEY_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise DataKeyError(f"{path}: unreadable partition key file ({e})") from None
    try:
        if doc.get("version") != _VERSION:
            raise ValueError(f"version {doc.get('version')!r}")
        return WrappedKey.from_b64(str(doc["key_id"]), str(doc["wrapped"]))
    except (KeyError, TypeError, ValueError, AttributeError, KeysError) as e:
        raise DataKeyError(f"{path}: malformed partition key file ({e})") from None


def write_key_file(directory: Path, wrapped: WrappedKey) -> None:
    body = json.dumps({"version": _VERSION, "key_id": wrapped.key_id, "wrapped": wrapped.blob_b64()})
    write_atomically(directory / KEY_FILE, (body + "\n").encode(), durable=True)


@dataclass
class PartitionKeys:
    """Opens (and creates) partition data keys through a KEK provider."""

    provider: KeyProvider | None
    enabled: bool  # log.encryption.enable: new partitions get a key, appends are sealed

    async def cipher_for(self, directory: Path, *, create: bool = True) -> BatchCipher | None:
        """The partition's cipher: from its key file, or, when encryption is on and `create`,
        from a new data key whose wrapped form is written first (durably). None when the
        partition is not encrypted."""
        wrapped = read_key_file(directory)
        if wrapped is None:
            if not (self.enabled and create):
                return None
            if self.provider is None:
                raise DataKeyError("log.encryption.enable needs a key provider")
            data_key = new_data_key()
            wrapped = await self.provider.wrap(data_key)
            directory.mkdir(parents=True, exist_ok=True)
            write_key_file(directory, wrapped)
            return BatchCipher(data_key, wrapped.key_id)
        if self.provider is None:
            raise DataKeyError(f"{directory} is encrypted (key {wrapped.key_id}) but no key "
                               "provider is configured (remote.keyring or remote.kms.key.id)")
        try:
            data_key = await self.provider.unwrap(wrapped)
        except KeysError as e:
            raise DataKeyError(f"{directory / KEY_FILE}: {e}") from None
        return BatchCipher(data_key, wrapped.key_id)

    async def rewrap(self, directory: Path) -> bool:
        """Rewrap the partition's data key under the current KEK; True when the file changed."""
        if self.provider is None:
            return False
        return await rewrap_key_file(directory, self.provider)


async def rewrap_key_file(directory: Path, provider: KeyProvider) -> bool:
    wrapped = read_key_file(directory)
    if wrapped is None or wrapped.key_id == provider.current_id:
        return False
    try:
        data_key = await provider.unwrap(wrapped)
    except KeysError as e:
        raise DataKeyError(f"{directory / KEY_FILE}: {e}") from None
    write_key_file(directory, await provider.wrap(data_key))
    return True
