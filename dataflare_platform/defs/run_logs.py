"""Logs of the platform inside Dagster runs: configured once per code-location process,
with the run's identity on every line.

``definitions.py`` calls ``configure_run_logs`` when the code location loads (code server,
run workers, ``dagster job execute``): the platform's JSON handler goes on stderr, which
Dagster captures into each step's compute log, and every record logged during a step
carries ``run_id``, ``job``, ``step`` and ``partition`` from Dagster's current execution
context (a context variable, so the data plane stays free of Dagster). The instance's
``python_logs.managed_python_loggers`` (dagster.yaml) also hands the ``dataflare_platform``
loggers' records to the run's event log.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from dataflare_platform.observability.logs import add_context_provider, configure_logging


def dagster_fields() -> Mapping[str, Any]:
    """The current step's run id, job, step key and partition, or nothing outside a step
    (Dagster's current execution context is a context variable, like ours)."""
    try:
        op = dg.OpExecutionContext.get()
    except dg.DagsterInvariantViolationError:
        return {}
    fields: dict[str, Any] = {"run_id": op.run_id, "job": op.job_name}
    fields["step"] = op.get_step_execution_context().step.key
    if op.has_partition_key:
        fields["partition"] = op.partition_key
    return fields


def configure_run_logs() -> None:
    """The process's log handler (DATAFLARE_LOG_*; JSON unless stderr is a terminal) and
    the Dagster fields on every line; idempotent."""
    add_context_provider(dagster_fields)
    configure_logging()
