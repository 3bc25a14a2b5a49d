"""The object-store interface that tiered storage is written against.

Two implementations: `localfs.FileStore` (a directory; tests, single-host deployments) and
`s3.S3Store` (any S3-compatible service). Keys are '/'-separated relative names; a store that
was opened with a prefix prepends it to every key and strips it from listed keys, so callers never
see it.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit


class StoreError(Exception):
    """Base class of every error an ObjectStore raises."""


class ObjectNotFound(StoreError):
    """The key does not exist."""

    def __init__(self, key: str) -> None:
        super().__init__(f"object not found: {key!r}")
        self.key = key


class StoreUnavailable(StoreError):
    """The store did not answer usefully: retries exhausted or the call timed out."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: float  # seconds since the epoch
    etag: str | None = None


@runtime_checkable
class ObjectStore(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def put(self, key: str, data: bytes) -> None:
        """Store a whole object; readers see the old object or the new one, never a part."""

    async def put_stream(self, key: str, parts: AsyncIterator[bytes]) -> None:
        """Store a large object from chunks; on any failure no object and no upload remain."""

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end) of the object (end None: to its end). Raises ObjectNotFound."""

    async def head(self, key: str) -> ObjectInfo | None: ...

    async def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with `prefix`, sorted by key."""

    async def delete(self, keys: builtins.list[str]) -> None:
        """Delete the keys; missing ones are not an error."""


def check_range(key: str, start: int, end: int | None) -> None:
    if start < 0 or (end is not None and end < start):
        raise ValueError(f"bad byte range [{start}, {end}) for {key!r}")


def validate_key(key: str) -> str:
    """Keys are relative '/'-separated names without empty, '.' or '..' segments."""
    if not isinstance(key, str) or not key:
        raise ValueError("object key must be a non-empty string")
    if key.startswith("/"):
        raise ValueError(f"object key must be relative: {key!r}")
    if "\x00" in key or "\\" in key:
        raise ValueError(f"object key must not contain NUL or backslash: {key!r}")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise ValueError(f"object key has an empty, '.' or '..' segment: {key!r}")
    return key


def normalize_prefix(prefix: str) -> str:
    """'/a//b/' -> 'a/b/'; '' and '/' -> ''."""
    parts = [p for p in prefix.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ValueError(f"object store prefix must not contain '.' or '..': {prefix!r}")
    return "/".join(parts) + "/" if parts else ""


def open_store(url: str, **options) -> ObjectStore:
    """An ObjectStore for `file:///abs/dir` or `s3://bucket[/prefix]`.

    Options are passed to the implementation (e.g. fsync=True for file://, endpoint_url,
    region, max_attempts, part_size, upload_rate_bytes for s3://). Credentials never come
    through here: S3 uses the usual AWS chain (env, profile, instance role).
    """
    if not isinstance(url, str) or not url:
        raise ValueError("object store URL is empty; expected file:///abs/dir or s3://bucket/prefix")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(
                f"file store URL must be file:///absolute/dir (no host), got {url!r}"
            )
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise ValueError(f"file store URL needs an absolute path, got {url!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"file store URL must not have a query or fragment: {url!r}")
        from .localfs import FileStore

        return FileStore(path, **options)
    if scheme == "s3":
        bucket = parts.netloc
        if not bucket:
            raise ValueError(f"s3 store URL needs a bucket: s3://bucket/prefix, got {url!r}")
        if "@" in bucket or ":" in bucket:
            raise ValueError(
                f"s3 store URL must not carry credentials or a port (use the AWS credential "
                f"chain and endpoint_url): {url!r}"
            )
        if parts.query or parts.fragment:
            raise ValueError(f"s3 store URL must not have a query or fragment: {url!r}")
        prefix = normalize_prefix(unquote(parts.path))
        from .s3 import S3Store

        return S3Store(bucket, prefix=prefix, **options)
    raise ValueError(
        f"unsupported object store URL {url!r}: expected file:///abs/dir or s3://bucket/prefix"
    )
