"""Envelope encryption: per-segment data keys wrapped by key-encryption keys (KEKs).

Every uploaded segment gets its own random 256-bit data key (`new_data_key`). The data key
encrypts the segment's chunks; only its wrapped form, tagged with the id of the KEK that wrapped
it, is stored (in the partition manifest). KEKs come from a `KeyProvider`: a local key ring file
(`LocalKeyProvider`) or AWS KMS (`KmsKeyProvider`).

Key ring file: JSON, mode 0600, replaced atomically on every change:

    {"version": 1, "current": "<id>", "keys": [{"id": ..., "created_ms": ..., "key": <base64>}]}

Rotation adds a new current KEK and keeps the old ones, so data keys wrapped earlier still
unwrap. The broker then re-wraps the stored data keys (partition key files of local encryption,
manifest entries of remote segments) under the new KEK (service/keywatch.py); only after that
may an old KEK leave the ring.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

DATA_KEY_SIZE = 32
KEK_SIZE = 32
NONCE_SIZE = 12
KEYRING_VERSION = 1

# Wrapping uses AES-256-GCM rather than AES-KW (RFC 3394): GCM takes associated data, so the
# wrapped blob is bound to the id of the KEK that made it (a blob relabelled with another id fails
# to unwrap instead of being tried under the wrong key), and it is the same primitive as the chunk
# encryption, so there is one construction to review. The 12-byte random nonce is prefixed to the
# blob; with one wrap per segment, the 2^32-messages-per-key bound for random nonces is far away.


class KeysError(Exception):
    """Base of the key errors (not builtins.KeyError, so a dict miss is never mistaken for one)."""


class KeyRingError(KeysError):
    """The key ring file is missing, unreadable, malformed or too open."""


class UnknownKey(KeysError, KeyError):
    """A wrapped key names a KEK this provider does not have."""

    def __init__(self, key_id: str) -> None:
        super().__init__(key_id)
        self.key_id = key_id

    def __str__(self) -> str:
        return f"unknown key-encryption key {self.key_id!r}"


class DecryptionError(KeysError):
    """Authenticated decryption failed: tampered data, the wrong key, or the wrong context."""


@dataclass(frozen=True, slots=True)
class WrappedKey:
    key_id: str
    blob: bytes

    def blob_b64(self) -> str:
        return base64.b64encode(self.blob).decode("ascii")

    @classmethod
    def from_b64(cls, key_id: str, blob_b64: str) -> WrappedKey:
        try:
            return cls(key_id, base64.b64decode(blob_b64, validate=True))
        except (binascii.Error, ValueError) as e:
            raise DecryptionError(f"wrapped key for {key_id!r} is not valid base64") from e


def new_data_key() -> bytes:
    """A fresh 256-bit data key (one per segment)."""
    return secrets.token_bytes(DATA_KEY_SIZE)


@dataclass(frozen=True, slots=True)
class Kek:
    id: str
    created_ms: int
    key: bytes


class KeyRing:
    """KEKs by id, one of them current (used for new wraps)."""

    def __init__(self, keys: list[Kek], current: str) -> None:
        if not keys:
            raise KeyRingError("key ring has no keys")
        self._keys = {k.id: k for k in keys}
        if len(self._keys) != len(keys):
            raise KeyRingError("key ring has duplicate key ids")
        if current not in self._keys:
            raise KeyRingError(f"key ring's current key {current!r} is not in the ring")
        for k in keys:
            if len(k.key) != KEK_SIZE:
                raise KeyRingError(f"key {k.id!r} is {len(k.key)} bytes, expected {KEK_SIZE}")
        self._order = [k.id for k in keys]
        self._current = current

    @property
    def current_id(self) -> str:
        return self._current

    @property
    def ids(self) -> list[str]:
        return list(self._order)

    def keys(self) -> list[Kek]:
        return [self._keys[i] for i in self._order]

    def wrap(self, data_key: bytes) -> WrappedKey:
        kek = self._keys[self._current]
        nonce = secrets.token_bytes(NONCE_SIZE)
        blob = nonce + AESGCM(kek.key).encrypt(nonce, bytes(data_key), kek.id.encode())
        return WrappedKey(kek.id, blob)

    def unwrap(self, wrapped: WrappedKey) -> bytes:
        kek = self._keys.get(wrapped.key_id)
        if kek is None:
            raise UnknownKey(wrapped.key_id)
        blob = wrapped.blob
        if len(blob) < NONCE_SIZE + 16:
            raise DecryptionError(f"wrapped key under {wrapped.key_id!r} is truncated")
        try:
            return AESGCM(kek.key).decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], kek.id.encode())
        except InvalidTag:
            raise DecryptionError(
                f"wrapped key under {wrapped.key_id!r} fails authentication "
                "(tampered, or a different key with the same id)"
            ) from None

    # -- file form

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": KEYRING_VERSION,
                "current": self._current,
                "keys": [
                    {"id": k.id, "created_ms": k.created_ms,
                     "key": base64.b64encode(k.key).decode("ascii")}
                    for k in self.keys()
                ],
            },
            indent=2,
        ) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "key ring") -> KeyRing:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise KeyRingError(f"{source}: not valid JSON ({e})") from None
        try:
            if not isinstance(doc, dict):
                raise TypeError("top level is not an object")
            if doc.get("version", KEYRING_VERSION) != KEYRING_VERSION:
                raise ValueError(f"unsupported version {doc.get('version')!r}")
            keys = [
                Kek(str(k["id"]), int(k["created_ms"]),
                    base64.b64decode(k["key"], validate=True))
                for k in doc["keys"]
            ]
            current = str(doc["current"])
        except (KeyError, TypeError, ValueError, binascii.Error) as e:
            raise KeyRingError(f"{source}: malformed key ring ({type(e).__name__}: {e})") from None
        try:
            return cls(keys, current)
        except KeyRingError as e:
            raise KeyRingError(f"{source}: {e}") from None


def _new_kek(existing: set[str]) -> Kek:
    while True:
        key_id = "k-" + secrets.token_hex(8)
        if key_id not in existing:
            return Kek(key_id, int(time.time() * 1000), secrets.token_bytes(KEK_SIZE))


def _write_private(path: Path, text: str, *, exclusive: bool) -> None:
    """Write a 0600 file by temp + rename (readers see old or new, never a torn file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # umask cannot widen it, but be explicit
        data = memoryview(text.encode())
        while data:
            data = data[os.write(fd, data):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        if exclusive:
            # link() fails if the target exists: no race between the check and the write.
            os.link(tmp, path)
            tmp.unlink()
        else:
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def generate_keyring(path: str | os.PathLike[str]) -> KeyRing:
    """Create a new key ring file with one KEK; refuses to overwrite an existing file."""
    path = Path(path)
    if path.exists():
        raise KeyRingError(f"{path}: already exists; not overwriting a key ring")
    ring = KeyRing([k := _new_kek(set())], k.id)
    try:
        _write_private(path, ring.to_json(), exclusive=True)
    except FileExistsError:
        raise KeyRingError(f"{path}: already exists; not overwriting a key ring") from None
    return ring


def rotate_keyring(path: str | os.PathLike[str]) -> str:
    """Add a new KEK to the ring file and make it current; older KEKs stay. Returns the new id."""
    path = Path(path)
    ring = load_keyring(path)
    kek = _new_kek(set(ring.ids))
    new = KeyRing(ring.keys() + [kek], kek.id)
    _write_private(path, new.to_json(), exclusive=False)
    return kek.id


def load_keyring(path: str | os.PathLike[str]) -> KeyRing:
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise KeyRingError(f"{path}: key ring file not found") from None
    except OSError as e:
        raise KeyRingError(f"{path}: cannot open key ring: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyRingError(f"{path}: key ring is not a regular file")
        if st.st_mode & 0o077:
            raise KeyRingError(
                f"{path}: key ring permissions {stat.S_IMODE(st.st_mode):04o} are too open; "
                f"run chmod 600 {path}"
            )
        with os.fdopen(fd, "r", encoding="utf-8", closefd=False) as f:
            text = f.read()
    except UnicodeDecodeError:
        raise KeyRingError(f"{path}: key ring is not UTF-8 text") from None
    finally:
        os.close(fd)
    return KeyRing.from_json(text, source=str(path))


# -- providers


@runtime_checkable
class KeyProvider(Protocol):
    """Where KEKs live. Wrap/unwrap are async because a remote KMS is a network call."""

    @property
    def current_id(self) -> str: ...

    async def wrap(self, data_key: bytes) -> WrappedKey: ...

    async def unwrap(self, wrapped: WrappedKey) -> bytes: ...


class LocalKeyProvider:
    """KEKs from a local key ring (AES-GCM in-process: microseconds, no thread needed)."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> LocalKeyProvider:
        return cls(load_keyring(path))

    @property
    def current_id(self) -> str:
        return self.ring.current_id

    async def wrap(self, data_key: bytes) -> WrappedKey:
        return self.ring.wrap(data_key)

    async def unwrap(self, wrapped: WrappedKey) -> bytes:
        return self.ring.unwrap(wrapped)


class KmsKeyProvider:
    """KEKs held by AWS KMS (or a KMS-compatible endpoint).

    `client` is an open aiobotocore `kms` client; `key_id` is the KMS key (id, ARN or alias) new
    data keys are wrapped under. Wrapping calls Encrypt and unwrapping calls Decrypt, both with
    an encryption context (KMS's associated data) so a blob only unwraps for the same context.
    The stored key id is the ARN KMS reports, so unwrapping after the configured alias moves to
    a new key still names the old key. Decrypt is passed that KeyId, so a blob from a foreign key
    is rejected rather than decrypted with whatever key KMS finds in the blob.
    """

    def __init__(self, client: Any, key_id: str, context: dict[str, str] | None = None) -> None:
        self._client = client
        self._key_id = key_id
        self._context = dict(context or {"purpose": "sediment-data-key"})

    @property
    def current_id(self) -> str:
        return self._key_id

    async def wrap(self, data_key: bytes) -> WrappedKey:
        resp = await self._client.encrypt(
            KeyId=self._key_id, Plaintext=bytes(data_key), EncryptionContext=self._context
        )
        return WrappedKey(resp.get("KeyId") or self._key_id, resp["CiphertextBlob"])

    async def unwrap(self, wrapped: WrappedKey) -> bytes:
        try:
            resp = await self._client.decrypt(
                CiphertextBlob=wrapped.blob, KeyId=wrapped.key_id, EncryptionContext=self._context
            )
        except Exception as e:  # botocore ClientError; codes below
            code = getattr(e, "response", {}).get("Error", {}).get("Code", "")
            if code in ("NotFoundException", "DisabledException", "KMSInvalidStateException"):
                raise UnknownKey(wrapped.key_id) from e
            if code in ("InvalidCiphertextException", "IncorrectKeyException"):
                raise DecryptionError(f"KMS refused the wrapped key under {wrapped.key_id!r}: {code}") from e
            raise
        return resp["Plaintext"]
