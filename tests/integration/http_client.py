"""A small synchronous HTTP client for the REST API tests (urllib, so no extra dependency):
the status, the headers and the decoded JSON body of every answer, 4xx and 5xx included."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import Message
from typing import Any


@dataclass
class Answer:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def call(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, *,
         raw: bytes | None = None, content_type: str = "application/json", timeout: float = 30.0,
         context: ssl.SSLContext | None = None) -> Answer:
    """One request; `body` is sent as JSON, `raw` as it is."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
            return Answer(r.status, r.headers, r.read())
    except urllib.error.HTTPError as e:
        return Answer(e.code, e.headers, e.read())


def cluster_id(http_base: str, headers: dict[str, str] | None = None) -> str:
    """The cluster id the API answers with (GET /v3/clusters)."""
    answer = call("GET", http_base + "/v3/clusters", headers=headers)
    assert answer.status == 200, (answer.status, answer.body)
    return str(answer.json()["data"][0]["cluster_id"])
