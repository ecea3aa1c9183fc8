"""The governance domain: checks, retention, audit trail and alerting for every dataset
governed by a file in ``pipelines/governance/`` (adding a file governs an asset; a bad
file fails the code location naming the file and field)."""

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import dagster as dg

from dataflare_platform.compliance.spec import GovernedDataset
from dataflare_platform.defs.governance.alerts import alerting_definitions
from dataflare_platform.defs.governance.audit import audit_definitions
from dataflare_platform.defs.governance.checks import contract_check, pii_check
from dataflare_platform.defs.governance.quality import expectation_check
from dataflare_platform.defs.governance.report import report_definitions
from dataflare_platform.defs.governance.retention import retention_definitions
from dataflare_platform.pipelines import PIPELINES_DIR

GOVERNANCE_DIR = PIPELINES_DIR / "governance"
DEFAULT_INTERVAL_S = 30


def governed_config_files(pipelines_dir: Path = PIPELINES_DIR) -> list[Path]:
    """The files whose changes the audit log records."""
    return sorted(
        [
            *pipelines_dir.glob("*.yaml"),
            *(pipelines_dir / "builders").glob("*.py"),
            *(pipelines_dir / "governance").glob("*.yaml"),
        ]
    )


@contextmanager
def _freshness_checks() -> Iterator[None]:
    """Freshness as asset checks, on purpose: Dagster 1.13 prefers FreshnessPolicy on
    the asset definition, but a check result is what the alerting sensor, the audit
    trail and the compliance report already consume, and it fails visibly in the UI."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.SupersessionWarning)
        yield


def dataset_checks(spec: GovernedDataset) -> list:
    key = dg.AssetKey(spec.asset_path)
    checks: list = []
    if spec.expectations is not None and spec.data is not None:
        checks.append(expectation_check(key, spec.expectations, spec.data))
    if spec.pii is not None:
        checks.append(pii_check(key, spec))
    if spec.contract is not None:
        checks.append(contract_check(key, spec))
    if spec.freshness is not None:
        with _freshness_checks():
            checks.extend(
                dg.build_last_update_freshness_checks(
                    assets=[key],
                    lower_bound_delta=timedelta(milliseconds=spec.freshness.max_lag_ms),
                )
            )
    return checks


def governance_definitions(
    specs: list[GovernedDataset],
    interval_s: int = DEFAULT_INTERVAL_S,
    config_files: list[Path] | None = None,
) -> dg.Definitions:
    checks = [c for spec in specs for c in dataset_checks(spec)]
    freshness = [c for c in checks if "freshness" in c.check_key.name]
    extra_sensors = []
    if freshness:
        with _freshness_checks():
            extra_sensors.append(
                dg.build_sensor_for_freshness_checks(
                    freshness_checks=freshness,
                    minimum_interval_seconds=interval_s,
                    default_status=dg.DefaultSensorStatus.RUNNING,
                )
            )
    return dg.Definitions.merge(
        dg.Definitions(asset_checks=checks, sensors=extra_sensors),
        audit_definitions(
            governed_config_files() if config_files is None else config_files, interval_s
        ),
        alerting_definitions(interval_s),
        retention_definitions(specs),
        report_definitions,
    )
