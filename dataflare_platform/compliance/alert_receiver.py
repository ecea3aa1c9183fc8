"""The platform's inbound alert webhook: Alertmanager delivers here (``dataflare alerts
receive``), and each alert enters the platform's own alerting (rules of kind
``prometheus_alert``: the same store, de-duplication, escalation, acknowledgement) and
its audit log. One alert path: Prometheus decides *when*, the platform *who* and *how*.

Why a process of its own (not the gateway front, not ``dataflare metrics serve``): the
scrape endpoint is unauthenticated and read-only and must stay so; the gateway serves
people with sessions and roles. This receiver writes the alert state and the audit log
with the deployment's entry key, and answers one caller holding one bearer token: the
least privilege is a small separate listener, started by ``make observe`` beside
Prometheus and Alertmanager.

Secure by default: bound to 127.0.0.1; every request needs ``Authorization: Bearer``
with the token of a secret reference (``{file: ...}``, the same file Alertmanager reads
through ``http_config.authorization.credentials_file``); bodies over ``max_bytes`` are
refused before they are read; the body is validated against Alertmanager's webhook
payload (version 4). Every refusal is appended to the audit log (reason and status,
never the presented token) and counted (``refused``).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dataflare_platform.alerting import AlertEvent, AlertManager, PrometheusAlertRule
from dataflare_platform.compliance.audit import AuditLog
from dataflare_platform.errors import ConfigError
from dataflare_platform.observability.counters import count
from dataflare_platform.observability.endpoint import LoopbackServer
from dataflare_platform.secrets import SecretRef

PATH = "/alerts"
MAX_BYTES = 256 * 1024
ACTOR = "service:alertmanager"
ACTION_RECEIVED = "alert_received"
ACTION_REFUSED = "alert_webhook_refused"
WEBHOOK_METRIC = "dataflare_alert_webhook_requests_total"
_log = logging.getLogger(__name__)


class _Payload(BaseModel):
    # Unknown fields are ignored (Alertmanager may add some); the ones used are checked.
    model_config = ConfigDict(extra="ignore")


class WebhookAlert(_Payload):
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime = Field(alias="startsAt")
    ends_at: datetime | None = Field(default=None, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: str = ""

    @field_validator("labels")
    @classmethod
    def _alertname(cls, value: dict[str, str]) -> dict[str, str]:
        if not value.get("alertname"):
            raise ValueError("an alert needs the label 'alertname'")
        return value


class WebhookPayload(_Payload):
    """Alertmanager's webhook body, version 4 (prometheus.io/docs/alerting/latest/
    configuration/#webhook_config)."""

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: str
    group_key: str = Field(alias="groupKey")
    truncated_alerts: int = Field(default=0, alias="truncatedAlerts")
    alerts: list[WebhookAlert] = Field(min_length=1, max_length=1000)


class AlertReceiver(LoopbackServer):
    """``start()`` binds 127.0.0.1:``port`` (0: a free port, see ``url``).

    ``manager_factory`` gives an :class:`AlertManager` (re-created per request, as the
    sensors do: everything that matters is in its database) and ``audit_factory`` the
    deployment's audit log opened with its entry key; ``clock`` is read at the edge.
    """

    path = PATH
    thread_name = "df-alert-receiver"

    def __init__(
        self,
        manager_factory: Callable[[], AlertManager],
        audit_factory: Callable[[], AuditLog],
        token: SecretRef,
        port: int = 0,
        max_bytes: int = MAX_BYTES,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        token.read()  # a missing or badly-permissioned token fails the start, not a request
        manager = manager_factory()
        try:
            if not any(isinstance(r, PrometheusAlertRule) for r in manager.rules.rules):
                raise ConfigError(
                    "alert rules",
                    [
                        (
                            "rules",
                            "no rule of kind prometheus_alert: Alertmanager's alerts "
                            "would reach nobody",
                        )
                    ],
                )
        finally:
            manager.close()
        self.refused: Counter[str] = Counter()
        self.accepted = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver._handle(self)

            def do_GET(self) -> None:
                receiver._refuse(self, 405, "method")

            def log_message(self, format: str, *args: object) -> None:
                pass  # outcomes go to the audit log; no access log on stderr

        self._manager_factory = manager_factory
        self._audit_factory = audit_factory
        self._token = token
        self._max_bytes = max_bytes
        self._clock = clock
        self._bind(Handler, port)

    # -- requests ------------------------------------------------------------------------

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        if req.path.split("?", 1)[0] != PATH:
            return self._refuse(req, 404, "path")
        if not self._authorized(req.headers.get("Authorization", "")):
            return self._refuse(req, 401, "token")
        try:
            length = int(req.headers.get("Content-Length", ""))
        except ValueError:
            return self._refuse(req, 411, "length")
        if length < 0 or length > self._max_bytes:
            return self._refuse(req, 413, "size", {"bytes": length, "limit": self._max_bytes})
        body = req.rfile.read(length)
        try:
            payload = WebhookPayload.model_validate(json.loads(body))
        except (ValueError, ValidationError) as err:
            problems = _problems(err)
            return self._refuse(req, 400, "schema", {"problems": problems})
        now = self._clock()
        try:
            outcome = self._ingest(payload, now)
        except Exception as err:  # the store or the audit log failed: Alertmanager retries
            with self._lock:
                self.refused["error"] += 1
            count(WEBHOOK_METRIC, ("error",))
            _log.warning("alert receiver: could not take the alerts in (%s)", type(err).__name__)
            _reply(req, 503, {"error": type(err).__name__})
            return None
        with self._lock:
            self.accepted += 1
        count(WEBHOOK_METRIC, ("accepted",))
        _reply(req, 200, outcome)
        return None

    def _authorized(self, header: str) -> bool:
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return False
        expected = self._token.read()  # read per request: a rotated token needs no restart
        return hmac.compare_digest(presented.strip().encode(), expected.encode())

    def _ingest(self, payload: WebhookPayload, now: datetime) -> dict[str, Any]:
        manager = self._manager_factory()
        results = []
        try:
            with self._audit_factory() as audit:
                for item in payload.alerts:
                    event = AlertEvent(
                        kind="prometheus_alert",
                        timestamp=item.starts_at,
                        severity=item.labels.get("severity"),
                        labels=dict(item.labels),
                        message=item.annotations.get("summary", ""),
                        metadata={
                            "description": item.annotations.get("description", ""),
                            "runbook_url": item.annotations.get("runbook_url", ""),
                            "generator_url": item.generator_url,
                            "starts_at": item.starts_at.isoformat(),
                        },
                    )
                    if item.status == "firing":
                        alerts = manager.observe(event, now)
                    else:
                        alerts = manager.resolve_event(event, now)
                    refs = [
                        {"id": a.id, "fingerprint": a.fingerprint, "status": a.status}
                        for a in alerts
                    ]
                    audit.append(
                        ACTOR,
                        ACTION_RECEIVED,
                        item.labels["alertname"],
                        {
                            "status": item.status,
                            "labels": dict(item.labels),
                            "alerts": refs,
                            "routed": bool(refs) or item.status == "resolved",
                        },
                    )
                    results.append({"alertname": item.labels["alertname"], "alerts": refs})
        finally:
            manager.close()
        return {"received": len(payload.alerts), "results": results}

    def _refuse(
        self,
        req: BaseHTTPRequestHandler,
        status: int,
        reason: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Count and audit a refused request (never the token or body), then answer."""
        with self._lock:
            self.refused[reason] += 1
        count(WEBHOOK_METRIC, (reason,))
        try:
            with self._audit_factory() as audit:
                audit.append(
                    ACTOR,
                    ACTION_REFUSED,
                    "alert_receiver",
                    {"reason": reason, "http_status": status, **(details or {})},
                )
        except Exception as err:  # the refusal stands whatever the audit store does
            count(WEBHOOK_METRIC, ("audit_failed",))
            _log.warning(
                "alert receiver: the refusal (%s) could not be audited (%s)",
                reason,
                type(err).__name__,
            )
        _reply(req, status, {"error": reason})


def _reply(req: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    req.send_response(status)
    req.send_header("Content-Type", "application/json")
    req.send_header("Content-Length", str(len(data)))
    req.end_headers()
    req.wfile.write(data)


def _problems(err: Exception) -> list[str]:
    if isinstance(err, ValidationError):
        return [
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
            for e in err.errors()[:10]
        ]
    return [f"<root>: not JSON ({type(err).__name__})"]


TOKEN_FILE_ENV = "DATAFLARE_ALERT_RECEIVER_TOKEN_FILE"


def default_token_file(home_root: Path) -> Path:
    """Where ``make observe`` keeps the token it generated (0600, under the home)."""
    return home_root / "observe" / "alert-receiver.token"


def receiver_for_home(
    home_root: Path,
    token: SecretRef,
    port: int = 0,
    max_bytes: int = MAX_BYTES,
) -> AlertReceiver:
    """The receiver of a deployment: rules ``$DATAFLARE_ALERT_RULES`` or
    ``<home>/alerts.yaml``, state ``$DATAFLARE_ALERT_STATE_URL`` or ``<home>/alerts.db``,
    the audit log as every other appender opens it (``deployment_audit_log``): the
    same places the Dagster sensors use (``GovernanceResource``)."""
    from dataflare_platform.alerting import RuleSet, default_state_url
    from dataflare_platform.compliance.override_refusals import deployment_audit_log

    rules_path = Path(os.environ.get("DATAFLARE_ALERT_RULES") or home_root / "alerts.yaml")
    if not rules_path.is_file():
        raise ConfigError(
            "alert rules", [(str(rules_path), "no alert rules file (see docs/governance.md)")]
        )
    rules = RuleSet.from_yaml(rules_path)
    # Every received alert is audited: without the entry key each delivery would fail
    # (503, retried forever), so a missing key fails the start with its own message.
    with deployment_audit_log(home_root):
        pass
    state = os.environ.get("DATAFLARE_ALERT_STATE_URL") or default_state_url(home_root)
    return AlertReceiver(
        lambda: AlertManager(rules, state),
        lambda: deployment_audit_log(home_root),
        token,
        port=port,
        max_bytes=max_bytes,
    )
