"""A size-limited file system for a broker's data dir, and a filler that uses up its space.

    disk = SmallDisk(Path("/tmp/x/data"), size_mib=32)
    reason = disk.mount()          # None when mounted, else why not
    disk.fill()                    # write filler files until ENOSPC
    disk.free()                    # remove them: the space returns
    disk.unmount()

A tmpfs with `size=` is the file system: it needs root (CAP_SYS_ADMIN) and nothing else, and
ENOSPC comes from write() at once (no delayed allocation, no reserved blocks). Its fsync is a
no-op, so fsync errors are not exercised by it.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

FILL_CHUNK = 64 * 1024


@dataclass
class SmallDisk:
    path: Path
    size_mib: int = 32
    mounted: bool = False
    fillers: list[Path] = field(default_factory=list)

    def mount(self) -> str | None:
        """Mount the tmpfs on path (created empty); None on success, else the reason."""
        if os.geteuid() != 0:
            return "mounting a tmpfs needs root"
        self.path.mkdir(parents=True, exist_ok=True)
        res = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size_mib}m,mode=0755", "tmpfs", str(self.path)],
            capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            return f"mount -t tmpfs failed: {(res.stderr or res.stdout).strip()}"
        self.mounted = True
        return None

    def unmount(self) -> None:
        if self.mounted:
            # Lazy: a broker killed a moment ago may still hold files open.
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, timeout=30)
            self.mounted = False

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self, leave_bytes: int = 0) -> int:
        """Write filler files until the file system is full (then free leave_bytes of it, in
        whole pages); returns the bytes written."""
        name = self.path / f".filler-{len(self.fillers)}"
        self.fillers.append(name)
        written = 0
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for size in (FILL_CHUNK, 4096):  # big steps, then the last pages
                chunk = b"\0" * size
                while True:
                    try:
                        n = os.write(fd, chunk)
                    except OSError:
                        break  # ENOSPC
                    written += n
                    if n < size:
                        break
            if leave_bytes:
                os.ftruncate(fd, max(0, written - leave_bytes))
                written = max(0, written - leave_bytes)
        finally:
            os.close(fd)
        return written

    def free(self) -> None:
        for name in self.fillers:
            name.unlink(missing_ok=True)
        self.fillers.clear()

    def __enter__(self) -> SmallDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.free()
        self.unmount()
