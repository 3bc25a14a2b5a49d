"""Test PKI and tokens made with `cryptography`: CAs, server and client certificates, JWKS and JWTs."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .conftest import sediment_command

_DAY = datetime.timedelta(days=1)


def _name(cn: str, ou: str | None = None, o: str = "Sediment", c: str = "US") -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, c), x509.NameAttribute(NameOID.ORGANIZATION_NAME, o)]
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


@dataclass
class Issued:
    cert_path: Path
    key_path: Path
    cert: x509.Certificate


class CertificateAuthority:
    def __init__(self, directory: Path, name: str) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        subject = _name(f"{name} CA", "ca")
        self.cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY).not_valid_after(now + 30 * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path = self.dir / f"{name}-ca.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, file_stem: str, subject: x509.Name, *, server: bool, rsa_key: bool = False) -> Issued:
        key: Any = rsa.generate_private_key(65537, 2048) if rsa_key else ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(self.cert.subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - _DAY).not_valid_after(now + 10 * _DAY)
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                   else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        if server:
            b = b.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        cert = b.sign(self.key, hashes.SHA256())
        cert_path, key_path = self.dir / f"{file_stem}.pem", self.dir / f"{file_stem}.key"
        # Written to a temporary name then renamed: a reloading reader never sees half a file.
        for path, data in ((key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption())),
                           (cert_path, cert.public_bytes(serialization.Encoding.PEM))):
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return Issued(cert_path, key_path, cert)

    def server(self, file_stem: str = "server", cn: str = "localhost") -> Issued:
        return self.issue(file_stem, _name(cn, "brokers"), server=True)

    def client(self, file_stem: str, cn: str, ou: str = "qa") -> Issued:
        return self.issue(file_stem, _name(cn, ou), server=False)


def fingerprint(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


# -- JWT ----------------------------------------------------------------------------------------

def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _int_b64(n: int, size: int | None = None) -> str:
    return b64url(n.to_bytes(size or (n.bit_length() + 7) // 8, "big"))


class JwtIssuer:
    """An RSA (RS256) or EC P-256 (ES256) signing key with its JWKS entry."""

    def __init__(self, kid: str, alg: str = "RS256") -> None:
        self.kid, self.alg = kid, alg
        self.key: Any = (rsa.generate_private_key(65537, 2048) if alg == "RS256"
                         else ec.generate_private_key(ec.SECP256R1()))

    def jwk(self) -> dict[str, str]:
        pub = self.key.public_key().public_numbers()
        if self.alg == "RS256":
            return {"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256",
                    "n": _int_b64(pub.n), "e": _int_b64(pub.e)}
        return {"kty": "EC", "kid": self.kid, "use": "sig", "crv": "P-256",
                "x": _int_b64(pub.x, 32), "y": _int_b64(pub.y, 32)}

    def token(self, sub: str = "alice", lifetime_s: float = 3600, now: float | None = None, **claims: Any) -> str:
        now = time.time() if now is None else now
        body = {"sub": sub, "iat": int(now), "exp": int(now + lifetime_s), **claims}
        header = {"alg": self.alg, "typ": "JWT", "kid": self.kid}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(body).encode())}".encode()
        if self.alg == "RS256":
            sig = self.key.sign(signing_input, PKCS1v15(), hashes.SHA256())
        else:
            r, s = decode_dss_signature(self.key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return f"{signing_input.decode()}.{b64url(sig)}"


def write_jwks(path: Path, *issuers: JwtIssuer) -> Path:
    path.write_text(json.dumps({"keys": [i.jwk() for i in issuers]}))
    return path


# -- users ----------------------------------------------------------------------------------------

def add_user(data_dir: Path, name: str, password: str, mechanism: str = "SCRAM-SHA-512",
             iterations: int | None = None) -> None:
    """`sediment users add` on the data dir, before the broker starts."""
    cmd = sediment_command() + ["users", "add", name, "--mechanism", mechanism, "--password-stdin",
                                "--data-dir", str(data_dir)]
    if iterations is not None:
        cmd += ["--iterations", str(iterations)]
    out = subprocess.run(cmd, input=password + "\n", capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


# -- a raw Kafka client whose messages are encoded and decoded by kio ---------------------------

class KioConnection:
    """Requests built from kio's classes over a plain socket (or an ssl-wrapped one); raw SASL
    token frames (after SaslHandshake v0) are just int32 size + bytes."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self._cid = 0

    def send(self, api_key: int, version: int, **fields: Any) -> int:
        import io
        import struct

        from kio.index import load_request_schema
        from kio.schema.request_header.v1.header import RequestHeader as H1
        from kio.schema.request_header.v2.header import RequestHeader as H2
        from kio.serial import entity_writer
        from kio.static.primitive import i16, i32

        cls = load_request_schema(api_key, version)
        self._cid += 1
        header_cls = H2 if cls.__flexible__ else H1
        buf = io.BytesIO()
        entity_writer(header_cls)(buf, header_cls(request_api_key=i16(api_key), request_api_version=i16(version),
                                                  correlation_id=i32(self._cid), client_id="security-it"))
        entity_writer(cls)(buf, cls(**fields))
        payload = buf.getvalue()
        self.sock.sendall(struct.pack(">i", len(payload)) + payload)
        return self._cid

    def receive(self, api_key: int, version: int) -> Any:
        from kio.index import load_response_schema
        from kio.serial import entity_reader

        from .helpers import recv_frame

        cls = load_response_schema(api_key, version)
        data = recv_frame(self.sock)
        header_cls = cls.__header_schema__
        header, offset = entity_reader(header_cls)(data, 0)
        assert header.correlation_id == self._cid
        body, _ = entity_reader(cls)(data, offset)
        return body

    def request(self, api_key: int, version: int, **fields: Any) -> Any:
        self.send(api_key, version, **fields)
        return self.receive(api_key, version)

    def send_token(self, token: bytes) -> None:
        import struct

        self.sock.sendall(struct.pack(">i", len(token)) + token)

    def receive_token(self) -> bytes:
        from .helpers import recv_frame

        return recv_frame(self.sock)
