"""The alert manager: turns observed events into alerts, and alerts into notifications.

It knows nothing about Dagster: the control plane converts Dagster events (failed checks
and runs, errored ticks, freshness, materialization metadata) into :class:`AlertEvent`
and calls :meth:`AlertManager.observe`; a sensor or schedule calls :meth:`tick` to drive
escalation. Time is always passed in (``now``), never read here, so that escalation and
windows are decided by the caller's clock and tests can drive them deterministically.

Lifecycle of an alert (one per fingerprint = rule + group key while it is open):

* first matching event: ``firing``, tier-1 channels notified (unless silenced);
* repeated events: occurrences counted; re-notified only once ``repeat_interval`` passed;
* unacknowledged past a tier's timeout: :meth:`tick` notifies the next tier, once;
* :meth:`acknowledge` stops escalation and repeats; :meth:`resolve` closes it, and the
  next matching event opens a new alert.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import col, select

from dataflare_platform.alerting.channels import (
    AlertMessage,
    Channel,
    EmailConfig,
    SlackConfig,
    WebhookConfig,
    build_channel,
)
from dataflare_platform.alerting.rules import (
    CheckFailedRule,
    FreshnessViolatedRule,
    InstigatorErroredRule,
    MetricThresholdRule,
    PrometheusAlertRule,
    Rule,
    RuleSet,
    RunFailedRule,
    matches_prefix,
)
from dataflare_platform.alerting.state import (
    Alert,
    AlertStore,
    MetricSample,
    Notification,
    Silence,
)
from dataflare_platform.errors import ConfigError, InvalidInputError, NotFoundError
from dataflare_platform.observability.counters import count
from dataflare_platform.times import as_utc

EVENT_KINDS = (
    "check_failed",
    "run_failed",
    "instigator_errored",
    "freshness_violated",
    "metric",
    "prometheus_alert",
)

SEVERITIES = ("info", "warning", "error", "critical")


@dataclass(frozen=True)
class AlertEvent:
    """One thing that happened, in plain terms (no Dagster types).

    ``kind`` is one of :data:`EVENT_KINDS`; ``metric`` events carry numbers in
    ``metadata`` and feed the ``metric_threshold`` rules of their asset. ``severity`` is
    the asset check's severity (``WARN`` / ``ERROR``). Asset keys are ``/``-joined paths.
    ``instigator`` is the sensor or schedule name.
    """

    kind: str
    timestamp: datetime
    asset: str | None = None
    job: str | None = None
    instigator: str | None = None
    check: str | None = None
    run_id: str | None = None
    severity: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    message: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)


ChannelLike = Channel | WebhookConfig | SlackConfig | EmailConfig


class AlertManager:
    """Rules + durable state + channels. Safe to re-create on every sensor tick: all
    that matters lives in the database at ``state_url``."""

    def __init__(
        self,
        rules: RuleSet | Sequence[Rule],
        state_url: str,
        channels: Mapping[str, ChannelLike] | None = None,
    ) -> None:
        self.rules = rules if isinstance(rules, RuleSet) else RuleSet.load({"rules": rules})
        configured = channels if channels is not None else self.rules.channels
        self.channels: dict[str, Channel] = {}
        for name, channel in configured.items():
            if isinstance(channel, WebhookConfig | SlackConfig | EmailConfig):
                self.channels[name] = build_channel(channel)
            else:
                self.channels[name] = channel
        problems = self.rules.reference_problems(self.channels.keys())
        if problems:
            raise ConfigError("alert rules", problems)
        self._by_name = {rule.name: rule for rule in self.rules.rules}
        self.store = AlertStore(state_url)

    def close(self) -> None:
        self.store.close()

    # -- events --------------------------------------------------------------------------

    def observe(self, event: AlertEvent, now: datetime) -> list[Alert]:
        """Match the event against every rule; returns the alerts it opened or updated."""
        if event.kind not in EVENT_KINDS:
            raise InvalidInputError(f"unknown event kind {event.kind!r} (one of {EVENT_KINDS})")
        if event.kind == "metric":
            if event.asset is None:
                raise InvalidInputError("a metric event needs an asset")
            return self.observe_metric(event.asset, event.metadata, now)
        touched = []
        for rule in self.rules.rules:
            if rule.kind == event.kind and _matches(rule, event):
                message = event.message or _default_message(event)
                touched.append(self._fire(rule, event, message, now))
        return touched

    def resolve_event(self, event: AlertEvent, now: datetime) -> list[Alert]:
        """Close the open alerts ``event`` would fire: a source that says "this is over"
        (Alertmanager's ``resolved``) closes the platform's alert instead of leaving it
        to an operator. Returns the alerts it resolved (none open: nothing to do)."""
        if event.kind not in EVENT_KINDS:
            raise InvalidInputError(f"unknown event kind {event.kind!r} (one of {EVENT_KINDS})")
        now = as_utc(now)
        resolved = []
        for rule in self.rules.rules:
            if rule.kind == event.kind and _matches(rule, event):
                fingerprint = _fingerprint(rule.name, _group_key(_labels(rule, event)))
                alert = self._open_alert(fingerprint)
                if alert is not None:
                    resolved.append(self.store.resolve(alert.id or 0, now))
        return resolved

    def observe_metric(self, asset: str, values: Mapping[str, Any], now: datetime) -> list[Alert]:
        """Record one evaluation of an asset's metrics and check the metric rules.

        A rule fires only while its window condition holds (enough evaluations, or
        history covering the whole duration); with ``auto_resolve`` its open alert is
        resolved as soon as the condition stops holding.
        """
        now = as_utc(now)
        numbers = {
            k: float(v)
            for k, v in values.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        }
        rules = [
            r
            for r in self.rules.rules
            if isinstance(r, MetricThresholdRule) and matches_prefix(asset, r.assets)
        ]
        watched = {r.metric for r in rules} & numbers.keys()
        if not watched:
            return []
        with self.store.session() as s:
            for metric in sorted(watched):
                s.add(MetricSample(asset=asset, metric=metric, at=now, value=numbers[metric]))
            s.commit()
        event = AlertEvent(kind="metric", timestamp=now, asset=asset, metadata=dict(values))
        touched = []
        for rule in rules:
            if rule.metric not in watched:
                continue
            value = self._window_value(rule, asset, now)
            if value is not None and rule.holds(value):
                message = (
                    f"{rule.metric} on {asset}: {rule.aggregate} {rule.window.describe()} "
                    f"= {value:g} {rule.op} {rule.threshold:g}"
                )
                touched.append(self._fire(rule, event, message, now))
            elif rule.auto_resolve:
                labels = _labels(rule, event)
                alert = self._open_alert(_fingerprint(rule.name, _group_key(labels)))
                if alert is not None:
                    touched.append(self.resolve(alert.id or 0, now))
        for metric in watched:
            self._prune(asset, metric, now)
        return touched

    # -- operator actions ----------------------------------------------------------------

    def acknowledge(self, ref: int | str, who: str, now: datetime, note: str = "") -> Alert:
        """By alert id or fingerprint; stops escalation and repeat notifications."""
        return self.store.acknowledge(ref, who, now, note)

    def resolve(self, ref: int | str, now: datetime) -> Alert:
        return self.store.resolve(ref, now)

    def silence(
        self,
        rule: str,
        until: datetime,
        by: str,
        reason: str,
        now: datetime,
        group_key: str | None = None,
    ) -> Silence:
        if rule not in self._by_name:
            raise NotFoundError(f"no rule {rule!r}")
        return self.store.silence(rule, until, by, reason, now, group_key)

    def alerts(self, status: str | None = None) -> list[Alert]:
        return self.store.alerts(status)

    def alert(self, ref: int | str) -> Alert:
        return self.store.alert(ref)

    def notifications(self, alert_id: int | None = None) -> list[Notification]:
        return self.store.notifications(alert_id)

    # -- time ----------------------------------------------------------------------------

    def tick(self, now: datetime) -> list[Alert]:
        """Advance time: deliver notifications held back by silences that have ended, and
        escalate unacknowledged alerts whose tier timed out (one tier per alert per
        tick, each tier exactly once: the tier is committed before its channels are
        called). Returns the alerts that notified someone."""
        now = as_utc(now)
        touched = []
        for alert in self.store.alerts("firing"):
            rule = self._by_name.get(alert.rule)
            if rule is None:
                continue  # the rule was removed from the file: leave its alerts alone
            if self.store.active_silence(rule.name, alert.group_key, now) is not None:
                continue
            if alert.notify_pending:
                touched.append(self._notify(alert, rule, "unsilenced", now))
                continue
            escalated = self._escalate(alert, rule, now)
            if escalated is not None:
                count("dataflare_alerts_total", (rule.name, "escalated"))
                touched.append(self._notify(escalated, rule, "escalation", now))
        return touched

    # -- internals -----------------------------------------------------------------------

    def _escalate(self, alert: Alert, rule: Rule, now: datetime) -> Alert | None:
        if rule.escalation is None or alert.tier_since is None:
            return None
        tiers = self.rules.escalation_policies[rule.escalation].tiers
        if alert.tier >= len(tiers):
            return None
        timeout = tiers[alert.tier - 1].timeout
        if timeout is None or now < alert.tier_since + timeout:
            return None
        with self.store.session() as s:
            # Re-read: an acknowledgement may have landed since the list was read.
            current = s.get(Alert, alert.id)
            if current is None or current.status != "firing" or current.tier != alert.tier:
                return None
            current.tier += 1
            current.tier_since = now
            s.add(current)
            s.commit()
            return current

    def _open_alert(self, fingerprint: str) -> Alert | None:
        with self.store.session() as s:
            query = (
                select(Alert)
                .where(Alert.fingerprint == fingerprint, Alert.status != "resolved")
                .order_by(col(Alert.id).desc())
            )
            return s.exec(query).first()

    def _fire(self, rule: Rule, event: AlertEvent, message: str, now: datetime) -> Alert:
        now = as_utc(now)
        labels = _labels(rule, event)
        group_key = _group_key(labels)
        fingerprint = _fingerprint(rule.name, group_key)
        details = {"kind": event.kind, "metadata": _jsonable(event.metadata)}
        if event.run_id:
            details["run_id"] = event.run_id
        if event.check:
            details["check"] = event.check
        reason: str | None = None
        with self.store.session() as s:
            query = (
                select(Alert)
                .where(Alert.fingerprint == fingerprint, Alert.status != "resolved")
                .order_by(col(Alert.id).desc())
            )
            alert = s.exec(query).first()
            if alert is None:
                alert = Alert(
                    fingerprint=fingerprint,
                    rule=rule.name,
                    group_key=group_key,
                    labels=labels,
                    severity=_severity(rule, event),
                    message=message,
                    first_seen=now,
                    last_seen=now,
                )
                reason = "firing"
            else:
                alert.occurrences += 1
                alert.last_seen = max(alert.last_seen, now)
                alert.message = message
                due = (
                    alert.last_notified_at is None
                    or now - alert.last_notified_at >= rule.repeat_interval
                )
                if alert.status == "firing" and due:
                    reason = "repeat" if alert.last_notified_at is not None else "firing"
            s.add(alert)
            s.commit()
        if reason is not None:
            event_name = "fired" if reason == "firing" else "repeated"
            count("dataflare_alerts_total", (rule.name, event_name))
            alert = self._notify(alert, rule, reason, now, details)
        return alert

    def _tier_channels(self, rule: Rule, tier: int) -> list[str]:
        if rule.escalation is None:
            return list(rule.channels)
        tiers = self.rules.escalation_policies[rule.escalation].tiers
        return list(tiers[min(tier, len(tiers)) - 1].channels)

    def _notify(
        self,
        alert: Alert,
        rule: Rule,
        reason: str,
        now: datetime,
        details: dict[str, Any] | None = None,
    ) -> Alert:
        """Tell the alert's current tier, or record why not. Delivery errors are kept on
        the alert and in its notification rows, never raised: the other channels and
        the caller (a sensor) must carry on."""
        channels = self._tier_channels(rule, alert.tier)
        silence = self.store.active_silence(rule.name, alert.group_key, now)
        if silence is not None:
            if alert.notify_pending:
                return alert  # already recorded as suppressed under this silence
            with self.store.session() as s:
                for name in channels:
                    s.add(
                        Notification(
                            alert_id=alert.id or 0,
                            channel=name,
                            tier=alert.tier,
                            reason=reason,
                            at=now,
                            outcome="suppressed",
                            silence_id=silence.id,
                        )
                    )
                current = s.get(Alert, alert.id)
                if current is None:
                    return alert
                current.notify_pending = True
                s.add(current)
                s.commit()
                return current
        message = AlertMessage(
            alert_id=alert.id or 0,
            fingerprint=alert.fingerprint,
            rule=alert.rule,
            group_key=alert.group_key,
            labels=dict(alert.labels),
            severity=alert.severity,
            status=alert.status,
            reason=reason,
            tier=alert.tier,
            occurrences=alert.occurrences,
            message=alert.message,
            first_seen=alert.first_seen,
            last_seen=alert.last_seen,
            details=details or {},
        )
        rows = []
        errors = []
        for name in channels:
            try:
                self.channels[name].send(message)
            except Exception as err:  # any receiver failure: record it, tell the others
                error = f"{type(err).__name__}: {err}"
                errors.append(f"{name}: {error}")
                rows.append((name, "error", error))
            else:
                rows.append((name, "sent", None))
        with self.store.session() as s:
            for name, outcome, error in rows:
                s.add(
                    Notification(
                        alert_id=alert.id or 0,
                        channel=name,
                        tier=alert.tier,
                        reason=reason,
                        at=now,
                        outcome=outcome,
                        error=error,
                    )
                )
            # Re-read and touch only delivery fields: an acknowledgement may have landed
            # while the channels were being called, and it must not be overwritten.
            current = s.get(Alert, alert.id)
            if current is None:
                return alert
            current.last_notified_at = now
            if reason != "repeat":
                current.tier_since = now  # the escalation clock starts when a tier is told
            current.notify_pending = False
            current.last_error = "; ".join(errors) or None
            s.add(current)
            s.commit()
            return current

    def _window_value(self, rule: MetricThresholdRule, asset: str, now: datetime) -> float | None:
        """The aggregate over the rule's window, or None while the window is not full."""
        window = rule.window
        base = select(MetricSample).where(
            MetricSample.asset == asset, MetricSample.metric == rule.metric
        )
        with self.store.session() as s:
            if window.duration is not None:
                start = now - window.duration
                covered = s.exec(base.where(MetricSample.at <= start)).first() is not None
                if not covered:
                    return None
                samples = list(s.exec(base.where(MetricSample.at > start, MetricSample.at <= now)))
            else:
                n = window.evaluations or 1
                query = base.where(MetricSample.at <= now).order_by(
                    col(MetricSample.at).desc(), col(MetricSample.id).desc()
                )
                samples = list(s.exec(query.limit(n)))
                if len(samples) < n:
                    return None
        if not samples:
            return None
        values = [x.value for x in samples]
        if rule.aggregate == "max":
            return max(values)
        if rule.aggregate == "min":
            return min(values)
        if rule.aggregate == "avg":
            return sum(values) / len(values)
        return max(samples, key=lambda x: (x.at, x.id or 0)).value

    def _prune(self, asset: str, metric: str, now: datetime) -> None:
        """Keep what the widest window on this metric needs (plus the newest sample
        before it, which proves the history covers the window), drop the rest."""
        rules = [
            r for r in self.rules.rules if isinstance(r, MetricThresholdRule) and r.metric == metric
        ]
        keep_n = max((r.window.evaluations or 1) for r in rules)
        durations = [r.window.duration for r in rules if r.window.duration is not None]
        with self.store.session() as s:
            samples = list(
                s.exec(
                    select(MetricSample)
                    .where(MetricSample.asset == asset, MetricSample.metric == metric)
                    .order_by(col(MetricSample.at).desc(), col(MetricSample.id).desc())
                )
            )
            keep = {x.id for x in samples[:keep_n]}
            if durations:
                start = now - max(durations)
                keep.update(x.id for x in samples if x.at > start)
                older = [x for x in samples if x.at <= start]
                if older:
                    keep.add(older[0].id)
            for sample in samples:
                if sample.id not in keep:
                    s.delete(sample)
            s.commit()


def _matches(rule: Rule, event: AlertEvent) -> bool:
    if isinstance(rule, CheckFailedRule):
        severity = (event.severity or "ERROR").upper()
        return (
            severity in rule.check_severity
            and matches_prefix(event.asset, rule.assets)
            and (rule.checks is None or event.check in rule.checks)
        )
    if isinstance(rule, RunFailedRule):
        return rule.jobs is None or event.job in rule.jobs
    if isinstance(rule, InstigatorErroredRule):
        return rule.instigators is None or event.instigator in rule.instigators
    if isinstance(rule, FreshnessViolatedRule):
        return matches_prefix(event.asset, rule.assets)
    if isinstance(rule, PrometheusAlertRule):
        return rule.alertnames is None or event.labels.get("alertname") in rule.alertnames
    return False


def _severity(rule: Rule, event: AlertEvent) -> str:
    if isinstance(rule, PrometheusAlertRule) and event.severity in SEVERITIES:
        return event.severity
    return rule.severity


def _labels(rule: Rule, event: AlertEvent) -> dict[str, str]:
    if isinstance(rule, PrometheusAlertRule):
        names = rule.group_by if rule.group_by is not None else sorted(event.labels)
        return {n: str(event.labels[n]) for n in names if n in event.labels and n != "severity"}
    labels = {}
    for name in rule.grouping:
        value = getattr(event, name)
        if value is not None:
            labels[name] = str(value)
    return labels


def _group_key(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items())


def _fingerprint(rule: str, group_key: str) -> str:
    """Readable on purpose: it is what people type in ``dataflare alerts ack``."""
    return f"{rule}[{group_key}]" if group_key else rule


def _default_message(event: AlertEvent) -> str:
    if event.kind == "check_failed":
        return f"check {event.check or '?'} on {event.asset or '?'} failed ({event.severity})"
    if event.kind == "run_failed":
        return f"run {event.run_id or '?'} of job {event.job or '?'} failed"
    if event.kind == "instigator_errored":
        return f"tick of {event.instigator or '?'} errored"
    if event.kind == "prometheus_alert":
        return f"{event.labels.get('alertname', '?')} is firing"
    return f"{event.asset or '?'} is not fresh"


def _jsonable(values: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None or isinstance(value, bool | int | float | str):
            out[str(key)] = value
        else:
            out[str(key)] = str(value)
    return out
