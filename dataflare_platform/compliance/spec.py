"""The governance spec of ONE dataset, one YAML file each:

    asset: streams/hot_items
    data: {duckdb: {path: streams/hot_items.duckdb, table: hot_items}}
    pii:
      columns: {email: pii_masked, card: pii_encrypted, phone: pii_allowed}
      scan: all_strings            # or a list of columns
    contract:
      columns:
        - {name: window_end, type: "Datetime(ms)", nullable: false}
        - {name: item, type: String}
      allow_extra: false
    freshness: {max_lag: 2h}
    retention: {keep: 30d, time_column: window_end}   # applies to `data` by default
    expectations:                  # a Great Expectations suite (compliance.expectations)
      - expect_column_values_to_not_be_null: {column: item}

Every section is optional, but checks of the rows (pii, contract, expectations) and
retention need ``data``: where the rows are (``compliance.datasets``), with paths
relative to the project home, so the same files serve every deployment.
``expectations`` is a list (a blocking suite named after the asset) or a mapping
``{name, blocking, expectations}``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from dataflare_platform.compliance.contracts import SchemaContract
from dataflare_platform.compliance.datasets import DatasetRef
from dataflare_platform.compliance.expectations import SuiteSpec
from dataflare_platform.compliance.freshness import FreshnessPolicy
from dataflare_platform.compliance.pii import PiiPolicy
from dataflare_platform.compliance.retention import RetentionPolicy
from dataflare_platform.component_files import (
    GOVERNED_DATASET,
    find_instances,
    load_spec_mapping,
)
from dataflare_platform.errors import ConfigError
from dataflare_platform.models import StrictModel, validated

_ASSET = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$"


class RetentionSpec(RetentionPolicy):
    target: DatasetRef | None = None  # None: the dataset's data


class GovernedDataset(StrictModel):
    asset: str = Field(pattern=_ASSET)  # the asset key, "/"-separated
    data: DatasetRef | None = None
    pii: PiiPolicy | None = None
    contract: SchemaContract | None = None
    freshness: FreshnessPolicy | None = None
    retention: RetentionSpec | None = None
    expectations: SuiteSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _suite(cls, data: Any) -> Any:
        """A bare list of expectations is the asset's blocking suite."""
        if isinstance(data, dict) and isinstance(data.get("expectations"), list):
            name = re.sub(r"[^A-Za-z0-9_]", "_", str(data.get("asset", "suite")))
            data = {
                **data,
                "expectations": {
                    "name": f"{name}_suite".lstrip("_"),
                    "expectations": data["expectations"],
                },
            }
        return data

    @model_validator(mode="after")
    def _needs_data(self) -> GovernedDataset:
        needing = [n for n in ("pii", "contract", "expectations") if getattr(self, n)]
        if needing and self.data is None:
            raise ValueError(f"data: say where the rows are to check {', '.join(needing)}")
        if self.retention is not None:
            target = self.retention_target
            if target is None:
                raise ValueError("retention.target: give one, or the dataset's data")
            if target.duckdb is not None and self.retention.time_column is None:
                raise ValueError("retention.time_column: deleting table rows needs one")
        return self

    @property
    def asset_path(self) -> list[str]:
        return self.asset.split("/")

    @property
    def retention_target(self) -> DatasetRef | None:
        if self.retention is None:
            return None
        return self.retention.target or self.data


def load_dataset_spec(path: Path | str) -> GovernedDataset:
    """One spec file (bare, or a component instance with the spec under ``attributes``);
    ConfigError names the file and each bad field."""
    path = Path(path)
    what = f"governance file {path}"
    return validated(GovernedDataset, what, load_spec_mapping(path, what))


def load_dataset_specs(directory: Path | str | None = None) -> list[GovernedDataset]:
    """Every ``*.yaml``/``*.yml`` spec and ``*/defs.yaml`` component instance of
    ``directory``, sorted by path; without a directory, the shipped ones: every
    GovernedDatasetComponent instance under ``defs/``. Two files may not govern the same
    asset (which one would win is not something to guess)."""
    if directory is None:
        instances, files = find_instances(GOVERNED_DATASET), []
    else:
        directory = Path(directory)
        if not directory.is_dir():
            raise ConfigError(f"governance folder {directory}", [("<folder>", "does not exist")])
        files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
        instances = [
            (path, attributes)
            for path, attributes in find_instances(GOVERNED_DATASET, directory)
            if path.parent.parent == directory
        ]
    loaded = [
        (path, validated(GovernedDataset, f"governance file {path}", attributes))
        for path, attributes in instances
    ]
    loaded += [(path, load_dataset_spec(path)) for path in files]
    seen: dict[str, Path] = {}
    specs: list[GovernedDataset] = []
    for path, spec in loaded:
        if spec.asset in seen:
            raise ConfigError(
                f"governance file {path}",
                [("asset", f"{spec.asset!r} is also governed by {seen[spec.asset]}")],
            )
        seen[spec.asset] = path
        specs.append(spec)
    return specs
