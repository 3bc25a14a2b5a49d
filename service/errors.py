"""Kafka error codes, and the errors that broker operations raise carrying one.

The codes are kio's `ErrorCode` (generated from Kafka's own list), re-exported here so the broker
has one place to take them from: no module declares its own integers for them. `ErrorCode` is an
IntEnum, so it compares equal to the int it stands for and serializes as that int.
"""

from __future__ import annotations

from kio.schema.errors import ErrorCode

__all__ = ["ErrorCode", "TopicError"]


class TopicError(Exception):
    """A topic operation Kafka would refuse; `code` is the error to answer with."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message
