"""What a Kafka source or sink is told: the cluster, the topic, how messages are
encoded, and librdkafka properties, with secrets only from the environment.

``client`` passes librdkafka properties through (TLS files, SASL mechanism, timeouts),
except the ones the connector owns for its guarantees (group, isolation, idempotence,
transactions) and any secret: a password or key goes in ``secrets_from_env`` as the
*name* of an environment variable, read when the client is built and never stored in
settings, logs or errors.
"""

from __future__ import annotations

import os
import re
from typing import Any, Literal, Self

from pydantic import Field, PositiveFloat, PositiveInt, field_validator, model_validator

from dataflare_platform.connectors.broker import BrokerSettings, Format
from dataflare_platform.errors import ConfigError
from dataflare_platform.events.schema_policy import DEFAULT_SCHEMA_POLICY, MessageSchemaPolicy

# Kafka's legal topic names, starting with a letter or digit (so never "." or "..").
KAFKA_TOPIC = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,248}$"
BOOTSTRAP = r"^[A-Za-z0-9.-]+:\d{1,5}(,[A-Za-z0-9.-]+:\d{1,5})*$"
GROUP = r"^[A-Za-z0-9._-]{1,200}$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"

# Properties the connector sets itself: its exactly-once and offset guarantees rest on them.
OWNED = frozenset(
    {
        "bootstrap.servers",
        "group.id",
        "isolation.level",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "enable.partition.eof",
        "auto.offset.reset",
        "transactional.id",
        "enable.idempotence",
        "acks",
        "partitioner",
    }
)
# Substrings of property names that hold secrets (sasl.password, ssl.key.password,
# ssl.key.pem, sasl.oauthbearer.client.secret, ...): environment only.
SECRET_MARKS = ("password", "secret", ".pem", "token", "sasl.jaas")


class KafkaSettings(BrokerSettings):
    """A topic on a Kafka cluster and how its messages are encoded."""

    bootstrap_servers: str = Field(
        pattern=BOOTSTRAP, description="host:port[,host:port...] of the cluster"
    )
    topic: str = Field(pattern=KAFKA_TOPIC)
    format: Format = "json"
    batch_rows: PositiveInt = Field(4096, description="Rows per arrow message")
    fetch_messages: PositiveInt = Field(5000, description="Messages per read")
    on_schema_mismatch: MessageSchemaPolicy = DEFAULT_SCHEMA_POLICY
    timeout_s: PositiveFloat = Field(30.0, description="Metadata, commit and transaction calls")
    client: dict[str, str] = Field(
        default_factory=dict, description="More librdkafka properties (no secrets)"
    )
    secrets_from_env: dict[str, str] = Field(
        default_factory=dict,
        description="librdkafka property -> environment variable holding its value",
    )

    @field_validator("client")
    @classmethod
    def _no_owned_or_secret(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if key in OWNED:
                raise ValueError(f"{key!r} is set by the connector (its guarantees rest on it)")
            if any(mark in key for mark in SECRET_MARKS):
                raise ValueError(
                    f"{key!r} holds a secret: name an environment variable in secrets_from_env"
                )
        return value

    @field_validator("secrets_from_env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key, variable in value.items():
            if key in OWNED:
                raise ValueError(f"{key!r} is set by the connector")
            if not re.match(ENV_NAME, variable):
                raise ValueError(f"{key!r}: {variable!r} is not an environment variable name")
        return value

    def properties(self, where: str, **owned: Any) -> dict[str, Any]:
        """librdkafka configuration: ``client``, the secrets read from the environment now
        (a missing variable is a ``ConfigError`` naming it, not its value), and ``owned``."""
        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers, **self.client}
        missing = []
        for key, variable in self.secrets_from_env.items():
            value = os.environ.get(variable)
            if value is None:
                missing.append((f"{where}.secrets_from_env.{key}", f"${variable} is not set"))
            else:
                config[key] = value
        if missing:
            raise ConfigError(f"kafka topic {self.topic!r}", missing)
        config.update(owned)
        return config


class KafkaGroupMembership(BrokerSettings):
    """How partition-parallel workers take part in the consumer group when Kafka's group
    coordinator, not the workers' leases, decides which worker owns which partition.

    A rebalance finishes only when every member has rejoined or has been dropped for
    silence, so these three decide how fast partitions move (measured on librdkafka's
    mock cluster in docs/events.md): a killed worker's partitions wait for its
    ``session_timeout_ms`` to pass; members learn of a rebalance at their next heartbeat.
    Brokers refuse sessions outside ``group.min/max.session.timeout.ms`` (6 s .. 30 min
    by default)."""

    session_timeout_ms: int = Field(
        10_000,
        ge=1_000,
        le=3_600_000,
        description="A member silent this long is dropped and its partitions reassigned",
    )
    heartbeat_interval_ms: int = Field(
        1_000, ge=100, le=3_600_000, description="How soon a member learns of a rebalance"
    )
    strategy: Literal["range", "roundrobin", "cooperative-sticky"] = Field(
        "range",
        description="Partition assignment: range/roundrobin revoke everything at each"
        " rebalance (one round); cooperative-sticky moves only what changes (two rounds)",
    )

    @model_validator(mode="after")
    def _heartbeat_within_session(self) -> Self:
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ValueError(
                f"heartbeat_interval_ms ({self.heartbeat_interval_ms}) must be at most a"
                f" third of session_timeout_ms ({self.session_timeout_ms}): a member"
                " must heartbeat several times per session"
            )
        return self

    def properties(self) -> dict[str, Any]:
        return {
            "session.timeout.ms": self.session_timeout_ms,
            "heartbeat.interval.ms": self.heartbeat_interval_ms,
            "partition.assignment.strategy": self.strategy,
        }


class KafkaSinkOptions(BrokerSettings):
    """What only a sink needs (mixed into its ``kind: kafka`` settings)."""

    key: str | None = Field(
        None, description="Output column whose value is the message key (partitioning)"
    )
    side_topic: str | None = Field(
        None, pattern=KAFKA_TOPIC, description="Late rows and dead letters (default <topic>.side)"
    )
    checkpoint_topic: str = Field(
        "dataflare.checkpoints",
        pattern=KAFKA_TOPIC,
        description="Compacted topic holding each pipeline's checkpoint (docs/events.md)",
    )
    transactional_id_prefix: str = Field("dataflare.", pattern=r"^[A-Za-z0-9._-]{0,100}$")
    transaction_timeout_s: PositiveInt = Field(
        60, description="The broker aborts a transaction open longer (a dead writer's)"
    )


class KafkaSinkSettings(KafkaSettings, KafkaSinkOptions):
    """Settings of a ``kind: kafka`` sink (``kafka.sink`` says what each one does)."""

    kind: Literal["kafka"] = "kafka"
