"""The run coordinator's check that a submitted run overrides no deployment setting.

Stable API for the run coordinator (and any other submit path)::

    from dataflare_platform.instance.run_config_guard import (
        forbidden_overrides,   # (run_config: Mapping[str, Any] | None,
                               #  launch_knobs: Collection[str] = LAUNCH_KNOBS) -> list[str]
        refuse_overrides,      # (run_config, *, run_id, actor, audit_url=None) -> None
    )

``forbidden_overrides(run.run_config)`` returns the sorted paths a launch may not set
(``resources.<name>.config.<field>``, op config fields outside ``LAUNCH_KNOBS``, unknown
top-level sections); empty means the run may go on. ``refuse_overrides`` does the same
and, when something is refused, appends a ``deployment_override_refused`` entry to the
deployment's audit log (actor: the principal the coordinator authenticated) and raises
``DeploymentOverrideError`` naming each path — the coordinator should call it before
submitting and let the error fail the submission (its message is meant for the caller).

This is the first of two independent locks: resources set up for execution check the run
config and their field values again (``defs.deployment_lock``), so an in-process launch
on the host (``dagster job execute -c``, ``execute_in_process``) that never meets the
coordinator is refused and audited too. The rule itself lives in
``dataflare_platform.deployment_settings`` (no Dagster), shared by both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dataflare_platform.compliance.override_refusals import refuse
from dataflare_platform.deployment_settings import (
    DEPLOYMENT_SETTINGS,
    LAUNCH_KNOBS,
    LAUNCH_SECTIONS,
    forbidden_overrides,
)

__all__ = [
    "DEPLOYMENT_SETTINGS",
    "LAUNCH_KNOBS",
    "LAUNCH_SECTIONS",
    "forbidden_overrides",
    "refuse_overrides",
]


def refuse_overrides(
    run_config: Mapping[str, Any] | None,
    *,
    run_id: str | None,
    actor: str,
    audit_url: str | None = None,
) -> None:
    """Raise ``DeploymentOverrideError`` (after auditing) if ``run_config`` sets anything
    a launch may not; return None otherwise. ``actor`` is ``Principal.id`` (``kind:name``)
    or ``system``; ``audit_url`` defaults to the deployment's audit log."""
    paths = forbidden_overrides(run_config)
    if paths:
        raise refuse(paths, run_id=run_id, actor=actor, where="submitted run", audit_url=audit_url)
