"""Which settings belong to the deployment and which knobs a launch may turn.

A run's config can reach every field of every resource (``resources.<name>.config.
<field>``): left open, a launch could point the plugin folder at a directory holding a
planted module, the compile cache at planted artifacts, the plugin lock at pins of its
own, or the audit key folder at keys of its own. The fields that define the deployment
(home, plugin folder, compile cache, plugin lock, audit and alert stores, sandbox limits,
broker settings) therefore come from the deployment's configuration and environment
only; a launch keeps the knobs listed in ``LAUNCH_KNOBS`` (offset ranges, intervals, dry
run, ...).

``forbidden_overrides`` is the one check, failing closed: any key under ``resources`` is
refused (a resource field nobody registered yet is deployment-only until reviewed), as is
an op config field or a top-level section outside the allow-lists. It is pure (no
Dagster), so the run coordinator (``instance.run_config_guard``) and the resources'
execution-time check (``defs.deployment_lock``) apply the same rule.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping
from typing import Any

from dataflare_platform.errors import ConfigError

# resource key -> field -> environment variable the deployment sets it with (None: set in
# the deployment's code only, e.g. definitions.py; never at launch either way). A test
# holds this registry equal to the fields the resource classes mark
# ``json_schema_extra={"deployment": True}``.
DEPLOYMENT_SETTINGS: Mapping[str, Mapping[str, str | None]] = {
    "dataflare": {"path": "DATAFLARE_HOME"},
    "governance": {
        "dataflare": None,  # the nested home resource: the same deployment home
        "audit_url": "DATAFLARE_AUDIT_URL",
        "alert_rules": "DATAFLARE_ALERT_RULES",
        "alert_state_url": "DATAFLARE_ALERT_STATE_URL",
        "keyring_dir": "DATAFLARE_KEYRING_DIR",  # field-encryption keys (outside the home)
        "data_keys_dir": "DATAFLARE_DATA_KEYS_DIR",
    },
    "plugins": {
        "plugin_dir": "DATAFLARE_PLUGIN_DIR",
        # The authenticated compile cache (<home>/platform/plugin-cache) and its MAC key.
        "cache_dir": "DATAFLARE_PLUGIN_CACHE_DIR",
        "cache_key_file": "DATAFLARE_PLUGIN_CACHE_KEY_FILE",
        # Plugin pins: the deployment's lock, and whether unpinned plugins may load.
        "lock_file": "DATAFLARE_PLUGIN_LOCK",
        "allow_unpinned": "DATAFLARE_PLUGIN_ALLOW_UNPINNED",
        "lock_key_file": "DATAFLARE_PLUGIN_LOCK_KEY_FILE",  # authenticates the locks
        "deadline_ms": None,
        "memory_mb": "DATAFLARE_PLUGIN_MEMORY_MB",
        "fuel": "DATAFLARE_PLUGIN_FUEL",
        "granted_capabilities": None,
        "build_missing": None,
        # Marketplace plugins: how long a load trusts the cached, verified registry view.
        "marketplace_refresh_s": "DATAFLARE_MARKETPLACE_REFRESH_S",
    },
    "plugin_admission": {
        "registry_dir": "DATAFLARE_REGISTRY_DIR",
        "scan_key_file": "DATAFLARE_PLUGIN_SCAN_KEY_FILE",
        "allowed_capabilities": None,
        "allowed_licences": None,
        "max_module_bytes": None,
    },
}

# Op/asset config fields a launcher may set (every ``dg.Config`` of the code location; a
# test fails when a job exposes a field that is not listed, so a new one is reviewed).
LAUNCH_KNOBS: frozenset[str] = frozenset(
    {
        # streams/<name>: the offset range of a micro-batch run (StreamRange)
        "until",
        # <pipeline>_continuous (ContinuousConfig)
        "checkpoint_interval_s",
        "progress_interval_s",
        "rate_window_s",
        "restart_backoff_s",
        # <pipeline>_workers (WorkerConfig): how many workers, which one, log cadence
        "workers",
        "index",
        "log_interval_s",
        # plugin_admission (PluginSubmissionConfig): the submitted module's path
        "submission",
        # replay_job (ReplayConfig): a pipeline and an interval or offset ranges
        "pipeline",
        "from_time",
        "to_time",
        "offsets",
        "into_table",
        # retention (RetentionConfig)
        "dry_run",
        "as_of",
        "lock_attempts",
        "lock_backoff_s",
        # alert acknowledgement (AcknowledgeConfig)
        "alert",
        "by",
        "note",
        # plugins/masked_persons (MaskedPersonsConfig)
        "rows",
        "min_digits",
        # plugins/usage_daily_by_plugin (UsageRollupConfig): the regression check's
        # sensitivity; the values used are recorded in the check's metadata
        "regression_threshold",
        "regression_days",
        "min_calls",
    }
)

# Top-level run config sections a launch may use besides ``ops``: Dagster's executor and
# logger settings (parallelism, log level) define no deployment setting; the executor's
# ``start_method`` (whose ``preload_modules`` import code in the worker) is refused.
LAUNCH_SECTIONS: frozenset[str] = frozenset({"ops", "execution", "loggers"})


def forbidden_overrides(
    run_config: Mapping[str, Any] | None,
    launch_knobs: Collection[str] = LAUNCH_KNOBS,
) -> list[str]:
    """Each path of ``run_config`` a launch may not set, sorted; empty when it is clean.

    Resource settings are named ``resources.<name>.config.<field>`` whatever the
    spelling (``resources.<name>.<field>`` without ``config`` is named the same way,
    ``resources.<name>`` for a non-mapping value); op config fields outside
    ``launch_knobs`` as ``ops.<op>.config.<field>``, op inputs/outputs as
    ``ops.<op>.inputs``; the executor's ``start_method``; other top-level sections by name.
    Only paths are returned, never values (a value may be a credential).
    """
    if not run_config:
        return []
    if not isinstance(run_config, Mapping):
        return ["<run config is not a mapping>"]
    found: set[str] = set()
    for section, body in run_config.items():
        if section == "resources":
            found.update(_resource_paths(body))
        elif section == "ops":
            found.update(_op_paths(body, launch_knobs))
        elif section == "execution":
            found.update(_execution_paths(body))
        elif section not in LAUNCH_SECTIONS:
            found.add(str(section))
    return sorted(found)


def _resource_paths(resources: Any) -> set[str]:
    if not isinstance(resources, Mapping):
        return {"resources"}
    found: set[str] = set()
    for name, body in resources.items():
        if not isinstance(body, Mapping) or not body:
            found.add(f"resources.{name}")
            continue
        for key, value in body.items():
            if key == "config" and isinstance(value, Mapping) and value:
                found.update(f"resources.{name}.config.{field}" for field in value)
            elif key == "config":
                found.add(f"resources.{name}.config")
            else:  # shorthand (no ``config``): Dagster refuses it too, named the same
                found.add(f"resources.{name}.config.{key}")
    return found


def _op_paths(ops: Any, launch_knobs: Collection[str]) -> set[str]:
    if not isinstance(ops, Mapping):
        return {"ops"}
    found: set[str] = set()
    for op, body in ops.items():
        if not isinstance(body, Mapping):
            continue  # Dagster's own schema refuses a non-mapping op entry
        for key, value in body.items():
            if key == "ops":  # a graph's inner ops
                found.update(f"ops.{op}.{path}" for path in _op_paths(value, launch_knobs))
            elif key == "config" and isinstance(value, Mapping):
                found.update(
                    f"ops.{op}.config.{field}" for field in value if field not in launch_knobs
                )
            elif key != "config":  # inputs / outputs: values loaded or written by managers
                found.add(f"ops.{op}.{key}")
    return found


# Executor settings that load code or change how processes start: never from a launch.
_EXECUTION_REFUSED = frozenset({"start_method", "preload_modules"})


def _execution_paths(execution: Any, prefix: str = "execution") -> set[str]:
    if not isinstance(execution, Mapping):
        return set()  # Dagster's own schema refuses it
    found: set[str] = set()
    for key, value in execution.items():
        path = f"{prefix}.{key}"
        if key in _EXECUTION_REFUSED:
            found.add(path)
        elif isinstance(value, Mapping):
            found.update(_execution_paths(value, path))
    return found


def deployment_fields(resource: str) -> Mapping[str, str | None]:
    """The registered deployment fields of resource key ``resource`` (empty if none)."""
    return DEPLOYMENT_SETTINGS.get(resource, {})


# -- batch fan-out ---------------------------------------------------------------------
# The Celery broker of the fan-out jobs (``defs/fanout.py``) and of their workers
# (``instance/celery_worker.py``): a URL that may hold a password, so it comes from the
# environment of the run and of the workers only, never from code, a file under version
# control or a launch (the executor's config is fixed, so a run config cannot name another).
CELERY_BROKER_ENV = "DATAFLARE_CELERY_BROKER_URL"
# Task results return over the same broker (Celery's RPC backend): no second URL.
CELERY_BACKEND = "rpc://"


def celery_broker_url() -> str:
    """The broker URL from the environment of the run (or worker) that asks, when it asks;
    a missing one is a configuration error naming the variable, never a default broker."""
    url = os.environ.get(CELERY_BROKER_ENV, "").strip()
    if not url:
        raise ConfigError(
            "Celery fan-out settings", [(CELERY_BROKER_ENV, "not set (the Celery broker's URL)")]
        )
    return url


# -- pipeline builders ------------------------------------------------------------------
# A YAML pipeline may name a Python builder (``builder: "package.module:function"``); the
# module is imported when the spec is validated (``dataflare pipeline validate``, a code
# location loading it), so naming one runs its code. Only modules inside these packages
# may be named: the platform's own builders, plus the packages the deployment lists in
# ``DATAFLARE_PIPELINE_BUILDERS`` (comma-separated dotted names, read where specs are
# validated, never from a pipeline file or a launch). Anything else is refused before it
# is imported.
PIPELINE_BUILDERS_ENV = "DATAFLARE_PIPELINE_BUILDERS"
SHIPPED_BUILDER_PACKAGES: tuple[str, ...] = ("dataflare_platform.pipelines.builders",)
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def builder_packages(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The packages whose modules a pipeline file may name as its builder: the shipped
    ones plus ``$DATAFLARE_PIPELINE_BUILDERS``. An entry that is not a dotted name is
    refused naming the variable (a typo must not widen or silently narrow the list)."""
    env = os.environ if environ is None else environ
    extra = [p.strip() for p in env.get(PIPELINE_BUILDERS_ENV, "").split(",") if p.strip()]
    bad = [p for p in extra if not _DOTTED.match(p)]
    if bad:
        raise ConfigError(
            "deployment settings",
            [(PIPELINE_BUILDERS_ENV, f"not a dotted package name: {bad[0][:80]!r}")],
        )
    return SHIPPED_BUILDER_PACKAGES + tuple(extra)


def builder_allowed(module: str, packages: tuple[str, ...]) -> bool:
    """Whether ``module`` is one of ``packages`` or inside one."""
    return any(module == p or module.startswith(p + ".") for p in packages)


def env_flag(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """A yes/no deployment variable (unset is no); anything but a plain yes or no is
    refused naming the variable (a typo must not flip a security setting)."""
    env = os.environ if environ is None else environ
    value = env.get(name, "").strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError("deployment environment", [(name, f"{value!r} is not true or false")])
