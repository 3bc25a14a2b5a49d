"""The HTTP API's front door over a real broker: Confluent's error bodies, HTTP Basic against the
SCRAM credentials, bearer JWTs, the same ACLs as the Kafka listener, and TLS."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, AdminClient, ResourcePatternType
from confluent_kafka.admin import ResourceType as RT

from .conftest import Broker, BrokerError
from .helpers import wait_until
from .http_client import Answer, basic, bearer, call
from .security_helpers import CertificateAuthority, JwtIssuer, add_user, write_jwks

ADMIN, ADMIN_PW = "admin", "admin-Secret-0"
ALICE, ALICE_PW = "alice", "alice-Secret-1"
BOB, BOB_PW = "bob", "bob-Secret-2"


@pytest.fixture(scope="module")
def open_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("http-open")).start()
    yield b
    b.stop_quietly()


@pytest.fixture(scope="module")
def issuer() -> JwtIssuer:
    return JwtIssuer("http-rsa", "RS256")


@dataclass
class Secured:
    broker: Broker
    ca_path: Path

    def https(self, method: str, path: str, headers: dict[str, str] | None = None) -> Answer:
        context = ssl.create_default_context(cafile=str(self.ca_path))
        return call(method, f"https://127.0.0.1:{self.broker.http_port}{path}", headers=headers, context=context)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, issuer: JwtIssuer) -> Iterator[Secured]:
    """ACLs on, Basic and Bearer accepted over HTTPS, admin a super user on SASL_PLAINTEXT."""
    base = tmp_path_factory.mktemp("http-secured")
    ca = CertificateAuthority(base, "http-ca")
    server = ca.server()
    jwks = write_jwks(base / "jwks.json", issuer)
    b = Broker(base, {"authorizer.enable": "true", "super.users": f"User:{ADMIN}",
                      "http.authentication.methods": "BASIC,BEARER", "http.ssl.enable": "true",
                      "ssl.certfile": str(server.cert_path), "ssl.keyfile": str(server.key_path),
                      "sasl.oauthbearer.jwks.file": str(jwks),
                      "sasl.oauthbearer.expected.audience": "sediment"}, ["SASL_PLAINTEXT"])
    add_user(b.data_dir, ADMIN, ADMIN_PW, "SCRAM-SHA-512")
    add_user(b.data_dir, ALICE, ALICE_PW, "SCRAM-SHA-512")
    add_user(b.data_dir, BOB, BOB_PW, "SCRAM-SHA-256", iterations=8192)
    b.start()
    yield Secured(b, ca.cert_path)
    b.stop_quietly()


def _cluster_id(bootstrap_conf: dict[str, str | int | float | bool]) -> str:
    from confluent_kafka.admin import AdminClient

    cid = AdminClient(bootstrap_conf).list_topics(timeout=10).cluster_id
    assert cid
    return str(cid)


def test_clusters_and_errors_without_authentication(open_broker: Broker) -> None:
    base = open_broker.http_base
    cid = _cluster_id({"bootstrap.servers": open_broker.bootstrap})
    r = call("GET", base + "/v3/clusters")
    assert r.status == 200 and r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert body["kind"] == "KafkaClusterList" and body["metadata"] == {"self": base + "/v3/clusters", "next": None}
    [cluster] = body["data"]
    assert cluster["cluster_id"] == cid
    assert cluster["metadata"] == {"self": f"{base}/v3/clusters/{cid}", "resource_name": f"crn:///kafka={cid}"}
    assert cluster["topics"] == {"related": f"{base}/v3/clusters/{cid}/topics"}
    assert call("GET", f"{base}/v3/clusters/{cid}").json() == cluster

    missing = call("GET", base + "/v3/clusters/no-such-cluster")
    assert (missing.status, missing.json()) == (404, {"error_code": 404,
                                                      "message": "Cluster no-such-cluster cannot be found."})
    route = call("GET", base + "/v3/nothing-here")
    assert (route.status, route.json()) == (404, {"error_code": 404, "message": "Not Found"})
    method = call("DELETE", base + "/v3/clusters")
    assert method.status == 405 and method.json()["error_code"] == 405 and "GET" in method.headers["Allow"]


def _raw_http(port: int, request: bytes) -> bytes:
    """The whole answer to bytes sent as they are (no client library would send these)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request)
        answer = b""
        while chunk := s.recv(65536):  # aiohttp closes the connection after a 400 of its own
            answer += chunk
    return answer


@pytest.mark.parametrize(("request_bytes", "reason"), [
    (b"GET /v3/clusters HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n",
     "Invalid header value char: b'X-Bad: a\\x00b'"),
    (b"POST /v3/clusters HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
     "Invalid character in chunk size: b'zz'"),
], ids=["nul-in-header", "broken-chunk-size"])
def test_malformed_requests_are_the_clients_fault(open_broker: Broker, request_bytes: bytes, reason: str) -> None:
    """A request aiohttp cannot parse is answered 400 by aiohttp itself, before any handler; the
    broker logs one INFO line naming the peer and the reason, no error and no traceback."""
    log_start = open_broker.log_path.stat().st_size
    answer = _raw_http(open_broker.http_port, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].split(b" ", 1)[1] == b"400 Bad Request", answer
    assert body.startswith(reason.split(": ")[0].encode() + b":\n"), answer  # aiohttp's own text
    line = f"INFO sediment.http: malformed HTTP request from 127.0.0.1: {reason}\n"

    def logged() -> str:
        with open(open_broker.log_path, "rb") as f:
            f.seek(log_start)
            return f.read().decode(errors="replace")

    wait_until(lambda: line in logged(), 10, what="the malformed request's log line")
    new = logged()
    assert "Traceback" not in new and " ERROR " not in new and "aiohttp" not in new, new


def test_basic_and_bearer_authentication_with_acls(secured: Secured, issuer: JwtIssuer) -> None:
    https = secured.https
    # Open paths stay open.
    assert https("GET", "/health/live").status == 200
    assert https("GET", "/metrics").status == 200
    spec = https("GET", "/openapi.json")
    assert spec.status == 200 and spec.json()["openapi"].startswith("3.")
    assert "/v3/clusters/{cluster_id}" in spec.json()["paths"]
    page = https("GET", "/docs")
    assert page.status == 200 and b"<code>/v3/clusters</code>" in page.body

    anonymous = https("GET", "/v3/clusters")
    assert (anonymous.status, anonymous.json()) == (401, {"error_code": 40101, "message": "Authentication required"})
    assert anonymous.headers["WWW-Authenticate"] == 'Basic realm="sediment", Bearer realm="sediment"'
    wrong = https("GET", "/v3/clusters", basic(ALICE, "not-her-password"))
    assert (wrong.status, wrong.json()["error_code"]) == (401, 40101)
    unknown = https("GET", "/v3/clusters", basic("mallory", ALICE_PW))
    assert (unknown.status, unknown.json()["message"]) == (401, "Invalid username or password")
    garbled = https("GET", "/v3/clusters", {"Authorization": "Basic %%%"})
    assert (garbled.status, garbled.json()["message"]) == (401, "Malformed Basic credentials")
    other = https("GET", "/v3/clusters", {"Authorization": "Digest x=1"})
    assert (other.status, other.json()["message"]) == (401, "Authentication scheme Digest is not accepted")

    # Authenticated but no ACL: 403, as the Kafka listener refuses DescribeCluster.
    denied = https("GET", "/v3/clusters", basic(ALICE, ALICE_PW))
    assert (denied.status, denied.json()) == (403, {"error_code": 40301,
                                                    "message": "Not authorized to describe cluster 'kafka-cluster'"})
    assert https("GET", "/v3/clusters", basic(ADMIN, ADMIN_PW)).status == 200  # super user

    admin = AdminClient(secured.broker.sasl_conf(ADMIN, ADMIN_PW))
    grant = AclBinding(RT.BROKER, "kafka-cluster", ResourcePatternType.LITERAL, f"User:{ALICE}", "*",
                       AclOperation.DESCRIBE, AclPermissionType.ALLOW)
    for f in admin.create_acls([grant]).values():
        f.result(timeout=10)
    cid = _cluster_id(secured.broker.sasl_conf(ADMIN, ADMIN_PW))
    for _ in range(2):  # the second from the verified-password cache
        allowed = https("GET", "/v3/clusters", basic(ALICE, ALICE_PW))
        assert allowed.status == 200 and allowed.json()["data"][0]["cluster_id"] == cid
    # Bob (SCRAM-SHA-256, 8192 iterations) authenticates; he has no grant.
    assert https("GET", "/v3/clusters", basic(BOB, BOB_PW)).status == 403

    # Bearer: the token's subject is the principal; alice's grant applies to her token too.
    token = issuer.token(ALICE, aud="sediment")
    assert https("GET", "/v3/clusters", bearer(token)).status == 200
    assert https("GET", "/v3/clusters", bearer(issuer.token(BOB, aud="sediment"))).status == 403
    expired = https("GET", "/v3/clusters", bearer(issuer.token(ALICE, lifetime_s=-120, aud="sediment")))
    assert expired.status == 401 and expired.json()["message"].startswith("Invalid bearer token")
    wrong_aud = https("GET", "/v3/clusters", bearer(issuer.token(ALICE, aud="elsewhere")))
    assert wrong_aud.status == 401
    forged = JwtIssuer("http-rsa", "RS256").token(ALICE, aud="sediment")  # same kid, another key
    assert https("GET", "/v3/clusters", bearer(forged)).status == 401


def test_bad_http_config_stops_start_up(tmp_path: Path) -> None:
    b = Broker(tmp_path, {"http.authentication.methods": "BASIC,KERBEROS"})
    with pytest.raises(BrokerError) as e:
        b.start(timeout=30)
    assert "http.authentication.methods" in str(e.value)
    b2 = Broker(tmp_path / "b2", {"http.authentication.methods": "BEARER"})  # no JWKS file to check tokens with
    with pytest.raises(BrokerError) as e2:
        b2.start(timeout=30)
    assert "sasl.oauthbearer.jwks.file" in str(e2.value)
