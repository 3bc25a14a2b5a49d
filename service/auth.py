"""Builds the broker's authentication parts from its config: the TLS context (reloading), the
client-certificate principal mapper, the SASL mechanisms and the JWT validator (OAUTHBEARER and
the HTTP API's bearer tokens). A file that cannot be used stops
start-up with a ConfigError naming its key."""

from __future__ import annotations

from dataclasses import dataclass

from security.credentials import CredentialCache
from security.jwt import JwksError, JwksFile, JwtValidator
from security.sasl import SaslMechanisms
from security.tls import PrincipalMapper, ReloadingTlsContext, TlsError, TlsSettings
from service.config import BrokerConfig, ConfigError


@dataclass
class Authentication:
    tls: ReloadingTlsContext | None  # None without SSL/SASL_SSL listeners
    principal_mapper: PrincipalMapper
    sasl: SaslMechanisms | None  # None without SASL listeners
    jwt: JwtValidator | None  # None unless OAUTHBEARER or the HTTP API's BEARER is on


def build_authentication(config: BrokerConfig, credentials: CredentialCache) -> Authentication:
    protocols = {l.security_protocol for l in config.listeners}
    try:
        mapper = PrincipalMapper(config["ssl.principal.mapping.rules"])
        tls = None
        if protocols & {"SSL", "SASL_SSL"} or config["http.ssl.enable"]:
            tls = ReloadingTlsContext(TlsSettings(config["ssl.certfile"], config["ssl.keyfile"],
                                                  config["ssl.cafile"], config["ssl.client.auth"]))
    except TlsError as e:
        raise ConfigError(e.key, e.message) from None
    sasl_on = bool(protocols & {"SASL_PLAINTEXT", "SASL_SSL"})
    mechanisms = list(config["sasl.enabled.mechanisms"])
    jwt = None
    if (sasl_on and "OAUTHBEARER" in mechanisms) or "BEARER" in config["http.authentication.methods"]:
        key = "sasl.oauthbearer.jwks.file"
        if not config[key]:
            raise ConfigError(key, "is required to validate tokens (OAUTHBEARER, or BEARER in "
                                   "http.authentication.methods)")
        jwks = JwksFile(config[key])
        try:
            jwks.keys()  # readable and holds usable keys now, or start-up stops
        except JwksError as e:
            raise ConfigError(key, str(e)) from None
        except OSError as e:
            raise ConfigError(key, f"cannot read {config[key]}: {e.strerror}") from None
        jwt = JwtValidator(jwks, config["sasl.oauthbearer.expected.issuer"],
                           config["sasl.oauthbearer.expected.audience"],
                           config["sasl.oauthbearer.sub.claim.name"])
    sasl = SaslMechanisms(mechanisms, credentials, jwt if "OAUTHBEARER" in mechanisms else None) if sasl_on else None
    return Authentication(tls, mapper, sasl, jwt)
