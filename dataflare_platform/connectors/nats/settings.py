"""Settings of the NATS JetStream connectors, checked before anything connects."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, PositiveFloat, PositiveInt, field_validator, model_validator

from dataflare_platform.connectors.broker import StreamSettings
from dataflare_platform.errors import InvalidInputError
from dataflare_platform.secrets import PlatformSecretRef, url_credential_problem
from dataflare_platform.tls import TlsSettings

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]  # streams and consumers
Subject = Annotated[str, Field(pattern=r"^[^\s.*>]+(\.[^\s.*>]+)*$")]  # no wildcards
SubjectPattern = Annotated[str, Field(pattern=r"^([^\s.*>]+|\*)(\.([^\s.*>]+|\*))*(\.>)?$|^>$")]


class NatsSettings(StreamSettings):
    url: str = Field("nats://127.0.0.1:4222", pattern=r"^(nats|tls)://\S+$")
    stream: Name
    subject: Subject | None = Field(None, description="Publish subject; default STREAM.events")
    subjects: list[SubjectPattern] | None = Field(
        None, min_length=1, description="Subjects a created stream captures; default STREAM.>"
    )
    batch_rows: PositiveInt = Field(4096, description="Rows per arrow message (split if >1 MB)")
    max_in_flight: PositiveInt = Field(4096, description="Publishes awaiting their ack")
    durable: Name = Field("dataflare", description="Durable consumer of a consumer group")
    ack_wait_s: PositiveFloat = Field(30.0, description="Redelivery after this long unacked")
    max_ack_pending: PositiveInt = Field(100_000, description="Unacked messages per consumer")
    max_deliver: PositiveInt | None = Field(None, description="Deliveries before giving up")
    connect_timeout_s: PositiveFloat = 2.0
    request_timeout_s: PositiveFloat = 10.0
    reconnect_attempts: int = Field(3, ge=0)
    storage: Literal["file", "memory"] = "file"
    max_msgs: PositiveInt | None = Field(None, description="Retention limit of a created stream")
    duplicate_window_s: PositiveFloat = 120.0
    tls: TlsSettings | None = Field(
        None, description="TLS for a tls:// url (CA, client certificate, server name)"
    )

    @property
    def uses_tls(self) -> bool:
        return self.url.startswith("tls://")

    @model_validator(mode="after")
    def _tls_needs_tls_url(self) -> Self:
        # TLS is on exactly when the url says tls://: a tls block on a nats:// url would
        # otherwise read as protected while nats-py connects in plain text.
        if self.tls is not None and not self.uses_tls:
            raise InvalidInputError("tls is set: the url must start with tls://")
        return self

    # Credentials: never in ``url`` (refused at load); references read at connect.
    user: str | None = Field(None, pattern=r"^\S{1,200}$", description="With 'password'")
    password: PlatformSecretRef | None = Field(None, description="{env: ...} or {file: ...}")
    token: PlatformSecretRef | None = Field(None, description="{env: ...} or {file: ...}")

    @field_validator("url")
    @classmethod
    def _no_literal_credential(cls, value: str) -> str:
        problem = url_credential_problem(value, token_user=True)
        if problem:
            raise ValueError(problem)
        return value

    @property
    def publish_subject(self) -> str:
        return self.subject or f"{self.stream}.events"

    @property
    def stream_subjects(self) -> list[str]:
        return list(self.subjects) if self.subjects else [f"{self.stream}.>"]

    @model_validator(mode="after")
    def _subject_captured(self) -> Self:
        if not any(subject_matches(p, self.publish_subject) for p in self.stream_subjects):
            raise ValueError(
                f"subject {self.publish_subject!r} is not captured by the stream's"
                f" subjects {self.stream_subjects}"
            )
        return self


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: ``*`` is one token, a final ``>`` one or more."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(have) == len(want)
