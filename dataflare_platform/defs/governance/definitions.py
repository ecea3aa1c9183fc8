"""The governance domain: retention, audit trail, alerting and the compliance report for
every governed dataset. Each dataset is a GovernedDatasetComponent instance
(``datasets/<name>/defs.yaml``, or anywhere under ``defs/``) that builds its own checks;
what spans all of them is built here, once, from every instance (``load_dataset_specs``
reads the instance files dg reads, and refuses two files governing one asset). Adding a
file governs an asset; a bad file fails the code location naming the file and field."""

from pathlib import Path

import dagster as dg

from dataflare_platform.compliance.spec import GovernedDataset, load_dataset_specs
from dataflare_platform.component_files import DEFS_DIR, INSTANCE_FILE
from dataflare_platform.defs.governance import report
from dataflare_platform.defs.governance.alerts import alerting_definitions
from dataflare_platform.defs.governance.audit import audit_definitions
from dataflare_platform.defs.governance.dataset_checks import dataset_checks
from dataflare_platform.defs.governance.encryption import encryption_definitions
from dataflare_platform.defs.governance.retention import retention_definitions
from dataflare_platform.defs.streams.intervals import sensor_interval_override
from dataflare_platform.streams.ranges import PIPELINES_DIR

DEFAULT_INTERVAL_S = 30

__all__ = ["dataset_checks", "governance_definitions", "governed_config_files"]


def governed_config_files(
    pipelines_dir: Path = PIPELINES_DIR, defs_dir: Path = DEFS_DIR
) -> list[Path]:
    """The files whose changes the audit log records: every component instance (pipelines
    and governed datasets) and every Python-builder pipeline."""
    return sorted([*defs_dir.rglob(INSTANCE_FILE), *(pipelines_dir / "builders").glob("*.py")])


def governance_definitions(
    specs: list[GovernedDataset],
    interval_s: int = DEFAULT_INTERVAL_S,
    config_files: list[Path] | None = None,
) -> dg.Definitions:
    """What spans every governed dataset; the datasets' own checks come from
    ``dataset_checks`` (the components)."""
    return dg.Definitions.merge(
        audit_definitions(
            governed_config_files() if config_files is None else config_files, interval_s
        ),
        alerting_definitions(interval_s),
        retention_definitions(specs),
        encryption_definitions(specs),
        report.report_definitions,
    )


defs = governance_definitions(
    load_dataset_specs(), sensor_interval_override() or DEFAULT_INTERVAL_S
)
