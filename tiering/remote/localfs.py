"""A directory used as an object store.

Keys map to files under the root. Writes go to a temporary file in a reserved directory on the
same filesystem and are renamed into place, so readers and `list` see whole objects only. All
blocking file I/O runs in worker threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import stat
import uuid
from collections.abc import AsyncIterator

from .store import ObjectInfo, ObjectNotFound, StoreError, check_range, validate_key

TMP_DIR = ".sediment-tmp"


class FileStore:
    def __init__(self, root: str, *, fsync: bool = False) -> None:
        if not os.path.isabs(root):
            raise ValueError(f"file store root must be an absolute path: {root!r}")
        self.root = os.path.normpath(root)
        self.fsync = fsync
        self._tmp = os.path.join(self.root, TMP_DIR)

    def __repr__(self) -> str:
        return f"FileStore({self.root!r})"

    # -- paths ------------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        validate_key(key)
        if key.split("/", 1)[0] == TMP_DIR:
            raise ValueError(f"object key uses the reserved name {TMP_DIR!r}: {key!r}")
        path = os.path.join(self.root, *key.split("/"))
        # validate_key already rules out '..'; this guards against anything it missed.
        if os.path.commonpath([self.root, path]) != self.root:
            raise ValueError(f"object key escapes the store root: {key!r}")
        return path

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._start)

    def _start(self) -> None:
        os.makedirs(self._tmp, exist_ok=True)
        # Leftovers of writes interrupted by a crash.
        for name in os.listdir(self._tmp):
            try:
                os.unlink(os.path.join(self._tmp, name))
            except FileNotFoundError:
                pass

    async def close(self) -> None:
        return None

    # -- writes -----------------------------------------------------------------------------

    def _new_tmp(self) -> str:
        os.makedirs(self._tmp, exist_ok=True)
        return os.path.join(self._tmp, uuid.uuid4().hex)

    def _finish(self, tmp: str, fd: int, path: str) -> None:
        """fsync (optional) and close the temporary file, then rename it into place."""
        try:
            if self.fsync:
                os.fsync(fd)
        except BaseException:
            _discard(tmp, fd)
            raise
        os.close(fd)
        try:
            parent = os.path.dirname(path)
            for attempt in range(3):
                os.makedirs(parent, exist_ok=True)
                try:
                    os.replace(tmp, path)
                    break
                except FileNotFoundError:
                    # A concurrent delete removed the emptied parent directory; make it again.
                    if attempt == 2:
                        raise
            if self.fsync:
                _fsync_dir(parent)
        except BaseException:
            _discard(tmp, None)
            raise

    def _put(self, path: str, data: bytes) -> None:
        tmp = self._new_tmp()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _write_all(fd, data)
        except BaseException:
            _discard(tmp, fd)
            raise
        self._finish(tmp, fd, path)

    async def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            await asyncio.to_thread(self._put, path, bytes(data))
        except OSError as exc:
            raise StoreError(f"put {key!r} failed: {exc}") from exc

    async def put_stream(self, key: str, parts: AsyncIterator[bytes]) -> None:
        path = self._path(key)
        try:
            tmp = await asyncio.to_thread(self._new_tmp)
            fd = await asyncio.to_thread(os.open, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            raise StoreError(f"put_stream {key!r} failed: {exc}") from exc
        try:
            async for chunk in parts:
                if chunk:
                    await asyncio.to_thread(_write_all, fd, chunk)
        except BaseException as exc:
            await asyncio.shield(asyncio.to_thread(_discard, tmp, fd))
            if isinstance(exc, OSError):
                raise StoreError(f"put_stream {key!r} failed: {exc}") from exc
            raise
        try:
            await asyncio.shield(asyncio.to_thread(self._finish, tmp, fd, path))
        except OSError as exc:
            raise StoreError(f"put_stream {key!r} failed: {exc}") from exc

    # -- reads ------------------------------------------------------------------------------

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        check_range(key, start, end)
        path = self._path(key)
        try:
            return await asyncio.to_thread(_read_range, path, start, end)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        except OSError as exc:
            raise StoreError(f"get {key!r} failed: {exc}") from exc

    async def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            st = await asyncio.to_thread(os.stat, path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not _is_file(st):
            return None
        return ObjectInfo(key, st.st_size, st.st_mtime)

    async def list(self, prefix: str) -> list[ObjectInfo]:
        return await asyncio.to_thread(self._list, prefix)

    def _list(self, prefix: str) -> builtins.list[ObjectInfo]:
        if prefix.startswith("/") or ".." in prefix.split("/"):
            raise ValueError(f"list prefix must be relative without '..': {prefix!r}")
        # Walk only the deepest directory the prefix names completely.
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        top = os.path.join(self.root, *base.split("/")) if base else self.root
        out: list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(top):
            rel = os.path.relpath(dirpath, self.root)
            rel = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            if not rel:
                dirnames[:] = [d for d in dirnames if d != TMP_DIR]
            # Prune directories that cannot hold a match.
            dirnames[:] = [
                d for d in dirnames
                if (rel + d + "/").startswith(prefix) or prefix.startswith(rel + d + "/")
            ]
            for name in filenames:
                key = rel + name
                if not key.startswith(prefix):
                    continue
                try:
                    st = os.stat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    continue  # deleted while we walked
                out.append(ObjectInfo(key, st.st_size, st.st_mtime))
        out.sort(key=lambda info: info.key)
        return out

    # -- deletes ----------------------------------------------------------------------------

    async def delete(self, keys: builtins.list[str]) -> None:
        paths = [self._path(k) for k in keys]
        if paths:
            await asyncio.to_thread(self._delete, paths)

    def _delete(self, paths: builtins.list[str]) -> None:
        parents = set()
        for path in paths:
            try:
                os.unlink(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except IsADirectoryError:
                continue  # a "directory" is not an object
            parents.add(os.path.dirname(path))
        # Drop directories emptied by the deletes, up to the root.
        for parent in sorted(parents, key=len, reverse=True):
            while parent != self.root and parent.startswith(self.root + os.sep):
                try:
                    os.rmdir(parent)
                except OSError:
                    break
                parent = os.path.dirname(parent)


def _is_file(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_range(path: str, start: int, end: int | None) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        stop = size if end is None else min(end, size)
        if start >= stop:
            return b""
        chunks = []
        offset = start
        while offset < stop:
            chunk = os.pread(fd, stop - offset, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _discard(tmp: str, fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
