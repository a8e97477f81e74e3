"""Secrets in settings: SecretStr, from the environment or files, never printed, never in argv."""

from __future__ import annotations

from pathlib import Path

import pytest

from kstream.cli.main import hide_secrets
from kstream.config import is_secret, load_settings
from kstream.errors import ConfigError

SECRET = "s3cr3t-pa55"


def test_secret_properties_are_kept_apart_as_secretstr_and_never_printed() -> None:
    settings = load_settings(environ={}, overrides={"kafka": {"sasl.username": "orders", "sasl.password": SECRET,
                                                              "sasl.oauthbearer.client.secret": SECRET}})
    assert settings.kafka == {"sasl.username": "orders"}
    assert set(settings.kafka_secrets) == {"sasl.password", "sasl.oauthbearer.client.secret"}
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert SECRET not in text
    # only what the clients get holds them
    assert settings.client_properties()["sasl.password"] == SECRET


def test_a_secret_comes_from_the_environment_or_a_mounted_file(tmp_path: Path) -> None:
    env = load_settings(environ={"KSTREAM_KAFKA_SASL_PASSWORD": SECRET, "KSTREAM_KAFKA_SASL_USERNAME": "orders"})
    assert env.client_properties() == {"sasl.password": SECRET, "sasl.username": "orders"}
    # a Kubernetes Secret mounted as a file (it ends in a newline, or not)
    secret = tmp_path / "password"
    secret.write_text(SECRET + "\n")
    mounted = load_settings(environ={"KSTREAM_KAFKA_SASL_PASSWORD_FILE": str(secret)})
    assert mounted.client_properties() == {"sasl.password": SECRET}
    # from the TOML file too, and a later source replaces an earlier one
    config = tmp_path / "kstream.toml"
    config.write_text(f'[kafka]\n"sasl.password.file" = "{secret}"\n')
    assert load_settings(config, environ={}).client_properties() == {"sasl.password": SECRET}
    assert load_settings(config, environ={"KSTREAM_KAFKA_SASL_PASSWORD": "other"}).client_properties() == {"sasl.password": "other"}


def test_an_unreadable_secret_file_is_one_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read sasl.password.file .*missing"):
        load_settings(environ={"KSTREAM_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "missing")})


def test_which_properties_are_secrets() -> None:
    assert all(is_secret(p) for p in ("sasl.password", "ssl.key.password", "ssl.keystore.password", "ssl.key.pem",
                                       "sasl.oauthbearer.client.secret", "sasl.oauthbearer.config"))
    assert not any(is_secret(p) for p in ("sasl.username", "security.protocol", "ssl.ca.location", "sasl.mechanism"))


def test_hide_secrets_moves_secret_options_from_argv_to_the_environment() -> None:
    env: dict[str, str] = {"KSTREAM_KAFKA_SASL_PASSWORD_FILE": "/old"}
    argv = ["-b", "k:9093", "-X", f"sasl.password={SECRET}", "-Xsasl.username=orders", f"-Xssl.key.password={SECRET}x",
            "run", "app.py:t", "--node", "a"]
    hidden = hide_secrets(argv, env)
    assert hidden == ["-b", "k:9093", "-Xsasl.username=orders", "run", "app.py:t", "--node", "a"]
    assert env == {"KSTREAM_KAFKA_SASL_PASSWORD": SECRET, "KSTREAM_KAFKA_SSL_KEY_PASSWORD": SECRET + "x"}
    # the environment reads back as the same settings
    assert load_settings(environ=env).client_properties() == {"sasl.password": SECRET, "ssl.key.password": SECRET + "x"}
    # nothing to hide: argv unchanged (no re-exec)
    plain = ["-X", "linger.ms=5", "topics", "plan", "a:b"]
    assert hide_secrets(plain, {}) == plain
