"""Small file helpers shared by the log: atomic replace-by-rename, directory fsync, and the
write/sync positions that say whether a file still needs a sync."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(slots=True)
class SyncMark:
    """Durability of one file (or set of files) as positions in its write sequence.

    Writers bump `written` once a write has completed (on the event loop); a sync captures
    `written` BEFORE it starts and, once it returns, raises `synced` to that capture. A write that
    lands while a sync runs is therefore still dirty afterwards: a flag cleared on the sync's return
    would lose it.
    """

    written: int = 0
    synced: int = 0

    @property
    def dirty(self) -> bool:
        return self.written > self.synced

    def wrote(self) -> None:
        self.written += 1

    def capture(self) -> int:
        return self.written

    def synced_to(self, captured: int) -> None:
        # Two overlapping syncs may race here; losing the larger value only costs a sync.
        if captured > self.synced:
            self.synced = captured


def fsync_dir(path: Path) -> None:
    """Make renames and unlinks in `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, *, durable: bool) -> None:
    """Write `data` to a temporary file and rename it over `path`, so a reader sees the old
    content or the new, never a torn mix. With `durable`, the file and the rename are fsynced."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
    except OSError:
        # On a full disk the half-written copy would hold on to the space that is short.
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    else:
        os.close(fd)
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)
