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
    from dataflare_platform.crypto.columns import ColumnCipher
    from dataflare_platform.crypto.settings import CryptoSettings

ALERT_RULES_FILE = "alerts.yaml"


class GovernanceResource(DeploymentLockedResource):
    """Audit log and alerting stores. Empty settings mean: under the project home
    (``audit.db``, ``alerts.yaml``, ``alerts.db``). Every field is a deployment setting
    (``DATAFLARE_AUDIT_URL``...): a run config naming one is refused. The audit signing
    key, the pinned public keys and the anchor are never under the home: they come from
    the deployment's environment (``DATAFLARE_AUDIT_SIGNING_KEY``,
    ``DATAFLARE_AUDIT_TRUSTED_KEYS``, ``DATAFLARE_AUDIT_ANCHOR_URL``, or
    ``DATAFLARE_AUDIT_PKCS11_*``) or what ``dataflare audit init`` provisioned."""

    deployment_key: ClassVar[str] = "governance"

    dataflare: ProjectHomeResource = deployment_field(env=None)
    audit_url: str = deployment_field(
        "", env="DATAFLARE_AUDIT_URL", description="SQLAlchemy URL of the audit log."
    )
    alert_rules: str = deployment_field(
        "", env="DATAFLARE_ALERT_RULES", description="YAML alert rules file."
    )
    alert_state_url: str = deployment_field(
        "", env="DATAFLARE_ALERT_STATE_URL", description="SQLAlchemy URL of alert state."
    )
    keyring_dir: str = deployment_field(
        "",
        env="DATAFLARE_KEYRING_DIR",
        description="Folder of the field-encryption keyring (outside the home).",
    )
    data_keys_dir: str = deployment_field(
        "", env="DATAFLARE_DATA_KEYS_DIR", description="Folder of the wrapped data keys."
    )

    @property
    def root(self) -> Path:
        return self.dataflare.home.root

    def audit_settings(self) -> AuditSettings:
        from dataflare_platform.compliance.audit_keys import AuditSettings

        return AuditSettings.resolve(url=self.audit_url or None, home=self.root)

    def audit_log(self) -> AuditLog:
        from dataflare_platform.compliance.audit import AuditLog

        return AuditLog.open(self.audit_settings())

    def signing_key(self):
        """The configured checkpoint signer; none configured is a ConfigError (a key is
        provisioned by ``dataflare audit init``, never generated here)."""
        return self.audit_settings().signer()

    def public_keys(self):
        """The pinned public keys (ConfigError if none are configured)."""
        return self.audit_settings().trusted()

    def audit_anchor(self):
        """The configured anchor, or None (then only the log's own checkpoints count)."""
        from dataflare_platform.compliance.audit_anchor import open_anchor

        url = self.audit_settings().anchor_url
        return open_anchor(url) if url else None

    def crypto_settings(self) -> CryptoSettings:
        """Where the field-encryption keys are: these fields, else the environment, else
        the per-user default outside the home (``crypto.settings``)."""
        from dataflare_platform.crypto.settings import CryptoSettings

        return CryptoSettings.resolve(
            home=self.root,
            keyring_dir=self.keyring_dir or None,
            data_keys_dir=self.data_keys_dir or None,
        )

    def cipher(self) -> ColumnCipher:
        return self.crypto_settings().cipher()

    def audit_channel_anchor(self):
        """The alert channel checkpoints are also sent to
        (``$DATAFLARE_AUDIT_ANCHOR_CHANNEL``, a channel of the alert rules file), or None."""
        from dataflare_platform.compliance.audit_channel_anchor import configured_channel_anchor

        return configured_channel_anchor(self.rules_path())

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
