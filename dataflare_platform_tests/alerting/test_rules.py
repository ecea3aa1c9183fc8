"""Rules files: valid ones load, bad ones fail at load naming the field."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from dataflare_platform.alerting import AlertManager, MetricThresholdRule, RuleSet, parse_duration
from dataflare_platform.errors import ConfigError

GOOD = """
channels:
  slack: {type: slack, url: "http://127.0.0.1:9/slack", allow_http_loopback: true}
  mail: {type: email, host: 127.0.0.1, from: a@b.c, to: ops@b.c}
escalation_policies:
  oncall:
    tiers:
      - {channels: slack, timeout: 15m}
      - {channels: [mail]}
rules:
  - name: checks
    kind: check_failed
    check_severity: [warn, ERROR]
    assets: nexmark
    escalation: oncall
  - name: lag
    kind: metric_threshold
    metric: lag_events
    op: ">="
    threshold: 1000
    for: 10m
    aggregate: avg
    channels: [slack]
    group_by: asset
    repeat_interval: 2h
"""


def _problems(text: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        RuleSet.from_yaml_text(text)
    return dict(info.value.problems)


def test_a_good_file_loads(tmp_path: Path):
    path = tmp_path / "alerts.yaml"
    path.write_text(GOOD)
    rules = RuleSet.from_yaml(path)
    checks, lag = rules.rules
    assert checks.check_severity == ["WARN", "ERROR"]
    assert checks.assets == ["nexmark"] and checks.grouping == ("asset",)
    assert checks.repeat_interval == timedelta(hours=4)
    assert isinstance(lag, MetricThresholdRule)
    assert lag.window.duration == timedelta(minutes=10) and lag.aggregate == "avg"
    assert lag.repeat_interval == timedelta(hours=2)
    assert rules.escalation_policies["oncall"].tiers[0].timeout == timedelta(minutes=15)
    assert rules.channels["mail"].to == ["ops@b.c"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3 evaluations", {"evaluations": 3}),
        ("1 evaluation", {"evaluations": 1}),
        (5, {"evaluations": 5}),
        ("90s", {"duration": timedelta(seconds=90)}),
        ("1h30m", {"duration": timedelta(minutes=90)}),
    ],
)
def test_window_forms(text, expected):
    rules = RuleSet.load(
        {
            "rules": [
                {
                    "name": "r",
                    "kind": "metric_threshold",
                    "metric": "p99_batch_ms",
                    "threshold": 500,
                    "for": text,
                    "channels": ["x"],
                }
            ]
        }
    )
    window = rules.rules[0].window
    for key, value in expected.items():
        assert getattr(window, key) == value


def test_durations():
    assert parse_duration("2h") == timedelta(hours=2)
    assert parse_duration("1d 2h") == timedelta(days=1, hours=2)
    assert parse_duration(30) == timedelta(seconds=30)
    for bad in ("2 hours", "h", "-5m", "0s", "5m garbage"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_bad_fields_are_named():
    problems = _problems(
        """
rules:
  - name: r
    kind: metric_threshold
    metric: dead_letter_rate
    op: "=>"
    threshold: lots
    for: 3 bogus
    aggregate: median
    channels: [x]
"""
    )
    assert set(problems) == {"rules.0.op", "rules.0.threshold", "rules.0.for", "rules.0.aggregate"}
    assert "3 bogus" in problems["rules.0.for"]


def test_unknown_kind_and_severity_are_named():
    problems = _problems("rules:\n  - {name: r, kind: disk_full, channels: [x]}\n")
    assert any(f.startswith("rules.0") for f in problems)
    problems = _problems(
        "rules:\n  - {name: r, kind: check_failed, check_severity: [FATAL], channels: [x]}\n"
    )
    assert "rules.0.check_severity.0" in problems


def test_routing_must_be_exactly_one():
    problems = _problems("rules:\n  - {name: r, kind: run_failed}\n")
    assert any("exactly one" in msg for msg in problems.values())
    assert list(problems) == ["rules.0"]


def test_dangling_references_are_named():
    problems = _problems(
        """
channels:
  slack: {type: slack, url: "http://127.0.0.1:9/", allow_http_loopback: true}
escalation_policies:
  p:
    tiers: [{channels: [slack, pager], timeout: 5m}, {channels: [slack]}]
rules:
  - {name: a, kind: run_failed, escalation: nope}
  - {name: b, kind: run_failed, channels: [slack, teams]}
  - {name: b, kind: run_failed, channels: [slack]}
"""
    )
    assert problems["rules.0.escalation"] == "unknown escalation policy 'nope'"
    assert problems["rules.1.channels.1"] == "unknown channel 'teams'"
    assert problems["rules.2.name"] == "duplicate rule name 'b'"
    assert problems["escalation_policies.p.tiers.0.channels.1"] == "unknown channel 'pager'"


def test_tier_without_timeout_before_another_tier():
    problems = _problems(
        "escalation_policies:\n  p:\n    tiers: [{channels: [a]}, {channels: [b]}]\n"
    )
    assert list(problems) == ["escalation_policies.p"]


def test_channel_fields_are_named():
    problems = _problems(
        """
channels:
  w: {type: webhook, url: "ftp://x"}
  m: {type: email, host: h, port: 70000, to: []}
"""
    )
    assert "channels.w.url" in problems
    assert {"channels.m.port", "channels.m.from", "channels.m.to"} <= set(problems)


def test_channels_passed_to_the_manager_are_checked(tmp_path: Path):
    rules = RuleSet.load({"rules": [{"name": "r", "kind": "run_failed", "channels": ["ops"]}]})
    with pytest.raises(ConfigError) as info:
        AlertManager(rules, f"sqlite:///{tmp_path / 'a.db'}", channels={})
    assert info.value.fields == ["rules.0.channels.0"]


def test_unreadable_file(tmp_path: Path):
    with pytest.raises(ConfigError) as info:
        RuleSet.from_yaml(tmp_path / "missing.yaml")
    assert info.value.fields == ["<file>"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [unclosed")
    with pytest.raises(ConfigError):
        RuleSet.from_yaml(bad)
