"""Builds the broker's authentication parts from its config: the TLS context (reloading), the
client-certificate principal mapper and the SASL mechanisms. A file that cannot be used stops
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


def build_authentication(config: BrokerConfig, credentials: CredentialCache) -> Authentication:
    protocols = {l.security_protocol for l in config.listeners}
    try:
        mapper = PrincipalMapper(config["ssl.principal.mapping.rules"])
        tls = None
        if protocols & {"SSL", "SASL_SSL"}:
            tls = ReloadingTlsContext(TlsSettings(config["ssl.certfile"], config["ssl.keyfile"],
                                                  config["ssl.cafile"], config["ssl.client.auth"]))
    except TlsError as e:
        raise ConfigError(e.key, e.message) from None
    sasl = None
    if protocols & {"SASL_PLAINTEXT", "SASL_SSL"}:
        mechanisms = list(config["sasl.enabled.mechanisms"])
        jwt = None
        if "OAUTHBEARER" in mechanisms:
            key = "sasl.oauthbearer.jwks.file"
            jwks = JwksFile(config[key])
            try:
                jwks.keys()  # readable and holds usable keys now, or start-up stops
            except JwksError as e:
                raise ConfigError(key, str(e)) from None
            jwt = JwtValidator(jwks, config["sasl.oauthbearer.expected.issuer"],
                               config["sasl.oauthbearer.expected.audience"],
                               config["sasl.oauthbearer.sub.claim.name"])
        sasl = SaslMechanisms(mechanisms, credentials, jwt)
    return Authentication(tls, mapper, sasl)
