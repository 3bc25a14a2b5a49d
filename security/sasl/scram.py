"""SASL/SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), server side, as Kafka speaks them.

client-first  n,[a=authzid],n=name,r=cnonce[,ext=value]*
server-first  r=cnonce+snonce,s=salt,i=iterations
client-final  c=b64(gs2 header),r=cnonce+snonce[,ext]*,p=proof
server-final  v=b64(ServerSignature)

Only the gs2 flag `n` (no channel binding) is accepted. Failures raise with Kafka's message; no
`e=` attribute is sent. An unknown user goes through the same steps with a credential that never
matches, so the answer does not tell which user names exist.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re

from security.credentials import CredentialCache, ScramCredential, ScramMechanism, digest, hmac_digest
from security.sasl.base import SaslAuthenticationError, SaslStep, invalid_credentials

_CLIENT_FIRST = re.compile(
    r"(?P<gs2>n,(?:a=(?P<authzid>[^,]*))?,)(?P<bare>(?:m=[^,]*,)?n=(?P<name>[^,]*),r=(?P<nonce>[\x21-\x2B\x2D-\x7E]+)"
    r"(?P<ext>(?:,[A-Za-z]+=[^,]*)*))$", re.S)
_CLIENT_FINAL = re.compile(
    r"(?P<without_proof>c=(?P<binding>[A-Za-z0-9+/=]*),r=(?P<nonce>[\x21-\x2B\x2D-\x7E]+)"
    r"(?:,[A-Za-z]+=[^,]*)*?),p=(?P<proof>[A-Za-z0-9+/=]+)$", re.S)
_ESCAPED = re.compile(r"=(?!2C|3D)")
SUPPORTED_EXTENSIONS = frozenset({"tokenauth"})


def unescape_name(name: str) -> str:
    if _ESCAPED.search(name):
        raise SaslAuthenticationError("Invalid SCRAM user name: '=' must be escaped as =2C or =3D")
    return name.replace("=2C", ",").replace("=3D", "=")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class ScramServer:
    def __init__(self, mech: ScramMechanism, credentials: CredentialCache, secret: bytes,
                 server_nonce: str | None = None) -> None:
        self.mechanism = mech.name
        self._mech = mech
        self._credentials = credentials
        self._secret = secret
        self.user: str | None = None
        self._state = 0
        self._gs2 = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self._cred: ScramCredential | None = None
        self._known = False
        self._server_nonce = server_nonce  # fixed only by tests (RFC 7677's example)

    async def step(self, data: bytes) -> SaslStep:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise SaslAuthenticationError("Invalid SCRAM message: not UTF-8", user=self.user) from None
        if self._state == 0:
            return self._client_first(text)
        if self._state == 1:
            return self._client_final(text)
        raise SaslAuthenticationError("Unexpected SCRAM message after the exchange ended", user=self.user)

    def _client_first(self, text: str) -> SaslStep:
        m = _CLIENT_FIRST.match(text)
        if m is None:
            raise SaslAuthenticationError("Invalid SCRAM client first message")
        self.user = user = unescape_name(m["name"])
        if not user:
            raise SaslAuthenticationError("Invalid SCRAM client first message: empty user name")
        extensions = {kv.split("=", 1)[0] for kv in m["ext"].split(",") if kv}
        if not extensions <= SUPPORTED_EXTENSIONS:
            raise SaslAuthenticationError("Unsupported SCRAM extensions will not be accepted", user=user)
        if "tokenauth" in extensions:
            raise SaslAuthenticationError("Delegation tokens are not supported", user=user)
        authzid = m["authzid"]
        if authzid and unescape_name(authzid) != user:
            raise SaslAuthenticationError("Authentication failed: Client requested an authorization id "
                                          "that is different from username", user=user)
        cred = self._credentials.get(user, self.mechanism)
        self._known = cred is not None
        self._cred = cred or self._decoy(user)
        self._gs2 = m["gs2"]
        self._client_first_bare = m["bare"]
        self._nonce = m["nonce"] + (self._server_nonce or
                                    base64.b64encode(os.urandom(24)).decode().replace("+", "-").replace("/", "_"))
        self._server_first = f"r={self._nonce},s={_b64(self._cred.salt)},i={self._cred.iterations}"
        self._state = 1
        return SaslStep(self._server_first.encode(), False)

    def _decoy(self, user: str) -> ScramCredential:
        salt = hmac.new(self._secret, self.mechanism.encode() + b"\x00" + user.encode(), hashlib.sha256).digest()
        size = self._mech.digest_size
        return ScramCredential(salt, os.urandom(size), os.urandom(size), self._mech.default_iterations)

    def _client_final(self, text: str) -> SaslStep:
        self._state = 2
        m = _CLIENT_FINAL.match(text)
        if m is None:
            raise SaslAuthenticationError("Invalid SCRAM client final message", user=self.user)
        try:
            binding = base64.b64decode(m["binding"], validate=True)
            proof = base64.b64decode(m["proof"], validate=True)
        except binascii.Error:
            raise SaslAuthenticationError("Invalid SCRAM client final message", user=self.user) from None
        if binding != self._gs2.encode():
            raise SaslAuthenticationError("Invalid SCRAM channel binding", user=self.user)
        if not m["nonce"].endswith(self._nonce):  # Kafka's check: some librdkafka versions repeat cnonce
            raise SaslAuthenticationError("Invalid SCRAM nonce", user=self.user)
        cred = self._cred
        assert cred is not None
        auth_message = f"{self._client_first_bare},{self._server_first},{m['without_proof']}".encode()
        signature = hmac_digest(self._mech, cred.stored_key, auth_message)
        if len(proof) != len(signature):
            raise invalid_credentials(self.mechanism, self.user)
        client_key = bytes(a ^ b for a, b in zip(proof, signature))
        if not hmac.compare_digest(digest(self._mech, client_key), cred.stored_key) or not self._known:
            raise invalid_credentials(self.mechanism, self.user)
        server_signature = hmac_digest(self._mech, cred.server_key, auth_message)
        return SaslStep(f"v={_b64(server_signature)}".encode(), True, f"User:{self.user}")
