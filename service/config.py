"""The config system: every broker and topic key typed, validated, defaulted and documented here.

Broker keys come from, lowest precedence first: built-in defaults, a TOML file (`--config`),
`SEDIMENT_*` environment variables, command-line flags. Topic keys come from Kafka admin requests
(CreateTopics, AlterConfigs, IncrementalAlterConfigs); a topic key not set on the topic takes the
broker key that supplies its default (Kafka's synonym, e.g. `segment.bytes` <- `log.segment.bytes`),
else Kafka's default. Keys use Kafka's dotted names and types. An unknown key or a bad value is a
ConfigError naming the key: at start-up it stops the broker, in a request it is INVALID_CONFIG.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
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


HOST_PORT = Validator(_check_hostport, "")

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

INT32_MAX = INT_RANGES["int"][1]
_HOST_CHARS = re.compile(r"[0-9a-zA-Z\-%._:]+")  # Kafka's Utils.validHostPattern, not empty


def parse_ip_overrides(value: str) -> dict[str, int]:
    """`max.connections.per.ip.overrides`, Kafka's "host:count,host:count" (IPv6 hosts keep their
    colons: the count is after the last one). Raises ValueError naming the bad entry."""
    out: dict[str, int] = {}
    for item in (v.strip() for v in value.split(",")):
        if not item:
            continue
        host, colon, count = item.rpartition(":")
        host = host.strip().strip("[]")
        if not colon or not _HOST_CHARS.fullmatch(host):
            raise ValueError(f"{item!r} is not HOST:COUNT")
        try:
            n = int(count.strip())
        except ValueError:
            raise ValueError(f"{item!r} has no whole number of connections after its last ':'") from None
        if not 0 <= n <= INT32_MAX:
            raise ValueError(f"{item!r}: the count must be between 0 and {INT32_MAX}")
        out[host] = n
    return out


def _check_ip_overrides(value: Value) -> Value:
    overrides = parse_ip_overrides(str(value))
    return ",".join(f"{h}:{n}" for h, n in overrides.items())


IP_OVERRIDES = Validator(_check_ip_overrides, "")


def _per_listener(key: str, doc: str) -> list[ConfigKey]:
    """Kafka's listener-prefixed form of a key (`listener.name.<listener>.<key>`), one per listener
    name; the default, Kafka's Int.MaxValue, sets no limit of the listener's own."""
    return [ConfigKey(f"listener.name.{name.lower()}.{key}", "int", INT32_MAX, at_least(0),
                      f"{doc}, for the {name} listener alone, in addition to the broker-wide {key}.")
            for name in SECURITY_PROTOCOLS]


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
    ConfigKey("node.id", "int", 0, at_least(0),
              "Id of this broker, reported to clients in Metadata, DescribeCluster and FindCoordinator."),
    ConfigKey("cluster.id", "string", "", None,
              "Id of the cluster reported to clients. Empty: one is generated at the first start and kept "
              "in data.dir."),
    ConfigKey("data.dir", "string", "./data", None,
              "Directory of the partition logs (segments, indexes, producer state) and of metadata.db "
              "(topics, committed offsets, ACLs, credentials, client quotas)."),
    ConfigKey("listeners", "string", "PLAINTEXT://127.0.0.1:9092", LISTENERS,
              "Comma-separated NAME://HOST:PORT addresses to listen on, where NAME is PLAINTEXT, SSL, "
              "SASL_PLAINTEXT or SASL_SSL and appears once. Port 0 takes a free port and advertises it."),
    ConfigKey("advertised.listeners", "string", "", ADVERTISED_LISTENERS,
              "The NAME://HOST:PORT addresses clients are told to connect to; they must be reachable "
              "from the clients. Empty: the listeners, with 0.0.0.0 and :: replaced by 127.0.0.1."),
    ConfigKey("http.listener", "string", "127.0.0.1:8080", HOST_PORT,
              "HOST:PORT of the HTTP API: the REST API (Confluent REST Proxy v3 and v2 shapes), "
              "replay, health checks and Prometheus metrics."),
    ConfigKey("http.ssl.enable", "boolean", False, None,
              "Serve the HTTP API over TLS with ssl.certfile and ssl.keyfile (reloaded like the Kafka "
              "listeners'). Callers authenticate with http.authentication.methods, not certificates."),
    ConfigKey("http.authentication.methods", "list", (), each_of("BASIC", "BEARER"),
              "How HTTP API callers authenticate: BASIC (a user's SCRAM password, as stored for "
              "SASL/SCRAM) and BEARER (a JWT, validated with the sasl.oauthbearer.* keys). Empty: "
              "no authentication, every caller is User:ANONYMOUS. Health checks, /metrics and the "
              "API description stay open."),
    ConfigKey("http.max.request.bytes", "int", 16 << 20, at_least(1024),
              "Largest HTTP request body read whole (413 beyond it); a produce body is read record "
              "by record, unbounded in length, and each record's JSON is bounded by this (in "
              "characters), its bytes by the topic's max.message.bytes."),
    ConfigKey("consumer.instance.timeout.ms", "int", 300_000, at_least(1),
              "Idle time after which an HTTP (REST v2) consumer instance is deleted, as Confluent REST "
              "Proxy's key of that name: it commits (with auto.commit.enable) and leaves its group."),
    ConfigKey("num.partitions", "int", 1, at_least(1),
              "Partitions of a topic created without a partition count: auto-created topics, and "
              "CreateTopics asking for -1."),
    ConfigKey("default.replication.factor", "int", 1, at_least(1),
              "Accepted for compatibility with Kafka tools; a partition has one copy, on this broker."),
    ConfigKey("auto.create.topics.enable", "boolean", True, None,
              "Create a topic when a client asks Metadata for one that does not exist (and the client "
              "allows auto-creation)."),
    ConfigKey("max.broker.partitions", "int", 4000, at_least(1),
              "Most partitions this broker holds, all topics together (KIP-578's name; Kafka sets no "
              "bound). CreateTopics, CreatePartitions and auto-creation beyond it are refused with "
              "POLICY_VIOLATION, so a stream of requests for new topic names cannot grow the broker "
              "without bound."),
    ConfigKey("delete.topic.enable", "boolean", True, None,
              "Allow DeleteTopics; when false, it is refused with TOPIC_DELETION_DISABLED."),
    ConfigKey("log.segment.bytes", "int", 1 << 30, at_least(14),
              "Default of segment.bytes: size at which a segment file is closed and a new one started."),
    ConfigKey("log.roll.ms", "long", WEEK_MS, at_least(1),
              "Default of segment.ms: age at which the active segment is rolled even if it is not full."),
    ConfigKey("log.retention.ms", "long", WEEK_MS, at_least(-1),
              "Default of retention.ms: segments whose newest record is older than this are deleted; "
              "-1 keeps them forever."),
    ConfigKey("log.retention.bytes", "long", -1, at_least(-1),
              "Default of retention.bytes: the oldest segments are deleted while a partition is larger "
              "than this; -1 sets no size limit."),
    ConfigKey("log.index.interval.bytes", "int", 4096, at_least(0),
              "Default of index.interval.bytes: bytes of records between two entries of the offset index."),
    ConfigKey("message.max.bytes", "int", 1048588, at_least(0),
              "Default of max.message.bytes: the largest record batch a producer may write."),
    ConfigKey("log.message.timestamp.type", "string", "CreateTime", one_of("CreateTime", "LogAppendTime"),
              "Default of message.timestamp.type: whose clock record timestamps come from."),
    ConfigKey("log.cleanup.policy", "list", ("delete",), CLEANUP_POLICIES,
              "Default of cleanup.policy: delete applies retention.ms and retention.bytes."),
    ConfigKey("log.flush.policy", "string", "always", one_of("always", "interval"),
              "When logs are fsynced. always: before an acks=all produce is answered, concurrent appends "
              "sharing one fsync (nothing acknowledged is lost to a crash); interval: every "
              "log.flush.interval.ms, as Kafka does by default."),
    ConfigKey("log.flush.interval.ms", "long", 1000, at_least(1),
              "How often logs are fsynced when log.flush.policy is interval."),
    ConfigKey("log.retention.check.interval.ms", "long", 300_000, at_least(1),
              "How often retention deletes old segments and segments older than segment.ms are rolled."),
    ConfigKey("socket.request.max.bytes", "int", 104857600, at_least(1024),
              "Largest request a client may send; a larger frame closes its connection."),
    ConfigKey("fetch.max.bytes", "int", 57671680, at_least(1024),
              "Largest fetch response, whatever the client asks for (at least one batch is always sent)."),
    ConfigKey("group.initial.rebalance.delay.ms", "int", 3000, at_least(0),
              "How long a new (empty) consumer group waits for more members to join before its first "
              "generation starts."),
    ConfigKey("group.min.session.timeout.ms", "int", 6000, at_least(1),
              "Smallest session.timeout.ms a group member may ask for; below it, joining fails with "
              "INVALID_SESSION_TIMEOUT."),
    ConfigKey("group.max.session.timeout.ms", "int", 1_800_000, at_least(1),
              "Largest session.timeout.ms a group member may ask for; above it, joining fails with "
              "INVALID_SESSION_TIMEOUT."),
    ConfigKey("offsets.retention.minutes", "int", 10080, at_least(1),
              "Committed offsets of a group expire this long after the group became empty."),
    ConfigKey("offsets.retention.check.interval.ms", "long", 600_000, at_least(1),
              "How often expired committed offsets are deleted."),
    ConfigKey("queued.max.requests", "int", 500, at_least(1),
              "Requests of one connection being handled at once; beyond it the broker stops reading from "
              "that connection until answers go out."),
    ConfigKey("quota.window.num", "int", 11, at_least(1),
              "The number of samples of quota.window.size.seconds that client quota rates "
              "(producer_byte_rate, consumer_byte_rate, request_percentage) are measured over."),
    ConfigKey("quota.window.size.seconds", "int", 1, at_least(1),
              "The time span of each sample of client quota rates; also the longest throttle a "
              "request_percentage quota gives."),
    # -- connection and request limits (Kafka's socket server keys, KIP-402, KIP-612) --
    ConfigKey("max.connections", "int", INT32_MAX, at_least(0),
              "Connections the broker holds open at once, over all listeners. When reached, the broker "
              "stops accepting (new connections wait in the listen backlog) until one closes, as in "
              "Kafka (KIP-402)."),
    *_per_listener("max.connections", "Like max.connections"),
    ConfigKey("max.connections.per.ip", "int", INT32_MAX, at_least(0),
              "Connections one client IP address may hold open; a further connection from it is closed "
              "as soon as it is accepted, with a log line. 0 is allowed only with "
              "max.connections.per.ip.overrides (then only the listed hosts may connect)."),
    ConfigKey("max.connections.per.ip.overrides", "string", "", IP_OVERRIDES,
              "Per-host exceptions to max.connections.per.ip, Kafka's comma-separated HOST:COUNT list, "
              "e.g. 10.0.0.7:500,gateway.internal:2000; host names are resolved at start-up (every "
              "address of the name gets the count)."),
    ConfigKey("max.connection.creation.rate", "int", INT32_MAX, at_least(0),
              "New connections accepted per second over all listeners (KIP-612). Beyond it the broker "
              "accepts late, by at most one quota.window.size.seconds per connection, rather than "
              "refusing; so 0 acts as one connection per window."),
    *_per_listener("max.connection.creation.rate", "Like max.connection.creation.rate"),
    ConfigKey("connections.max.idle.ms", "long", 600_000, None,
              "A connection that has neither sent nor been sent anything for this long, with no request "
              "being handled, is closed. Negative: never."),
    ConfigKey("queued.max.request.bytes", "long", -1, None,
              "Bytes of requests read and not yet answered, over all connections. When reached, the broker "
              "reads no more requests (from any connection) until some are answered: nothing is lost and "
              "clients get no error. -1 (or 0): no limit; else at least socket.request.max.bytes."),
    ConfigKey("connection.queued.max.response.bytes", "long", 16 << 20, at_least(1),
              "Bytes of answers made for one connection and not yet handed to its socket (a client that "
              "sends requests but does not read the answers). While above it, the broker reads no more "
              "requests from that connection."),
    ConfigKey("producer.id.expiration.ms", "int", 86_400_000, at_least(1),
              "How long a partition remembers an idempotent producer that stopped writing to it (and so "
              "recognises its retried batches)."),
    ConfigKey("transaction.max.timeout.ms", "int", 900_000, at_least(1),
              "Largest transaction.timeout.ms a transactional producer may ask for; a larger one is "
              "refused with INVALID_TRANSACTION_TIMEOUT."),
    ConfigKey("transaction.abort.timed.out.transaction.cleanup.interval.ms", "int", 10_000, at_least(1),
              "How often transactions open longer than their timeout are looked for and aborted."),
    ConfigKey("remote.url", "string", "", None,
              "Object store of tiered segments and of the cluster metadata snapshot: s3://bucket/prefix "
              "or file:///absolute/dir. Empty: the directory remote in data.dir."),
    ConfigKey("remote.keyring", "string", "", None,
              "Key ring file (made by sediment keys generate) whose current key wraps the data keys of "
              "remote objects, encrypted local segments and the metadata snapshot; refused inside "
              "data.dir. Empty, and no remote.kms.key.id: remote objects are compressed but not encrypted."),
    ConfigKey("log.encryption.enable", "boolean", False, None,
              "Seal every record batch written to local segments with AES-256-GCM under a per-partition "
              "data key. Needs remote.keyring or remote.kms.key.id."),
    ConfigKey("remote.keyring.check.interval.ms", "long", 10_000, at_least(10),
              "How often the key ring file is checked for a rotation; after one, every data key is "
              "re-wrapped under the new key."),
    ConfigKey("remote.kms.key.id", "string", "", None,
              "AWS KMS key id or ARN that wraps data keys, instead of a key ring."),
    ConfigKey("remote.compression", "string", "zstd", one_of("zstd", "lz4", "none"),
              "Codec of remote chunks (chunks of batches the producer already compressed are stored as "
              "they are)."),
    ConfigKey("remote.chunk.bytes", "int", 4 * 1024 * 1024, at_least(64 * 1024),
              "Target size of the chunks a segment is cut into for upload; remote reads fetch whole chunks."),
    ConfigKey("remote.cache.dir", "string", "", None,
              "Directory of the on-disk cache of remote chunks. Empty: remote-cache in data.dir."),
    ConfigKey("remote.cache.bytes", "long", 1 << 30, at_least(0),
              "Size bound of the remote chunk cache on disk."),
    ConfigKey("remote.fetch.max.wait.ms", "int", 5000, at_least(1),
              "Time bound of a remote read: a store that is slower or down gets KAFKA_STORAGE_ERROR, "
              "which clients retry at the same offset."),
    ConfigKey("remote.fetch.parallelism", "int", 8, at_least(1),
              "Ranged GETs that remote reads run at once."),
    ConfigKey("remote.upload.check.interval.ms", "long", 1000, at_least(10),
              "How often sealed segments waiting for upload are looked for."),
    ConfigKey("remote.upload.rate.bytes", "long", 0, at_least(0),
              "Upload rate limit in bytes per second; 0 sets no limit."),
    ConfigKey("remote.upload.concurrency", "int", 4, between(1, 64),
              "Partitions whose segments upload at once; each upload holds two chunks of "
              "remote.chunk.bytes in memory, plus the store's multipart buffers."),
    ConfigKey("remote.snapshot.interval.ms", "long", 10_000, at_least(10),
              "How often cluster metadata (topics, configs, committed offsets, ACLs, credentials, "
              "client quotas) is snapshotted to the bucket, from which a broker on an empty disk recovers."),
    ConfigKey("remote.s3.endpoint", "string", "", None,
              "Endpoint URL of an S3-compatible store (MinIO, moto, ...). Empty: AWS, or "
              "AWS_ENDPOINT_URL_S3 when set."),
    ConfigKey("remote.s3.region", "string", "", None,
              "S3 region. Empty: from the AWS configuration chain, else us-east-1."),
    ConfigKey("remote.s3.path.style", "boolean", False, None,
              "Address buckets in the URL path instead of the host name, as many S3-compatible stores need."),
    ConfigKey("log.remote.storage.enable", "boolean", False, None,
              "Default of remote.storage.enable: whether topics tier their sealed segments to remote.url."),
    ConfigKey("authorizer.enable", "boolean", False, None,
              "Check ACLs on every request; when false, everything is allowed."),
    ConfigKey("super.users", "string", "", None,
              "Principals allowed everything, separated by ';', e.g. User:admin;User:ops."),
    ConfigKey("allow.everyone.if.no.acl.found", "boolean", False, None,
              "With the authorizer on, allow access to a resource that has no ACL at all."),
    ConfigKey("audit.log.file", "string", "", None,
              "File that authorization denials and ACL changes are appended to, as JSON lines. Empty: "
              "they go to the sediment.audit logger only."),
    # -- transport security and authentication --
    ConfigKey("ssl.certfile", "string", "", None,
              "PEM certificate (chain) of SSL and SASL_SSL listeners, required by them; reloaded when "
              "the file changes."),
    ConfigKey("ssl.keyfile", "string", "", None,
              "PEM private key of ssl.certfile, required by SSL and SASL_SSL listeners."),
    ConfigKey("ssl.cafile", "string", "", None,
              "PEM CA bundle that client certificates must chain to; required unless ssl.client.auth "
              "is none."),
    ConfigKey("ssl.client.auth", "string", "none", one_of("none", "requested", "required"),
              "Whether SSL listeners ask clients for a certificate (mTLS)."),
    ConfigKey("ssl.principal.mapping.rules", "string", "DEFAULT", None,
              "How a client certificate's subject DN becomes a principal, as in Kafka: "
              "RULE:pattern/replacement/[L|U],...,DEFAULT; the first matching rule wins, DEFAULT is "
              "the whole DN, and no match refuses the connection."),
    ConfigKey("sasl.enabled.mechanisms", "list", ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"), MECHANISMS,
              "SASL mechanisms offered on SASL_PLAINTEXT and SASL_SSL listeners."),
    ConfigKey("connections.max.reauth.ms", "long", 0, at_least(0),
              "Lifetime of a SASL session, after which the client must re-authenticate (KIP-368); "
              "0: sessions do not expire."),
    ConfigKey("connection.failed.authentication.delay.ms", "int", 100, at_least(0),
              "Delay before a failed authentication is answered and its connection closed."),
    ConfigKey("sasl.oauthbearer.jwks.file", "string", "", None,
              "JSON Web Key Set file that OAUTHBEARER tokens are verified against, re-read when it "
              "changes; required when a SASL listener offers OAUTHBEARER."),
    ConfigKey("sasl.oauthbearer.expected.issuer", "string", "", None,
              "The iss claim OAUTHBEARER tokens must carry. Empty: any issuer."),
    ConfigKey("sasl.oauthbearer.expected.audience", "string", "", None,
              "The aud claim OAUTHBEARER tokens must carry. Empty: any audience."),
    ConfigKey("sasl.oauthbearer.sub.claim.name", "string", "sub", None,
              "The token claim that names the principal."),
    ConfigKey("event.loop", "string", "uvloop", one_of("uvloop", "asyncio"),
              "The asyncio event loop the broker runs on. uvloop (libuv) answers requests with less "
              "CPU per request; asyncio is the standard library's, for debugging."),
    ConfigKey("telemetry.exporter", "string", "none", one_of("none", "console", "otlp"),
              "Where OpenTelemetry spans (one per request) go."),
    ConfigKey("telemetry.service.name", "string", "sediment", None,
              "The OpenTelemetry service.name of this broker's spans."),
)

# Kafka's topic-level keys with Kafka's types, defaults and validators. Keys the broker accepts
# but does not act on (compaction, throttles, preallocation) are listed so that clients and tools
# that set them are not refused; their docs say so.
TOPIC_KEYS: dict[str, ConfigKey] = _table(
    _topic("cleanup.policy", "list", ("delete",), CLEANUP_POLICIES,
           "What happens to old segments: delete applies retention.ms and retention.bytes; compact is "
           "accepted and stored, but logs are not compacted yet (without delete, retention deletes nothing).",
           "log.cleanup.policy"),
    _topic("compression.type", "string", "producer",
           one_of("uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"),
           "Accepted and stored, not acted on: batches are always stored as the producer compressed "
           "them, as with Kafka's default, producer."),
    _topic("delete.retention.ms", "long", 86400000, at_least(0),
           "Accepted and stored, not acted on (no compaction yet): how long a compacted topic keeps "
           "delete tombstones."),
    _topic("file.delete.delay.ms", "long", 60000, at_least(0),
           "How long the files of a deleted segment or topic stay on disk before they are removed, so "
           "that reads already under way finish."),
    _topic("flush.messages", "long", INT64_MAX, at_least(1),
           "Accepted and stored, not acted on: log.flush.policy decides when data is fsynced."),
    _topic("flush.ms", "long", INT64_MAX, at_least(0),
           "Accepted and stored, not acted on: log.flush.policy decides when data is fsynced."),
    _topic("follower.replication.throttled.replicas", "list", (), None,
           "Accepted and stored, not acted on: there are no followers to throttle."),
    _topic("index.interval.bytes", "int", 4096, at_least(0),
           "Bytes of records between two entries of a segment's offset index: smaller makes lookups "
           "read less and indexes larger.", "log.index.interval.bytes"),
    _topic("leader.replication.throttled.replicas", "list", (), None,
           "Accepted and stored, not acted on: there are no followers to throttle."),
    _topic("local.retention.bytes", "long", -2, at_least(-2),
           "For a tiered topic, the local size a partition is cut down to by deleting local segments "
           "that are already in the object store; -2: retention.bytes."),
    _topic("local.retention.ms", "long", -2, at_least(-2),
           "For a tiered topic, how long segments already in the object store stay on local disk too; "
           "-2: retention.ms."),
    _topic("max.compaction.lag.ms", "long", INT64_MAX, at_least(1),
           "Accepted and stored, not acted on (no compaction yet)."),
    _topic("max.message.bytes", "int", 1048588, at_least(0),
           "Largest record batch (as sent, after compression) a producer may write; a larger one is "
           "refused with MESSAGE_TOO_LARGE.", "message.max.bytes"),
    _topic("message.downconversion.enable", "boolean", True, None,
           "Accepted and stored, not acted on: fetches are never down-converted."),
    _topic("message.timestamp.after.max.ms", "long", INT64_MAX, at_least(0),
           "Accepted and stored, not acted on: CreateTime timestamps ahead of the broker clock are "
           "not refused."),
    _topic("message.timestamp.before.max.ms", "long", INT64_MAX, at_least(0),
           "Accepted and stored, not acted on: CreateTime timestamps behind the broker clock are not "
           "refused."),
    _topic("message.timestamp.difference.max.ms", "long", INT64_MAX, at_least(0),
           "Accepted and stored, not acted on (deprecated in Kafka for the two keys above)."),
    _topic("message.timestamp.type", "string", "CreateTime", one_of("CreateTime", "LogAppendTime"),
           "CreateTime keeps the timestamps the producer set; LogAppendTime replaces them with the "
           "broker's clock when a batch is appended.", "log.message.timestamp.type"),
    _topic("min.cleanable.dirty.ratio", "double", 0.5, between(0.0, 1.0),
           "Accepted and stored, not acted on (no compaction yet)."),
    _topic("min.compaction.lag.ms", "long", 0, at_least(0),
           "Accepted and stored, not acted on (no compaction yet)."),
    _topic("min.insync.replicas", "int", 1, at_least(1),
           "Accepted and stored, not acted on: with one copy per partition, acks=all waits for this "
           "broker's write (and its fsync under log.flush.policy=always)."),
    _topic("preallocate", "boolean", False, None,
           "Accepted and stored, not acted on: segment files grow as they are written."),
    _topic("remote.storage.enable", "boolean", False, None,
           "Tier the topic: sealed segments are uploaded to remote.url, read back from there once "
           "deleted locally, and retention covers both tiers.", "log.remote.storage.enable"),
    _topic("remote.upload.interval.ms", "long", 600000, at_least(1),
           "For a tiered topic, the longest time data waits before it is in the object store: the "
           "active segment is rolled and uploaded once its data is this old."),
    _topic("retention.bytes", "long", -1, None,
           "Largest size of a partition (both tiers of a tiered topic) before its oldest segments are "
           "deleted; -1 sets no size limit.", "log.retention.bytes"),
    _topic("retention.ms", "long", WEEK_MS, at_least(-1),
           "How long a segment is kept after its newest record (in both tiers of a tiered topic); -1 "
           "keeps data forever.", "log.retention.ms"),
    _topic("segment.bytes", "int", 1 << 30, at_least(14),
           "Size at which a segment file is closed and a new one started; retention and tiering act on "
           "whole closed segments.", "log.segment.bytes"),
    _topic("segment.index.bytes", "int", 10485760, at_least(4),
           "Accepted and stored, not acted on: offset indexes grow with their segment instead of being "
           "preallocated."),
    _topic("segment.jitter.ms", "long", 0, at_least(0),
           "Accepted and stored, not acted on: segments roll at segment.ms exactly."),
    _topic("segment.ms", "long", WEEK_MS, at_least(1),
           "Age at which the active segment is rolled even if it is not full, so that retention can "
           "delete it.", "log.roll.ms"),
    _topic("unclean.leader.election.enable", "boolean", False, None,
           "Accepted and stored, not acted on: a partition has one copy, so there is no other leader "
           "to elect."),
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
    _check_connection_limits(cfg)
    return cfg


def _check_connection_limits(cfg: BrokerConfig) -> None:
    """Kafka's start-up checks of its socket server keys."""
    queued = cfg["queued.max.request.bytes"]
    if 0 < queued < cfg["socket.request.max.bytes"]:
        raise ConfigError("queued.max.request.bytes", f"{queued} is less than socket.request.max.bytes "
                                                      f"({cfg['socket.request.max.bytes']}): a largest request "
                                                      "could never be read")
    if cfg["max.connections.per.ip"] == 0 and not cfg["max.connections.per.ip.overrides"]:
        raise ConfigError("max.connections.per.ip", "can be 0 only if max.connections.per.ip.overrides is set")
    idle, delay = cfg["connections.max.idle.ms"], cfg["connection.failed.authentication.delay.ms"]
    if idle >= 0 and delay >= idle:
        raise ConfigError("connection.failed.authentication.delay.ms",
                          f"{delay} must be less than connections.max.idle.ms ({idle}), or a failed "
                          "authentication's answer would be closed as idle first")


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


# -- documentation: README's config tables are generated from the tables above --------------

README = Path(__file__).resolve().parent.parent / "README.md"
GENERATED = re.compile(r"(<!-- generated: (?P<name>[a-z ]+) -->\n).*?(<!-- end generated -->)", re.DOTALL)
_KEY_NAME = re.compile(r"\b[a-z][a-z0-9]*(?:\.[a-z0-9]+)+\b")
_SIZES = (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))
_DURATIONS = (("day", DAY_MS), ("hour", 3_600_000), ("min", 60_000), ("s", 1000))


def _size(n: int) -> str:
    for unit, size in _SIZES:
        if n >= size:
            whole, rest = divmod(n, size)
            return f"{whole} {unit}" if rest == 0 else f"{whole} {unit} + {rest} B" if rest < 1024 else ""
    return ""


def _duration(ms: int) -> str:
    for unit, size in _DURATIONS:
        if ms >= size and ms % size == 0:
            count = ms // size
            return f"{count} {unit}s" if count > 1 and unit in ("day", "hour") else f"{count} {unit}"
    return ""


def _friendly(name: str, value: Value) -> str:
    """The default in words, for numbers people read in units: sizes, durations, 'no limit'."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return ""
    if value == INT64_MAX:
        return "no limit"
    if name.endswith(".bytes"):
        return _size(value)
    if name.endswith(".ms"):
        return _duration(value)
    if name.endswith(".minutes"):
        return _duration(value * 60_000)
    return ""


def _default_cell(key: ConfigKey) -> str:
    if key.default is None:
        return "none"
    text = config_string(key.default)
    if not text:
        return "empty"
    friendly = _friendly(key.name, key.default)
    return f"`{text}` ({friendly})" if friendly else f"`{text}`"


def _doc_cell(key: ConfigKey) -> str:
    known = BROKER_KEYS.keys() | TOPIC_KEYS.keys()
    doc = _KEY_NAME.sub(lambda m: f"`{m[0]}`" if m[0] in known else m[0], key.doc)
    if key.validator is not None and key.validator.allowed:
        doc += f" Valid values: {key.validator.allowed}."
    return doc.replace("|", "\\|")


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def broker_table() -> str:
    return _markdown(["key", "type", "default", "dynamic", "meaning"], [
        [f"`{k.name}`", k.type, _default_cell(k), "yes" if k.dynamic else "no", _doc_cell(k)]
        for k in BROKER_KEYS.values()])


def topic_table() -> str:
    return _markdown(["key", "type", "default", "broker key for the default", "dynamic", "meaning"], [
        [f"`{k.name}`", k.type, _default_cell(k), f"`{k.broker_key}`" if k.broker_key else "—",
         "yes" if k.dynamic else "no", _doc_cell(k)]
        for k in TOPIC_KEYS.values()])


TABLES: dict[str, Callable[[], str]] = {"broker config": broker_table, "topic config": topic_table}


def render_readme(text: str) -> str:
    """text with every generated section rewritten from the key tables."""
    found: set[str] = set()

    def section(m: re.Match[str]) -> str:
        name = m["name"]
        if name not in TABLES:
            raise ValueError(f"README names an unknown generated section {name!r}")
        found.add(name)
        return m[1] + TABLES[name]() + m[3]

    out = GENERATED.sub(section, text)
    if missing := TABLES.keys() - found:
        raise ValueError(f"README lacks the generated sections {', '.join(sorted(missing))}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m service.config",
                                description="Print or regenerate README's config tables.")
    p.add_argument("--markdown", action="store_true", help="print the broker and topic key tables")
    p.add_argument("--write-readme", nargs="?", const=str(README), metavar="FILE",
                   help=f"rewrite the generated sections of FILE in place (default {README.name})")
    args = p.parse_args(argv)
    if args.write_readme:
        path = Path(args.write_readme)
        path.write_text(render_readme(path.read_text()))
    elif args.markdown:
        sys.stdout.write(broker_table() + "\n" + topic_table())
    else:
        p.print_usage()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
