"""Alert rules declared in YAML: what to watch, who to tell, and how often.

A rules file holds ``rules``, optional ``escalation_policies`` and optional ``channels``
(see :mod:`dataflare_platform.alerting.channels`). Everything is validated at load so a
typo fails the deploy with the offending field named, not the first real incident.

Example::

    channels:
      oncall-slack: {type: slack, url: "https://hooks.slack.com/services/..."}
      oncall-mail: {type: email, host: smtp.local, from: alerts@x.io, to: [ops@x.io]}
    escalation_policies:
      oncall:
        tiers:
          - {channels: [oncall-slack], timeout: 15m}
          - {channels: [oncall-mail]}
    rules:
      - name: bids_checks
        kind: check_failed
        check_severity: [ERROR]
        assets: [nexmark/bids]
        severity: critical
        escalation: oncall
        repeat_interval: 1h
      - name: dlq_rate
        kind: metric_threshold
        metric: dead_letter_rate
        op: ">"
        threshold: 0.01
        for: 3 evaluations
        aggregate: avg
        channels: [oncall-slack]
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from dataflare_platform.alerting.channels import ChannelConfig
from dataflare_platform.errors import ConfigError, InvalidInputError, NotFoundError
from dataflare_platform.models import StrictModel
from dataflare_platform.yaml_files import load_yaml_mapping, parse_yaml_mapping

Severity = Literal["info", "warning", "error", "critical"]
CheckSeverity = Literal["WARN", "ERROR"]
GroupField = Literal["asset", "job", "instigator", "check"]
Aggregate = Literal["max", "min", "avg", "last"]
Comparison = Literal[">", ">=", "<", "<=", "==", "!="]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_EVALUATIONS_RE = re.compile(r"^\s*(\d+)\s*evaluations?\s*$")

COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


def parse_duration(value: Any) -> timedelta:
    """``30s``, ``15m``, ``2h``, ``1d``, ``1h30m`` or a number of seconds: YAML authors
    write durations the way they say them, and one parser keeps every field consistent."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise InvalidInputError("expected a duration such as 30s, 15m, 2h or 1d")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        pos, seconds = 0, 0.0
        for match in _DURATION_RE.finditer(text):
            if text[pos : match.start()].strip():
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos == 0 or text[pos:].strip():
            raise InvalidInputError(f"{value!r} is not a duration (use e.g. 30s, 15m, 2h, 1d)")
    else:
        raise InvalidInputError("expected a duration such as 30s, 15m, 2h or 1d")
    if seconds <= 0:
        raise InvalidInputError("a duration must be positive")
    return timedelta(seconds=seconds)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def matches_prefix(key: str | None, prefixes: list[str] | None) -> bool:
    """Asset selection by key prefix, on whole path components: ``nexmark`` selects
    ``nexmark/bids`` but not ``nexmark_raw/bids`` (a plain startswith would)."""
    if prefixes is None:
        return True
    if key is None:
        return False
    for prefix in prefixes:
        prefix = prefix.strip("/")
        if key == prefix or key.startswith(prefix + "/"):
            return True
    return False


class _Model(StrictModel):
    model_config = ConfigDict(populate_by_name=True)


class Window(_Model):
    """The span a metric rule aggregates: the last N evaluations, or a duration."""

    evaluations: int | None = Field(default=None, ge=1)
    duration: timedelta | None = None

    def describe(self) -> str:
        if self.duration is not None:
            return f"over {self.duration}"
        n = self.evaluations or 1
        return f"over {n} evaluation{'s' if n != 1 else ''}"


def parse_window(value: Any) -> Window:
    """``for: 3 evaluations`` or ``for: 10m``: one field, read the way people say it."""
    if isinstance(value, Window):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        # A bare number is a count: "for: 3" reads as three evaluations.
        if value < 1:
            raise InvalidInputError("the window needs at least 1 evaluation")
        return Window(evaluations=value)
    if isinstance(value, str):
        match = _EVALUATIONS_RE.match(value.lower())
        if match:
            count = int(match.group(1))
            if count < 1:
                raise InvalidInputError("the window needs at least 1 evaluation")
            return Window(evaluations=count)
        try:
            return Window(duration=parse_duration(value))
        except ValueError:
            raise InvalidInputError(
                f"{value!r} is neither '<N> evaluations' nor a duration such as 10m"
            ) from None
    raise InvalidInputError("expected '<N> evaluations' or a duration such as 10m")


class _RuleBase(_Model):
    """What every rule shares: identity, routing and de-duplication."""

    name: str = Field(min_length=1)
    severity: Severity = "warning"
    channels: Annotated[list[str], BeforeValidator(_as_list)] = Field(default_factory=list)
    escalation: str | None = None
    group_by: Annotated[list[GroupField] | None, BeforeValidator(_as_list)] = None
    repeat_interval: Duration = timedelta(hours=4)
    description: str = ""

    default_group_by: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _one_route(self) -> _RuleBase:
        # Exactly one route: an alert told to nobody is a silent failure, and two routes
        # would leave unclear which one escalation follows.
        if bool(self.channels) == (self.escalation is not None):
            raise ValueError("give either 'channels' or 'escalation' (exactly one)")
        return self

    @property
    def grouping(self) -> tuple[str, ...]:
        return tuple(self.group_by) if self.group_by is not None else self.default_group_by


class CheckFailedRule(_RuleBase):
    """An asset check failed (Dagster's WARN or ERROR check severities)."""

    kind: Literal["check_failed"]
    check_severity: Annotated[list[CheckSeverity], BeforeValidator(_as_list)] = Field(
        default_factory=lambda: ["ERROR"], min_length=1
    )
    assets: Annotated[list[str] | None, BeforeValidator(_as_list)] = None
    checks: Annotated[list[str] | None, BeforeValidator(_as_list)] = None
    default_group_by: ClassVar[tuple[str, ...]] = ("asset",)

    @field_validator("check_severity", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [v.upper() if isinstance(v, str) else v for v in value]
        return value


class RunFailedRule(_RuleBase):
    """A run of a job failed."""

    kind: Literal["run_failed"]
    jobs: Annotated[list[str] | None, BeforeValidator(_as_list)] = None
    default_group_by: ClassVar[tuple[str, ...]] = ("job",)


class InstigatorErroredRule(_RuleBase):
    """A sensor or schedule tick errored."""

    kind: Literal["instigator_errored"]
    instigators: Annotated[list[str] | None, BeforeValidator(_as_list)] = None
    default_group_by: ClassVar[tuple[str, ...]] = ("instigator",)


class FreshnessViolatedRule(_RuleBase):
    """An asset is older than its freshness policy allows."""

    kind: Literal["freshness_violated"]
    assets: Annotated[list[str] | None, BeforeValidator(_as_list)] = None
    default_group_by: ClassVar[tuple[str, ...]] = ("asset",)


class MetricThresholdRule(_RuleBase):
    """A metadata value (dead_letter_rate, lag_events, p99_batch_ms...) crossed a
    threshold, aggregated over a window so one noisy batch does not page anyone."""

    kind: Literal["metric_threshold"]
    metric: str = Field(min_length=1)
    op: Comparison = ">"
    threshold: float
    window: Annotated[Window, BeforeValidator(parse_window)] = Field(
        default_factory=lambda: Window(evaluations=1), alias="for"
    )
    aggregate: Aggregate = "max"
    assets: Annotated[list[str] | None, BeforeValidator(_as_list)] = None
    auto_resolve: bool = True
    default_group_by: ClassVar[tuple[str, ...]] = ("asset",)

    def holds(self, value: float) -> bool:
        return COMPARISONS[self.op](value, self.threshold)


_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _label_names(value: Any) -> Any:
    value = _as_list(value)
    if isinstance(value, list):
        for name in value:
            if not isinstance(name, str) or not _LABEL_NAME.match(name):
                raise InvalidInputError(f"{name!r} is not a Prometheus label name")
    return value


class PrometheusAlertRule(_RuleBase):
    """An alert Prometheus evaluated and Alertmanager delivered to the platform's
    receiver (``compliance.alert_receiver``). Prometheus decides *when* (its rules in
    deployments/observe/rules); this rule decides *who is told* and takes the alert
    into the same store, escalation, acknowledgement and audit as every other alert.

    ``group_by`` names Prometheus labels; by default every label of the alert but
    ``severity`` (Alertmanager's own identity of an alert). The alert's ``severity``
    label wins over the rule's ``severity`` when it is one of the platform's."""

    kind: Literal["prometheus_alert"]
    alertnames: Annotated[list[str] | None, BeforeValidator(_as_list)] = None
    group_by: Annotated[list[str] | None, BeforeValidator(_label_names)] = None  # type: ignore[assignment]


Rule = Annotated[
    CheckFailedRule
    | RunFailedRule
    | InstigatorErroredRule
    | FreshnessViolatedRule
    | MetricThresholdRule
    | PrometheusAlertRule,
    Field(discriminator="kind"),
]


class EscalationTier(_Model):
    """One rung: who is told, and how long they have to acknowledge before the next."""

    channels: Annotated[list[str], BeforeValidator(_as_list)] = Field(min_length=1)
    timeout: Duration | None = None


class EscalationPolicy(_Model):
    tiers: list[EscalationTier] = Field(min_length=1)

    @model_validator(mode="after")
    def _timeouts(self) -> EscalationPolicy:
        # Every tier but the last must say when to move on, else later tiers are dead.
        for i, tier in enumerate(self.tiers[:-1]):
            if tier.timeout is None:
                raise ValueError(f"tier {i + 1} needs a 'timeout' (a later tier follows it)")
        return self


class RuleSet(_Model):
    """A whole alerting file: rules, escalation policies, and optionally channels."""

    rules: list[Rule] = Field(default_factory=list)
    escalation_policies: dict[str, EscalationPolicy] = Field(default_factory=dict)
    channels: dict[str, ChannelConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _references(self) -> RuleSet:
        problems = self.reference_problems(self.channels.keys() if self.channels else None)
        if problems:
            raise _ReferenceError(problems)
        return self

    def reference_problems(self, channel_names: Any | None) -> list[tuple[str, str]]:
        """Dangling names, each with its field path; channels are checked only when their
        names are known (a rules file may leave channels to the caller)."""
        problems: list[tuple[str, str]] = []
        seen: set[str] = set()
        known = set(channel_names) if channel_names is not None else None
        for i, rule in enumerate(self.rules):
            if rule.name in seen:
                problems.append((f"rules.{i}.name", f"duplicate rule name {rule.name!r}"))
            seen.add(rule.name)
            if rule.escalation is not None and rule.escalation not in self.escalation_policies:
                problems.append(
                    (f"rules.{i}.escalation", f"unknown escalation policy {rule.escalation!r}")
                )
            if known is not None:
                for j, name in enumerate(rule.channels):
                    if name not in known:
                        problems.append((f"rules.{i}.channels.{j}", f"unknown channel {name!r}"))
        if known is not None:
            for pname, policy in self.escalation_policies.items():
                for t, tier in enumerate(policy.tiers):
                    for j, name in enumerate(tier.channels):
                        if name not in known:
                            problems.append(
                                (
                                    f"escalation_policies.{pname}.tiers.{t}.channels.{j}",
                                    f"unknown channel {name!r}",
                                )
                            )
        return problems

    def rule(self, name: str) -> Rule:
        for rule in self.rules:
            if rule.name == name:
                return rule
        known = ", ".join(sorted(r.name for r in self.rules)) or "none"
        raise NotFoundError(f"no alert rule {name!r} (rules: {known})")

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> RuleSet:
        """Validate a parsed mapping; every problem is reported with its field path."""
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            refs = [
                item["ctx"]["error"]
                for item in err.errors()
                if isinstance(item.get("ctx", {}).get("error"), _ReferenceError)
            ]
            if refs:
                raise ConfigError("alert rules", refs[0].problems) from None
            raise ConfigError("alert rules", _problems(err)) from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> RuleSet:
        return cls.load(load_yaml_mapping(path, "alert rules"))

    @classmethod
    def from_yaml_text(cls, text: str) -> RuleSet:
        return cls.load(parse_yaml_mapping(text, "alert rules"))


class _ReferenceError(ValueError):
    """Carries cross-reference problems out of a validator with their own field paths
    (pydantic would otherwise attribute them all to the root)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{f}: {m}" for f, m in problems))


_TAGS = {
    "rules": {"check_failed", "run_failed", "instigator_errored", "freshness_violated"}
    | {"metric_threshold", "prometheus_alert"},
    "channels": {"webhook", "slack", "email"},
}


def _problems(err: ValidationError) -> list[tuple[str, str]]:
    """Field paths as the author wrote them: pydantic puts the union member (the
    ``kind`` or ``type`` value) into the path, as in ``rules.0.run_failed.jobs``; drop it."""
    problems = []
    for item in err.errors():
        loc = [str(part) for part in item["loc"]]
        if len(loc) > 2 and loc[0] in _TAGS and loc[2] in _TAGS[loc[0]]:
            del loc[2]
        problems.append((".".join(loc) or "<root>", item["msg"].removeprefix("Value error, ")))
    return problems
