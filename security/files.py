"""Noticing that a watched file (certificate, key set, key ring) was rewritten or replaced."""

from __future__ import annotations

import os

FileStamp = tuple[int, int, int]


def file_stamp(path: str | os.PathLike[str]) -> FileStamp | None:
    """(mtime in ns, size, inode), None when the file cannot be stat'ed. Replacing a file by
    rename changes the inode even within one mtime tick."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino
