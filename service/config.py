"""The config system: every broker and topic key typed, validated, defaulted and documented here.

Broker keys come from, lowest precedence first: built-in defaults, a TOML file (`--config`),
`SEDIMENT_*` environment variables, command-line flags. Topic keys come from Kafka admin requests
(CreateTopics, AlterConfigs, IncrementalAlterConfigs); a topic key not set on the topic takes the
broker key that supplies its default (Kafka's synonym, e.g. `segment.bytes` <- `log.segment.bytes`),
else Kafka's default. Keys use Kafka's dotted names and types. An unknown key or a bad value is a
ConfigError naming the key: at start-up it stops the broker, in a request it is INVALID_CONFIG.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tiering.log.config import LogConfig


class ConfigError(ValueError):
    """A configuration key with a bad value, or an unknown key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config key {key!r}: {message}")
        self.key = key
        self.message = message


# -- types and parsing ----------------------------------------------------------------------

ConfigType = Literal["boolean", "string", "int", "short", "long", "double", "list", "password"]
Value = bool | int | float | str | tuple[str, ...]

INT_RANGES = {
    "short": (-(1 << 15), (1 << 15) - 1),
    "int": (-(1 << 31), (1 << 31) - 1),
    "long": (-(1 << 63), (1 << 63) - 1),
}
INT64_MAX = INT_RANGES["long"][1]


def config_string(value: Value) -> str:
    """A value as Kafka writes it: true/false, numbers in decimal, lists comma-separated."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def _parse(kind: ConfigType, raw: str) -> Value:
    text = raw.strip()
    if kind in INT_RANGES:
        value = int(text)
        lo, hi = INT_RANGES[kind]
        if not lo <= value <= hi:
            raise ValueError(f"out of range for {kind}")
        return value
    if kind == "double":
        return float(text)
    if kind == "boolean":
        lowered = text.lower()
        if lowered not in ("true", "false"):
            raise ValueError("expected true or false")
        return lowered == "true"
    if kind == "list":
        return tuple(item.strip() for item in text.split(",") if item.strip())
    return text


@dataclass(frozen=True)
class Validator:
    """Checks a parsed value (raising ValueError with the reason) and returns it in canonical form."""

    check: Callable[[Value], Value]
    allowed: str  # what passes, for the docs ("" when the doc says it)

    def __call__(self, value: Value) -> Value:
        return self.check(value)


@dataclass(frozen=True)
class ConfigKey:
    name: str
    type: ConfigType
    default: Value | None
    validator: Validator | None
    doc: str
    dynamic: bool = False  # can change while the broker runs (every topic key, as in Kafka)
    broker_key: str | None = None  # topic keys: the broker key that supplies the default

    def parse(self, raw: Value) -> Value:
        """The typed value of raw, a string (env, flag, admin request) or a native TOML value,
        which is read as its string form so both pass the same checks with the same messages."""
        text = config_string(raw)
        try:
            value = _parse(self.type, text)
        except ValueError as exc:
            raise ConfigError(self.name, f"invalid {self.type} value {text!r}: {exc}") from None
        if self.validator is not None:
            try:
                value = self.validator(value)
            except ValueError as exc:
                raise ConfigError(self.name, f"invalid value {text!r}: {exc}") from None
        return value

    @property
    def default_string(self) -> str | None:
        return None if self.default is None else config_string(self.default)


# -- validators -----------------------------------------------------------------------------


def _number(value: Value) -> float:
    assert isinstance(value, int | float) and not isinstance(value, bool), value  # parsed by type first
    return value


def at_least(minimum: float) -> Validator:
    def check(value: Value) -> Value:
        if not _number(value) >= minimum:
            raise ValueError(f"must be at least {minimum}")
        return value

    return Validator(check, f"at least {minimum}")


def between(lo: float, hi: float) -> Validator:
    def check(value: Value) -> Value:
        if not lo <= _number(value) <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return value

    return Validator(check, f"{lo} to {hi}")


def one_of(*allowed: str) -> Validator:
    def check(value: Value) -> Value:
        if config_string(value) not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return Validator(check, f"one of {', '.join(allowed)}")


def each_of(*allowed: str) -> Validator:
    def check(value: Value) -> Value:
        assert isinstance(value, tuple), value  # a list key, parsed first
        for item in value:
            if item not in allowed:
                raise ValueError(f"{item!r} is not one of {', '.join(allowed)}")
        return value

    return Validator(check, f"a list of {', '.join(allowed)}")


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


def _listeners(value: str) -> list[Listener]:
    listeners: list[Listener] = []
    for item in (v.strip() for v in value.split(",")):
        if not item:
            continue
        name, sep, rest = item.partition("://")
        if not sep:
            raise ValueError(f"{item!r} is not NAME://HOST:PORT")
        host, colon, port = rest.rpartition(":")
        if not colon or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{item!r} has no valid port")
        if name.upper() not in SECURITY_PROTOCOLS:
            raise ValueError(f"{name!r} is not one of {', '.join(SECURITY_PROTOCOLS)}")
        listeners.append(Listener(name.upper(), host.strip("[]") or "0.0.0.0", int(port)))
    if not listeners:
        raise ValueError("at least one listener is required")
    if len({l.name for l in listeners}) != len(listeners):
        raise ValueError("listener names must be unique")
    return listeners


def parse_listeners(key: str, value: str) -> list[Listener]:
    try:
        return _listeners(value)
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None


def _check_listeners(value: Value) -> Value:
    _listeners(str(value))
    return value


def _check_advertised(value: Value) -> Value:
    if value:
        _listeners(str(value))  # empty: the listeners, made reachable
    return value


LISTENERS = Validator(_check_listeners, "")
ADVERTISED_LISTENERS = Validator(_check_advertised, "")


def _check_hostport(value: Value) -> Value:
    host, colon, port = str(value).rpartition(":")
    if not colon or not port.isdigit():
        raise ValueError(f"{value!r} is not HOST:PORT")
    return value


HOST_PORT = Validator(_check_hostport, "HOST:PORT")

SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")


def _check_mechanisms(value: Value) -> Value:
    assert isinstance(value, tuple), value
    names = [m.upper() for m in value]
    if not names:
        raise ValueError(f"at least one of {', '.join(SASL_MECHANISMS)} is required")
    bad = [m for m in names if m not in SASL_MECHANISMS]
    if bad:
        raise ValueError(f"{', '.join(bad)} not supported; use {', '.join(SASL_MECHANISMS)}")
    return tuple(dict.fromkeys(names))


MECHANISMS = Validator(_check_mechanisms, f"a list of {', '.join(SASL_MECHANISMS)} (any case)")

CLEANUP_POLICIES = each_of("compact", "delete")


# -- the keys -------------------------------------------------------------------------------

DAY_MS = 24 * 3600 * 1000
WEEK_MS = 7 * DAY_MS


def _table(*keys: ConfigKey) -> dict[str, ConfigKey]:
    return {k.name: k for k in keys}


def _topic(name: str, type: ConfigType, default: Value, validator: Validator | None, doc: str,
           broker_key: str | None = None) -> ConfigKey:
    return ConfigKey(name, type, default, validator, doc, dynamic=True, broker_key=broker_key)


# The broker's keys, read once at start-up. Keys that supply topic defaults use Kafka's broker
# names (log.segment.bytes, ...) and the type of the topic key they stand for.
BROKER_KEYS: dict[str, ConfigKey] = _table(
    ConfigKey("node.id", "int", 0, at_least(0), "this broker's id, reported in Metadata"),
    ConfigKey("cluster.id", "string", "", None, "cluster id; generated and kept in the data dir when empty"),
    ConfigKey("data.dir", "string", "./data", None, "where segments and metadata live"),
    ConfigKey("listeners", "string", "PLAINTEXT://127.0.0.1:9092", LISTENERS,
              "NAME://HOST:PORT,...; port 0 takes a free port and advertises it"),
    ConfigKey("advertised.listeners", "string", "", ADVERTISED_LISTENERS,
              "what clients are told to connect to; default: listeners"),
    ConfigKey("http.listener", "string", "127.0.0.1:8080", HOST_PORT, "HTTP API HOST:PORT"),
    ConfigKey("num.partitions", "int", 1, at_least(1), "partitions of auto-created topics"),
    ConfigKey("default.replication.factor", "int", 1, at_least(1), "accepted for compatibility; one copy is kept"),
    ConfigKey("auto.create.topics.enable", "boolean", True, None, "create topics on Metadata requests for them"),
    ConfigKey("delete.topic.enable", "boolean", True, None, "allow DeleteTopics"),
    ConfigKey("log.segment.bytes", "int", 1 << 30, at_least(14), "default segment.bytes"),
    ConfigKey("log.roll.ms", "long", WEEK_MS, at_least(1), "default segment.ms"),
    ConfigKey("log.retention.ms", "long", WEEK_MS, at_least(-1), "default retention.ms (-1: unlimited)"),
    ConfigKey("log.retention.bytes", "long", -1, at_least(-1), "default retention.bytes (-1: unlimited)"),
    ConfigKey("log.index.interval.bytes", "int", 4096, at_least(0), "default index.interval.bytes"),
    ConfigKey("message.max.bytes", "int", 1048588, at_least(0), "default max.message.bytes"),
    ConfigKey("log.message.timestamp.type", "string", "CreateTime", one_of("CreateTime", "LogAppendTime"),
              "default message.timestamp.type"),
    ConfigKey("log.cleanup.policy", "list", ("delete",), CLEANUP_POLICIES, "default cleanup.policy"),
    ConfigKey("log.flush.policy", "string", "always", one_of("always", "interval"),
              "always: fsync before acks=all answers (group commit); interval: every log.flush.interval.ms"),
    ConfigKey("log.flush.interval.ms", "long", 1000, at_least(1), "fsync period when log.flush.policy=interval"),
    ConfigKey("log.retention.check.interval.ms", "long", 300_000, at_least(1),
              "how often retention and segment.ms run"),
    ConfigKey("socket.request.max.bytes", "int", 104857600, at_least(1024), "largest request frame accepted"),
    ConfigKey("fetch.max.bytes", "int", 57671680, at_least(1024), "broker cap on one fetch response"),
    ConfigKey("group.initial.rebalance.delay.ms", "int", 3000, at_least(0),
              "how long a new (empty) group waits for more members before its first generation"),
    ConfigKey("group.min.session.timeout.ms", "int", 6000, at_least(1),
              "smallest session.timeout.ms a member may ask for"),
    ConfigKey("group.max.session.timeout.ms", "int", 1_800_000, at_least(1),
              "largest session.timeout.ms a member may ask for"),
    ConfigKey("offsets.retention.minutes", "int", 10080, at_least(1),
              "committed offsets of an Empty group expire this long after it became empty"),
    ConfigKey("offsets.retention.check.interval.ms", "long", 600_000, at_least(1), "how often offset expiry runs"),
    ConfigKey("queued.max.requests", "int", 500, at_least(1),
              "requests in flight per connection before reading pauses"),
    ConfigKey("producer.id.expiration.ms", "int", 86_400_000, at_least(1),
              "how long a partition remembers an idle idempotent producer"),
    ConfigKey("transaction.max.timeout.ms", "int", 900_000, at_least(1),
              "largest transaction.timeout.ms a producer may ask for"),
    ConfigKey("transaction.abort.timed.out.transaction.cleanup.interval.ms", "int", 10_000, at_least(1),
              "how often transactions open past their timeout are aborted"),
    ConfigKey("remote.url", "string", "", None, "object store for tiered segments: s3://bucket/prefix or "
              "file:///dir (empty: file://<data.dir>/remote)"),
    ConfigKey("remote.keyring", "string", "", None, "key ring file (sediment keys generate); outside data.dir; "
              "empty: remote objects are compressed but not encrypted"),
    ConfigKey("log.encryption.enable", "boolean", False, None, "seal every batch written to local segments with "
              "AES-256-GCM under a per-partition data key (needs remote.keyring or remote.kms.key.id)"),
    ConfigKey("remote.keyring.check.interval.ms", "long", 10_000, at_least(10),
              "how often the key ring file is checked for a rotation (then data keys are re-wrapped)"),
    ConfigKey("remote.kms.key.id", "string", "", None,
              "AWS KMS key id or ARN wrapping data keys instead of the key ring"),
    ConfigKey("remote.compression", "string", "zstd", one_of("zstd", "lz4", "none"), "codec of remote chunks"),
    ConfigKey("remote.chunk.bytes", "int", 4 * 1024 * 1024, at_least(64 * 1024), "target size of remote chunks"),
    ConfigKey("remote.cache.dir", "string", "", None, "chunk cache directory (empty: <data.dir>/remote-cache)"),
    ConfigKey("remote.cache.bytes", "long", 1 << 30, at_least(0), "chunk cache size bound"),
    ConfigKey("remote.fetch.max.wait.ms", "int", 5000, at_least(1), "a remote read answers within this; a store "
              "that is slower or down gets KAFKA_STORAGE_ERROR, which clients retry at the same offset"),
    ConfigKey("remote.fetch.parallelism", "int", 8, at_least(1), "concurrent ranged GETs of remote reads"),
    ConfigKey("remote.upload.check.interval.ms", "long", 1000, at_least(10),
              "how often sealed segments are looked for"),
    ConfigKey("remote.upload.rate.bytes", "long", 0, at_least(0), "upload rate limit in bytes/s (0: none)"),
    ConfigKey("remote.upload.concurrency", "int", 4, between(1, 64), "partitions whose segments upload at once "
              "(each upload holds two chunks of remote.chunk.bytes, plus the store's multipart buffers)"),
    ConfigKey("remote.snapshot.interval.ms", "long", 10_000, at_least(10),
              "how often cluster metadata is snapshotted to the bucket"),
    ConfigKey("remote.s3.endpoint", "string", "", None,
              "S3 endpoint URL (MinIO, moto, ...); empty: AWS or AWS_ENDPOINT_URL_S3"),
    ConfigKey("remote.s3.region", "string", "", None, "S3 region (empty: the AWS chain, else us-east-1)"),
    ConfigKey("remote.s3.path.style", "boolean", False, None, "path-style S3 addressing"),
    ConfigKey("log.remote.storage.enable", "boolean", False, None, "default remote.storage.enable of topics"),
    ConfigKey("authorizer.enable", "boolean", False, None,
              "check ACLs on every request (false: everything is allowed)"),
    ConfigKey("super.users", "string", "", None,
              "principals allowed everything, ';'-separated, e.g. User:admin;User:ops"),
    ConfigKey("allow.everyone.if.no.acl.found", "boolean", False, None,
              "with the authorizer on, allow access to resources that have no ACL at all"),
    ConfigKey("audit.log.file", "string", "", None, "append authorization denials and ACL changes here as JSON "
              "lines (empty: only the sediment.audit logger)"),
    # -- transport security and authentication --
    ConfigKey("ssl.certfile", "string", "", None,
              "PEM certificate (chain) of SSL and SASL_SSL listeners; reloaded on change"),
    ConfigKey("ssl.keyfile", "string", "", None, "PEM private key of ssl.certfile"),
    ConfigKey("ssl.cafile", "string", "", None, "PEM CA bundle that client certificates must chain to"),
    ConfigKey("ssl.client.auth", "string", "none", one_of("none", "requested", "required"),
              "client certificates on SSL listeners (mTLS)"),
    ConfigKey("ssl.principal.mapping.rules", "string", "DEFAULT", None,
              "client certificate DN -> principal: RULE:pattern/replacement/[L|U],...,DEFAULT"),
    ConfigKey("sasl.enabled.mechanisms", "list", ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"), MECHANISMS,
              "mechanisms of SASL_PLAINTEXT and SASL_SSL listeners"),
    ConfigKey("connections.max.reauth.ms", "long", 0, at_least(0),
              "SASL session lifetime before re-authentication (0: off)"),
    ConfigKey("connection.failed.authentication.delay.ms", "int", 100, at_least(0),
              "delay before answering and closing a failed authentication"),
    ConfigKey("sasl.oauthbearer.jwks.file", "string", "", None,
              "JSON Web Key Set that OAUTHBEARER tokens are checked against"),
    ConfigKey("sasl.oauthbearer.expected.issuer", "string", "", None, "required iss claim (empty: any)"),
    ConfigKey("sasl.oauthbearer.expected.audience", "string", "", None, "required aud claim (empty: any)"),
    ConfigKey("sasl.oauthbearer.sub.claim.name", "string", "sub", None, "the claim naming the principal"),
    ConfigKey("telemetry.exporter", "string", "none", one_of("none", "console", "otlp"),
              "OpenTelemetry span exporter"),
    ConfigKey("telemetry.service.name", "string", "sediment", None, "OpenTelemetry service.name"),
)

# Kafka's topic-level keys with Kafka's types, defaults and validators. Keys the broker accepts
# but does not act on (compaction, throttles, preallocation) are listed so that clients and tools
# that set them are not refused.
TOPIC_KEYS: dict[str, ConfigKey] = _table(
    _topic("cleanup.policy", "list", ("delete",), CLEANUP_POLICIES,
           "Retention policy for old segments: delete and/or compact.", "log.cleanup.policy"),
    _topic("compression.type", "string", "producer",
           one_of("uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"),
           "Final compression for the topic; producer keeps the producer's codec."),
    _topic("delete.retention.ms", "long", 86400000, at_least(0),
           "How long delete tombstones are kept for compacted topics."),
    _topic("file.delete.delay.ms", "long", 60000, at_least(0),
           "Time to wait before deleting a file from the filesystem."),
    _topic("flush.messages", "long", INT64_MAX, at_least(1),
           "Messages between forced fsyncs (the broker's flush policy governs)."),
    _topic("flush.ms", "long", INT64_MAX, at_least(0),
           "Time between forced fsyncs (the broker's flush policy governs)."),
    _topic("follower.replication.throttled.replicas", "list", (), None,
           "Replicas whose replication is throttled on the follower side."),
    _topic("index.interval.bytes", "int", 4096, at_least(0),
           "Bytes between entries in the sparse offset index.", "log.index.interval.bytes"),
    _topic("leader.replication.throttled.replicas", "list", (), None,
           "Replicas whose replication is throttled on the leader side."),
    _topic("local.retention.bytes", "long", -2, at_least(-2),
           "Local bytes kept once segments are tiered; -2 means retention.bytes."),
    _topic("local.retention.ms", "long", -2, at_least(-2),
           "Local time kept once segments are tiered; -2 means retention.ms."),
    _topic("max.compaction.lag.ms", "long", INT64_MAX, at_least(1),
           "Maximum time a message stays ineligible for compaction."),
    _topic("max.message.bytes", "int", 1048588, at_least(0),
           "Largest record batch size allowed.", "message.max.bytes"),
    _topic("message.downconversion.enable", "boolean", True, None,
           "Whether fetches may down-convert the message format."),
    _topic("message.timestamp.after.max.ms", "long", INT64_MAX, at_least(0),
           "How far ahead of the broker clock a CreateTime timestamp may be."),
    _topic("message.timestamp.before.max.ms", "long", INT64_MAX, at_least(0),
           "How far behind the broker clock a CreateTime timestamp may be."),
    _topic("message.timestamp.difference.max.ms", "long", INT64_MAX, at_least(0),
           "Largest allowed difference between a CreateTime timestamp and the broker clock."),
    _topic("message.timestamp.type", "string", "CreateTime", one_of("CreateTime", "LogAppendTime"),
           "Whether record timestamps are the producer's or the broker's append time.",
           "log.message.timestamp.type"),
    _topic("min.cleanable.dirty.ratio", "double", 0.5, between(0.0, 1.0),
           "Dirty ratio at which the log compactor cleans a log."),
    _topic("min.compaction.lag.ms", "long", 0, at_least(0),
           "Minimum time a message stays uncompacted."),
    _topic("min.insync.replicas", "int", 1, at_least(1),
           "Minimum in-sync replicas for acks=all to succeed."),
    _topic("preallocate", "boolean", False, None,
           "Whether to preallocate segment files."),
    _topic("remote.storage.enable", "boolean", False, None,
           "Whether sealed segments are tiered to object storage.", "log.remote.storage.enable"),
    _topic("remote.upload.interval.ms", "long", 600000, at_least(1),
           "Bound on how old unsealed data may get before its segment is rolled and uploaded."),
    _topic("retention.bytes", "long", -1, None,
           "Largest size of the partition log before old segments are deleted; -1 unlimited.",
           "log.retention.bytes"),
    _topic("retention.ms", "long", WEEK_MS, at_least(-1),
           "Longest time a segment is kept before deletion; -1 unlimited.", "log.retention.ms"),
    _topic("segment.bytes", "int", 1 << 30, at_least(14),
           "Segment file size at which the log rolls.", "log.segment.bytes"),
    _topic("segment.index.bytes", "int", 10485760, at_least(4),
           "Largest offset index size per segment."),
    _topic("segment.jitter.ms", "long", 0, at_least(0),
           "Random jitter subtracted from segment.ms."),
    _topic("segment.ms", "long", WEEK_MS, at_least(1),
           "Time after which the log rolls even if the segment is not full.", "log.roll.ms"),
    _topic("unclean.leader.election.enable", "boolean", False, None,
           "Whether an out-of-sync replica may become leader."),
)


# -- broker config --------------------------------------------------------------------------


@dataclass(frozen=True)
class BrokerConfig:
    values: Mapping[str, Any]  # every key of BROKER_KEYS, typed
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
    by_env = {env_key(k): k for k in BROKER_KEYS}
    for name, value in env.items():
        if name in by_env:
            raw[by_env[name]] = value
        elif name.startswith("SEDIMENT_") and name not in ("SEDIMENT_CONFIG",):
            raise ConfigError(name, f"unknown environment setting; known: {', '.join(sorted(by_env))}")
    raw.update(overrides or {})
    values: dict[str, Any] = {}
    for name, value in raw.items():
        key = BROKER_KEYS.get(name)
        if key is None:
            raise ConfigError(name, "unknown key")
        values[name] = key.parse(value)
    merged = {k.name: k.default for k in BROKER_KEYS.values()} | values
    cfg = BrokerConfig(merged, frozenset(values))
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
    if "OAUTHBEARER" in cfg["sasl.enabled.mechanisms"] and protocols & {"SASL_PLAINTEXT", "SASL_SSL"} \
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


# -- topic config ---------------------------------------------------------------------------


def validate_topic_configs(configs: Mapping[str, str | None]) -> None:
    """Raise ConfigError naming the first unknown key or bad value (None means the default)."""
    for name, raw in configs.items():
        key = TOPIC_KEYS.get(name)
        if key is None:
            raise ConfigError(name, "unknown topic config")
        if raw is not None:
            key.parse(raw)


def topic_values(overrides: Mapping[str, str | None], broker: BrokerConfig | None = None) -> dict[str, Value]:
    """Every topic key's typed value: the topic's override, else the broker key that supplies
    its default, else Kafka's default."""
    validate_topic_configs(overrides)
    out: dict[str, Value] = {}
    for name, key in TOPIC_KEYS.items():
        raw = overrides.get(name)
        if raw is not None:
            out[name] = key.parse(raw)
        elif broker is not None and key.broker_key is not None:
            out[name] = broker[key.broker_key]
        elif key.default is not None:
            out[name] = key.default
    return out


def topic_log_config(overrides: Mapping[str, str | None], broker: BrokerConfig | None = None) -> LogConfig:
    """What the log acts on of a topic: its overrides over the broker's defaults over Kafka's."""
    values = topic_values(overrides, broker)

    def num(name: str) -> int:
        v = values[name]
        assert isinstance(v, int) and not isinstance(v, bool), name  # typed by TOPIC_KEYS
        return v

    return LogConfig(
        segment_bytes=num("segment.bytes"),
        segment_ms=num("segment.ms"),
        retention_ms=num("retention.ms"),
        retention_bytes=num("retention.bytes"),
        index_interval_bytes=num("index.interval.bytes"),
        max_message_bytes=num("max.message.bytes"),
        message_timestamp_type=config_string(values["message.timestamp.type"]),
        cleanup_policy=config_string(values["cleanup.policy"]),
        file_delete_delay_ms=num("file.delete.delay.ms"),
        local_retention_ms=num("local.retention.ms"),
        local_retention_bytes=num("local.retention.bytes"),
        remote_storage_enable=values["remote.storage.enable"] is True,
        remote_upload_interval_ms=num("remote.upload.interval.ms"),
    )


# -- describing configs (DescribeConfigs, CreateTopics answers) -----------------------------

ConfigSource = Literal["DYNAMIC_TOPIC_CONFIG", "STATIC_BROKER_CONFIG", "DEFAULT_CONFIG"]


@dataclass(frozen=True)
class Synonym:
    name: str
    value: str | None
    source: ConfigSource


@dataclass(frozen=True)
class Described:
    """One key as DescribeConfigs reports it: the value in force, where it comes from, and the
    synonyms it was chosen from, highest precedence first (Kafka's order)."""

    key: ConfigKey
    value: str | None  # None for a password, as Kafka hides them
    source: ConfigSource
    synonyms: tuple[Synonym, ...]

    @property
    def read_only(self) -> bool:
        return not self.key.dynamic

    @property
    def sensitive(self) -> bool:
        return self.key.type == "password"


def _shown(key: ConfigKey, value: Value) -> str | None:
    return None if key.type == "password" else config_string(value)


def _broker_synonyms(name: str, broker: BrokerConfig) -> list[Synonym]:
    """A broker key's value from the config (file, env or flag), then its built-in default."""
    key = BROKER_KEYS[name]
    out = []
    if name in broker.explicit:
        out.append(Synonym(name, _shown(key, broker[name]), "STATIC_BROKER_CONFIG"))
    if key.default is not None:
        out.append(Synonym(name, _shown(key, key.default), "DEFAULT_CONFIG"))
    return out


def _described(key: ConfigKey, synonyms: list[Synonym]) -> Described:
    if not synonyms:
        return Described(key, None, "DEFAULT_CONFIG", ())
    return Described(key, synonyms[0].value, synonyms[0].source, tuple(synonyms))


def describe_topic(overrides: Mapping[str, str], broker: BrokerConfig) -> list[Described]:
    """Every topic key by name: the override (as Kafka writes the parsed value), else the broker
    key that supplies its default, else Kafka's default."""
    out = []
    for name, key in sorted(TOPIC_KEYS.items()):
        synonyms: list[Synonym] = []
        if name in overrides:
            synonyms.append(Synonym(name, _shown(key, key.parse(overrides[name])), "DYNAMIC_TOPIC_CONFIG"))
        if key.broker_key is not None:
            synonyms += _broker_synonyms(key.broker_key, broker)
        elif key.default is not None:
            synonyms.append(Synonym(name, _shown(key, key.default), "DEFAULT_CONFIG"))
        out.append(_described(key, synonyms))
    return out


def describe_broker(broker: BrokerConfig) -> list[Described]:
    return [_described(key, _broker_synonyms(name, broker)) for name, key in sorted(BROKER_KEYS.items())]
