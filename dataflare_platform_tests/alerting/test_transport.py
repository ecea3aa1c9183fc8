"""Alert transport against real TLS servers on spare ports, with a test CA made by
openssl: SMTP with STARTTLS and SMTPS, an HTTPS webhook receiver. A login happens only
inside verified TLS, a server signed by another CA is refused, plain http only to
loopback when the channel allows it."""

from __future__ import annotations

import secrets

import pytest

from dataflare_platform.alerting import (
    EmailChannel,
    EmailConfig,
    SlackChannel,
    SlackConfig,
    WebhookChannel,
    WebhookConfig,
)
from dataflare_platform.alerting.channels import DeliveryError
from dataflare_platform.errors import ConfigError
from dataflare_platform.models import validated
from dataflare_platform_tests.alerting.test_channels import MESSAGE
from dataflare_platform_tests.receivers import start_smtp


@pytest.fixture
def smtp_password(monkeypatch) -> str:
    value = secrets.token_urlsafe(16)
    monkeypatch.setenv("DATAFLARE_SECRET_TEST_SMTP", value)
    return value


def _email(receiver, **extra) -> EmailConfig:
    return validated(
        EmailConfig,
        "email channel",
        {
            "type": "email",
            "host": receiver.host,
            "port": receiver.port,
            "from": "alerts@dataflare.test",
            "to": "ops@dataflare.test",
            "username": "alerts",
            "password": {"env": "DATAFLARE_SECRET_TEST_SMTP"},
            **extra,
        },
    )


@pytest.mark.parametrize("mode", ["starttls", "smtps"])
def test_smtp_login_over_verified_tls_delivers(mode, test_ca, smtp_password):
    controller, receiver = start_smtp(mode, smtp_password, test_ca)
    try:
        EmailChannel(_email(receiver, **{mode: True, "ca_file": test_ca.ca_file})).send(MESSAGE)
    finally:
        controller.stop()
    assert receiver.logins == [("alerts", smtp_password)]
    [(_, rcpts, mail)] = receiver.messages
    assert rcpts == ["ops@dataflare.test"] and mail["Subject"] == MESSAGE.title


@pytest.mark.parametrize("mode", ["starttls", "smtps"])
def test_smtp_server_of_another_ca_is_refused_before_login(mode, test_ca, other_ca, smtp_password):
    controller, receiver = start_smtp(mode, smtp_password, test_ca)
    try:
        channel = EmailChannel(_email(receiver, **{mode: True, "ca_file": other_ca.ca_file}))
        with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED") as err:
            channel.send(MESSAGE)
    finally:
        controller.stop()
    assert receiver.logins == [] and receiver.messages == []
    assert smtp_password not in str(err.value)


def test_smtp_login_over_plain_smtp_is_refused_at_load(smtp_password):
    controller, receiver = start_smtp("plain", smtp_password)
    try:
        with pytest.raises(ConfigError, match="sends the password in clear") as err:
            _email(receiver)
    finally:
        controller.stop()
    assert receiver.logins == []  # nothing was ever sent to the plain server
    assert "starttls: true" in str(err.value)


def test_https_webhook_with_the_ca_delivers_and_sends_referenced_headers(
    https_receiver, test_ca, monkeypatch
):
    token = secrets.token_urlsafe(16)
    monkeypatch.setenv("DATAFLARE_SECRET_TEST_HOOK_TOKEN", f"Bearer {token}")
    config = WebhookConfig(
        type="webhook",
        url=https_receiver.url("/in"),
        ca_file=test_ca.ca_file,
        headers={"Authorization": {"env": "DATAFLARE_SECRET_TEST_HOOK_TOKEN"}, "X-Team": "ops"},
    )
    WebhookChannel(config).send(MESSAGE)
    [body] = https_receiver.bodies("/in")
    assert body["alert_id"] == MESSAGE.alert_id
    [headers] = https_receiver.headers
    assert headers["Authorization"] == f"Bearer {token}" and headers["X-Team"] == "ops"


def test_https_slack_url_from_a_secret_delivers(https_receiver, test_ca, monkeypatch):
    monkeypatch.setenv("DATAFLARE_SECRET_TEST_SLACK", https_receiver.url("/services/T1/B2/x"))
    config = SlackConfig(
        type="slack", url={"env": "DATAFLARE_SECRET_TEST_SLACK"}, ca_file=test_ca.ca_file
    )
    SlackChannel(config).send(MESSAGE)
    assert https_receiver.bodies("/services/T1/B2/x")[0]["text"].startswith("[ERROR] lag")


def test_https_receiver_of_another_ca_is_refused(https_receiver, other_ca):
    config = WebhookConfig(type="webhook", url=https_receiver.url("/in"), ca_file=other_ca.ca_file)
    with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
        WebhookChannel(config).send(MESSAGE)
    assert https_receiver.requests == []


def test_https_receiver_without_a_ca_file_is_refused(https_receiver):
    """The system store does not know the test CA: verification is on by default."""
    config = WebhookConfig(type="webhook", url=https_receiver.url("/in"))
    with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
        WebhookChannel(config).send(MESSAGE)


@pytest.mark.parametrize(
    ("url", "allow"),
    [
        ("http://127.0.0.1:9/in", False),  # loopback, but not allowed by the setting
        ("http://alerts.example.com/in", True),  # allowed only for loopback
        ("ftp://127.0.0.1/in", True),
    ],
)
def test_plain_http_is_refused_at_load_unless_loopback_is_allowed(url, allow):
    with pytest.raises(ConfigError) as err:
        validated(
            WebhookConfig,
            "webhook",
            {"type": "webhook", "url": url, "allow_http_loopback": allow},
        )
    assert err.value.fields == ["url"] and "https://" in str(err.value)


def test_a_referenced_http_url_is_checked_when_read(monkeypatch):
    monkeypatch.setenv("DATAFLARE_SECRET_TEST_HOOK_URL", "http://alerts.example.com/in")
    config = WebhookConfig(type="webhook", url={"env": "DATAFLARE_SECRET_TEST_HOOK_URL"})
    with pytest.raises(DeliveryError, match="must be an https:// URL") as err:
        WebhookChannel(config).send(MESSAGE)
    assert "alerts.example.com" not in str(err.value)  # the URL itself is a secret


# -- mutual TLS: the channel presents a client certificate where the receiver asks -------


def _client_files(ca) -> dict[str, str]:
    return {"cert_file": str(ca.client_cert), "key_file": str(ca.client_key)}


def test_https_webhook_presents_its_client_certificate(mtls_https_receiver, test_ca):
    config = WebhookConfig(
        type="webhook",
        url=mtls_https_receiver.url("/in"),
        ca_file=test_ca.ca_file,
        **_client_files(test_ca),
    )
    WebhookChannel(config).send(MESSAGE)
    assert mtls_https_receiver.bodies("/in")[0]["alert_id"] == MESSAGE.alert_id


def test_https_webhook_without_a_client_certificate_is_refused_by_an_mtls_receiver(
    mtls_https_receiver, test_ca
):
    config = WebhookConfig(
        type="webhook", url=mtls_https_receiver.url("/in"), ca_file=test_ca.ca_file
    )
    with pytest.raises(DeliveryError):
        WebhookChannel(config).send(MESSAGE)
    assert mtls_https_receiver.requests == []


@pytest.mark.parametrize("mode", ["starttls", "smtps"])
def test_smtp_over_mutual_tls_needs_the_client_certificate(mode, test_ca, smtp_password):
    controller, receiver = start_smtp(mode, smtp_password, test_ca, require_client_cert=True)
    try:
        with pytest.raises(DeliveryError):
            EmailChannel(_email(receiver, **{mode: True, "ca_file": test_ca.ca_file})).send(MESSAGE)
        assert receiver.logins == []  # no certificate, no handshake, no login sent
        EmailChannel(
            _email(receiver, **{mode: True, "ca_file": test_ca.ca_file, **_client_files(test_ca)})
        ).send(MESSAGE)
    finally:
        controller.stop()
    assert receiver.logins == [("alerts", smtp_password)]
    assert len(receiver.messages) == 1


def test_client_certificate_files_are_checked_at_load_naming_the_field(test_ca, tmp_path):
    with pytest.raises(ConfigError, match="key_file"):
        validated(
            WebhookConfig,
            "webhook channel",
            {
                "type": "webhook",
                "url": "https://hooks.example/x",
                "cert_file": str(test_ca.client_cert),
            },
        )
    loose = tmp_path / "client.key"
    loose.write_bytes(test_ca.client_key.read_bytes())
    loose.chmod(0o644)
    with pytest.raises(ConfigError, match=r"key_file.*chmod 600"):
        validated(
            WebhookConfig,
            "webhook channel",
            {
                "type": "webhook",
                "url": "https://hooks.example/x",
                "cert_file": str(test_ca.client_cert),
                "key_file": str(loose),
            },
        )
