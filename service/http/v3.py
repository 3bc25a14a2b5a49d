"""What the REST Proxy v3 resource modules share: Confluent's resource names (CRNs), collection
bodies, path numbers, and the pieces of their OpenAPI schemas.

Confluent's shapes (its api/v3/openapi.yaml): every resource is `{"kind": "Kafka<Thing>",
"metadata": {"self": <url>, "resource_name": "crn:///kafka=<cluster>/<type>=<id>..."}, ...}`,
every collection `{"kind": "Kafka<Thing>List", "metadata": {"self": <url>, "next": null},
"data": [...]}`, and links to other resources `{"related": <url>}`."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from service.http.api import url
from service.http.errors import RestError


def crn(cluster_id: str, *parts: object) -> str:
    """Confluent's resource name: `crn:///kafka=<id>` then `type=id` pairs; a lone trailing
    type (a pair whose id is None) stands alone, as in `.../consumer-group=g/lag-summary`."""
    out = [f"crn:///kafka={cluster_id}"]
    for kind, ident in zip(parts[::2], parts[1::2]):
        out.append(str(kind) if ident is None else f"{kind}={ident}")
    return "/".join(out)


def resource(request: web.Request, kind: str, path: tuple[object, ...], name: str) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"self": url(request, *path), "resource_name": name}}


def collection(request: web.Request, kind: str, path: tuple[object, ...], data: list[dict[str, Any]]) -> web.Response:
    return web.json_response({"kind": kind, "metadata": {"self": url(request, *path), "next": None}, "data": data})


def link(request: web.Request, *path: object) -> dict[str, str]:
    return {"related": url(request, *path)}


def path_int(request: web.Request, name: str, error: RestError) -> int:
    """An integer path parameter; anything else answers `error` (REST Proxy answers a path
    parameter that is not an integer with 404, as JAX-RS does)."""
    raw = request.match_info[name]
    if not _INTEGER.fullmatch(raw) or not -(2**31) <= int(raw) < 2**31:
        raise error
    return int(raw)


_INTEGER = re.compile(r"-?[0-9]{1,11}")


def query_bool(request: web.Request, name: str) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return False
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    raise RestError(400, f"Query parameter {name} must be true or false, got {raw!r}")


# -- OpenAPI pieces ------------------------------------------------------------------------

def _obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": properties,
            "required": list(properties) if required is None else required}


STRING: dict[str, Any] = {"type": "string"}
NULLABLE_STRING: dict[str, Any] = {"type": "string", "nullable": True}
INT32: dict[str, Any] = {"type": "integer", "format": "int32"}
INT64: dict[str, Any] = {"type": "integer", "format": "int64"}
BOOL: dict[str, Any] = {"type": "boolean"}
RELATIONSHIP = _obj({"related": STRING})
RESOURCE_METADATA = _obj({"self": STRING, "resource_name": NULLABLE_STRING}, ["self"])
COLLECTION_METADATA = _obj({"self": STRING, "next": NULLABLE_STRING}, ["self"])


def resource_schema(kind: str, properties: dict[str, Any], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """A v3 resource: `kind` (this one), `metadata`, and the given fields (all required but `optional`)."""
    props = {"kind": {"type": "string", "enum": [kind]}, "metadata": RESOURCE_METADATA, **properties}
    return _obj(props, [k for k in props if k not in optional])


def list_schema(kind: str, item_ref: str) -> dict[str, Any]:
    return _obj({"kind": {"type": "string", "enum": [kind]}, "metadata": COLLECTION_METADATA,
                 "data": {"type": "array", "items": {"$ref": f"#/components/schemas/{item_ref}"}}})


def path_param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


CLUSTER_ID = path_param("cluster_id", STRING, "The Kafka cluster ID.")
TOPIC_NAME = path_param("topic_name", STRING, "The topic name.")
PARTITION_ID = path_param("partition_id", {"type": "integer"}, "The partition ID.")
BROKER_ID = path_param("broker_id", {"type": "integer"}, "The broker ID.")
GROUP_ID = path_param("consumer_group_id", STRING, "The consumer group ID.")
CONSUMER_ID = path_param("consumer_id", STRING, "The consumer ID.")
CONFIG_NAME = path_param("name", STRING, "The configuration parameter name.")


def ok(description: str, ref: str, status: int = 200) -> dict[str, Any]:
    return {str(status): {"description": description,
                          "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}}


NO_CONTENT: dict[str, Any] = {"204": {"description": "No Content"}}


def json_request(ref: str, required: bool = True) -> dict[str, Any]:
    return {"required": required,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}
