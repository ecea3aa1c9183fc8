"""Dagster components of the platform: a stream pipeline and a governed dataset, each
declared by one ``defs.yaml`` (``dg scaffold defs <type> <path>`` writes a starting one).

Registered for ``dg`` through ``[tool.dg.project] registry_modules`` and the
``dagster_dg_cli.registry_modules`` entry point, so ``dg list components`` shows them.
"""

from dataflare_platform.components.governed_dataset import GovernedDatasetComponent
from dataflare_platform.components.stream_pipeline import StreamPipelineComponent

__all__ = ["GovernedDatasetComponent", "StreamPipelineComponent"]
