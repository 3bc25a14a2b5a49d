import pytest

from service.config import ConfigError, Listener, load_config


def test_defaults():
    cfg = load_config(environ={})
    assert cfg["num.partitions"] == 1
    assert cfg.listeners == [Listener("PLAINTEXT", "127.0.0.1", 9092)]
    assert cfg.http_host_port == ("127.0.0.1", 8080)
    assert cfg.topic_defaults()["segment.bytes"] == str(1 << 30)
    assert cfg.explicit == frozenset()


def test_precedence_file_env_flag(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('"num.partitions" = 3\n[log]\n"segment.bytes" = 4096\nretention.ms = 1000\n')
    cfg = load_config(f, {"log.retention.ms": "5"}, environ={"SEDIMENT_NUM_PARTITIONS": "4"})
    assert cfg["num.partitions"] == 4  # env beats file
    assert cfg["log.segment.bytes"] == 4096
    assert cfg["log.retention.ms"] == 5  # flag beats file
    assert cfg.topic_default_is_static("segment.bytes")
    assert not cfg.topic_default_is_static("max.message.bytes")


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
