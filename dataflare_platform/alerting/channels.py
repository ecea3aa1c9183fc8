"""Where alerts go: a generic JSON webhook, a Slack-compatible webhook, and email (SMTP).

A channel's ``send`` raises on failure; the engine catches it and records the error on
the alert, so one broken receiver never stops the others from being told. Every send has
a timeout: a hung receiver must not hang the sensor that observes events.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import smtplib
import ssl
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import datetime
from email.message import EmailMessage
from typing import Annotated, Any, Literal, Protocol, Self, runtime_checkable
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from dataflare_platform.errors import DataflareError, InvalidInputError
from dataflare_platform.models import StrictModel
from dataflare_platform.secrets import HINT as SECRET_HINT
from dataflare_platform.secrets import (
    PlatformSecretRef,
    is_credential_header,
    prefixed_env,
    redact,
    url_credential_problem,
)
from dataflare_platform.tls import PrivateKeyFile, ReadableFile


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


class DeliveryError(DataflareError):
    """A channel could not deliver (the message says why; never a credential)."""


class _Config(StrictModel):
    model_config = ConfigDict(populate_by_name=True)

    timeout: float = Field(default=10.0, gt=0, description="Seconds before giving up.")
    ca_file: str | None = Field(
        default=None, description="CA bundle to verify the server with (default: system)."
    )
    cert_file: ReadableFile | None = Field(
        default=None, description="Client certificate (PEM) for mutual TLS; needs key_file."
    )
    key_file: PrivateKeyFile | None = Field(
        default=None, description="Client private key (PEM, mode 0600) for mutual TLS."
    )

    @model_validator(mode="after")
    def _client_pair(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            raise InvalidInputError(
                f"mutual TLS needs cert_file and key_file: {missing} is missing"
            )
        return self

    def tls_context(self) -> ssl.SSLContext:
        """Verified TLS 1.2+ (names and chain; the stdlib's SMTP default accepts anything),
        with the client certificate where the receiver asks for mutual TLS."""
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            if self.cert_file is not None and self.key_file is not None:
                context.load_cert_chain(str(self.cert_file), str(self.key_file))
            return context
        except (OSError, ssl.SSLError) as err:
            files = f"ca_file {self.ca_file}" + (
                f", cert_file {self.cert_file}" if self.cert_file else ""
            )
            raise DeliveryError(f"{files}: {err}") from None


def _is_loopback(host: str | None) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def _check_transport(url: str, allow_http_loopback: bool) -> str | None:
    """Why ``url`` may not carry alerts, or None: https only; plain http only to a
    loopback host and only when the channel says ``allow_http_loopback: true``."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and parts.hostname:
        if allow_http_loopback and _is_loopback(parts.hostname):
            return None
        return (
            "must be an https:// URL (plain http only to 127.0.0.1/localhost with "
            "allow_http_loopback: true)"
        )
    return "must be an https:// URL"


def _literal_url(value: str | PlatformSecretRef, hook_path_is_secret: bool) -> Any:
    """A literal URL is refused when it carries a credential (user part, token query,
    or, for Slack-style hooks, the ``/services/...``/``/hooks/...`` path that *is* the
    token): such URLs come from ``{env: ...}`` or ``{file: ...}``."""
    if isinstance(value, str):
        problem = url_credential_problem(value)
        path = urlsplit(value).path
        if problem is None and hook_path_is_secret and ("/services/" in path or "/hooks/" in path):
            problem = f"a Slack/Mattermost hook URL is a credential; {SECRET_HINT}"
        if problem:
            raise InvalidInputError(problem)
    return value


class _HttpConfig(_Config):
    # Declared before ``url`` so that the URL's validator sees it.
    allow_http_loopback: bool = Field(
        default=False, description="Allow plain http:// to a loopback receiver (tests, sidecars)."
    )
    url: str | PlatformSecretRef

    @staticmethod
    def _transport(value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            problem = _check_transport(value, bool(info.data.get("allow_http_loopback")))
            if problem:
                raise InvalidInputError(problem)
        return value

    def resolved_url(self) -> str:
        """The URL, read from its reference if it has one; checked again, since a
        referenced URL is only known now."""
        if isinstance(self.url, str):
            return self.url
        url = self.url.read()
        problem = _check_transport(url, self.allow_http_loopback)
        if problem:
            raise DeliveryError(f"the URL in {self.url.describe()} {problem}")
        return url


class WebhookConfig(_HttpConfig):
    """POST the alert as a JSON object (``AlertMessage.as_json``)."""

    type: Literal["webhook"]
    headers: dict[str, str | PlatformSecretRef] = Field(default_factory=dict)

    @field_validator("url", mode="after")
    @classmethod
    def _url_literal(cls, value: Any, info: ValidationInfo) -> Any:
        return cls._transport(_literal_url(value, hook_path_is_secret=False), info)

    @field_validator("headers", mode="after")
    @classmethod
    def _header_literals(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name, header in value.items():
            if isinstance(header, str) and is_credential_header(name):
                raise ValueError(f"header {name!r} holds a credential; {SECRET_HINT}")
        return value

    def resolved_headers(self) -> dict[str, str]:
        return {k: v if isinstance(v, str) else v.read() for k, v in self.headers.items()}


class SlackConfig(_HttpConfig):
    """A Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat...)."""

    type: Literal["slack"]
    username: str | None = None

    @field_validator("url", mode="after")
    @classmethod
    def _url_literal(cls, value: Any, info: ValidationInfo) -> Any:
        return cls._transport(_literal_url(value, hook_path_is_secret=True), info)


class EmailConfig(_Config):
    """Plain-text email over SMTP. A login happens only inside TLS (``starttls: true`` or
    ``smtps: true``), verified against ``ca_file``; the password comes from a reference
    (``password: {env: DATAFLARE_SECRET_...}`` / ``{file: ...}``, or the shorthand
    ``password_env``) so that it never sits in the rules file."""

    type: Literal["email"]
    host: str
    port: int = Field(default=25, ge=1, le=65535)
    sender: str = Field(alias="from", min_length=3)
    to: list[str] = Field(min_length=1)
    starttls: bool = False
    smtps: bool = Field(default=False, description="TLS from the first byte (port 465).")
    username: str | None = None
    password: PlatformSecretRef | None = None
    password_env: str | None = Field(
        default=None, description="Shorthand for password: {env: NAME}; DATAFLARE_SECRET_*."
    )

    @field_validator("password_env")
    @classmethod
    def _prefixed(cls, value: str | None) -> str | None:
        return value if value is None else prefixed_env(value)

    @model_validator(mode="after")
    def _login_needs_password(self) -> EmailConfig:
        if self.password is not None and self.password_env is not None:
            raise ValueError("give one of 'password' or 'password_env'")
        if self.username is not None and self.secret is None:
            raise ValueError(
                "'username' needs 'password' ({env: DATAFLARE_SECRET_...}) or 'password_env'"
            )
        if self.starttls and self.smtps:
            raise ValueError("give one of 'starttls' or 'smtps'")
        if self.username is not None and not (self.starttls or self.smtps):
            raise ValueError(
                "a login over plain SMTP sends the password in clear: set 'starttls: true'"
                " or 'smtps: true'"
            )
        return self

    @property
    def secret(self) -> PlatformSecretRef | None:
        if self.password_env is not None:
            return PlatformSecretRef(env=self.password_env)
        return self.password

    @field_validator("to", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


ChannelConfig = Annotated[WebhookConfig | SlackConfig | EmailConfig, Field(discriminator="type")]


def _post_json(config: _HttpConfig, body: dict[str, Any], headers: dict[str, str]) -> None:
    """POST over verified TLS; a failure is a ``DeliveryError`` that names the status or
    the reason, with the URL and header values redacted (a hook URL is a credential)."""
    url = config.resolved_url()
    data = json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method="POST", headers={"Content-Type": "application/json", **headers}
    )
    handlers: list[urllib.request.BaseHandler] = [_RefuseRedirects()]
    if url.startswith("https://"):
        handlers.append(urllib.request.HTTPSHandler(context=config.tls_context()))
    opener = urllib.request.build_opener(*handlers)
    try:
        # HTTPError on 4xx/5xx (and on any redirect: headers may carry a credential, so
        # nothing follows one), URLError on connection problems, TLS failures, timeouts.
        with opener.open(request, timeout=config.timeout) as reply:
            reply.read()
    except (OSError, ValueError, http.client.HTTPException) as err:
        said = redact(f"{type(err).__name__}: {err}", url, *headers.values())
        raise DeliveryError(f"POST to {_where(url)} failed: {said}") from None


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is a failed delivery, never followed (to another host or to http)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _where(url: str) -> str:
    """Scheme, host and port only: a hook URL's path and query may be its token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or ''}".rstrip(":")


class WebhookChannel:
    def __init__(self, config: WebhookConfig) -> None:
        self.config = config

    def send(self, message: AlertMessage) -> None:
        _post_json(self.config, message.as_json(), self.config.resolved_headers())


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
        _post_json(self.config, body, {})


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
        secret = cfg.secret
        password = secret.read() if secret is not None else None
        try:
            if cfg.smtps:
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    cfg.host, cfg.port, timeout=cfg.timeout, context=cfg.tls_context()
                )
            else:
                smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
            with smtp:
                if cfg.starttls:
                    smtp.starttls(context=cfg.tls_context())
                if cfg.username is not None and password is not None:
                    if not (cfg.smtps or cfg.starttls):  # the settings refuse it; twice safe
                        raise DeliveryError("refusing an SMTP login outside TLS")
                    smtp.login(cfg.username, password)
                smtp.send_message(self.build(message))
        except (OSError, smtplib.SMTPException, ssl.SSLError) as err:
            said = redact(f"{type(err).__name__}: {err}", password)
            raise DeliveryError(f"SMTP to {cfg.host}:{cfg.port} failed: {said}") from None


def build_channel(config: WebhookConfig | SlackConfig | EmailConfig) -> Channel:
    """The channel a config describes."""
    if isinstance(config, WebhookConfig):
        return WebhookChannel(config)
    if isinstance(config, SlackConfig):
        return SlackChannel(config)
    return EmailChannel(config)
