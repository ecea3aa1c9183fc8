"""Authorization decisions, allowed and denied, as audit entries: the enforcement points
(web front, run coordinator) record each decision here before acting on it, so the trail
does not depend on anything read back later (a cursor a caller could move)."""

from __future__ import annotations

from dataflare_platform.access.decisions import Decision
from dataflare_platform.compliance.audit import AuditLog


class AuditDecisionRecorder:
    """A ``DecisionRecorder`` writing to the hash-chained audit log."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log

    def record(self, decision: Decision) -> None:
        resource = decision.resource
        details = {
            "action": decision.action,
            "resource": resource.model_dump(exclude_none=True),
            "policy_version": decision.policy_version,
            "reason": decision.reason,
            "via": decision.principal.via,
        }
        if decision.principal.backfill:
            # A backfill's run, submitted by the daemon, authorized as its requester.
            details["backfill"] = decision.principal.backfill
            details["submitted_by"] = "daemon"
        self.log.append(
            decision.principal.id,
            "access_allowed" if decision.allowed else "access_denied",
            f"{resource.kind}:{resource.name}",
            details,
        )
