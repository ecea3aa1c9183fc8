"""Governance domain: data-quality and compliance checks, retention, the audit trail and
alerting, built from the governance files."""

from dataflare_platform.compliance.spec import load_dataset_specs
from dataflare_platform.defs.governance.definitions import GOVERNANCE_DIR, governance_definitions
from dataflare_platform.defs.streams.definitions import sensor_interval_override

defs = governance_definitions(load_dataset_specs(GOVERNANCE_DIR), sensor_interval_override() or 30)

__all__ = ["defs"]
