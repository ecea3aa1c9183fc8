"""``dataflare plugin submit``'s control-plane half: the ``plugin_admission`` job run in
process for one submission on the deployment's Dagster instance. Beside ``defs/plugins``
rather than in it because it needs the governance resource, and ``defs.governance``
already sits above ``defs.plugins`` (through streams)."""

from pathlib import Path
from typing import Any

import dagster as dg

from dataflare_platform.defs.governance.resources import GovernanceResource
from dataflare_platform.defs.plugins.admission import (
    SUBMISSIONS,
    SUBMISSIONS_KEY,
    PluginAdmissionResource,
    plugin_admission_job,
    plugin_submissions,
)
from dataflare_platform.defs.resources import ProjectHomeResource


def run_submission(home: Path, dagster_home: Path, key: str, module: Path) -> dict[str, Any]:
    """Run ``plugin_admission`` for release ``key`` (adding its partition) in process on
    the Dagster instance at ``dagster_home``, with the deployment's resources as
    ``definitions.py`` configures them, read from this process's environment (the
    caller, ``dataflare plugin submit``, is the deployment's code location for this one
    run, which is recorded in the instance like a launched one). Returns the verdict:
    ``run_id``, ``admitted``, ``quality_score``, ``attestation``, ``lifecycle`` and
    ``checks_failed``."""
    dataflare = ProjectHomeResource(path=str(home))
    defs = dg.Definitions(
        assets=[plugin_submissions],
        jobs=[plugin_admission_job],
        resources={
            "dataflare": dataflare,
            "governance": GovernanceResource.from_environment(dataflare=dataflare),
            "plugin_admission": PluginAdmissionResource.from_environment(),
        },
    )
    op = "__".join(SUBMISSIONS_KEY.path)
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.add_dynamic_partitions(SUBMISSIONS.name, [key])
        result = defs.resolve_job_def("plugin_admission").execute_in_process(
            instance=instance,
            partition_key=key,
            run_config={"ops": {op: {"config": {"submission": str(module)}}}},
            raise_on_error=False,
        )
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    mats = result.asset_materializations_for_node(op)
    meta = {k: getattr(v, "value", v) for k, v in mats[0].metadata.items()} if mats else {}
    return {
        "run_id": result.run_id,
        "admitted": bool(result.success and checks and all(checks.values())),
        "quality_score": meta.get("quality_score"),
        "attestation": meta.get("attestation"),
        "lifecycle": meta.get("lifecycle"),
        "checks_failed": sorted(name for name, ok in checks.items() if not ok),
    }
