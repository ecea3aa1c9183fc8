"""The checks of one governed dataset, from its governance spec: a Great Expectations
suite, PII, the schema contract and freshness (what a GovernedDatasetComponent builds),
and the sensor that evaluates freshness checks (built once, over all of them, by the
root definitions)."""

import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import dagster as dg

from dataflare_platform.compliance.spec import GovernedDataset
from dataflare_platform.defs.governance.checks import contract_check, pii_check
from dataflare_platform.defs.governance.quality import expectation_check

FRESHNESS_CHECK = "freshness_check"  # the name build_last_update_freshness_checks gives


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


def freshness_sensors(checks: Iterable, interval_s: int) -> list[dg.SensorDefinition]:
    """One sensor evaluating every freshness check among ``checks`` (none without any)."""
    # AssetsDefinition, not only AssetChecksDefinition: dg's component loading turns a
    # component's checks into the general class when it adds its metadata; the sensor
    # reads only their check keys.
    freshness = [
        c
        for c in checks
        if isinstance(c, dg.AssetsDefinition)
        and c.check_keys
        and all(key.name == FRESHNESS_CHECK for key in c.check_keys)
    ]
    if not freshness:
        return []
    with _freshness_checks():
        return [
            dg.build_sensor_for_freshness_checks(
                freshness_checks=freshness,
                minimum_interval_seconds=interval_s,
                default_status=dg.DefaultSensorStatus.RUNNING,
            )
        ]
