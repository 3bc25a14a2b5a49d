"""Broker configuration: every key typed, validated and defaulted in one table.

Sources, lowest precedence first: built-in defaults, a TOML file (`--config`), `SEDIMENT_*`
environment variables, command-line flags. Keys use Kafka's dotted names; an unknown key or a bad
value stops start-up with a message naming the key.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration key with a bad value, or an unknown key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config key {key!r}: {message}")
        self.key = key


@dataclass(frozen=True)
class Listener:
    name: str  # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL (or a custom name mapped to one)
    host: str
    port: int

    @property
    def security_protocol(self) -> str:
        return self.name

    def __str__(self) -> str:
        return f"{self.name}://{self.host}:{self.port}"


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


def parse_listeners(key: str, value: str) -> list[Listener]:
    listeners: list[Listener] = []
    for item in (v.strip() for v in value.split(",")):
        if not item:
            continue
        name, sep, rest = item.partition("://")
        if not sep:
            raise ConfigError(key, f"{item!r} is not NAME://HOST:PORT")
        host, colon, port = rest.rpartition(":")
        if not colon or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError(key, f"{item!r} has no valid port")
        if name.upper() not in SECURITY_PROTOCOLS:
            raise ConfigError(key, f"{name!r} is not one of {', '.join(SECURITY_PROTOCOLS)}")
        listeners.append(Listener(name.upper(), host.strip("[]") or "0.0.0.0", int(port)))
    if not listeners:
        raise ConfigError(key, "at least one listener is required")
    if len({l.name for l in listeners}) != len(listeners):
        raise ConfigError(key, "listener names must be unique")
    return listeners


def _bool(key: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("true", "1", "yes", "on"):
        return True
    if s in ("false", "0", "no", "off"):
        return False
    raise ConfigError(key, f"{v!r} is not a boolean (true/false)")


def _int(lo: int | None = None, hi: int | None = None) -> Callable[[str, Any], int]:
    def conv(key: str, v: Any) -> int:
        if isinstance(v, bool):
            raise ConfigError(key, f"{v!r} is not an integer")
        try:
            n = int(str(v).strip())
        except ValueError:
            raise ConfigError(key, f"{v!r} is not an integer") from None
        if lo is not None and n < lo:
            raise ConfigError(key, f"{n} is below the minimum {lo}")
        if hi is not None and n > hi:
            raise ConfigError(key, f"{n} is above the maximum {hi}")
        return n

    return conv


def _choice(*allowed: str) -> Callable[[str, Any], str]:
    def conv(key: str, v: Any) -> str:
        s = str(v).strip()
        if s not in allowed:
            raise ConfigError(key, f"{s!r} is not one of {', '.join(allowed)}")
        return s

    return conv


def _str(key: str, v: Any) -> str:
    return str(v)


SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")


def _mechanisms(key: str, v: Any) -> str:
    names = [m.strip().upper() for m in str(v).split(",") if m.strip()]
    if not names:
        raise ConfigError(key, f"at least one of {', '.join(SASL_MECHANISMS)} is required")
    bad = [m for m in names if m not in SASL_MECHANISMS]
    if bad:
        raise ConfigError(key, f"{', '.join(bad)} not supported; use {', '.join(SASL_MECHANISMS)}")
    return ",".join(dict.fromkeys(names))


def _hostport(key: str, v: Any) -> str:
    host, colon, port = str(v).rpartition(":")
    if not colon or not port.isdigit():
        raise ConfigError(key, f"{v!r} is not HOST:PORT")
    return str(v)


@dataclass(frozen=True)
class Key:
    name: str
    default: Any
    convert: Callable[[str, Any], Any]
    doc: str


DAY_MS = 24 * 3600 * 1000

# The broker's keys. Topic-level defaults use Kafka's broker names (log.segment.bytes, ...).
KEYS: dict[str, Key] = {
    k.name: k
    for k in [
        Key("node.id", 0, _int(0), "this broker's id, reported in Metadata"),
        Key("cluster.id", "", _str, "cluster id; generated and kept in the data dir when empty"),
        Key("data.dir", "./data", _str, "where segments and metadata live"),
        Key("listeners", "PLAINTEXT://127.0.0.1:9092", _str,
            "NAME://HOST:PORT,...; port 0 takes a free port and advertises it"),
        Key("advertised.listeners", "", _str, "what clients are told to connect to; default: listeners"),
        Key("http.listener", "127.0.0.1:8080", _hostport, "HTTP API HOST:PORT"),
        Key("num.partitions", 1, _int(1), "partitions of auto-created topics"),
        Key("default.replication.factor", 1, _int(1), "accepted for compatibility; one copy is kept"),
        Key("auto.create.topics.enable", True, _bool, "create topics on Metadata requests for them"),
        Key("delete.topic.enable", True, _bool, "allow DeleteTopics"),
        Key("log.segment.bytes", 1 << 30, _int(14), "default segment.bytes"),
        Key("log.roll.ms", 7 * DAY_MS, _int(1), "default segment.ms"),
        Key("log.retention.ms", 7 * DAY_MS, _int(-1), "default retention.ms (-1: unlimited)"),
        Key("log.retention.bytes", -1, _int(-1), "default retention.bytes (-1: unlimited)"),
        Key("log.index.interval.bytes", 4096, _int(0), "default index.interval.bytes"),
        Key("message.max.bytes", 1048588, _int(0), "default max.message.bytes"),
        Key("log.message.timestamp.type", "CreateTime", _choice("CreateTime", "LogAppendTime"),
            "default message.timestamp.type"),
        Key("log.cleanup.policy", "delete", _choice("delete", "compact", "compact,delete", "delete,compact"),
            "default cleanup.policy"),
        Key("log.flush.policy", "always", _choice("always", "interval"),
            "always: fsync before acks=all answers (group commit); interval: every log.flush.interval.ms"),
        Key("log.flush.interval.ms", 1000, _int(1), "fsync period when log.flush.policy=interval"),
        Key("log.retention.check.interval.ms", 300_000, _int(1), "how often retention and segment.ms run"),
        Key("socket.request.max.bytes", 104857600, _int(1024), "largest request frame accepted"),
        Key("fetch.max.bytes", 57671680, _int(1024), "broker cap on one fetch response"),
        Key("group.initial.rebalance.delay.ms", 3000, _int(0),
            "how long a new (empty) group waits for more members before its first generation"),
        Key("group.min.session.timeout.ms", 6000, _int(1), "smallest session.timeout.ms a member may ask for"),
        Key("group.max.session.timeout.ms", 1_800_000, _int(1), "largest session.timeout.ms a member may ask for"),
        Key("offsets.retention.minutes", 10080, _int(1),
            "committed offsets of an Empty group expire this long after it became empty"),
        Key("offsets.retention.check.interval.ms", 600_000, _int(1), "how often offset expiry runs"),
        Key("queued.max.requests", 500, _int(1), "requests in flight per connection before reading pauses"),
        Key("producer.id.expiration.ms", 86_400_000, _int(1),
            "how long a partition remembers an idle idempotent producer"),
        Key("transaction.max.timeout.ms", 900_000, _int(1), "largest transaction.timeout.ms a producer may ask for"),
        Key("transaction.abort.timed.out.transaction.cleanup.interval.ms", 10_000, _int(1),
            "how often transactions open past their timeout are aborted"),
        Key("remote.url", "", _str, "object store for tiered segments: s3://bucket/prefix or "
            "file:///dir (empty: file://<data.dir>/remote)"),
        Key("remote.keyring", "", _str, "key ring file (sediment keys generate); outside data.dir; "
            "empty: remote objects are compressed but not encrypted"),
        Key("log.encryption.enable", False, _bool, "seal every batch written to local segments with "
            "AES-256-GCM under a per-partition data key (needs remote.keyring or remote.kms.key.id)"),
        Key("remote.keyring.check.interval.ms", 10_000, _int(10),
            "how often the key ring file is checked for a rotation (then data keys are re-wrapped)"),
        Key("remote.kms.key.id", "", _str, "AWS KMS key id or ARN wrapping data keys instead of the key ring"),
        Key("remote.compression", "zstd", _choice("zstd", "lz4", "none"), "codec of remote chunks"),
        Key("remote.chunk.bytes", 4 * 1024 * 1024, _int(64 * 1024), "target size of remote chunks"),
        Key("remote.cache.dir", "", _str, "chunk cache directory (empty: <data.dir>/remote-cache)"),
        Key("remote.cache.bytes", 1 << 30, _int(0), "chunk cache size bound"),
        Key("remote.fetch.max.wait.ms", 5000, _int(1), "a remote read answers within this; a store that is "
            "slower or down gets KAFKA_STORAGE_ERROR, which clients retry at the same offset"),
        Key("remote.fetch.parallelism", 8, _int(1), "concurrent ranged GETs of remote reads"),
        Key("remote.upload.check.interval.ms", 1000, _int(10), "how often sealed segments are looked for"),
        Key("remote.upload.rate.bytes", 0, _int(0), "upload rate limit in bytes/s (0: none)"),
        Key("remote.upload.concurrency", 4, _int(1, 64), "partitions whose segments upload at once (each upload "
            "holds two chunks of remote.chunk.bytes, plus the store's multipart buffers)"),
        Key("remote.snapshot.interval.ms", 10_000, _int(10), "how often cluster metadata is snapshotted to the bucket"),
        Key("remote.s3.endpoint", "", _str, "S3 endpoint URL (MinIO, moto, ...); empty: AWS or AWS_ENDPOINT_URL_S3"),
        Key("remote.s3.region", "", _str, "S3 region (empty: the AWS chain, else us-east-1)"),
        Key("remote.s3.path.style", False, _bool, "path-style S3 addressing"),
        Key("log.remote.storage.enable", False, _bool, "default remote.storage.enable of topics"),
        Key("authorizer.enable", False, _bool, "check ACLs on every request (false: everything is allowed)"),
        Key("super.users", "", _str, "principals allowed everything, ';'-separated, e.g. User:admin;User:ops"),
        Key("allow.everyone.if.no.acl.found", False, _bool,
            "with the authorizer on, allow access to resources that have no ACL at all"),
        Key("audit.log.file", "", _str, "append authorization denials and ACL changes here as JSON lines "
            "(empty: only the sediment.audit logger)"),
        # -- transport security and authentication --
        Key("ssl.certfile", "", _str, "PEM certificate (chain) of SSL and SASL_SSL listeners; reloaded on change"),
        Key("ssl.keyfile", "", _str, "PEM private key of ssl.certfile"),
        Key("ssl.cafile", "", _str, "PEM CA bundle that client certificates must chain to"),
        Key("ssl.client.auth", "none", _choice("none", "requested", "required"),
            "client certificates on SSL listeners (mTLS)"),
        Key("ssl.principal.mapping.rules", "DEFAULT", _str,
            "client certificate DN -> principal: RULE:pattern/replacement/[L|U],...,DEFAULT"),
        Key("sasl.enabled.mechanisms", "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512", _mechanisms,
            "mechanisms of SASL_PLAINTEXT and SASL_SSL listeners"),
        Key("connections.max.reauth.ms", 0, _int(0), "SASL session lifetime before re-authentication (0: off)"),
        Key("connection.failed.authentication.delay.ms", 100, _int(0),
            "delay before answering and closing a failed authentication"),
        Key("sasl.oauthbearer.jwks.file", "", _str, "JSON Web Key Set that OAUTHBEARER tokens are checked against"),
        Key("sasl.oauthbearer.expected.issuer", "", _str, "required iss claim (empty: any)"),
        Key("sasl.oauthbearer.expected.audience", "", _str, "required aud claim (empty: any)"),
        Key("sasl.oauthbearer.sub.claim.name", "sub", _str, "the claim naming the principal"),
        Key("telemetry.exporter", "none", _choice("none", "console", "otlp"), "OpenTelemetry span exporter"),
        Key("telemetry.service.name", "sediment", _str, "OpenTelemetry service.name"),
    ]
}

# Topic config name -> the broker key that supplies its default.
TOPIC_DEFAULT_KEYS = {
    "segment.bytes": "log.segment.bytes",
    "segment.ms": "log.roll.ms",
    "retention.ms": "log.retention.ms",
    "retention.bytes": "log.retention.bytes",
    "index.interval.bytes": "log.index.interval.bytes",
    "max.message.bytes": "message.max.bytes",
    "message.timestamp.type": "log.message.timestamp.type",
    "cleanup.policy": "log.cleanup.policy",
    "remote.storage.enable": "log.remote.storage.enable",
}


@dataclass(frozen=True)
class BrokerConfig:
    values: Mapping[str, Any]
    explicit: frozenset[str]  # keys set by file, env or flag (not defaults)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @property
    def data_dir(self) -> Path:
        return Path(self.values["data.dir"])

    @property
    def listeners(self) -> list[Listener]:
        return parse_listeners("listeners", self.values["listeners"])

    @property
    def advertised_listeners(self) -> list[Listener]:
        adv = self.values["advertised.listeners"]
        if not adv:
            return [
                Listener(l.name, "127.0.0.1" if l.host in ("0.0.0.0", "::", "") else l.host, l.port)
                for l in self.listeners
            ]
        return parse_listeners("advertised.listeners", adv)

    @property
    def http_host_port(self) -> tuple[str, int]:
        host, _, port = self.values["http.listener"].rpartition(":")
        return host.strip("[]"), int(port)

    def topic_defaults(self) -> dict[str, str]:
        """Topic config defaults as strings, from the broker's log.* keys."""
        return {topic_key: _as_config_string(self.values[k]) for topic_key, k in TOPIC_DEFAULT_KEYS.items()}

    def topic_default_is_static(self, topic_key: str) -> bool:
        return TOPIC_DEFAULT_KEYS.get(topic_key, "") in self.explicit


def _as_config_string(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _flatten(prefix: str, table: Mapping[str, Any], out: dict[str, Any]) -> None:
    for k, v in table.items():
        name = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            _flatten(name, v, out)
        elif isinstance(v, list):
            out[name] = ",".join(str(x) for x in v)
        else:
            out[name] = v


def env_key(name: str) -> str:
    return "SEDIMENT_" + name.upper().replace(".", "_").replace("-", "_")


def load_config(
    file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> BrokerConfig:
    """Merge defaults, TOML file, SEDIMENT_* env and overrides; validate every key."""
    raw: dict[str, Any] = {}
    if file is not None:
        try:
            with open(file, "rb") as f:
                _flatten("", tomllib.load(f), raw)
        except OSError as e:
            raise ConfigError("config", f"cannot read {file}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError("config", f"{file} is not valid TOML: {e}") from None
    env = os.environ if environ is None else environ
    by_env = {env_key(k): k for k in KEYS}
    for name, value in env.items():
        if name in by_env:
            raw[by_env[name]] = value
        elif name.startswith("SEDIMENT_") and name not in ("SEDIMENT_CONFIG",):
            raise ConfigError(name, f"unknown environment setting; known: {', '.join(sorted(by_env))}")
    raw.update(overrides or {})
    values: dict[str, Any] = {}
    for name, value in raw.items():
        key = KEYS.get(name)
        if key is None:
            raise ConfigError(name, "unknown key")
        values[name] = key.convert(name, value)
    merged = {k.name: k.default for k in KEYS.values()} | values
    cfg = BrokerConfig(merged, frozenset(values))
    _ = cfg.listeners  # validate eagerly so a bad value stops start-up
    _ = cfg.advertised_listeners
    _check_remote(cfg)
    _check_security(cfg)
    return cfg


def _check_security(cfg: BrokerConfig) -> None:
    protocols = {l.security_protocol for l in cfg.listeners}
    if protocols & {"SSL", "SASL_SSL"}:
        for key in ("ssl.certfile", "ssl.keyfile"):
            if not cfg[key]:
                raise ConfigError(key, "required by the SSL/SASL_SSL listeners")
    if cfg["ssl.client.auth"] != "none" and not cfg["ssl.cafile"]:
        raise ConfigError("ssl.cafile", f"required when ssl.client.auth={cfg['ssl.client.auth']}")
    mechanisms = cfg["sasl.enabled.mechanisms"].split(",")
    if "OAUTHBEARER" in mechanisms and protocols & {"SASL_PLAINTEXT", "SASL_SSL"} \
            and not cfg["sasl.oauthbearer.jwks.file"]:
        raise ConfigError("sasl.oauthbearer.jwks.file", "required when OAUTHBEARER is enabled")
    if not cfg["sasl.oauthbearer.sub.claim.name"].strip():
        raise ConfigError("sasl.oauthbearer.sub.claim.name", "must name a claim")


def _check_remote(cfg: BrokerConfig) -> None:
    url = cfg["remote.url"]
    if url and not (url.startswith("s3://") or url.startswith("file:///")):
        raise ConfigError("remote.url", f"{url!r} is not s3://bucket/prefix or file:///absolute/dir")
    ring = cfg["remote.keyring"]
    if cfg["log.encryption.enable"] and not (ring or cfg["remote.kms.key.id"]):
        raise ConfigError("log.encryption.enable", "true needs a key-encryption key: set remote.keyring "
                                                   "(sediment keys generate FILE) or remote.kms.key.id")
    if ring:
        data_dir = cfg.data_dir.resolve()
        path = Path(ring).resolve()
        if path == data_dir or data_dir in path.parents:
            # A key ring beside the data it protects is lost, or stolen, with it.
            raise ConfigError("remote.keyring", f"{ring} is inside data.dir ({cfg['data.dir']}): keep the "
                                                "key ring on another disk than the data it protects")
