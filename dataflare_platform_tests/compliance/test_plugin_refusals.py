"""A marketplace refusal in the audit log: plugin, version, stage, reason and detail,
with a registry URL's credentials cut out of the detail."""

from __future__ import annotations

import json

from dataflare_platform.compliance.audit import AuditLog
from dataflare_platform.compliance.override_refusals import deployment_audit_url
from dataflare_platform.compliance.plugin_refusals import record_marketplace_refusal
from dataflare_platform.home import ProjectHome
from dataflare_platform.marketplace.client import MarketplaceError


def test_marketplace_refusal_recorded_without_url_credentials(audited_home: ProjectHome) -> None:
    err = MarketplaceError(
        "currency",
        "unavailable",
        "fetch https://reader:s3cr3t-token@registry.example/metadata/timestamp.json failed",
        version="1.2.0",
    )
    err.stage = "verify"
    record_marketplace_refusal(err, audited_home.root, actor="user:alice", run_id="r1")
    with AuditLog(deployment_audit_url(audited_home.root)) as log:
        (entry,) = [e for e in log.tail(10) if e.action == "plugin_marketplace_refused"]
    details = json.loads(entry.details)
    assert (entry.actor, entry.subject) == ("user:alice", "currency")
    assert details["version"] == "1.2.0" and details["stage"] == "verify"
    assert details["reason"] == "unavailable" and details["run_id"] == "r1"
    assert "s3cr3t" not in entry.details and "https://***@registry.example" in details["detail"]
