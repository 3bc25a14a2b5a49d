"""What every HTTP route may use: the broker's narrow services (never the broker), the caller's
principal and the ACL check, and reading a JSON body with a clear 4xx when it is wrong."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from aiohttp import web

from security.acl import AclOperation, ResourceType
from service.http.auth import principal
from service.http.errors import FORBIDDEN, RestError, bad_request
from service.services import Services

# Set by the broker once it serves: None until then (routes answer 503).
SERVICES_KEY: web.AppKey[Callable[[], Services | None]] = web.AppKey("services")


def services(request: web.Request) -> Services:
    found = request.app[SERVICES_KEY]()
    if found is None:
        raise RestError(503, "The broker is starting", 503)
    return found


def allowed(request: web.Request, op: AclOperation, rtype: ResourceType, name: str, *, audit: bool = True) -> bool:
    """audit=False when filtering a list, as Kafka's Metadata does: a hidden item is no denial."""
    return services(request).access.authorize(principal(request), request.remote or "", op, rtype, name,
                                              audit=audit)


def authorize(request: web.Request, op: AclOperation, rtype: ResourceType, name: str) -> None:
    """Raise 403 unless the caller may `op` the resource, exactly as the Kafka API asks."""
    if not allowed(request, op, rtype, name):
        what = {ResourceType.TOPIC: "topic", ResourceType.GROUP: "consumer group",
                ResourceType.CLUSTER: "cluster"}.get(rtype, rtype.name.lower())
        raise RestError(403, f"Not authorized to {op.name.lower()} {what} {name!r}", FORBIDDEN)


async def json_body(request: web.Request) -> Any:
    """The request body as JSON (bounded by the app's client_max_size: 413 beyond it)."""
    if not request.can_read_body:
        raise bad_request("A JSON request body is required")
    raw = await request.read()
    try:  # JSON is UTF-8 (RFC 8259); aiohttp's text() would raise on other bytes, a 500
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise bad_request(f"The request body is not valid UTF-8: {e.reason} at byte {e.start}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise bad_request(f"The request body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None


def json_object(value: Any, what: str = "The request body") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_request(f"{what} must be a JSON object")
    return value


def url(request: web.Request, *parts: object) -> str:
    """An absolute URL on this listener, as REST Proxy's `metadata.self` and `related` links:
    each part one path segment, percent-encoded (group ids may hold '/', '?' or spaces), and
    empty parts left out as REST Proxy's UrlFactory does (a lag of no consumer links to the
    group's consumers)."""
    segments = (quote(str(p), safe=_PCHAR) for p in parts)
    return str(request.url.origin()) + "/" + "/".join(s for s in segments if s)


_PCHAR = "!$&'()*+,;=:@"  # RFC 3986 path characters that need no encoding, besides letters, digits and -._~
