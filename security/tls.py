"""TLS for the broker's listeners: server contexts, certificate reload, and mTLS principals.

`ReloadingTlsContext` builds an `ssl.SSLContext` (TLS 1.2 or newer) from PEM files and rebuilds it
when the files change on disk; each new connection takes the context current at accept time, so
a renewed certificate is served without a restart while existing connections keep theirs.

`PrincipalMapper` turns a client certificate's subject into a principal the way Kafka's
`ssl.principal.mapping.rules` does: `RULE:pattern/replacement/[L|U]` entries and `DEFAULT` (the
RFC 2253 form of the DN), tried in order; the first whose pattern matches the whole DN wins, and
no match fails the authentication.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import ssl
from dataclasses import dataclass, replace

from cryptography import x509

from security.files import FileStamp, file_stamp

log = logging.getLogger("sediment.tls")

CLIENT_AUTH = ("none", "requested", "required")
ANONYMOUS = "User:ANONYMOUS"


class TlsError(ValueError):
    """A TLS setting that cannot be used; `key` names the config key at fault."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


@dataclass(frozen=True)
class TlsSettings:
    certfile: str
    keyfile: str
    cafile: str = ""
    client_auth: str = "none"  # none | requested | required


def build_server_context(settings: TlsSettings) -> ssl.SSLContext:
    """A server context from the PEM files; raises TlsError naming the key of the file at fault."""
    if not settings.certfile:
        raise TlsError("ssl.certfile", "a TLS listener needs a certificate (PEM)")
    if not settings.keyfile:
        raise TlsError("ssl.keyfile", "a TLS listener needs a private key (PEM)")
    if settings.client_auth not in CLIENT_AUTH:
        raise TlsError("ssl.client.auth", f"{settings.client_auth!r} is not one of {', '.join(CLIENT_AUTH)}")
    if settings.client_auth != "none" and not settings.cafile:
        raise TlsError("ssl.cafile", f"ssl.client.auth={settings.client_auth} needs the CA that signs client "
                                     "certificates")
    for key, path in (("ssl.certfile", settings.certfile), ("ssl.keyfile", settings.keyfile),
                      ("ssl.cafile", settings.cafile)):
        if path and not os.access(path, os.R_OK):
            raise TlsError(key, f"cannot read {path}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(settings.certfile, settings.keyfile)
    except (ssl.SSLError, OSError) as e:
        raise TlsError("ssl.certfile", f"cannot load {settings.certfile} with key {settings.keyfile}: {e}") from None
    if settings.cafile:
        try:
            ctx.load_verify_locations(cafile=settings.cafile)
        except (ssl.SSLError, OSError) as e:
            raise TlsError("ssl.cafile", f"cannot load {settings.cafile}: {e}") from None
    ctx.verify_mode = {"none": ssl.CERT_NONE, "requested": ssl.CERT_OPTIONAL,
                       "required": ssl.CERT_REQUIRED}[settings.client_auth]
    return ctx


def _stamp(paths: tuple[str, ...]) -> tuple[FileStamp | None, ...]:
    return tuple(file_stamp(p) for p in paths)


@dataclass(frozen=True)
class ServerContexts:
    with_client_auth: ssl.SSLContext  # SSL listeners: ssl.client.auth as configured
    without_client_auth: ssl.SSLContext  # SASL_SSL listeners: SASL authenticates, as in Kafka


def build_server_contexts(settings: TlsSettings) -> ServerContexts:
    return ServerContexts(build_server_context(settings), build_server_context(replace(settings, client_auth="none")))


class ReloadingTlsContext:
    """The current server contexts, rebuilt when the certificate, key or CA files change."""

    def __init__(self, settings: TlsSettings, check_interval_s: float = 2.0) -> None:
        self._settings = settings
        self._interval = check_interval_s
        self._paths = tuple(p for p in (settings.certfile, settings.keyfile, settings.cafile) if p)
        self._stamp = _stamp(self._paths)
        self._contexts = build_server_contexts(settings)  # raises TlsError at start-up
        self._failed_stamp: tuple[FileStamp | None, ...] | None = None
        self._task: asyncio.Task[None] | None = None

    def current(self, client_auth: bool) -> ssl.SSLContext:
        """The context for a new connection; `client_auth` False for SASL_SSL listeners."""
        return self._contexts.with_client_auth if client_auth else self._contexts.without_client_auth

    async def start(self) -> None:
        self._task = asyncio.create_task(self._watch())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.check()

    async def check(self) -> bool:
        """Reload if the files changed; True when a new context was installed."""
        stamp = _stamp(self._paths)
        if stamp == self._stamp or stamp == self._failed_stamp:
            return False
        try:
            contexts = await asyncio.to_thread(build_server_contexts, self._settings)
        except TlsError as e:
            # Often a half-replaced pair (new cert, old key): keep serving the old one, retry on change.
            self._failed_stamp = stamp
            log.warning("TLS files changed but cannot be loaded, keeping the previous ones: %s: %s",
                        e.key, e.message)
            return False
        self._contexts, self._stamp, self._failed_stamp = contexts, stamp, None
        log.info("reloaded TLS certificate %s", self._settings.certfile)
        return True


# -- principals from client certificates ---------------------------------------------------

# Kafka's SslPrincipalMapper grammar: DEFAULT | RULE:pattern/replacement/[LU], separated by commas
# (a comma inside an escaped or unescaped pattern belongs to the pattern).
_RULE = r"(DEFAULT)|RULE:((?:\\.|[^\\/])*)/((?:\\.|[^\\/])*)/([LU]?).*?|(.*?)"
_RULE_SPLITTER = re.compile(r"\s*(" + _RULE + r")\s*(?:,\s*|$)")
_RULE_PARSER = re.compile(_RULE)


@dataclass(frozen=True)
class _Rule:
    default: bool
    pattern: re.Pattern[str] | None = None
    replacement: str = ""
    case: str = ""

    def apply(self, dn: str) -> str | None:
        if self.default:
            return dn
        assert self.pattern is not None
        if not self.pattern.fullmatch(dn):
            return None
        result = self.pattern.sub(self.replacement, dn)
        return result.lower() if self.case == "L" else result.upper() if self.case == "U" else result


def _java_replacement(text: str) -> str:
    """Java's `$1` / `${name}` / `\\x` replacement syntax as a Python `re` template."""
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(text[i + 1].replace("\\", "\\\\"))
            i += 2
        elif c == "$" and i + 1 < len(text) and text[i + 1].isdigit():
            j = i + 1
            while j < len(text) and text[j].isdigit():
                j += 1
            out.append(f"\\g<{text[i + 1:j]}>")
            i = j
        elif c == "$" and text.startswith("${", i) and "}" in text[i:]:
            j = text.index("}", i)
            out.append(f"\\g<{text[i + 2:j]}>")
            i = j + 1
        else:
            out.append("\\\\" if c == "\\" else c)
            i += 1
    return "".join(out)


class PrincipalMapper:
    def __init__(self, rules: str = "DEFAULT") -> None:
        self.rules = self._parse(rules.strip() or "DEFAULT")

    @staticmethod
    def _parse(text: str) -> list[_Rule]:
        rules: list[_Rule] = []
        for m in _RULE_SPLITTER.finditer(text):
            item = m.group(1)
            if not item:
                continue
            p = _RULE_PARSER.match(item)
            if p is None or p.end() != len(item) or p.group(5):
                raise TlsError("ssl.principal.mapping.rules", f"invalid rule {item!r}")
            if p.group(1):
                rules.append(_Rule(True))
                continue
            try:
                pattern = re.compile(p.group(2))
            except re.error as e:
                raise TlsError("ssl.principal.mapping.rules", f"rule {item!r}: bad pattern: {e}") from None
            rules.append(_Rule(False, pattern, _java_replacement(p.group(3)), p.group(4)))
        if not rules:
            raise TlsError("ssl.principal.mapping.rules", f"no rules in {text!r}")
        return rules

    def principal_name(self, dn: str) -> str:
        """The mapped name; ValueError when no rule applies (authentication then fails)."""
        for rule in self.rules:
            name = rule.apply(dn)
            if name is not None:
                return name
        raise ValueError(f"no ssl.principal.mapping.rules rule applies to {dn!r}")

    def principal_of(self, der_cert: bytes | None) -> str:
        """`User:<mapped DN>` of a DER certificate; `User:ANONYMOUS` without one."""
        if not der_cert:
            return ANONYMOUS
        return "User:" + self.principal_name(subject_dn(der_cert))


def subject_dn(der_cert: bytes) -> str:
    """The subject in RFC 2253 order (most specific first): `CN=writeuser,OU=qa,O=Sediment,C=US`."""
    return x509.load_der_x509_certificate(der_cert).subject.rfc4514_string()
