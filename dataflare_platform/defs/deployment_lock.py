"""Deployment settings checked again when a resource is set up for execution.

The run coordinator refuses a submitted run that overrides a deployment setting, but a
run executed in process on the host (``dagster job execute -c``, ``execute_in_process``,
``materialize``) never meets a coordinator. So every platform resource derives from
``DeploymentLockedResource``, whose ``setup_for_execution`` refuses, whatever path
launched the run:

1. a run config naming anything a launch may not set (``deployment_settings.
   forbidden_overrides``, the coordinator's rule), and
2. a deployment field (marked ``json_schema_extra={"deployment": True}``) whose value
   differs from what the definition configured: the environment variable's value for a
   field bound to ``dg.EnvVar`` in the definitions, else the definition's value (the
   class default when it set none). This second check does not depend on how the run
   config spelled the override.

A refusal raises ``DeploymentOverrideError`` naming ``resources.<key>.config.<field>``
and appends a ``deployment_override_refused`` entry to the deployment's audit log (actor
from the run's ``dataflare/principal`` tag, else ``system``).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import dagster as dg
from pydantic import Field

from dataflare_platform.compliance.override_refusals import (
    actor_from_tags,
    deployment_audit_url,
    refuse,
)
from dataflare_platform.deployment_settings import env_flag, forbidden_overrides
from dataflare_platform.errors import ConfigError
from dataflare_platform.home import HOME_ENV_VAR

_MISSING = object()


def deployment_field(
    default: Any = _MISSING, *, env: str | None, description: str = "", **kwargs: Any
) -> Any:
    """A pydantic ``Field`` marked as a deployment setting (set by ``env`` in the
    deployment's environment, or in its code when ``env`` is None). Its description, which
    the launchpad shows on the field, says that a launch may not set it."""
    extra = {"deployment": True, "env": env}
    source = f"${env}" if env else "the code location"
    note = f"Deployment setting (from {source}): a run config setting it is refused."
    description = f"{description} {note}".strip()
    if default is _MISSING:
        return Field(json_schema_extra=extra, description=description, **kwargs)
    return Field(default, json_schema_extra=extra, description=description, **kwargs)


class DeploymentLockedResource(dg.ConfigurableResource):
    """Base of the platform's resources: refuses deployment overrides at execution.

    ``deployment_key`` is the resource's key in the code location's definitions (used to
    name the refused path); subclasses overriding ``setup_for_execution`` call super.
    """

    deployment_key: ClassVar[str] = ""

    @classmethod
    def deployment_field_names(cls) -> dict[str, str | None]:
        """Field name -> environment variable (None: code-only) of marked fields."""
        found: dict[str, str | None] = {}
        for name, info in cls.model_fields.items():
            extra = info.json_schema_extra
            if isinstance(extra, dict) and extra.get("deployment"):
                env = extra.get("env")
                found[name] = env if isinstance(env, str) else None
        return found

    @classmethod
    def from_environment(cls, **code_values: Any) -> Any:
        """The resource as the deployment configures it: ``code_values`` (the
        definitions' own) plus, for each deployment field whose environment variable is
        set where the definitions load, ``dg.EnvVar`` of it (resolved again in every run
        worker, never taken from a launch). Unset variables leave the class default."""
        values = dict(code_values)
        for name, env in cls.deployment_field_names().items():
            if env is None or name in values or env not in os.environ:
                continue
            annotation = str(cls.model_fields[name].annotation)
            if cls.model_fields[name].annotation is bool:
                # Dagster has no boolean EnvVar: read where the definitions load (the
                # deployment's environment), refusing anything but a plain yes or no.
                values[name] = _env_bool(env)
            else:
                values[name] = dg.EnvVar.int(env) if "int" in annotation else dg.EnvVar(env)
        return cls(**values)

    @classmethod
    def resolved_from_environment(cls, **code_values: Any) -> Any:
        """The resource as ``from_environment`` configures it, with the environment's
        values read now instead of ``dg.EnvVar`` (for commands that use the resource's
        logic outside any Dagster run, e.g. ``dataflare pipeline run``, so they load
        exactly what a run of the deployment would). A bad value is refused naming its
        variable."""
        values = dict(code_values)
        for name, env in cls.deployment_field_names().items():
            if env is None or name in values or env not in os.environ:
                continue
            annotation = str(cls.model_fields[name].annotation)
            if cls.model_fields[name].annotation is bool:
                values[name] = _env_bool(env)
            elif "int" in annotation:
                raw = os.environ[env].strip()
                if not raw.lstrip("-").isdigit() or len(raw) > 18:
                    raise ConfigError("deployment environment", [(env, "not an integer")])
                values[name] = int(raw)
            else:
                values[name] = os.environ[env]
        return cls(**values)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        check_deployment_settings(self, context)


def _env_bool(env: str) -> bool:
    return env_flag(env)


def _definition_values(
    resource: DeploymentLockedResource, context: dg.InitResourceContext
) -> dict[str, Any] | None:
    """The config the definition gave this resource (EnvVar as ``{"env": NAME}``); None
    when the context's definition is not this resource's (a nested resource is set up
    with its parent's context) or there is none (a bare init context)."""
    try:
        resource_def = context.resource_def
    except dg.DagsterInvariantViolationError:  # a context built outside any run
        return None
    if resource_def is None or resource_def.config_schema is None:
        return None
    field = resource_def.config_schema.as_field()
    own = {
        name
        for name in type(resource).model_fields
        if not isinstance(getattr(resource, name), dg.ConfigurableResource)
    }
    if set(getattr(field.config_type, "fields", {})) != own:
        return None
    value = field.default_value if field.default_provided else {}
    return dict(value) if isinstance(value, dict) else {}


def _differs(actual: Any, expected: Any) -> bool:
    if isinstance(expected, dict) and set(expected) == {"env"}:
        env_value = os.environ.get(str(expected["env"]))
        return env_value is None or str(actual) != env_value
    return actual != expected


def changed_deployment_fields(
    resource: DeploymentLockedResource, context: dg.InitResourceContext
) -> list[str]:
    """Deployment fields whose value is not the one the definition configured."""
    configured = _definition_values(resource, context)
    if configured is None:  # nested resource or a bare init context: nothing to compare
        return []
    changed = []
    for name in resource.deployment_field_names():
        actual = getattr(resource, name)
        if isinstance(actual, dg.ConfigurableResource):
            continue  # a nested resource checks itself when it is set up
        if name in configured:
            expected = configured[name]
        else:
            info = type(resource).model_fields[name]
            expected = info.get_default(call_default_factory=True)
        if _differs(actual, expected):
            changed.append(f"resources.{resource.deployment_key or '<resource>'}.config.{name}")
    return changed


def check_deployment_settings(
    resource: DeploymentLockedResource, context: dg.InitResourceContext
) -> None:
    """Raise ``DeploymentOverrideError`` (audited) when the run overrides a deployment
    setting; see the module docstring for the two checks."""
    run = context.run
    paths = set(forbidden_overrides(run.run_config)) if run is not None else set()
    paths.update(changed_deployment_fields(resource, context))
    if not paths:
        return
    raise refuse(
        sorted(paths),
        run_id=run.run_id if run is not None else None,
        actor=actor_from_tags(run.tags if run is not None else None),
        where="run execution",
        audit_url=_deployment_audit_url(resource, _definition_values(resource, context) or {}),
    )


def _deployment_audit_url(resource: DeploymentLockedResource, configured: dict[str, Any]) -> str:
    """The deployment's audit log, from values no run config could have changed: the
    environment, the definition's configured values, a nested resource (not overridable
    by run config in Dagster 1.13)."""
    audit_url = configured.get("audit_url")
    if isinstance(audit_url, str) and audit_url:
        return audit_url
    home = os.environ.get(HOME_ENV_VAR)
    nested = getattr(resource, "dataflare", None)
    if not home and isinstance(nested, dg.ConfigurableResource):
        home = getattr(nested, "path", None)
    if not home and isinstance(configured.get("path"), str):
        home = configured["path"]
    return deployment_audit_url(home)
