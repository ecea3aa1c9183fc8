"""Refusing a run that overrides deployment settings, and recording that it tried.

Shared by the two places that refuse (``instance.run_config_guard`` when a run is
submitted, ``defs.deployment_lock`` when a resource is set up for execution, whatever
path launched the run), so both write the same audit entry: action
``deployment_override_refused``, the run as subject, the refused paths (never their
values: a value may be a credential) and where it was caught.

The audit log written to is the deployment's (``DATAFLARE_AUDIT_URL``, else
``<home>/audit.db`` of the deployment's home), never one the refused run config names.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from dataflare_platform.access.principal import PRINCIPAL_TAG
from dataflare_platform.errors import DeploymentOverrideError

if TYPE_CHECKING:
    from dataflare_platform.compliance.audit import AuditLog

ACTION = "deployment_override_refused"
AUDIT_URL_ENV = "DATAFLARE_AUDIT_URL"
RECENT_ENTRIES = 50
_ACTOR = re.compile(r"^(user|service|sensor|schedule|backfill|client|system):[^\s]{1,200}$")


def actor_from_tags(tags: Mapping[str, str] | None) -> str:
    """The run's principal (``dataflare/principal``, written only by the run coordinator)
    when it is a well-formed ``kind:name``; ``system`` otherwise (an in-process launch on
    the host has no authenticated principal)."""
    value = (tags or {}).get(PRINCIPAL_TAG, "")
    return value if isinstance(value, str) and _ACTOR.match(value) else "system"


def deployment_audit_url(home: str | Path | None = None) -> str:
    """The deployment's audit log: ``$DATAFLARE_AUDIT_URL`` or ``<home>/audit.db``."""
    from dataflare_platform.compliance.audit_keys import AuditSettings

    url = os.environ.get(AUDIT_URL_ENV) or None
    return AuditSettings.resolve(url=url, home=Path(home) if home else None).url


def deployment_audit_log(home: str | Path | None = None, url: str | None = None) -> AuditLog:
    """The deployment's audit log (``url``, else as :func:`deployment_audit_url`) opened
    with its entry key, ready to append; a missing entry key is a ConfigError."""
    from dataflare_platform.compliance.audit import AuditLog
    from dataflare_platform.compliance.audit_keys import AuditSettings

    url = url or os.environ.get(AUDIT_URL_ENV) or None
    return AuditLog.open(AuditSettings.resolve(url=url, home=Path(home) if home else None))


def refuse(
    paths: list[str],
    *,
    run_id: str | None,
    actor: str,
    where: str,
    audit_url: str | None = None,
) -> DeploymentOverrideError:
    """Append the refusal to the audit log and return the error to raise.

    The error is returned even when the audit log cannot be written (the refusal never
    depends on the audit store); the append's failure is chained as its cause.
    """
    # The audit store (SQLModel, SQLAlchemy) is imported on a refusal only: the code
    # location, which imports this module, loads in every run worker.
    from dataflare_platform.compliance.audit import canonical_json

    error = DeploymentOverrideError(paths, where=where)
    try:
        subject = f"run:{run_id}" if run_id else "run:<none>"
        details = {"paths": list(paths), "where": where}
        with deployment_audit_log(url=audit_url) as log:
            # Each step of a run sets its resources up: record a run's refusal once.
            recorded = any(
                entry.action == ACTION
                and entry.subject == subject
                and entry.details == canonical_json(details)
                for entry in log.tail(RECENT_ENTRIES)
            )
            if not recorded or not run_id:
                log.append(actor, ACTION, subject, details)
    except Exception as err:  # the refusal stands whatever the store does
        error.__cause__ = err
    return error
