"""Root definitions of the code location (``dg``'s target module, and the module that
``workspace.yaml`` and ``dagster-webserver -m`` load).

Every domain under ``defs/`` is autoloaded by ``dg.load_from_defs_folder``: Python
modules (``defs/<domain>/*.py``) and component instances (``defs.yaml`` files: stream
pipelines, governed datasets), so adding a domain or a YAML file needs no edit here.
What is cross-cutting is applied here, once: the shared resources, the default executor
(one writer per DuckDB file), one sensor that evaluates every freshness check in the
code location and one that evaluates every automation condition (``defs/automation.py``).
"""

import os
from pathlib import Path

import dagster as dg

from dataflare_platform.defs.automation import automation_sensor
from dataflare_platform.defs.governance.dataset_checks import freshness_sensors
from dataflare_platform.defs.governance.definitions import DEFAULT_INTERVAL_S
from dataflare_platform.defs.governance.resources import GovernanceResource
from dataflare_platform.defs.plugins.admission import PluginAdmissionResource
from dataflare_platform.defs.plugins.resources import PluginRuntimeResource
from dataflare_platform.defs.pools import executor
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.defs.run_logs import configure_run_logs
from dataflare_platform.defs.streams.intervals import sensor_interval_override
from dataflare_platform.home import HOME_ENV_VAR, PRIVATE_UMASK

# Every Dagster process that loads the code location (code server, run workers, `dagster
# job execute`) creates owner-only files under the home, however it was started.
os.umask(PRIVATE_UMASK)
# ... and logs the platform's records as JSON lines on stderr (text on a terminal) with the
# run id, job and step of the step in scope; DATAFLARE_LOG_* set it (observability/logs.py).
configure_run_logs()

# Every field of these resources is a deployment setting: it comes from the environment
# the code location runs in (deployment_settings.DEPLOYMENT_SETTINGS names the variables)
# and a run config naming one is refused, by the run coordinator and again when the
# resource is set up for execution (defs/deployment_lock.py, docs/security.md).
home = ProjectHomeResource(path=dg.EnvVar(HOME_ENV_VAR))
resources = {
    "dataflare": home,
    # Audit log, alert rules and alert state under the home unless DATAFLARE_AUDIT_URL,
    # DATAFLARE_ALERT_RULES or DATAFLARE_ALERT_STATE_URL say otherwise; the audit keys are
    # never under the home (DATAFLARE_AUDIT_SIGNING_KEY / _TRUSTED_KEYS, or what
    # `dataflare audit init` provisioned; docs/security.md).
    "governance": GovernanceResource.from_environment(dataflare=home),
    # Plugins under <DATAFLARE_HOME>/plugins (samples built on first use) unless
    # DATAFLARE_PLUGIN_DIR is set; DATAFLARE_PLUGIN_MEMORY_MB / _FUEL set the sandbox.
    "plugins": PluginRuntimeResource.from_environment(),
    # Plugin admission: the registry (DATAFLARE_REGISTRY_DIR) and the scan report's
    # signing key (DATAFLARE_PLUGIN_SCAN_KEY_FILE, outside the home).
    "plugin_admission": PluginAdmissionResource.from_environment(),
}


def build_definitions() -> dg.Definitions:
    """The defs folder's definitions with the cross-cutting policy applied."""
    loaded = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    policy = dg.Definitions(
        sensors=[
            *freshness_sensors(
                loaded.asset_checks or [], sensor_interval_override() or DEFAULT_INTERVAL_S
            ),
            automation_sensor(),
        ],
        resources=resources,
        # One step per DuckDB file at a time (defs/pools.py), so any selection
        # materialized from the UI keeps one writer per file.
        executor=executor,
    )
    return dg.Definitions.merge(loaded, policy)


# A Definitions object (not a @dg.definitions function), so tests and tools can import it.
defs = build_definitions()
