import pytest

from service.config import (
    BROKER_KEYS,
    TOPIC_KEYS,
    ConfigError,
    Listener,
    describe_broker,
    describe_topic,
    load_config,
    topic_log_config,
    topic_values,
    validate_topic_configs,
)
from tiering.log.config import LogConfig


def sources(cfg, overrides=None):
    return {d.key.name: d.source for d in describe_topic(overrides or {}, cfg)}


def test_defaults():
    cfg = load_config(environ={})
    assert cfg["num.partitions"] == 1
    assert cfg.listeners == [Listener("PLAINTEXT", "127.0.0.1", 9092)]
    assert cfg.http_host_port == ("127.0.0.1", 8080)
    assert topic_values({}, cfg)["segment.bytes"] == 1 << 30
    assert cfg.explicit == frozenset()


def test_precedence_file_env_flag(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('"num.partitions" = 3\n[log]\n"segment.bytes" = 4096\nretention.ms = 1000\n')
    cfg = load_config(f, {"log.retention.ms": "5"}, environ={"SEDIMENT_NUM_PARTITIONS": "4"})
    assert cfg["num.partitions"] == 4  # env beats file
    assert cfg["log.segment.bytes"] == 4096
    assert cfg["log.retention.ms"] == 5  # flag beats file
    assert sources(cfg)["segment.bytes"] == "STATIC_BROKER_CONFIG"
    assert sources(cfg)["max.message.bytes"] == "DEFAULT_CONFIG"


@pytest.mark.parametrize("overrides, key", [
    ({"no.such.key": "1"}, "no.such.key"),
    ({"num.partitions": "zero"}, "num.partitions"),
    ({"num.partitions": "0"}, "num.partitions"),
    ({"log.flush.policy": "sometimes"}, "log.flush.policy"),
    ({"listeners": "HTTP://1.2.3.4:9"}, "listeners"),
    ({"listeners": "PLAINTEXT://host"}, "listeners"),
    ({"auto.create.topics.enable": "maybe"}, "auto.create.topics.enable"),
    ({"remote.upload.concurrency": "0"}, "remote.upload.concurrency"),
    ({"remote.upload.concurrency": "65"}, "remote.upload.concurrency"),
])
def test_bad_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides, environ={})
    assert e.value.key == key
    assert key in str(e.value)


def test_unknown_env_setting_is_refused():
    with pytest.raises(ConfigError) as e:
        load_config(environ={"SEDIMENT_NUM_PARTITIONZ": "2"})
    assert e.value.key == "SEDIMENT_NUM_PARTITIONZ"


def test_bad_toml_names_config(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("this is = = not toml")
    with pytest.raises(ConfigError) as e:
        load_config(f, environ={})
    assert e.value.key == "config"


def test_advertised_defaults_to_reachable_host():
    cfg = load_config(None, {"listeners": "PLAINTEXT://0.0.0.0:9999"}, environ={})
    assert cfg.advertised_listeners == [Listener("PLAINTEXT", "127.0.0.1", 9999)]


def test_upload_concurrency_reaches_the_tier_settings():
    from service.tiering import tier_settings

    assert tier_settings(load_config(environ={})).upload_concurrency == 4
    assert tier_settings(load_config(None, {"remote.upload.concurrency": "2"}, environ={})).upload_concurrency == 2


# --- topic keys -----------------------------------------------------------------------------


def test_topic_config_table_defaults():
    assert TOPIC_KEYS["segment.bytes"].default_string == "1073741824"
    assert TOPIC_KEYS["segment.bytes"].type == "int"
    assert TOPIC_KEYS["retention.ms"].default_string == "604800000"
    assert TOPIC_KEYS["retention.ms"].type == "long"
    assert TOPIC_KEYS["max.message.bytes"].default_string == "1048588"
    assert TOPIC_KEYS["cleanup.policy"].type == "list"
    assert TOPIC_KEYS["local.retention.ms"].default_string == "-2"
    assert TOPIC_KEYS["remote.storage.enable"].default_string == "false"
    assert topic_log_config({}) == LogConfig()
    assert topic_log_config({}, load_config(environ={})) == LogConfig()


def test_topic_log_config_overrides_over_broker_defaults():
    broker = load_config(None, {"log.segment.bytes": "5000", "log.retention.ms": "-1"}, environ={})
    cfg = topic_log_config(
        {"segment.bytes": "1000", "message.timestamp.type": "LogAppendTime", "cleanup.policy": "compact, delete"},
        broker,
    )
    assert cfg.segment_bytes == 1000
    assert cfg.retention_ms == -1
    assert cfg.log_append_time
    assert cfg.cleanup_policy == "compact,delete" and cfg.deletes
    assert topic_log_config({}, broker).segment_bytes == 5000
    assert not topic_log_config({"cleanup.policy": "compact"}).deletes


@pytest.mark.parametrize(
    "key,value",
    [
        ("segment.bytes", "13"),
        ("segment.bytes", "abc"),
        ("segment.bytes", str(1 << 31)),
        ("retention.ms", "-2"),
        ("segment.ms", "0"),
        ("message.timestamp.type", "Now"),
        ("cleanup.policy", "delete,forever"),
        ("unclean.leader.election.enable", "yes"),
        ("min.cleanable.dirty.ratio", "1.5"),
        ("no.such.config", "1"),
    ],
)
def test_validate_topic_configs_rejects(key, value):
    with pytest.raises(ConfigError) as info:
        validate_topic_configs({key: value})
    assert info.value.key == key


def test_validate_topic_configs_accepts():
    validate_topic_configs({"segment.bytes": "14", "retention.bytes": "-1", "retention.ms": "-1",
                            "unclean.leader.election.enable": "TRUE", "compression.type": "zstd"})


def test_describe_synonyms_as_kafka():
    """Highest precedence first; the DEFAULT synonym is the built-in default, not the value in force."""
    broker = load_config(None, {"log.segment.bytes": "4096"}, environ={})
    described = {d.key.name: d for d in describe_topic({"segment.bytes": "01000", "cleanup.policy": "compact, delete"},
                                                       broker)}
    seg = described["segment.bytes"]
    assert (seg.value, seg.source) == ("1000", "DYNAMIC_TOPIC_CONFIG")
    assert [(s.name, s.value, s.source) for s in seg.synonyms] == [
        ("segment.bytes", "1000", "DYNAMIC_TOPIC_CONFIG"),
        ("log.segment.bytes", "4096", "STATIC_BROKER_CONFIG"),
        ("log.segment.bytes", "1073741824", "DEFAULT_CONFIG"),
    ]
    assert described["cleanup.policy"].value == "compact,delete"
    assert (described["retention.ms"].value, described["retention.ms"].source) == ("604800000", "DEFAULT_CONFIG")
    assert [(s.name, s.source) for s in described["compression.type"].synonyms] == [
        ("compression.type", "DEFAULT_CONFIG")]
    assert not any(d.read_only for d in described.values())


def test_describe_broker_keys_static_and_read_only():
    described = {d.key.name: d for d in describe_broker(load_config(None, {"num.partitions": "3"}, environ={}))}
    assert [(s.value, s.source) for s in described["num.partitions"].synonyms] == [
        ("3", "STATIC_BROKER_CONFIG"), ("1", "DEFAULT_CONFIG")]
    assert described["sasl.enabled.mechanisms"].value == "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
    assert all(d.read_only for d in described.values())


# --- one parse for every key ----------------------------------------------------------------

ALL_KEYS = [*BROKER_KEYS.values(), *TOPIC_KEYS.values()]


@pytest.mark.parametrize("key", ALL_KEYS, ids=lambda k: k.name)
def test_every_default_passes_its_own_validator(key):
    assert key.default is not None
    assert key.parse(key.default) == key.default
    assert key.parse(key.default_string) == key.default


@pytest.mark.parametrize("key", [k for k in ALL_KEYS if k.type == "int"], ids=lambda k: k.name)
def test_int_keys_are_32_bit(key):
    for outside in (1 << 31, -(1 << 31) - 1):
        with pytest.raises(ConfigError) as e:
            key.parse(str(outside))
        assert e.value.key == key.name and "out of range for int" in e.value.message


def test_long_keys_are_64_bit():
    assert load_config(None, {"remote.cache.bytes": str(10 << 30)}, environ={})["remote.cache.bytes"] == 10 << 30
    assert TOPIC_KEYS["retention.ms"].parse(str((1 << 63) - 1)) == (1 << 63) - 1
    with pytest.raises(ConfigError, match="out of range for long"):
        TOPIC_KEYS["retention.ms"].parse(str(1 << 63))


def test_a_broker_int_past_32_bits_stops_start_up():
    """Before, log.segment.bytes took any integer and the broker failed later, opening a log."""
    with pytest.raises(ConfigError) as e:
        load_config(None, {"log.segment.bytes": str(1 << 31)}, environ={})
    assert e.value.key == "log.segment.bytes"


@pytest.mark.parametrize("name, native, text", [
    ("num.partitions", 3, "3"),
    ("auto.create.topics.enable", False, "false"),
    ("remote.cache.bytes", 1 << 40, str(1 << 40)),
    ("log.cleanup.policy", ("compact", "delete"), "compact,delete"),
    ("sasl.enabled.mechanisms", ("plain",), "PLAIN"),
    # bad values: the same message either way
    ("num.partitions", 0, "0"),
    ("num.partitions", True, "true"),
    ("num.partitions", 1.5, "1.5"),
    ("auto.create.topics.enable", 1, "1"),
    ("log.segment.bytes", 1 << 31, str(1 << 31)),
])
def test_native_and_string_values_parse_alike(name, native, text):
    key = BROKER_KEYS[name]

    def outcome(raw):
        try:
            return key.parse(raw)
        except ConfigError as e:
            return (e.key, str(e))

    assert outcome(native) == outcome(text)


def test_toml_file_and_strings_give_the_same_config(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('"num.partitions" = 3\n"auto.create.topics.enable" = false\n"remote.cache.bytes" = 2147483648\n'
                 '"sasl.enabled.mechanisms" = ["PLAIN", "scram-sha-512"]\n[log]\n"segment.bytes" = 4096\n'
                 '"cleanup.policy" = "compact"\n')
    from_file = load_config(f, environ={})
    from_strings = load_config(None, {"num.partitions": "3", "auto.create.topics.enable": "false",
                                      "remote.cache.bytes": "2147483648",
                                      "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-512",
                                      "log.segment.bytes": "4096", "log.cleanup.policy": "compact"}, environ={})
    assert from_file.values == from_strings.values
    assert from_file["sasl.enabled.mechanisms"] == ("PLAIN", "SCRAM-SHA-512")
    assert topic_log_config({}, from_file).cleanup_policy == "compact"


def test_booleans_are_true_or_false_as_in_kafka():
    assert load_config(None, {"authorizer.enable": " TRUE "}, environ={})["authorizer.enable"] is True
    for bad in ("yes", "1", "on"):
        with pytest.raises(ConfigError) as e:
            load_config(None, {"authorizer.enable": bad}, environ={})
        assert e.value.message == f"invalid boolean value {bad!r}: expected true or false"


def test_unknown_keys_name_the_key():
    with pytest.raises(ConfigError) as e:
        load_config(None, {"log.segment.byte": "1"}, environ={})
    assert (e.value.key, e.value.message) == ("log.segment.byte", "unknown key")
    with pytest.raises(ConfigError) as e:
        validate_topic_configs({"retention.ms": "1", "segment.byte": "1"})
    assert (e.value.key, e.value.message) == ("segment.byte", "unknown topic config")


def test_topic_validation_messages_are_kept():
    """These reach Kafka clients as INVALID_CONFIG messages: changing them is a protocol change."""
    cases = {
        ("segment.bytes", "13"): "invalid value '13': must be at least 14",
        ("segment.bytes", "abc"): "invalid int value 'abc': invalid literal for int() with base 10: 'abc'",
        ("segment.bytes", str(1 << 31)): "invalid int value '2147483648': out of range for int",
        ("message.timestamp.type", "Now"): "invalid value 'Now': must be one of CreateTime, LogAppendTime",
        ("cleanup.policy", "delete,forever"): "invalid value 'delete,forever': 'forever' is not one of compact, delete",
        ("unclean.leader.election.enable", "yes"): "invalid boolean value 'yes': expected true or false",
        ("min.cleanable.dirty.ratio", "1.5"): "invalid value '1.5': must be between 0.0 and 1.0",
    }
    for (name, raw), message in cases.items():
        with pytest.raises(ConfigError) as e:
            validate_topic_configs({name: raw})
        assert (e.value.key, e.value.message) == (name, message)


def test_topic_defaults_are_kafkas():
    kafka = {
        "segment.bytes": 1073741824, "retention.ms": 604800000, "max.message.bytes": 1048588,
        "cleanup.policy": ("delete",), "min.insync.replicas": 1, "segment.index.bytes": 10485760,
        "segment.ms": 604800000, "retention.bytes": -1, "index.interval.bytes": 4096,
        "message.timestamp.type": "CreateTime", "compression.type": "producer", "delete.retention.ms": 86400000,
        "file.delete.delay.ms": 60000, "min.compaction.lag.ms": 0, "max.compaction.lag.ms": (1 << 63) - 1,
        "min.cleanable.dirty.ratio": 0.5, "segment.jitter.ms": 0, "flush.messages": (1 << 63) - 1,
        "flush.ms": (1 << 63) - 1, "preallocate": False, "unclean.leader.election.enable": False,
        "remote.storage.enable": False, "local.retention.ms": -2, "local.retention.bytes": -2,
    }
    assert {name: TOPIC_KEYS[name].default for name in kafka} == kafka


def test_broker_keys_supply_topic_defaults_as_in_kafka():
    assert {k.name: k.broker_key for k in TOPIC_KEYS.values() if k.broker_key} == {
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
    for key in TOPIC_KEYS.values():
        if key.broker_key:
            broker_key = BROKER_KEYS[key.broker_key]
            assert (broker_key.type, broker_key.default) == (key.type, key.default), key.name


def test_topic_keys_are_dynamic_and_broker_keys_static():
    """No broker key is re-read while the broker runs; a dynamic one must be, before it says so."""
    assert all(k.dynamic for k in TOPIC_KEYS.values())
    assert not any(k.dynamic for k in BROKER_KEYS.values())
