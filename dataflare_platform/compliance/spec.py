"""The governance spec of ONE dataset, one YAML file each:

    asset: streams/hot_items
    pii:
      columns: {email: pii_masked, card: pii_encrypted, phone: pii_allowed}
      scan: all_strings            # or a list of columns
    contract:
      columns:
        - {name: window_end, type: "Datetime(ms)", nullable: false}
        - {name: item, type: String}
      allow_extra: false
    freshness: {max_lag: 2h}
    retention:
      keep: 30d
      time_column: window_end
      target: {duckdb: {table: hot_items}}   # or {parquet_dir: ...} or {topic: ...}
    expectations:                  # a Great Expectations suite
      - expect_column_values_to_not_be_null: {column: item}

Every section is optional. ``expectations`` is kept opaque here (a list of mappings):
its model, and its validation, belong to ``compliance.expectations``, which runs the
suite. Relative paths are resolved against the spec file's folder, so a folder of
specs can move as a whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dataflare_platform.compliance.contracts import SchemaContract
from dataflare_platform.compliance.freshness import FreshnessPolicy
from dataflare_platform.compliance.pii import PiiPolicy
from dataflare_platform.compliance.retention import RetentionPolicy
from dataflare_platform.errors import ConfigError

_ASSET = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$"


class DuckDBTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path | None = None  # None: the project's warehouse
    table: str = Field(min_length=1)


class RetentionTarget(BaseModel):
    """Exactly one store: a DuckDB table, a folder of time partitions, or a topic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    duckdb: DuckDBTarget | None = None
    parquet_dir: Path | None = None
    topic: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> RetentionTarget:
        chosen = [k for k in ("duckdb", "parquet_dir", "topic") if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise ValueError(
                f"give exactly one of duckdb, parquet_dir, topic (got {chosen or 'none'})"
            )
        return self


class RetentionSpec(RetentionPolicy):
    target: RetentionTarget

    @model_validator(mode="after")
    def _rows_need_time(self) -> RetentionSpec:
        if self.target.duckdb is not None and self.time_column is None:
            raise ValueError("deleting rows of a DuckDB table needs a time_column")
        return self


class GovernedDataset(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    asset: str = Field(pattern=_ASSET)  # the asset key, "/"-separated
    pii: PiiPolicy | None = None
    contract: SchemaContract | None = None
    freshness: FreshnessPolicy | None = None
    retention: RetentionSpec | None = None
    expectations: list[dict[str, Any]] | None = None  # see compliance.expectations

    @property
    def asset_path(self) -> list[str]:
        return self.asset.split("/")

    def relative_to(self, base: Path) -> GovernedDataset:
        """Relative store paths resolved against ``base`` (the spec file's folder)."""
        if self.retention is None:
            return self
        target = self.retention.target

        def resolve(path: Path) -> Path:
            return path if path.is_absolute() else base / path

        if target.parquet_dir is not None:
            target = target.model_copy(update={"parquet_dir": resolve(target.parquet_dir)})
        elif target.duckdb is not None and target.duckdb.path is not None:
            duck = target.duckdb.model_copy(update={"path": resolve(target.duckdb.path)})
            target = target.model_copy(update={"duckdb": duck})
        return self.model_copy(
            update={"retention": self.retention.model_copy(update={"target": target})}
        )


def load_dataset_spec(path: Path | str) -> GovernedDataset:
    """One spec file; ConfigError names the file and each bad field."""
    path = Path(path)
    what = f"governance file {path}"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(what, [("<file>", str(err))]) from None
    if not isinstance(data, dict):
        raise ConfigError(what, [("<root>", "must hold a mapping")])
    try:
        spec = GovernedDataset.model_validate(data)
    except ValidationError as err:
        raise ConfigError.from_validation(what, err) from None
    return spec.relative_to(path.parent)


def load_dataset_specs(directory: Path | str) -> list[GovernedDataset]:
    """Every ``*.yaml``/``*.yml`` spec of ``directory``, sorted by file name. Two files may
    not govern the same asset (which one would win is not something to guess)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"governance folder {directory}", [("<folder>", "does not exist")])
    files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    seen: dict[str, Path] = {}
    specs: list[GovernedDataset] = []
    for path in files:
        spec = load_dataset_spec(path)
        if spec.asset in seen:
            raise ConfigError(
                f"governance file {path}",
                [("asset", f"{spec.asset!r} is also governed by {seen[spec.asset].name}")],
            )
        seen[spec.asset] = path
        specs.append(spec)
    return specs
