"""The audit log: one JSON line per authorization denial and per ACL change.

Lines go to the `sediment.audit` logger and, when a file is configured, are appended to it by a
background task (the event loop only appends to a list; the write and flush run in a thread).
Allowed checks are not logged: they are on the produce/fetch hot path.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
from pathlib import Path
from typing import IO, Any

from security.acl import AclBinding, AclOperation, ResourceType

FLUSH_INTERVAL_S = 0.2
FLUSH_AT_LINES = 1000  # flush early when this many lines are waiting


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditLog:
    def __init__(self, path: str | Path | None = None, logger: logging.Logger | None = None) -> None:
        self.path = Path(path) if path else None
        self.log = logger or logging.getLogger("sediment.audit")
        self._file: IO[str] | None = None
        self._pending: list[str] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = await asyncio.to_thread(open, self.path, "a", encoding="utf-8")
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._wake.set()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._file is not None:
            f, self._file = self._file, None
            await asyncio.to_thread(self._write, f, self._take())
            await asyncio.to_thread(f.close)

    # -- records -------------------------------------------------------------------------------

    def denied(self, principal: str, host: str, op: AclOperation, rtype: ResourceType, name: str) -> None:
        self._emit({"time": _now(), "principal": principal, "host": host, "operation": op.name,
                    "resource_type": rtype.name, "resource_name": name, "pattern": "LITERAL",
                    "result": "DENIED"})

    def acl_change(self, change: str, b: AclBinding, principal: str, host: str) -> None:
        """`change` is CREATE or DELETE; principal and host are who made it."""
        self._emit({"time": _now(), "principal": principal, "host": host, "change": change,
                    "resource_type": b.resource_type.name, "resource_name": b.resource_name,
                    "pattern": b.pattern_type.name, "acl_principal": b.principal, "acl_host": b.host,
                    "operation": b.operation.name, "permission": b.permission.name})

    def _emit(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"))
        self.log.info(line)
        if self._file is not None:  # lines added during close() go out with its last flush
            self._pending.append(line)
            if len(self._pending) >= FLUSH_AT_LINES:
                self._wake.set()

    # -- file writer ---------------------------------------------------------------------------

    def _take(self) -> list[str]:
        lines, self._pending = self._pending, []
        return lines

    @staticmethod
    def _write(f: IO[str], lines: list[str]) -> None:
        if lines:
            f.write("".join(line + "\n" for line in lines))
            f.flush()

    async def _loop(self) -> None:
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), FLUSH_INTERVAL_S)
            except TimeoutError:
                pass
            self._wake.clear()
            lines = self._take()
            if lines and self._file is not None:
                try:
                    await asyncio.to_thread(self._write, self._file, lines)
                except OSError as e:  # a full disk must not take the broker down
                    self.log.warning("cannot write the audit log %s: %s", self.path, e)
