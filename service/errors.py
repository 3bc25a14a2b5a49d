"""Kafka error codes, and the errors that broker operations raise carrying one.

The codes are kio's `ErrorCode` (generated from Kafka's own list), re-exported here so the broker
has one place to take them from: no module declares its own integers for them. `ErrorCode` is an
IntEnum, so it compares equal to the int it stands for and serializes as that int. The storage
layer raises protocol-free reasons; REJECTION_CODES is where they become Kafka's codes.
"""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from tiering.records import InvalidRecordError, Rejection

__all__ = ["ErrorCode", "REJECTION_CODES", "TopicError", "rejection_code"]

# What a client is told when the log refuses its write.
REJECTION_CODES: dict[Rejection, ErrorCode] = {
    Rejection.CORRUPT: ErrorCode.corrupt_message,
    Rejection.TOO_LARGE: ErrorCode.message_too_large,
    Rejection.UNSUPPORTED_FORMAT: ErrorCode.unsupported_for_message_format,
    Rejection.INVALID: ErrorCode.invalid_record,
    Rejection.OUT_OF_ORDER_SEQUENCE: ErrorCode.out_of_order_sequence_number,
    Rejection.STALE_PRODUCER_EPOCH: ErrorCode.invalid_producer_epoch,
    Rejection.TXN_STATE: ErrorCode.invalid_txn_state,
    Rejection.STALE_COORDINATOR_EPOCH: ErrorCode.transaction_coordinator_fenced,
}


def rejection_code(e: InvalidRecordError) -> ErrorCode:
    return REJECTION_CODES[e.reason]


class TopicError(Exception):
    """A topic operation Kafka would refuse; `code` is the error to answer with."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message
