"""Redis Streams connection settings, apart from the client code (``streams``): a
pipeline's settings are validated at load, and importing the redis client then would
cost every pipeline ~0.1 s whatever its sources (issue 21, cold start)."""

from __future__ import annotations

from pydantic import Field, PositiveFloat, PositiveInt, field_validator, model_validator

from dataflare_platform.connectors.broker import StreamSettings
from dataflare_platform.errors import InvalidInputError
from dataflare_platform.secrets import PlatformSecretRef, url_credential_problem
from dataflare_platform.tls import TlsSettings


class RedisSettings(StreamSettings):
    url: str = Field("redis://127.0.0.1:6379/0", pattern=r"^(redis|rediss|unix)://\S+$")
    stream: str = Field(pattern=r"^\S{1,512}$", description="The stream's key")
    append_messages: PositiveInt = Field(2000, description="Entries per append script call")
    append_bytes: PositiveInt = Field(8 << 20, description="Payload bytes per append call")
    maxlen: PositiveInt | None = Field(None, description="Approximate length cap (MAXLEN ~)")
    group: str = Field("dataflare", pattern=r"^\S{1,200}$")
    consumer: str = Field("dataflare", pattern=r"^\S{1,200}$", description="Member name")
    group_start: str = Field("0", pattern=r"^(0|\$|\d+-\d+)$", description="New group: from")
    claim_idle_s: PositiveFloat | None = Field(
        None, description="fetch() first adopts other members' entries pending this long"
    )
    connect_timeout_s: PositiveFloat = 2.0
    socket_timeout_s: PositiveFloat = 30.0
    tls: TlsSettings | None = Field(
        None, description="TLS for a rediss:// url (CA, client certificate, server name)"
    )

    @model_validator(mode="after")
    def _tls_needs_rediss(self) -> RedisSettings:
        # TLS is on exactly when the url says rediss://: a tls block on a plain url would
        # otherwise read as protected while the connection is not.
        if self.tls is not None and not self.url.startswith("rediss://"):
            raise InvalidInputError("tls is set: the url must start with rediss://")
        return self

    @property
    def uses_tls(self) -> bool:
        return self.url.startswith("rediss://")

    # Credentials: never in ``url`` (refused at load); a reference read at connect.
    username: str | None = Field(None, pattern=r"^\S{1,200}$", description="ACL user")
    password: PlatformSecretRef | None = Field(None, description="{env: ...} or {file: ...}")

    @field_validator("url")
    @classmethod
    def _no_literal_credential(cls, value: str) -> str:
        problem = url_credential_problem(value)
        if problem:
            raise ValueError(problem)
        return value
