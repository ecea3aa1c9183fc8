"""Where alerts go: a generic JSON webhook, a Slack-compatible webhook, and email (SMTP).

A channel's ``send`` raises on failure; the engine catches it and records the error on
the alert, so one broken receiver never stops the others from being told. Every send has
a timeout: a hung receiver must not hang the sensor that observes events.
"""

from __future__ import annotations

import json
import os
import smtplib
import ssl
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import datetime
from email.message import EmailMessage
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

from pydantic import ConfigDict, Field, field_validator, model_validator

from dataflare_platform.errors import InvalidInputError
from dataflare_platform.models import StrictModel


@dataclass(frozen=True)
class AlertMessage:
    """What a channel is told: the alert's state at the time of the notification."""

    alert_id: int
    fingerprint: str
    rule: str
    group_key: str
    labels: dict[str, str]
    severity: str
    status: str
    reason: str  # "firing", "repeat", "escalation" or "unsilenced"
    tier: int
    occurrences: int
    message: str
    first_seen: datetime
    last_seen: datetime
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        group = f" [{self.group_key}]" if self.group_key else ""
        return f"[{self.severity.upper()}] {self.rule}{group}"

    def as_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["first_seen"] = self.first_seen.isoformat()
        body["last_seen"] = self.last_seen.isoformat()
        return body

    def text(self) -> str:
        lines = [self.title, self.message] if self.message else [self.title]
        lines.append(
            f"status {self.status}, tier {self.tier}, {self.occurrences} occurrence(s), "
            f"first seen {self.first_seen.isoformat()}, last seen {self.last_seen.isoformat()}"
        )
        lines.append(f"alert {self.alert_id} ({self.fingerprint})")
        return "\n".join(lines)


@runtime_checkable
class Channel(Protocol):
    """Anything that can deliver an alert message; raise to report a failed delivery."""

    def send(self, message: AlertMessage) -> None: ...


class _Config(StrictModel):
    model_config = ConfigDict(populate_by_name=True)

    timeout: float = Field(default=10.0, gt=0, description="Seconds before giving up.")


def _http_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise InvalidInputError("must be an http:// or https:// URL")
    return url


class WebhookConfig(_Config):
    """POST the alert as a JSON object (``AlertMessage.as_json``)."""

    type: Literal["webhook"]
    url: str
    headers: dict[str, str] = Field(default_factory=dict)

    _check_url = field_validator("url")(classmethod(lambda cls, v: _http_url(v)))


class SlackConfig(_Config):
    """A Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat...)."""

    type: Literal["slack"]
    url: str
    username: str | None = None

    _check_url = field_validator("url")(classmethod(lambda cls, v: _http_url(v)))


class EmailConfig(_Config):
    """Plain-text email over SMTP; the password comes from an environment variable so
    that it never sits in the rules file."""

    type: Literal["email"]
    host: str
    port: int = Field(default=25, ge=1, le=65535)
    sender: str = Field(alias="from", min_length=3)
    to: list[str] = Field(min_length=1)
    starttls: bool = False
    ca_file: str | None = Field(
        default=None, description="CA bundle to verify the server with (default: system)."
    )
    username: str | None = None
    password_env: str | None = None

    @model_validator(mode="after")
    def _login_needs_password(self) -> EmailConfig:
        if self.username is not None and self.password_env is None:
            raise ValueError("'username' needs 'password_env' (the variable holding it)")
        return self

    @field_validator("to", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


ChannelConfig = Annotated[WebhookConfig | SlackConfig | EmailConfig, Field(discriminator="type")]


def _post_json(url: str, body: dict[str, Any], headers: dict[str, str], timeout: float) -> None:
    data = json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": "application/json", **headers}
    )
    # urlopen raises HTTPError on 4xx/5xx, URLError on connection problems and timeouts.
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()


class WebhookChannel:
    def __init__(self, config: WebhookConfig) -> None:
        self.config = config

    def send(self, message: AlertMessage) -> None:
        _post_json(self.config.url, message.as_json(), self.config.headers, self.config.timeout)


class SlackChannel:
    def __init__(self, config: SlackConfig) -> None:
        self.config = config

    @staticmethod
    def payload(message: AlertMessage) -> dict[str, Any]:
        """``text`` is what notifications and basic clients show; ``blocks`` adds layout."""
        context = (
            f"*{message.status}* · tier {message.tier} · {message.occurrences} occurrence(s) "
            f"· alert {message.alert_id}"
        )
        blocks = [
            {"type": "header", "text": {"type": "plain_text", "text": message.title[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": message.message or "-"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ]
        text = f"{message.title}: {message.message}" if message.message else message.title
        return {"text": text, "blocks": blocks}

    def send(self, message: AlertMessage) -> None:
        body = self.payload(message)
        if self.config.username:
            body["username"] = self.config.username
        _post_json(self.config.url, body, {}, self.config.timeout)


class EmailChannel:
    def __init__(self, config: EmailConfig) -> None:
        self.config = config

    def build(self, message: AlertMessage) -> EmailMessage:
        mail = EmailMessage()
        mail["Subject"] = message.title
        mail["From"] = self.config.sender
        mail["To"] = ", ".join(self.config.to)
        mail.set_content(message.text())
        return mail

    def send(self, message: AlertMessage) -> None:
        cfg = self.config
        with smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout) as smtp:
            if cfg.starttls:
                # Verified TLS: smtplib's default context would accept any certificate.
                smtp.starttls(context=ssl.create_default_context(cafile=cfg.ca_file))
            if cfg.username is not None and cfg.password_env is not None:
                password = os.environ.get(cfg.password_env)
                if not password:
                    raise RuntimeError(f"${cfg.password_env} (SMTP password) is not set")
                smtp.login(cfg.username, password)
            smtp.send_message(self.build(message))


def build_channel(config: WebhookConfig | SlackConfig | EmailConfig) -> Channel:
    """The channel a config describes."""
    if isinstance(config, WebhookConfig):
        return WebhookChannel(config)
    if isinstance(config, SlackConfig):
        return SlackChannel(config)
    return EmailChannel(config)
