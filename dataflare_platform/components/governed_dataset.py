"""A governed dataset as a Dagster component: the ``attributes`` of its ``defs.yaml`` are
the dataset's governance spec (``compliance/spec.py``): where its rows are, PII policy,
schema contract, freshness, retention and a Great Expectations suite.

    type: dataflare_platform.components.GovernedDatasetComponent
    attributes:
      asset: streams/big_bids
      data: {duckdb: {path: streams/big_bids.duckdb, table: big_bids}}
      freshness: {max_lag: 2h}
      retention: {keep: 30d, time_column: date_time}

``build_defs`` calls the governance check builders (``defs/governance/``) for this
dataset. What spans every governed dataset (the retention asset, the audit trail,
alerting, the compliance report) is built once by the governance domain from all
instances, and the freshness sensor by the root definitions over every freshness check.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import BaseModel, ConfigDict, ValidationError

from dataflare_platform.compliance.spec import GovernedDataset
from dataflare_platform.component_files import INSTANCE_FILE
from dataflare_platform.defs.governance.dataset_checks import dataset_checks
from dataflare_platform.errors import ConfigError

EXAMPLE: dict[str, Any] = {
    "freshness": {"max_lag": "2h"},
}


class DatasetAttributes(BaseModel):
    """What dg checks in ``defs.yaml`` before loading: a mapping naming the asset.
    ``GovernedDataset`` then validates the whole spec, naming file and field."""

    model_config = ConfigDict(extra="allow")

    asset: str


class GovernedDatasetScaffolder(dg.Scaffolder):
    """Writes a spec for the asset ``streams/<folder name>`` to edit from there."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        name = request.target_path.name.replace("-", "_")
        dg.scaffold_component(
            request,
            {
                "asset": f"streams/{name}",
                "data": {"duckdb": {"path": f"streams/{name}.duckdb", "table": name}},
                **EXAMPLE,
            },
        )


@dg.scaffold_with(GovernedDatasetScaffolder)
class GovernedDatasetComponent(dg.Component):
    """Checks of one dataset (expectations, PII, schema contract, freshness) from its
    governance spec; a retention period joins the governance domain's retention asset."""

    def __init__(self, spec: GovernedDataset) -> None:
        self.spec = spec

    @classmethod
    def get_model_cls(cls) -> type[BaseModel]:
        return DatasetAttributes

    @classmethod
    def load(cls, attributes: BaseModel | None, context: dg.ComponentLoadContext):
        data = attributes.model_dump(exclude_unset=True) if attributes is not None else {}
        try:
            spec = GovernedDataset.model_validate(data)
        except ValidationError as err:
            raise ConfigError.from_validation(
                f"governance file {context.path / INSTANCE_FILE}", err
            ) from None
        return cls(spec)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return dg.Definitions(asset_checks=dataset_checks(self.spec))
