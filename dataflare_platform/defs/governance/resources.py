"""The governance resource: where the audit log, its keys, the alert rules and the alert
state live for this deployment — all under the project home by default, so the embedded
demo is governed with no setup and a deployment points each at its own store.

The audit and alerting stores (SQLModel and their models, cryptography) are imported by
the methods that use them, not with the code location, which every Dagster run (a
worker process) and the code server load first; where no Dagster storage has imported
SQLAlchemy yet (the code server), that is spared as well."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from dataflare_platform.defs.deployment_lock import DeploymentLockedResource, deployment_field
from dataflare_platform.defs.resources import ProjectHomeResource

if TYPE_CHECKING:
    from dataflare_platform.alerting import AlertManager
    from dataflare_platform.compliance.audit import AuditLog
    from dataflare_platform.compliance.audit_keys import AuditSettings

ALERT_RULES_FILE = "alerts.yaml"


class GovernanceResource(DeploymentLockedResource):
    """Audit log and alerting stores. Empty settings mean: under the project home
    (``audit.db``, ``audit_keys/``, ``alerts.yaml``, ``alerts.db``). Every field is a
    deployment setting (``DATAFLARE_AUDIT_URL``...): a run config naming one is refused."""

    deployment_key: ClassVar[str] = "governance"

    dataflare: ProjectHomeResource = deployment_field(env=None)
    audit_url: str = deployment_field(
        "", env="DATAFLARE_AUDIT_URL", description="SQLAlchemy URL of the audit log."
    )
    audit_key_dir: str = deployment_field(
        "", env="DATAFLARE_AUDIT_KEY_DIR", description="Ed25519 keys signing checkpoints."
    )
    alert_rules: str = deployment_field(
        "", env="DATAFLARE_ALERT_RULES", description="YAML alert rules file."
    )
    alert_state_url: str = deployment_field(
        "", env="DATAFLARE_ALERT_STATE_URL", description="SQLAlchemy URL of alert state."
    )

    @property
    def root(self) -> Path:
        return self.dataflare.home.root

    def audit_settings(self) -> AuditSettings:
        from dataflare_platform.compliance.audit_keys import AuditSettings

        return AuditSettings.resolve(
            url=self.audit_url or None,
            key_dir=Path(self.audit_key_dir) if self.audit_key_dir else None,
            home=self.root,
        )

    def audit_log(self) -> AuditLog:
        from dataflare_platform.compliance.audit import AuditLog

        return AuditLog(self.audit_settings().url)

    def signing_key(self):
        """The checkpoint key; a first one is generated where none exists (the embedded
        default: a deployment provisions its key and mounts it read-only)."""
        from dataflare_platform.compliance.audit_keys import generate_key_pair, load_signing_key

        key_dir = Path(self.audit_settings().key_dir)
        if not key_dir.is_dir() or not any(key_dir.glob("*.key")):
            key_dir.mkdir(parents=True, exist_ok=True)
            generate_key_pair(key_dir)
        return load_signing_key(key_dir)

    def public_keys(self):
        from dataflare_platform.compliance.audit_keys import load_public_keys

        key_dir = Path(self.audit_settings().key_dir)
        return load_public_keys(key_dir) if key_dir.is_dir() else {}

    def rules_path(self) -> Path:
        return Path(self.alert_rules) if self.alert_rules else self.root / ALERT_RULES_FILE

    def alert_manager(self) -> AlertManager | None:
        """None when no rules are configured: alerting is opt-in per deployment."""
        from dataflare_platform.alerting import AlertManager, RuleSet, default_state_url

        path = self.rules_path()
        if not path.exists():
            return None
        state = self.alert_state_url or default_state_url(self.root)
        return AlertManager(RuleSet.from_yaml(path), state)
