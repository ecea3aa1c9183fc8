"""Audit checkpoints sent to an alert channel: a witness outside the home and outside the
anchor's store (issue 15, point 5: "anchored outside the home ... and the alert channel").

The deployment names one channel of its alert rules file (``channels:``, see
:mod:`dataflare_platform.alerting.channels`: a webhook, a Slack-compatible hook or e-mail)
with ``DATAFLARE_AUDIT_ANCHOR_CHANNEL``; each checkpoint the ``audit_log`` asset signs is
then also sent there as an informational alert whose ``details`` hold the signed fields.
Whoever receives them (a chat room, a ticket system, a mailbox the deployment's operator
cannot edit) holds signed counts and head hashes the home's owner cannot take back:
:func:`checkpoint_from_witness` turns a received ``details`` back into a checkpoint that
``AuditLog.verify(..., anchored=[...])`` checks the log against, so a log emptied together
with its checkpoints *and* its primary anchor still fails against what the channel got.

A channel cannot be read back, so it adds to the configured anchor and never replaces it;
a failed send fails the checkpoint run (the checkpoint itself is already in the log and the
primary anchor) and the unanchored tail then ages into a ``verify`` failure if it persists.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from dataflare_platform.alerting.channels import AlertMessage, Channel, build_channel
from dataflare_platform.compliance.audit import AuditCheckpoint
from dataflare_platform.errors import ConfigError

ENV_ANCHOR_CHANNEL = "DATAFLARE_AUDIT_ANCHOR_CHANNEL"
WITNESS_RULE = "audit_checkpoint"
_FIELDS = ("seq", "entries", "head_hash", "signed_at", "key_id", "algorithm", "signature")


def checkpoint_alert(cp: AuditCheckpoint) -> AlertMessage:
    """The checkpoint as an informational alert; ``details`` carry the signed fields."""
    fields = cp.model_dump(mode="json", include=set(_FIELDS))
    return AlertMessage(
        alert_id=0,
        fingerprint=f"{WITNESS_RULE}:{cp.key_id}:{cp.seq}",
        rule=WITNESS_RULE,
        group_key="",
        labels={"kind": WITNESS_RULE},
        severity="info",
        status="resolved",
        reason="firing",
        tier=0,
        occurrences=1,
        message=(
            f"audit checkpoint: {cp.entries} entries up to seq {cp.seq}, head "
            f"{cp.head_hash[:16]}, signed by key {cp.key_id}"
        ),
        first_seen=cp.signed_at,
        last_seen=cp.signed_at,
        details=fields,
    )


def checkpoint_from_witness(details: dict[str, Any]) -> AuditCheckpoint:
    """A checkpoint received by the channel, to verify a log against."""
    values = {k: details.get(k) for k in _FIELDS}
    values["signed_at"] = datetime.fromisoformat(str(values["signed_at"]))
    return AuditCheckpoint.model_validate(values)


class ChannelAnchor:
    """Sends each checkpoint to one alert channel (write-only)."""

    def __init__(self, channel: Channel, name: str) -> None:
        self.channel, self.name = channel, name

    def record(self, cp: AuditCheckpoint) -> None:
        self.channel.send(checkpoint_alert(cp))


def configured_channel_anchor(rules_path: Path) -> ChannelAnchor | None:
    """The channel named by ``$DATAFLARE_AUDIT_ANCHOR_CHANNEL`` in the deployment's alert
    rules file, or None when the variable is unset; a name the file does not define is a
    ConfigError (a witness that silently goes nowhere is none)."""
    from dataflare_platform.alerting import RuleSet

    name = os.environ.get(ENV_ANCHOR_CHANNEL, "").strip()
    if not name:
        return None
    if not rules_path.is_file():
        raise ConfigError(
            "audit settings", [(ENV_ANCHOR_CHANNEL, f"no alert rules file at {rules_path}")]
        )
    channels = RuleSet.from_yaml(rules_path).channels
    if name not in channels:
        raise ConfigError(
            "audit settings",
            [(ENV_ANCHOR_CHANNEL, f"{name!r} is not a channel of {rules_path}")],
        )
    return ChannelAnchor(build_channel(channels[name]), name)
