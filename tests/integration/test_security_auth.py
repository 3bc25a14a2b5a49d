"""TLS, mTLS and SASL authentication with real clients against a real broker process.

One broker serves PLAINTEXT (set-up only), SASL_SSL, SASL_PLAINTEXT and SSL (client certificates
required, mapped by a RULE) at once. Users are added with `sediment users add` before it starts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import socket
import ssl
import subprocess
import time
import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion
from kio.schema.metadata.v12.response import MetadataResponse

from . import ck
from .conftest import Broker, BrokerError
from .helpers import connect, wait_closed
from .security_helpers import CertificateAuthority, JwtIssuer, KioConnection, add_user, fingerprint, write_jwks

ALICE, ALICE_PW = "alice", "alice-Secret-1"
BOB, BOB_PW = "bob", "bob-Secret-2"
LISTENERS = ["PLAINTEXT", "SASL_SSL", "SASL_PLAINTEXT", "SSL"]
MAPPING = "RULE:^CN=(.*?),OU=qa,.*$/$1/L"
SASL_AUTHENTICATION_FAILED, ILLEGAL_SASL_STATE, UNSUPPORTED_SASL_MECHANISM = 58, 34, 33


class Pki:
    def __init__(self, directory):
        self.ca = CertificateAuthority(directory, "trusted")
        self.rogue_ca = CertificateAuthority(directory, "rogue")
        self.server = self.ca.server()
        self.writeuser = self.ca.client("writeuser", "WriteUser", "qa")
        self.unmapped = self.ca.client("devuser", "devuser", "dev")  # trusted, but no rule maps it
        self.rogue = self.rogue_ca.client("rogue", "writeuser", "qa")  # right name, untrusted CA

    def settings(self) -> dict[str, str]:
        return {"ssl.certfile": str(self.server.cert_path), "ssl.keyfile": str(self.server.key_path),
                "ssl.cafile": str(self.ca.cert_path), "ssl.client.auth": "required",
                "ssl.principal.mapping.rules": MAPPING}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def jwt_issuer():
    return JwtIssuer("test-rsa", "RS256")


@pytest.fixture(scope="module")
def sec_broker(tmp_path_factory, pki, jwt_issuer):
    base = tmp_path_factory.mktemp("security")
    jwks = write_jwks(base / "jwks.json", jwt_issuer)
    b = Broker(base, {**pki.settings(),
                      "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,OAUTHBEARER",
                      "sasl.oauthbearer.jwks.file": str(jwks),
                      "sasl.oauthbearer.expected.audience": "sediment"}, LISTENERS)
    add_user(b.data_dir, ALICE, ALICE_PW, "SCRAM-SHA-512")
    add_user(b.data_dir, BOB, BOB_PW, "SCRAM-SHA-256", iterations=8192)
    b.start()
    yield b
    try:
        b.stop()
    except BrokerError:
        pass


def sasl_ssl_conf(pki, mechanism, user=ALICE, password=ALICE_PW):
    return {"security.protocol": "SASL_SSL", "sasl.mechanism": mechanism, "sasl.username": user,
            "sasl.password": password, "ssl.ca.location": str(pki.ca.cert_path)}


def mtls_conf(pki, issued=None, ca=None):
    issued = issued or pki.writeuser
    return {"security.protocol": "SSL", "ssl.ca.location": str(ca or pki.ca.cert_path),
            "ssl.certificate.location": str(issued.cert_path), "ssl.key.location": str(issued.key_path)}


def new_topic(broker: Broker, prefix: str) -> str:
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    ck.create_topic(broker.bootstrap, topic)  # over PLAINTEXT
    return topic


def records(n: int, tag: str) -> list[tuple[bytes, bytes]]:
    return [(f"k{i}".encode(), f"{tag}-value-{i}-".encode() * (i % 5 + 1)) for i in range(n)]


def expected(recs):
    return [(i, k, v) for i, (k, v) in enumerate(recs)]


# -- the three clients: produce then consume exact records ----------------------------------------

def confluent_roundtrip(address: str, conf: dict, topic: str, recs) -> list[tuple]:
    p = ck.producer(address, **conf)
    for k, v in recs:
        p.produce(topic, key=k, value=v, partition=0)
    assert p.flush(30) == 0
    got = ck.consume(address, topic, [0], **conf)
    return [(r[1], r[2], r[3]) for r in got]


def aiokafka_roundtrip(address: str, kw: dict, topic: str, recs) -> list[tuple]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka import TopicPartition as ATP

    async def run():
        p = AIOKafkaProducer(bootstrap_servers=address, **kw)
        await p.start()
        try:
            for k, v in recs:
                await p.send_and_wait(topic, v, key=k, partition=0)
        finally:
            await p.stop()
        c = AIOKafkaConsumer(bootstrap_servers=address, enable_auto_commit=False, **kw)
        await c.start()
        try:
            tp = ATP(topic, 0)
            c.assign([tp])
            await c.seek_to_beginning(tp)
            out: list[tuple] = []
            deadline = time.monotonic() + 30
            while len(out) < len(recs) and time.monotonic() < deadline:
                for msgs in (await c.getmany(timeout_ms=500)).values():
                    out += [(m.offset, m.key, m.value) for m in msgs]
            return out
        finally:
            await c.stop()

    return asyncio.run(run())


def kafka_python_roundtrip(address: str, kw: dict, topic: str, recs) -> list[tuple]:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KTP

    p = KafkaProducer(bootstrap_servers=address, **kw)
    try:
        for k, v in recs:
            p.send(topic, value=v, key=k, partition=0)
        p.flush(30)
    finally:
        p.close()
    c = KafkaConsumer(bootstrap_servers=address, enable_auto_commit=False, consumer_timeout_ms=15000, **kw)
    try:
        c.assign([KTP(topic, 0)])
        c.seek_to_beginning()
        out = []
        for m in c:
            out.append((m.offset, m.key, m.value))
            if len(out) == len(recs):
                break
        return out
    finally:
        c.close()


def aiokafka_ssl(pki, client=None):
    from aiokafka.helpers import create_ssl_context

    if client is None:
        return create_ssl_context(cafile=str(pki.ca.cert_path))
    return create_ssl_context(cafile=str(pki.ca.cert_path), certfile=str(client.cert_path),
                              keyfile=str(client.key_path))


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
def test_confluent_sasl_ssl(sec_broker, pki, mechanism):
    topic, recs = new_topic(sec_broker, "ck-sasl"), records(20, "ck")
    got = confluent_roundtrip(sec_broker.address("SASL_SSL"), sasl_ssl_conf(pki, mechanism), topic, recs)
    assert got == expected(recs)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
def test_aiokafka_sasl_ssl(sec_broker, pki, mechanism):
    topic, recs = new_topic(sec_broker, "aio-sasl"), records(15, "aio")
    kw = dict(security_protocol="SASL_SSL", ssl_context=aiokafka_ssl(pki), sasl_mechanism=mechanism,
              sasl_plain_username=ALICE, sasl_plain_password=ALICE_PW)
    assert aiokafka_roundtrip(sec_broker.address("SASL_SSL"), kw, topic, recs) == expected(recs)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
def test_kafka_python_sasl_ssl(sec_broker, pki, mechanism):
    topic, recs = new_topic(sec_broker, "kp-sasl"), records(15, "kp")
    kw = dict(security_protocol="SASL_SSL", ssl_cafile=str(pki.ca.cert_path), sasl_mechanism=mechanism,
              sasl_plain_username=ALICE, sasl_plain_password=ALICE_PW)
    assert kafka_python_roundtrip(sec_broker.address("SASL_SSL"), kw, topic, recs) == expected(recs)


def test_scram_sha256_over_sasl_plaintext(sec_broker, pki):
    topic, recs = new_topic(sec_broker, "ck-256"), records(5, "b")
    conf = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-256",
            "sasl.username": BOB, "sasl.password": BOB_PW}
    assert confluent_roundtrip(sec_broker.address("SASL_PLAINTEXT"), conf, topic, recs) == expected(recs)


def test_mtls_all_clients(sec_broker, pki):
    address = sec_broker.address("SSL")
    topic, recs = new_topic(sec_broker, "mtls"), records(12, "m")
    assert confluent_roundtrip(address, mtls_conf(pki), topic, recs) == expected(recs)
    topic, recs = new_topic(sec_broker, "mtls-aio"), records(12, "a")
    kw = dict(security_protocol="SSL", ssl_context=aiokafka_ssl(pki, pki.writeuser))
    assert aiokafka_roundtrip(address, kw, topic, recs) == expected(recs)
    topic, recs = new_topic(sec_broker, "mtls-kp"), records(12, "p")
    kw = dict(security_protocol="SSL", ssl_cafile=str(pki.ca.cert_path),
              ssl_certfile=str(pki.writeuser.cert_path), ssl_keyfile=str(pki.writeuser.key_path))
    assert kafka_python_roundtrip(address, kw, topic, recs) == expected(recs)


# -- refusals ------------------------------------------------------------------------------------

def confluent_error(address: str, conf: dict, timeout: float = 10) -> KafkaError:
    """The first error a confluent-kafka client reports when it cannot get in."""
    errors: list[KafkaError] = []
    p = ck.producer(address, error_cb=errors.append, **conf)
    deadline = time.monotonic() + timeout
    while not errors and time.monotonic() < deadline:
        try:
            p.list_topics(timeout=0.5)
        except KafkaException:
            pass
        p.poll(0.1)
    assert errors, "no error reported"
    return errors[0]


def test_wrong_password_confluent(sec_broker, pki):
    for mechanism in ("SCRAM-SHA-512", "PLAIN"):
        err = confluent_error(sec_broker.address("SASL_SSL"), sasl_ssl_conf(pki, mechanism, password="wrong"))
        assert err.code() == KafkaError._AUTHENTICATION, err
        assert "SASL authentication error" in err.str() and "invalid credentials" in err.str(), err.str()
    err = confluent_error(sec_broker.address("SASL_SSL"), sasl_ssl_conf(pki, "SCRAM-SHA-512", "nobody", "x"))
    assert err.code() == KafkaError._AUTHENTICATION  # the same answer as a wrong password
    log = sec_broker.log_path.read_text()
    assert "authentication failed: principal=alice mechanism=SCRAM-SHA-512 client=127.0.0.1" in log
    assert "wrong" not in "\n".join(l for l in log.splitlines() if "authentication failed" in l)


def test_wrong_password_aiokafka_and_kafka_python(sec_broker, pki, caplog):
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError as AioKafkaError
    from kafka import KafkaProducer
    from kafka.errors import KafkaError as KpKafkaError

    async def aio():
        p = AIOKafkaProducer(bootstrap_servers=sec_broker.address("SASL_SSL"), security_protocol="SASL_SSL",
                             ssl_context=aiokafka_ssl(pki), sasl_mechanism="SCRAM-SHA-512",
                             sasl_plain_username=ALICE, sasl_plain_password="wrong", request_timeout_ms=5000)
        try:
            await p.start()
        finally:
            await p.stop()

    with pytest.raises(AioKafkaError):
        asyncio.run(aio())
    # aiokafka's bootstrap gives up with a connection error and logs the cause.
    assert "[Error 58] SaslAuthenticationFailed: Authentication failed during authentication due to invalid " \
           "credentials with SASL mechanism SCRAM-SHA-512" in caplog.text
    caplog.clear()
    with pytest.raises(KpKafkaError):
        KafkaProducer(bootstrap_servers=sec_broker.address("SASL_SSL"), security_protocol="SASL_SSL",
                      ssl_cafile=str(pki.ca.cert_path), sasl_mechanism="PLAIN", sasl_plain_username=ALICE,
                      sasl_plain_password="wrong", bootstrap_timeout_ms=3000)
    # kafka-python's bootstrap times out; each attempt logs the broker's answer.
    assert "[Error 58] SaslAuthenticationFailedError: SaslAuthenticationFailedError: Authentication failed " \
           "during authentication due to invalid credentials with SASL mechanism PLAIN" in caplog.text


def _tls_client(pki, client=None, ca=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca or pki.ca.cert_path))
    if client is not None:
        ctx.load_cert_chain(str(client.cert_path), str(client.key_path))
    return ctx


def _mtls_metadata(sec_broker, ctx) -> MetadataResponse:
    """Handshake, then one Metadata request; returns the response (raises when refused)."""
    host, port = sec_broker.address("SSL").split(":")
    with (socket.create_connection((host, int(port)), timeout=5) as raw,
          ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s):
        return KioConnection(s).request(3, 12, topics=None, allow_auto_topic_creation=False,
                                        include_topic_authorized_operations=False)


def test_untrusted_client_certificate_refused(sec_broker, pki):
    assert _mtls_metadata(sec_broker, _tls_client(pki, pki.writeuser)).brokers  # the trusted one gets in
    for refused in (pki.rogue, None, pki.unmapped):
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            _mtls_metadata(sec_broker, _tls_client(pki, refused))
    err = confluent_error(sec_broker.address("SSL"), mtls_conf(pki, pki.rogue))
    assert err.code() in (KafkaError._SSL, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN), err
    log = sec_broker.log_path.read_text()
    assert "no ssl.principal.mapping.rules rule applies to 'CN=devuser,OU=dev,O=Sediment,C=US'" in log


def test_untrusted_server_ca_refused(sec_broker, pki):
    err = confluent_error(sec_broker.address("SASL_SSL"),
                          {**sasl_ssl_conf(pki, "SCRAM-SHA-512"), "ssl.ca.location": str(pki.rogue_ca.cert_path)})
    assert err.code() in (KafkaError._SSL, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN), err
    assert "certificate verify failed" in err.str(), err.str()


def test_plaintext_client_to_sasl_listener_refused(sec_broker, pki):
    topic = new_topic(sec_broker, "refused")
    p = ck.producer(sec_broker.bootstrap)
    p.produce(topic, value=b"secret", partition=0)
    assert p.flush(10) == 0
    # ApiVersions is answered (clients need it to start SASL); the next request closes, unanswered.
    with connect(sec_broker.address("SASL_PLAINTEXT")) as s:
        kc = KioConnection(s)
        assert kc.request(18, 3, client_software_name="it", client_software_version="1").error_code == 0
        kc.send(3, 12, topics=None, allow_auto_topic_creation=False, include_topic_authorized_operations=False)
        assert wait_closed(s) == b""
    with connect(sec_broker.address("SASL_PLAINTEXT")) as s:
        KioConnection(s).send(3, 12, topics=None, allow_auto_topic_creation=False,
                              include_topic_authorized_operations=False)
        assert wait_closed(s) == b""
    errors: list = []
    c = ck.consumer(sec_broker.address("SASL_PLAINTEXT"), error_cb=errors.append)
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            msg = c.poll(0.5)
            assert msg is None or msg.error() is not None, "a PLAINTEXT client was served data"
    finally:
        c.close()


def test_legacy_unframed_handshake(sec_broker):
    """SaslHandshake v0, then the PLAIN token as a raw frame with no Kafka header."""
    from kio.schema.errors import ErrorCode

    with connect(sec_broker.address("SASL_PLAINTEXT")) as s:
        kc = KioConnection(s)
        hs = kc.request(17, 0, mechanism="PLAIN")
        assert hs.error_code == ErrorCode.none and "PLAIN" in hs.mechanisms
        kc.send_token(f"\x00{ALICE}\x00{ALICE_PW}".encode())
        assert kc.receive_token() == b""
        md = kc.request(3, 12, topics=None, allow_auto_topic_creation=False,
                        include_topic_authorized_operations=False)
        assert md.brokers[0].port == sec_broker.ports["SASL_PLAINTEXT"]
    with connect(sec_broker.address("SASL_PLAINTEXT")) as s:  # SCRAM too, then a wrong password
        kc = KioConnection(s)
        assert kc.request(17, 0, mechanism="PLAIN").error_code == ErrorCode.none
        kc.send_token(f"\x00{ALICE}\x00nope".encode())
        assert wait_closed(s) == b""  # v0: a failure just closes


def test_sasl_state_errors(sec_broker):
    from kio.schema.errors import ErrorCode

    with connect(sec_broker.address("SASL_PLAINTEXT")) as s:
        kc = KioConnection(s)
        hs = kc.request(17, 1, mechanism="GSSAPI")
        assert hs.error_code == ErrorCode.unsupported_sasl_mechanism
        assert list(hs.mechanisms) == ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]
        assert wait_closed(s) == b""
    with connect(sec_broker.address("SASL_PLAINTEXT")) as s:
        kc = KioConnection(s)
        assert kc.request(17, 1, mechanism="PLAIN").error_code == ErrorCode.none
        ok = kc.request(36, 2, auth_bytes=f"\x00{ALICE}\x00{ALICE_PW}".encode())
        assert ok.error_code == ErrorCode.none and ok.session_lifetime.total_seconds() == 0
        again = kc.request(36, 2, auth_bytes=b"\x00x\x00y")  # after success, no re-auth in play
        assert again.error_code == ErrorCode.illegal_sasl_state
        assert kc.request(17, 1, mechanism="PLAIN").error_code == ErrorCode.illegal_sasl_state
    with connect(sec_broker.address("SASL_PLAINTEXT")) as s:
        kc = KioConnection(s)
        assert kc.request(17, 1, mechanism="SCRAM-SHA-512").error_code == ErrorCode.none
        started = time.monotonic()
        bad = kc.request(36, 1, auth_bytes=b"n,,n=alice,r=abc,x=unknown-extension")
        assert bad.error_code == ErrorCode.sasl_authentication_failed and bad.error_message
        assert time.monotonic() - started >= 0.09  # connection.failed.authentication.delay.ms
        assert wait_closed(s) == b""


# -- admin: SCRAM credentials over the wire ---------------------------------------------------------

def test_describe_and_alter_user_scram_credentials(sec_broker, pki):
    admin = ck.admin(sec_broker.bootstrap)
    described = admin.describe_user_scram_credentials([ALICE, BOB])
    assert isinstance(described, dict)  # named users: a future per user
    infos = {u: [(i.mechanism, i.iterations) for i in f.result(10).scram_credential_infos]
             for u, f in described.items()}
    assert infos == {ALICE: [(ScramMechanism.SCRAM_SHA_512, 4096)], BOB: [(ScramMechanism.SCRAM_SHA_256, 8192)]}
    carol = f"carol-{uuid.uuid4().hex[:6]}"
    fs = admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
        carol, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), b"carol-Pw-3")])
    fs[carol].result(10)
    all_users = admin.describe_user_scram_credentials()
    assert isinstance(all_users, concurrent.futures.Future)  # no users named: one future for all
    everyone = all_users.result(10)
    assert {ALICE, BOB, carol} <= set(everyone)
    assert [(i.mechanism, i.iterations) for i in everyone[carol].scram_credential_infos] == \
        [(ScramMechanism.SCRAM_SHA_512, 8192)]
    topic, recs = new_topic(sec_broker, "carol"), records(6, "c")
    conf = sasl_ssl_conf(pki, "SCRAM-SHA-512", carol, "carol-Pw-3")
    assert confluent_roundtrip(sec_broker.address("SASL_SSL"), conf, topic, recs) == expected(recs)
    bad = admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
        "dave", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 100), b"pw")])
    assert ck.future_error_code(bad["dave"]) == 93  # UNACCEPTABLE_CREDENTIAL
    missing = admin.describe_user_scram_credentials(["nobody"])
    assert isinstance(missing, dict)
    assert ck.future_error_code(missing["nobody"]) == 91  # RESOURCE_NOT_FOUND


# -- OAUTHBEARER --------------------------------------------------------------------------------

def test_oauthbearer_confluent_and_aiokafka(sec_broker, pki, jwt_issuer):
    address = sec_broker.address("SASL_SSL")
    topic, recs = new_topic(sec_broker, "oauth"), records(8, "o")

    def oauth_cb(_config):
        return jwt_issuer.token("svc-orders", 600, aud="sediment"), time.time() + 600

    conf = {"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER", "oauth_cb": oauth_cb,
            "ssl.ca.location": str(pki.ca.cert_path)}
    assert confluent_roundtrip(address, conf, topic, recs) == expected(recs)

    from aiokafka.abc import AbstractTokenProvider

    class Provider(AbstractTokenProvider):
        async def token(self):
            return jwt_issuer.token("svc-orders", 600, aud="sediment")

    topic, recs = new_topic(sec_broker, "oauth-aio"), records(8, "oa")
    kw = dict(security_protocol="SASL_SSL", ssl_context=aiokafka_ssl(pki), sasl_mechanism="OAUTHBEARER",
              sasl_oauth_token_provider=Provider())
    assert aiokafka_roundtrip(address, kw, topic, recs) == expected(recs)


def test_oauthbearer_expired_or_foreign_token_refused(sec_broker, pki, jwt_issuer):
    foreign = JwtIssuer("test-rsa", "RS256")  # same kid, another key
    for token in (jwt_issuer.token("svc", -300, aud="sediment"), foreign.token("svc", 600, aud="sediment"),
                  jwt_issuer.token("svc", 600, aud="elsewhere")):
        conf = {"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER",
                "oauth_cb": lambda _c, t=token: (t, time.time() + 600), "ssl.ca.location": str(pki.ca.cert_path)}
        err = confluent_error(sec_broker.address("SASL_SSL"), conf)
        assert err.code() == KafkaError._AUTHENTICATION, err
    # On the wire: the invalid_token challenge, then failure 58 after the client's \x01.
    with connect(sec_broker.address("SASL_PLAINTEXT")) as s:
        kc = KioConnection(s)
        assert kc.request(17, 1, mechanism="OAUTHBEARER").error_code == 0
        expired = jwt_issuer.token("svc", -300, aud="sediment")
        challenge = kc.request(36, 2, auth_bytes=f"n,,\x01auth=Bearer {expired}\x01\x01".encode())
        assert challenge.error_code == 0 and challenge.auth_bytes == b'{"status":"invalid_token"}'
        final = kc.request(36, 2, auth_bytes=b"\x01")
        assert final.error_code == SASL_AUTHENTICATION_FAILED
        assert wait_closed(s) == b""
    with connect(sec_broker.address("SASL_PLAINTEXT")) as s:  # a good token's session ends with it
        kc = KioConnection(s)
        assert kc.request(17, 1, mechanism="OAUTHBEARER").error_code == 0
        good = jwt_issuer.token("svc", 120, aud="sediment")
        ok = kc.request(36, 2, auth_bytes=f"n,,\x01auth=Bearer {good}\x01\x01".encode())
        assert ok.error_code == 0 and 100 < ok.session_lifetime.total_seconds() <= 120


# -- kcat ------------------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed (apt-get install kcat)")
def test_kcat_sasl_ssl_scram(sec_broker, pki):
    topic = new_topic(sec_broker, "kcat")
    common = ["-b", sec_broker.address("SASL_SSL"), "-X", "security.protocol=SASL_SSL",
              "-X", "sasl.mechanism=SCRAM-SHA-512", "-X", f"sasl.username={ALICE}",
              "-X", f"sasl.password={ALICE_PW}", "-X", f"ssl.ca.location={pki.ca.cert_path}"]
    lines = [f"kcat-line-{i}" for i in range(10)]
    out = subprocess.run(["kcat", *common, "-P", "-t", topic, "-p", "0"], input="\n".join(lines) + "\n",
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    out = subprocess.run(["kcat", *common, "-C", "-t", topic, "-p", "0", "-o", "beginning", "-e",
                          "-f", "%o:%s\n"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"{i}:{line}" for i, line in enumerate(lines)]
    bad = subprocess.run(["kcat", *common[:-4], "-X", "sasl.password=wrong", *common[-2:], "-L", "-m", "5"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0 and "Authentication failed" in bad.stderr + bad.stdout


# -- re-authentication (KIP-368) ----------------------------------------------------------------------

REAUTH_MS = 3000


@pytest.fixture(scope="module")
def reauth_broker(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("reauth"), {"connections.max.reauth.ms": REAUTH_MS},
               ["PLAINTEXT", "SASL_PLAINTEXT"])
    add_user(b.data_dir, ALICE, ALICE_PW, "SCRAM-SHA-512")
    add_user(b.data_dir, BOB, BOB_PW, "SCRAM-SHA-512")
    b.start()
    yield b
    try:
        b.stop()
    except BrokerError:
        pass


def _plain_login(kc: KioConnection, user: str = ALICE, password: str = ALICE_PW):
    assert kc.request(17, 1, mechanism="PLAIN").error_code == 0
    return kc.request(36, 2, auth_bytes=f"\x00{user}\x00{password}".encode())


def _metadata(kc: KioConnection):
    return kc.request(3, 12, topics=None, allow_auto_topic_creation=False, include_topic_authorized_operations=False)


def test_session_expires_without_reauthentication(reauth_broker):
    with connect(reauth_broker.address("SASL_PLAINTEXT")) as s:
        kc = KioConnection(s)
        ok = _plain_login(kc)
        assert ok.error_code == 0 and ok.session_lifetime.total_seconds() * 1000 == REAUTH_MS
        assert _metadata(kc).brokers
        time.sleep(REAUTH_MS / 1000 + 0.3)
        kc.send(3, 12, topics=None, allow_auto_topic_creation=False, include_topic_authorized_operations=False)
        assert wait_closed(s) == b""


def test_reauthentication_extends_the_session_and_keeps_the_principal(reauth_broker):
    with connect(reauth_broker.address("SASL_PLAINTEXT")) as s:
        kc = KioConnection(s)
        assert _plain_login(kc).error_code == 0
        time.sleep(2.0)
        again = _plain_login(kc)  # SaslHandshake on the live connection, then the token
        assert again.error_code == 0 and again.session_lifetime.total_seconds() * 1000 == REAUTH_MS
        time.sleep(1.5)  # past the first session's end, inside the second's
        assert _metadata(kc).brokers
        other = _plain_login(kc, BOB, BOB_PW)  # another principal may not take over the connection
        assert other.error_code == SASL_AUTHENTICATION_FAILED
        assert "Cannot change principals" in other.error_message
        assert wait_closed(s) == b""


def test_reauthentication_keeps_the_mechanism(reauth_broker):
    with connect(reauth_broker.address("SASL_PLAINTEXT")) as s:
        kc = KioConnection(s)
        assert _plain_login(kc).error_code == 0
        hs = kc.request(17, 1, mechanism="SCRAM-SHA-512")
        assert hs.error_code == UNSUPPORTED_SASL_MECHANISM
        assert wait_closed(s) == b""


def test_confluent_consumer_reauthenticates_across_several_lifetimes(reauth_broker):
    topic = new_topic(reauth_broker, "reauth")
    conf = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": ALICE, "sasl.password": ALICE_PW}
    c = ck.consumer(reauth_broker.address("SASL_PLAINTEXT"), **conf)
    p = ck.producer(reauth_broker.bootstrap)
    log_before = len(reauth_broker.log_path.read_text().splitlines())
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        got: list[tuple[int | None, bytes | None]] = []
        sent: list[bytes] = []
        started = time.monotonic()
        while time.monotonic() - started < 3.5 * REAUTH_MS / 1000:
            value = f"r-{len(sent)}".encode()
            p.produce(topic, value=value, partition=0)
            p.flush(5)
            sent.append(value)
            msg = c.poll(0.4)
            if msg is not None and not msg.error():
                got.append((msg.offset(), msg.value()))
        deadline = time.monotonic() + 10
        while len(got) < len(sent) and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is not None and not msg.error():
                got.append((msg.offset(), msg.value()))
    finally:
        c.close()
    assert got == list(enumerate(sent))
    new_lines = reauth_broker.log_path.read_text().splitlines()[log_before:]
    # Had re-authentication not happened, the broker would have closed the expired sessions.
    assert not [l for l in new_lines if "expired" in l or "authentication failed" in l], new_lines


# -- certificate reload --------------------------------------------------------------------------------

def test_server_certificate_reloads_without_restart(broker_factory, tmp_path):
    ca = CertificateAuthority(tmp_path / "pki", "reload")
    first = ca.server()
    b = broker_factory({"ssl.certfile": str(first.cert_path), "ssl.keyfile": str(first.key_path)},
                       listeners=["PLAINTEXT", "SSL"])
    ctx = ssl.create_default_context(cafile=str(ca.cert_path))
    host, port = b.address("SSL").split(":")

    def served_fingerprint() -> bytes:
        with (socket.create_connection((host, int(port)), timeout=5) as raw,
              ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s):
            from cryptography import x509
            der = s.getpeercert(binary_form=True)
            assert der is not None  # a completed TLS handshake: the server sent its certificate
            return fingerprint(x509.load_der_x509_certificate(der))

    assert served_fingerprint() == fingerprint(first.cert)
    old = ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=5), server_hostname="127.0.0.1")
    try:
        second = ca.server()  # new key and certificate at the same paths
        assert fingerprint(second.cert) != fingerprint(first.cert)
        deadline = time.monotonic() + 15
        while served_fingerprint() != fingerprint(second.cert):
            assert time.monotonic() < deadline, "the new certificate was not picked up"
            time.sleep(0.3)
        assert _metadata(KioConnection(old)).brokers  # the existing connection keeps its session
    finally:
        old.close()
    assert "reloaded TLS certificate" in b.log_path.read_text()
