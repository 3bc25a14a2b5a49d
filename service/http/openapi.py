"""The API description: OpenAPI 3 at /openapi.json, and a readable page of it at /docs.

Each resource module declares its own part next to its routes (`OPENAPI`: a dict with "paths"
and optionally "components"), so a route and its description change together; this module
only merges them. Written by hand rather than generated from the handlers: aiohttp has no
schema layer, and the answers' shapes are Confluent's, not ours to derive."""

from __future__ import annotations

import html
import json
from typing import Any

from aiohttp import web

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error_code", "message"],
    "properties": {"error_code": {"type": "integer"}, "message": {"type": "string"}},
}


def error_responses(*statuses: int) -> dict[str, Any]:
    """The Confluent error body for each status a route may answer with."""
    return {str(s): {"description": _REASONS.get(s, "Error"),
                     "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            for s in statuses}


_REASONS = {400: "Bad request", 401: "Authentication required or failed", 403: "Not authorized (ACLs)",
            404: "Not found", 405: "Method not allowed", 406: "Not acceptable", 409: "Conflict",
            413: "Body too large", 415: "Unsupported media type", 422: "Unprocessable", 429: "Throttled",
            500: "Internal error", 503: "Unavailable"}


def document(parts: list[dict[str, Any]], version: str = "3") -> dict[str, Any]:
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    for part in parts:
        for path, ops in part.get("paths", {}).items():
            paths.setdefault(path, {}).update(ops)
        schemas.update(part.get("components", {}).get("schemas", {}))
    return {
        "openapi": "3.0.3",
        "info": {"title": "Sediment HTTP API", "version": version,
                 "description": "REST produce, consume and admin in Confluent REST Proxy's shapes, and replay."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"},
                                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


def routes(parts: list[dict[str, Any]]) -> web.RouteTableDef:
    doc = document(parts)
    body = json.dumps(doc, indent=1)
    table = web.RouteTableDef()

    @table.get("/openapi.json")
    async def openapi(request: web.Request) -> web.Response:
        return web.Response(text=body, content_type="application/json")

    @table.get("/docs")
    async def docs(request: web.Request) -> web.Response:
        return web.Response(text=_page(doc), content_type="text/html")

    return table


def _page(doc: dict[str, Any]) -> str:
    """A plain page listing every operation: no script, nothing fetched from elsewhere."""
    rows = []
    for path, ops in sorted(doc["paths"].items()):
        for method, op in ops.items():
            rows.append(f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
                        f"<td>{html.escape(op.get('summary', ''))}</td></tr>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Sediment HTTP API</title></head><body>"
            "<h1>Sediment HTTP API</h1><p>The machine-readable description: <a href='/openapi.json'>"
            "/openapi.json</a> (OpenAPI 3).</p><table><tr><th>Method</th><th>Path</th><th>What</th></tr>"
            + "".join(rows) + "</table></body></html>")
