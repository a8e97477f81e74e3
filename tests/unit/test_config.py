"""Settings: defaults, TOML file, environment, overrides; every mistake is one ConfigError line."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from kstream.config import DEFAULT_BOOTSTRAP, TopicSettings, TopicSpec, load_settings
from kstream.errors import ConfigError

FILE = """
bootstrap_servers = "kafka-1:9092,kafka-2:9092"
namespace = "prod"
hop_limit = 20

[topics]
partitions = 12
replication_factor = 3
config = { "retention.ms" = "604800000" }

[topics.nodes."orders.parse"]
partitions = 24
config = { "retention.ms" = "86400000", "max.message.bytes" = "2000000" }

[runtime]
commit_interval = 2.5

[kafka]
"security.protocol" = "SASL_SSL"
"enable.idempotence" = true
"linger.ms" = 5
"""


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kstream.toml"
    path.write_text(text)
    return path


def test_defaults_without_file_or_environment() -> None:
    settings = load_settings(environ={})
    assert settings.bootstrap_servers == DEFAULT_BOOTSTRAP
    assert settings.namespace == "kstream"
    assert (settings.trash_topic, settings.cursors_topic) == ("kstream.trash", "kstream.cursors")
    assert settings.kafka == {}
    assert settings.topics.for_node("t", "n") == (6, None, {})  # None: the cluster default RF


def test_a_toml_file_is_read(tmp_path: Path) -> None:
    settings = load_settings(_file(tmp_path, FILE), environ={})
    assert settings.bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert (settings.namespace, settings.hop_limit, settings.trash_topic) == ("prod", 20, "prod.trash")
    assert settings.runtime.commit_interval == 2.5
    assert settings.runtime.batch_size == 500, "unset values keep their defaults"
    # librdkafka values are strings, booleans the way librdkafka spells them
    assert settings.kafka == {"security.protocol": "SASL_SSL", "enable.idempotence": "true", "linger.ms": "5"}


def test_the_file_can_come_from_kstream_config(tmp_path: Path) -> None:
    path = _file(tmp_path, 'namespace = "fromenv"\n')
    assert load_settings(environ={"KSTREAM_CONFIG": str(path)}).namespace == "fromenv"


def test_environment_overrides_the_file_and_overrides_win_over_both(tmp_path: Path) -> None:
    # Given a file, an environment and explicit overrides (CLI flags) that disagree
    path = _file(tmp_path, FILE)
    environ = {"KSTREAM_BOOTSTRAP_SERVERS": "env:9092", "KSTREAM_NAMESPACE": "staging", "UNRELATED": "x"}

    # When each layer is added
    from_env = load_settings(path, environ=environ)
    from_flags = load_settings(path, environ=environ, overrides={"bootstrap_servers": "flag:9092", "namespace": None})

    # Then later sources win, and None means "not given"
    assert (from_env.bootstrap_servers, from_env.namespace) == ("env:9092", "staging")
    assert (from_flags.bootstrap_servers, from_flags.namespace) == ("flag:9092", "staging")


def test_empty_environment_values_are_ignored() -> None:
    settings = load_settings(environ={"KSTREAM_BOOTSTRAP_SERVERS": "", "KSTREAM_NAMESPACE": ""})
    assert (settings.bootstrap_servers, settings.namespace) == (DEFAULT_BOOTSTRAP, "kstream")


def test_kstream_kafka_variables_pass_librdkafka_properties_through(tmp_path: Path) -> None:
    # Given file properties, environment properties and -X style overrides
    environ = {
        "KSTREAM_KAFKA_SASL_USERNAME": "alice",
        "KSTREAM_KAFKA_LINGER_MS": "50",
        "KSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL",
    }
    settings = load_settings(_file(tmp_path, FILE), environ=environ, overrides={"kafka": {"client.id": "cli"}})

    # Then the names are librdkafka's (lowercase, dots) and later sources win per property
    assert settings.kafka == {
        "security.protocol": "SSL",
        "enable.idempotence": "true",
        "linger.ms": "50",
        "sasl.username": "alice",
        "client.id": "cli",
    }


def test_topic_overrides_per_node(tmp_path: Path) -> None:
    topics = load_settings(_file(tmp_path, FILE), environ={}).topics
    assert topics.for_node("orders", "parse") == (24, 3, {"retention.ms": "86400000", "max.message.bytes": "2000000"})
    assert topics.for_node("orders", "enrich") == (12, 3, {"retention.ms": "604800000"})
    assert topics.for_node("other", "parse") == (12, 3, {"retention.ms": "604800000"})


def test_for_node_merges_configs_without_sharing_them() -> None:
    topics = TopicSettings(config={"a": "1"}, nodes={"t.n": TopicSpec(replication_factor=2, config={"b": "2"})})
    parts, rf, config = topics.for_node("t", "n")
    config["c"] = "3"
    assert (parts, rf) == (6, 2)
    assert topics.config == {"a": "1"}
    assert topics.nodes["t.n"].config == {"b": "2"}


def test_settings_are_frozen() -> None:
    settings = load_settings(environ={})
    with pytest.raises(ValidationError):
        settings.namespace = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("hop_limit = 0\n", "hop_limit"),
        ('hop_limit = "lots"\n', "hop_limit"),
        ("bootstrap_servers = 9092\n", "bootstrap_servers"),
        ("[topics]\npartitions = 0\n", "topics.partitions"),
        ('[topics.nodes."t.n"]\nreplication_factor = -1\n', "topics.nodes.t.n.replication_factor"),
        ("[runtime]\npoll_timeout = 0\n", "runtime.poll_timeout"),
        ("typo_setting = 1\n", "typo_setting"),
        ("[topics]\npartitons = 3\n", "topics.partitons"),
    ],
)
def test_invalid_values_are_one_config_error_line(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(_file(tmp_path, text), environ={})
    message = str(raised.value)
    assert message.startswith(f"invalid setting {where}: ")
    assert "\n" not in message


def test_an_invalid_override_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="invalid setting hop_limit"):
        load_settings(environ={}, overrides={"hop_limit": -5})


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^cannot read config file .*missing\.toml: No such file or directory$"):
        load_settings(tmp_path / "missing.toml", environ={})


def test_a_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path, environ={})


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not valid TOML") as raised:
        load_settings(_file(tmp_path, "namespace = \n[[[\n"), environ={})
    assert "\n" not in str(raised.value)


def test_a_binary_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "kstream.toml"
    path.write_bytes(b"\xff\xfe\x00n\x00s")
    with pytest.raises(ConfigError, match=r"kstream\.toml"):
        load_settings(path, environ={})


@pytest.mark.parametrize("text", ['kafka = "security.protocol=SSL"\n', "kafka = 5\n"])
def test_a_kafka_setting_that_is_not_a_table_is_a_config_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="kafka"):
        load_settings(_file(tmp_path, text), environ={})


@pytest.mark.parametrize("source", ["file", "environment", "override"])
def test_a_bad_namespace_is_a_config_error(tmp_path: Path, source: str) -> None:
    # Given a namespace that cannot prefix a topic name, from each source
    bad = "my.namespace"
    path = _file(tmp_path, f'namespace = "{bad}"\n') if source == "file" else None
    environ = {"KSTREAM_NAMESPACE": bad} if source == "environment" else {}
    overrides = {"namespace": bad} if source == "override" else None

    # Then loading fails with a ConfigError naming the setting
    with pytest.raises(ConfigError, match="namespace"):
        load_settings(path, environ=environ, overrides=overrides)
