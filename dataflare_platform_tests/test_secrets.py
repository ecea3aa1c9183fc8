"""The one secret reference and the one redaction helper: where a credential may come
from (a variable, a 0600/0400 file owned by the user), the DATAFLARE_SECRET_ prefix of
author-written files, and literal credentials refused at load naming the field."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from dataflare_platform.alerting.rules import RuleSet
from dataflare_platform.connectors.nats import NatsSettings
from dataflare_platform.connectors.postgres import PostgresSinkSettings
from dataflare_platform.connectors.redis import RedisSettings
from dataflare_platform.errors import ConfigError, SecretUnavailableError
from dataflare_platform.models import validated
from dataflare_platform.secrets import (
    PlatformSecretRef,
    Secret,
    SecretRef,
    redact,
    redact_url,
)


@pytest.fixture
def value() -> str:
    return secrets.token_urlsafe(18)


def _file(tmp_path: Path, text: str, mode: int) -> Path:
    path = tmp_path / "secret"
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


def test_env_reference_reads_the_variable_at_each_call(monkeypatch, value):
    ref = SecretRef(env="SOME_VARIABLE")
    monkeypatch.setenv("SOME_VARIABLE", value)
    assert ref.read() == value
    monkeypatch.setenv("SOME_VARIABLE", value + "-rotated")
    assert ref.read() == value + "-rotated"  # rotation needs no restart of the reader
    monkeypatch.delenv("SOME_VARIABLE")
    with pytest.raises(SecretUnavailableError, match=r"\$SOME_VARIABLE is not set"):
        ref.read()


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_file_reference_reads_an_owner_only_file(tmp_path, value, mode):
    assert SecretRef(file=_file(tmp_path, value, mode)).read() == value


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o700, 0o644])
def test_a_file_others_can_read_or_run_is_refused(tmp_path, value, mode):
    path = _file(tmp_path, value, mode)
    with pytest.raises(SecretUnavailableError, match="chmod 600") as err:
        SecretRef(file=path).read()
    assert value not in str(err.value) and str(path) in str(err.value)


def test_a_file_owned_by_another_user_is_refused(tmp_path, value):
    path = _file(tmp_path, value, 0o600)
    other = 65534 if os.geteuid() != 65534 else 0
    try:
        os.chown(path, other, -1)
    except PermissionError:
        pytest.fail("the test needs to chown a file (it runs as root in CI)")
    with pytest.raises(SecretUnavailableError, match="not owned by the user"):
        SecretRef(file=path).read()


def test_a_directory_or_fifo_is_refused(tmp_path):
    with pytest.raises(SecretUnavailableError, match="not a regular file"):
        SecretRef(file=tmp_path).read()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(SecretUnavailableError, match="not a regular file"):
        SecretRef(file=fifo).read()  # and does not block waiting for a writer


@pytest.mark.parametrize("path", ["relative/secret", "/etc/../etc/shadow", "/tmp/a\x00b"])
def test_a_secret_file_path_must_be_absolute_without_dotdot(path):
    with pytest.raises(ConfigError, match="absolute path") as err:
        validated(SecretRef, "secret", {"file": path})
    assert err.value.fields == ["file"]


def test_exactly_one_source():
    for data in ({}, {"env": "A", "file": "/x"}):
        with pytest.raises(ConfigError, match="exactly one"):
            validated(SecretRef, "secret", data)


def test_author_files_may_only_read_prefixed_variables():
    assert PlatformSecretRef(env="DATAFLARE_SECRET_PG").env == "DATAFLARE_SECRET_PG"
    with pytest.raises(ConfigError, match="DATAFLARE_SECRET_") as err:
        validated(PlatformSecretRef, "secret", {"env": "AWS_SECRET_ACCESS_KEY"})
    assert err.value.fields == ["env"]


def test_secret_and_references_never_print_the_value(monkeypatch, value):
    monkeypatch.setenv("DATAFLARE_SECRET_X", value)
    ref = PlatformSecretRef(env="DATAFLARE_SECRET_X")
    held = ref.secret()
    assert isinstance(held, Secret) and held.get_secret_value() == value
    for shown in (repr(held), str(held), repr(ref), str(ref), ref.describe(), f"{held}"):
        assert value not in shown


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://user:pw@h/0", "redis://user:***@h/0"),
        ("nats://tok@h:4222", "nats://***@h:4222"),
        ("postgresql://u:pw@h/db?sslmode=require", "postgresql://u:***@h/db?sslmode=require"),
        ("https://h/x?token=pw&team=a", "https://h/x?token=***&team=a"),
        ("redis://h:6379/0", "redis://h:6379/0"),
    ],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_redact_replaces_plain_and_url_encoded_forms():
    assert redact("a p/w+ b p%2Fw%2B", "p/w+") == "a *** b ***"


# --- literal credentials in connector settings and alert rules ---------------------------


@pytest.mark.parametrize(
    ("model", "data", "field"),
    [
        (RedisSettings, {"url": "redis://:{v}@127.0.0.1:6379/0", "stream": "s"}, "url"),
        (NatsSettings, {"url": "nats://u:{v}@127.0.0.1:4222", "stream": "s"}, "url"),
        (NatsSettings, {"url": "nats://{v}@127.0.0.1:4222", "stream": "s"}, "url"),
        (PostgresSinkSettings, {"dsn": "postgresql://u:{v}@127.0.0.1/db", "table": "t"}, "dsn"),
        (PostgresSinkSettings, {"dsn": "host=127.0.0.1 password={v}", "table": "t"}, "dsn"),
    ],
)
def test_a_password_written_in_connector_settings_is_refused(model, data, field, value):
    data = {k: v.replace("{v}", value) for k, v in data.items()}
    with pytest.raises(ConfigError) as err:
        validated(model, "settings", data)
    assert err.value.fields == [field]
    message = str(err.value)
    assert "{env: DATAFLARE_SECRET_" in message  # the hint
    assert value not in message


@pytest.mark.parametrize("cut", ["/", "?", "#", "/?#"])
@pytest.mark.parametrize(
    ("model", "data", "field"),
    [
        (RedisSettings, {"url": "redis://:{v}@127.0.0.1:6379/0", "stream": "s"}, "url"),
        (NatsSettings, {"url": "nats://u:{v}@127.0.0.1:4222", "stream": "s"}, "url"),
        (PostgresSinkSettings, {"dsn": "postgresql://u:{v}@127.0.0.1/db", "table": "t"}, "dsn"),
    ],
)
def test_a_raw_password_that_ends_the_authority_early_is_refused(model, data, field, value, cut):
    """A raw '/', '?' or '#' in a password makes a URL parser end the host part there,
    so the password reads as path, query or fragment: still refused, still not echoed."""
    secret = value[:6] + cut + value[6:]
    data = {k: v.replace("{v}", secret) for k, v in data.items()}
    with pytest.raises(ConfigError) as err:
        validated(model, "settings", data)
    assert err.value.fields == [field]
    assert secret not in str(err.value) and value[6:] not in str(err.value)


@pytest.mark.parametrize("model", [RedisSettings, NatsSettings])
def test_broker_credentials_are_references_with_the_prefix(model):
    with pytest.raises(ConfigError) as err:
        validated(model, "settings", {"stream": "s", "password": {"env": "HOME"}})
    assert err.value.fields == ["password.env"]


_RULES = """
channels:
  m: {{type: email, host: 127.0.0.1, from: a@x.io, to: [b@x.io], starttls: true,
      username: alerts, {auth}}}
rules:
  - {{name: r, kind: run_failed, channels: [m]}}
"""


@pytest.mark.parametrize(
    ("auth", "field"),
    [
        ("password_env: AWS_SECRET_ACCESS_KEY", "channels.m.password_env"),
        ("password: {env: AWS_SECRET_ACCESS_KEY}", "channels.m.password.env"),
    ],
)
def test_an_alert_rule_may_only_read_prefixed_variables(auth, field):
    with pytest.raises(ConfigError, match="DATAFLARE_SECRET_") as err:
        RuleSet.from_yaml_text(_RULES.format(auth=auth))
    assert err.value.fields == [field]


def test_a_prefixed_password_reference_loads():
    rules = RuleSet.from_yaml_text(_RULES.format(auth="password_env: DATAFLARE_SECRET_SMTP"))
    assert rules.channels["m"].secret == PlatformSecretRef(env="DATAFLARE_SECRET_SMTP")


@pytest.mark.parametrize(
    ("channel", "field"),
    [
        ("{type: webhook, url: 'https://h/x', headers: {Authorization: Bearer abc}}", "headers"),
        ("{type: webhook, url: 'https://h/x', headers: {X-Api-Key: abc}}", "headers"),
        ("{type: webhook, url: 'https://u:pw@h/x'}", "url"),
        ("{type: webhook, url: 'https://h/x?token=abc'}", "url"),
        ("{type: slack, url: 'https://hooks.slack.com/services/T0/B0/abc'}", "url"),
    ],
)
def test_a_literal_credential_in_a_channel_is_refused(channel, field):
    text = f"channels:\n  c: {channel}\nrules:\n  - {{name: r, kind: run_failed, channels: [c]}}"
    with pytest.raises(ConfigError, match="give a reference instead") as err:
        RuleSet.from_yaml_text(text)
    assert f"channels.c.{field}" in err.value.fields[0]
    assert "abc" not in str(err.value) and ":pw@" not in str(err.value)
