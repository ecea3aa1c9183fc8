"""The shipped Prometheus rules and configuration (deployments/observe): promtool's unit
tests of every rule (a firing case and a near miss each), promtool/amtool checks of the
shipped files, and every metric a rule reads exists in the catalog."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from dataflare_platform.cli.observe import observe_dir
from dataflare_platform.observability.catalog import BY_NAME
from dataflare_platform_tests.observability.alertmanager_support import (
    AMTOOL,
    PROMTOOL,
    need,
    requires_alertmanager,
    requires_promtool,
)

OBSERVE = observe_dir()
RULES = sorted((OBSERVE / "rules").glob("*.yml"))
RULE_TESTS = sorted((OBSERVE / "rules" / "tests").glob("*.yml"))
SEVERITIES = {"info", "warning", "error", "critical"}


def _rules() -> list[dict]:
    return [
        r for path in RULES for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]
    ]


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@requires_promtool
def test_promtool_unit_tests_of_the_rules_pass():
    need(PROMTOOL, "prometheus")
    assert RULE_TESTS
    out = _run([PROMTOOL, "test", "rules", *map(str, RULE_TESTS)])
    assert "SUCCESS" in out


@requires_promtool
def test_promtool_checks_the_shipped_rules_and_config():
    need(PROMTOOL, "prometheus")
    out = _run([PROMTOOL, "check", "rules", *map(str, RULES)])
    assert f"SUCCESS: {len(_rules())} rules found" in out
    _run([PROMTOOL, "check", "config", str(OBSERVE / "prometheus.yml")])


@requires_alertmanager
def test_amtool_checks_the_shipped_alertmanager_config(tmp_path):
    need(AMTOOL, "prometheus-alertmanager")
    # As `make observe` runs it: a copy beside the receiver's token.
    shutil.copyfile(OBSERVE / "alertmanager.yml", tmp_path / "alertmanager.yml")
    (tmp_path / "alert-receiver.token").write_text("t\n")
    _run([AMTOOL, "check-config", str(tmp_path / "alertmanager.yml")])


def test_every_rule_has_severity_summary_runbook_and_a_unit_test():
    tested = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for t in case["alert_rule_test"]:
                tested.add((t["alertname"], bool(t.get("exp_alerts"))))
    docs = (Path(__file__).resolve().parents[2] / "docs" / "observability.md").read_text()
    for rule in _rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert {"summary", "description", "runbook_url"} <= rule["annotations"].keys(), name
        anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor == name.lower(), name
        assert f"### {name}" in docs, f"docs/observability.md has no section for {name}"
        assert (name, True) in tested, f"{name}: no firing case"
        assert (name, False) in tested, f"{name}: no quiet case"


def test_every_metric_a_rule_reads_is_in_the_catalog():
    seen = set()
    for rule in _rules():
        for name in re.findall(r"\bdataflare_[a-z0-9_]+", rule["expr"]):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in BY_NAME or base in BY_NAME, f"{rule['alert']}: {name} is not a metric"
            seen.add(base)
    assert seen
