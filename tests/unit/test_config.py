import pytest

from service.config import (
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
