"""Channels on their own, against real receivers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dataflare_platform.alerting import (
    AlertMessage,
    EmailChannel,
    EmailConfig,
    SlackChannel,
    SlackConfig,
    WebhookChannel,
    WebhookConfig,
)
from dataflare_platform.alerting.channels import DeliveryError

T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MESSAGE = AlertMessage(
    alert_id=7,
    fingerprint="lag[asset=streams/bids]",
    rule="lag",
    group_key="asset=streams/bids",
    labels={"asset": "streams/bids"},
    severity="error",
    status="firing",
    reason="firing",
    tier=1,
    occurrences=3,
    message="lag_events 12000 > 1000",
    first_seen=T,
    last_seen=T,
)


def test_webhook_posts_json_with_headers(http_receiver):
    config = WebhookConfig(
        type="webhook", url=http_receiver.url("/in"), headers={"X-K": "v"}, allow_http_loopback=True
    )
    WebhookChannel(config).send(MESSAGE)
    [body] = http_receiver.bodies("/in")
    assert body["alert_id"] == 7 and body["labels"] == {"asset": "streams/bids"}
    assert body["last_seen"] == "2026-03-01T12:00:00+00:00"


def test_webhook_error_status_raises(http_receiver):
    http_receiver.failing.add("/in")
    config = WebhookConfig(type="webhook", url=http_receiver.url("/in"), allow_http_loopback=True)
    with pytest.raises(DeliveryError, match="500"):
        WebhookChannel(config).send(MESSAGE)


def test_slack_payload(http_receiver):
    config = SlackConfig(
        type="slack", url=http_receiver.url("/s"), username="dataflare", allow_http_loopback=True
    )
    SlackChannel(config).send(MESSAGE)
    [body] = http_receiver.bodies("/s")
    assert body["text"] == "[ERROR] lag [asset=streams/bids]: lag_events 12000 > 1000"
    assert body["username"] == "dataflare"
    assert [b["type"] for b in body["blocks"]] == ["header", "section", "context"]


def test_email_with_starttls_and_login(smtp_tls_receiver, monkeypatch):
    monkeypatch.setenv("DATAFLARE_SECRET_ALERTS_SMTP", "s3cret")
    config = EmailConfig.model_validate(
        {
            "type": "email",
            "host": smtp_tls_receiver.host,
            "port": smtp_tls_receiver.port,
            "from": "alerts@dataflare.test",
            "to": ["a@dataflare.test", "b@dataflare.test"],
            "starttls": True,
            "ca_file": smtp_tls_receiver.ca_file,
            "username": "alerts",
            "password_env": "DATAFLARE_SECRET_ALERTS_SMTP",
        }
    )
    EmailChannel(config).send(MESSAGE)
    assert smtp_tls_receiver.logins == [("alerts", "s3cret")]
    [(sender, rcpts, mail)] = smtp_tls_receiver.messages
    assert (sender, rcpts) == ("alerts@dataflare.test", ["a@dataflare.test", "b@dataflare.test"])
    assert mail["Subject"] == "[ERROR] lag [asset=streams/bids]"
    assert "lag_events 12000 > 1000" in mail.get_payload()


def test_email_refuses_an_unverified_server(smtp_tls_receiver):
    config = EmailConfig.model_validate(
        {
            "type": "email",
            "host": smtp_tls_receiver.host,
            "port": smtp_tls_receiver.port,
            "from": "alerts@dataflare.test",
            "to": "a@dataflare.test",
            "starttls": True,
        }
    )
    with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
        EmailChannel(config).send(MESSAGE)
    assert smtp_tls_receiver.messages == []
