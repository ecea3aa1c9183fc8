"""Alerting: YAML rules over platform events, durable alert state, and notifications
(JSON webhook, Slack-compatible webhook, email) with de-duplication, silences,
acknowledgements and tiered escalation. Data plane: nothing here imports Dagster; the
control plane converts Dagster events into :class:`AlertEvent`."""

from dataflare_platform.alerting.channels import (
    AlertMessage,
    Channel,
    EmailChannel,
    EmailConfig,
    SlackChannel,
    SlackConfig,
    WebhookChannel,
    WebhookConfig,
    build_channel,
)
from dataflare_platform.alerting.engine import EVENT_KINDS, AlertEvent, AlertManager
from dataflare_platform.alerting.rules import (
    CheckFailedRule,
    EscalationPolicy,
    EscalationTier,
    FreshnessViolatedRule,
    InstigatorErroredRule,
    MetricThresholdRule,
    PrometheusAlertRule,
    RuleSet,
    RunFailedRule,
    parse_duration,
)
from dataflare_platform.alerting.state import (
    Acknowledgement,
    Alert,
    AlertStore,
    Notification,
    Silence,
    default_state_url,
)

__all__ = [
    "EVENT_KINDS",
    "Acknowledgement",
    "Alert",
    "AlertEvent",
    "AlertManager",
    "AlertMessage",
    "AlertStore",
    "Channel",
    "CheckFailedRule",
    "EmailChannel",
    "EmailConfig",
    "EscalationPolicy",
    "EscalationTier",
    "FreshnessViolatedRule",
    "InstigatorErroredRule",
    "MetricThresholdRule",
    "Notification",
    "PrometheusAlertRule",
    "RuleSet",
    "RunFailedRule",
    "Silence",
    "SlackChannel",
    "SlackConfig",
    "WebhookChannel",
    "WebhookConfig",
    "build_channel",
    "default_state_url",
    "parse_duration",
]
