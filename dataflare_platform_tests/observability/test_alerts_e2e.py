"""Prometheus → Alertmanager → the platform: a real Prometheus (Debian's package) loads the
shipped rules (their ``for`` shortened, evaluation every second) and scrapes a target
whose daemon-heartbeat gauge crosses the threshold; a real Alertmanager (the shipped
configuration, short group timers) delivers to ``dataflare alerts receive`` with the
bearer token file; the alert lands in the platform's alert state (notified through its
channel) and audit log, and resolves when the gauge comes back."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from prometheus_client import values as prometheus_values

from dataflare_platform.alerting import AlertStore, default_state_url
from dataflare_platform.cli.observe import observe_dir
from dataflare_platform.compliance.alert_receiver import ACTION_RECEIVED
from dataflare_platform.compliance.override_refusals import deployment_audit_log
from dataflare_platform.home import write_private
from dataflare_platform_tests.observability.alertmanager_support import (
    ALERTMANAGER,
    need,
    requires_alertmanager,
)
from dataflare_platform_tests.observability.prometheus_server import (
    free_port,
    requires_prometheus,
    running_prometheus,
)
from dataflare_platform_tests.waits import wait_until

pytestmark = [pytest.mark.e2e, requires_prometheus, requires_alertmanager]

RULES = """
channels:
  hook: {{type: webhook, url: "{hook}", allow_http_loopback: true}}
rules:
  - {{name: prometheus, kind: prometheus_alert, channels: [hook]}}
"""
CEILING_S = 180
FINGERPRINT = "prometheus[alertname=DagsterDaemonHeartbeatStale,daemon=SCHEDULER]"


@contextlib.contextmanager
def running_alertmanager(workdir: Path, receiver_url: str, token_file: Path) -> Iterator[str]:
    """The shipped alertmanager.yml with the receiver's URL and token file, group timers
    of a second; clustering off, loopback port."""
    need(ALERTMANAGER, "prometheus-alertmanager")
    workdir.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((observe_dir() / "alertmanager.yml").read_text())
    config["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    (hook,) = config["receivers"][0]["webhook_configs"]
    hook["url"] = receiver_url
    hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (workdir / "alertmanager.log").open("wb")
    proc = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--config.file={workdir / 'alertmanager.yml'}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError((workdir / "alertmanager.log").read_text()[-2000:])
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_until("alertmanager ready", ready, 120, poll_s=0.5)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
        log.close()


@pytest.fixture
def receiver(audited_home, http_receiver, tmp_path):
    """``dataflare alerts receive`` in its own process on a free loopback port."""
    (audited_home.root / "alerts.yaml").write_text(RULES.format(hook=http_receiver.url("/hook")))
    token = tmp_path / "receiver.token"
    write_private(token, "e2e-token-value\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dataflare_platform.cli",
            "alerts",
            "receive",
            "--port",
            "0",
            "--token-file",
            str(token),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read().decode()
        yield json.loads(line)["url"], token
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_prometheus_alert_reaches_the_platforms_alerting_and_audit_then_resolves(
    audited_home,
    receiver,
    http_receiver,
    tmp_path,
    monkeypatch,
):
    receiver_url, token = receiver
    # A plain in-process target: an earlier test of this process may have switched
    # prometheus_client to its multiprocess value class (the platform's metrics on) and
    # restored the environment variable it reads since.
    monkeypatch.setattr(prometheus_values, "ValueClass", prometheus_values.MutexValue)
    registry = CollectorRegistry()
    heartbeat = Gauge(
        "dataflare_dagster_daemon_heartbeat_age_seconds", "age", ["daemon"], registry=registry
    )
    heartbeat.labels(daemon="SCHEDULER").set(5)
    server, _thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    rules = yaml.safe_load((observe_dir() / "rules" / "dataflare.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "2s"
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    store = AlertStore(default_state_url(audited_home.root))
    try:
        with running_alertmanager(tmp_path / "am", receiver_url, token) as am:
            extra = (
                f"rule_files: [{json.dumps(str(tmp_path / 'rules.yml'))}]\n"
                f"alerting:\n  alertmanagers:\n    - static_configs:\n"
                f"        - targets: [{json.dumps(am)}]\n"
            )
            target = f"127.0.0.1:{server.server_port}"
            with running_prometheus(tmp_path / "prom", [target], extra_config=extra) as prom:
                prom.wait_for('up{job="dataflare"}', lambda v: v == 1)
                prom.wait_for("dataflare_dagster_daemon_heartbeat_age_seconds", lambda v: v == 5)
                assert store.alerts() == []  # below the threshold: nothing

                heartbeat.labels(daemon="SCHEDULER").set(500)
                firing = wait_until(
                    "the platform's alert is firing",
                    lambda: [a for a in store.alerts("firing") if a.fingerprint == FINGERPRINT],
                    CEILING_S,
                    poll_s=0.5,
                )
                (alert,) = firing
                assert alert.severity == "critical"
                assert "SCHEDULER" in alert.message
                wait_until(
                    "the platform notified its channel",
                    lambda: http_receiver.bodies("/hook"),
                    CEILING_S,
                    poll_s=0.5,
                )
                assert http_receiver.bodies("/hook")[0]["fingerprint"] == FINGERPRINT

                heartbeat.labels(daemon="SCHEDULER").set(5)
                resolved = wait_until(
                    "the platform's alert resolved",
                    lambda: [a for a in store.alerts("resolved") if a.id == alert.id],
                    CEILING_S,
                    poll_s=0.5,
                )
                assert resolved[0].resolved_at is not None
    finally:
        store.close()
        server.shutdown()
        server.server_close()
    with deployment_audit_log(audited_home.root) as log:
        received = [json.loads(e.details) for e in log.tail(1000) if e.action == ACTION_RECEIVED]
    statuses = [d["status"] for d in received]
    assert "firing" in statuses and statuses[-1] == "resolved", statuses
    assert received[0]["labels"]["alertname"] == "DagsterDaemonHeartbeatStale"
    assert received[0]["alerts"][0]["fingerprint"] == FINGERPRINT
