"""What a handler knows about the request in front of it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from service.kafka.messages import Schema

if TYPE_CHECKING:
    from service.broker import Broker


@dataclass
class Connection:
    """One client connection: who it is and where it came from."""

    listener_name: str
    client_host: str
    client_port: int
    principal: str = "User:ANONYMOUS"
    plaintext: bool = True  # sendfile is possible only without TLS


@dataclass
class RequestContext:
    broker: "Broker"
    conn: Connection
    api_key: int
    version: int
    correlation_id: int
    client_id: str | None
    schema: Schema  # the response classes of this version
    span_attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class FileRange:
    """Bytes of a segment file to send as-is (sendfile on plain TCP)."""

    fd: int  # a dup'ed descriptor owned by the response; closed after sending
    position: int
    size: int

    def close(self) -> None:
        os.close(self.fd)


@dataclass
class SplicedResponse:
    """An encoded response whose record fields are still file ranges: head, then (file|bytes)*."""

    parts: list[bytes | bytearray | FileRange]

    @property
    def size(self) -> int:
        return sum(p.size if isinstance(p, FileRange) else len(p) for p in self.parts)

    def close(self) -> None:
        for p in self.parts:
            if isinstance(p, FileRange):
                p.close()
