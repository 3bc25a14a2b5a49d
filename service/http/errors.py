"""Errors of the HTTP API in Confluent REST Proxy's shape: the HTTP status, and a body
`{"error_code": <status * 100 + subcode, or the status>, "message": "..."}`, so tools written
against the REST Proxy read them unchanged."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from service.errors import ErrorCode

log = logging.getLogger("sediment.http")

# Confluent's subcodes (REST Proxy API reference).
TOPIC_NOT_FOUND = 40401
PARTITION_NOT_FOUND = 40402
CONSUMER_INSTANCE_NOT_FOUND = 40403
LEADER_NOT_AVAILABLE = 40404
UNAUTHORIZED = 40101
FORBIDDEN = 40301
RECORD_TOO_LARGE = 42201
INVALID_OFFSET = 42202
KAFKA_BAD_REQUEST = 40002  # a Kafka admin request refused (topic exists, bad config, ...)
INVALID_PAYLOAD = 42206


class RestError(Exception):
    """An answer other than 2xx. `error_code` defaults to the status."""

    def __init__(self, status: int, message: str, error_code: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code if error_code is not None else status
        self.headers = headers or {}

    def response(self) -> web.Response:
        return error_response(self.status, self.error_code, self.message, self.headers)


def error_response(status: int, error_code: int, message: str,
                   headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error_code": error_code, "message": message}, status=status, headers=headers)


def bad_request(message: str) -> RestError:
    return RestError(400, message)


# Kafka error codes as the REST Proxy answers them: (status, error_code).
_FROM_KAFKA: dict[ErrorCode, tuple[int, int]] = {
    ErrorCode.unknown_topic_or_partition: (404, TOPIC_NOT_FOUND),
    ErrorCode.unknown_topic_id: (404, TOPIC_NOT_FOUND),
    ErrorCode.leader_not_available: (404, LEADER_NOT_AVAILABLE),
    ErrorCode.not_leader_or_follower: (404, LEADER_NOT_AVAILABLE),
    ErrorCode.topic_authorization_failed: (403, FORBIDDEN),
    ErrorCode.group_authorization_failed: (403, FORBIDDEN),
    ErrorCode.cluster_authorization_failed: (403, FORBIDDEN),
    ErrorCode.transactional_id_authorization_failed: (403, FORBIDDEN),
    # Confluent's KafkaExceptionMapper: the refusals of an admin request are 400 with 40002.
    ErrorCode.topic_already_exists: (400, KAFKA_BAD_REQUEST),
    ErrorCode.topic_deletion_disabled: (400, KAFKA_BAD_REQUEST),
    ErrorCode.message_too_large: (422, RECORD_TOO_LARGE),
    ErrorCode.record_list_too_large: (422, RECORD_TOO_LARGE),
    ErrorCode.offset_out_of_range: (422, INVALID_OFFSET),
    ErrorCode.invalid_topic_exception: (400, 400),
    ErrorCode.invalid_replica_assignment: (400, KAFKA_BAD_REQUEST),
    ErrorCode.invalid_partitions: (400, KAFKA_BAD_REQUEST),
    ErrorCode.invalid_replication_factor: (400, KAFKA_BAD_REQUEST),
    ErrorCode.invalid_config: (400, KAFKA_BAD_REQUEST),
    ErrorCode.invalid_request: (400, 400),
    ErrorCode.invalid_record: (400, 400),
    ErrorCode.policy_violation: (400, KAFKA_BAD_REQUEST),
    ErrorCode.unsupported_version: (400, 400),
    ErrorCode.corrupt_message: (400, 400),
    ErrorCode.throttling_quota_exceeded: (429, 429),
    ErrorCode.group_id_not_found: (404, 404),
    ErrorCode.non_empty_group: (409, 409),
    ErrorCode.kafka_storage_error: (503, 503),
    ErrorCode.request_timed_out: (504, 504),
}


def from_kafka(code: ErrorCode, message: str | None = None) -> RestError:
    """The REST answer for a Kafka error code (5xx for one that is the broker's own fault)."""
    status, error_code = _FROM_KAFKA.get(code, (500, 500))
    return RestError(status, message or code.name.replace("_", " ").capitalize(), error_code)


@web.middleware
async def error_middleware(request: web.Request,
                           handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Every error leaves as Confluent's body: ours, aiohttp's own (404 route, 405 method, 413
    body too large) and anything unexpected, which is logged and answered 500."""
    try:
        return await handler(request)
    except RestError as e:
        return e.response()
    except web.HTTPException as e:
        if e.status < 400:
            raise
        headers = {k: v for k, v in e.headers.items() if k.lower() in ("allow", "www-authenticate")}
        return error_response(e.status, e.status, e.reason if e.text is None else _plain(e.text), headers)
    except json.JSONDecodeError as e:
        return error_response(400, 400, f"The request body is not valid JSON: {e}")
    except ConnectionError:
        raise  # the client went away mid-request: aiohttp ends the connection, nothing to answer
    except Exception:
        log.exception("HTTP %s %s failed", request.method, request.path)
        return error_response(500, 500, "Internal server error")


def _plain(text: str) -> str:
    # aiohttp's default bodies are "404: Not Found"; the message is the part after the status.
    status, sep, rest = text.partition(": ")
    return rest if sep and status.isdigit() else text
