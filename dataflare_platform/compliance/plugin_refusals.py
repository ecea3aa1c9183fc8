"""Recording plugin pin decisions in the deployment's audit log: a refused load
(``plugin_refused``) and a load let through unpinned by the development opt-out
``DATAFLARE_PLUGIN_ALLOW_UNPINNED=true`` (``plugin_unpinned_loaded``).

A load is refused when the module's SHA-256 is not the one its lock pins, no lock pins it
and the deployment refuses unpinned plugins, or the lock itself fails its authenticator
(``plugins.lock``). The entry names the plugin, both digests (the expected one is None
when unpinned; for a lock refusal ``sha256`` is the lock file's digest), the lock file
and the reason; it never holds the module or anything of the run config. The actor is
the run's authenticated principal (``dataflare/principal``, as every run-side entry since
the access-control issue) and the run id is in the details; outside a run (CLI, Python
API) the actor is ``system``. Successful pinned loads are recorded by the audit trail
from the run's materialization (``plugin_loaded``); a refused run has none, hence this.

Both recorders are also the ``dataflare_platform.plugin_audit`` entry points, through
which the data plane's Python API and CLI reach the audit store they sit below.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from dataflare_platform.compliance.override_refusals import deployment_audit_log
from dataflare_platform.plugins.lock import PluginPinError

ACTION = "plugin_refused"
UNPINNED_ACTION = "plugin_unpinned_loaded"
MARKETPLACE_ACTION = "plugin_marketplace_refused"
log = logging.getLogger(__name__)


def record_refusal(
    error: PluginPinError,
    plugin_dir: Path,
    home: Path | None = None,
    actor: str = "system",
    run_id: str | None = None,
) -> None:
    """Append the refusal; a failing audit store is logged, never turns the refusal into
    an acceptance (the caller raises either way)."""
    details = {
        "sha256": error.actual,
        "expected_sha256": error.expected,
        "lock": str(error.lock) if error.lock else None,
        "plugin_dir": str(plugin_dir),
        "reason": error.reason,
        "what": error.what,
        "run_id": run_id,
    }
    _append(actor, ACTION, error.plugin, details, home)


def record_unpinned(
    name: str,
    sha256: str,
    plugin_dir: Path,
    home: Path | None = None,
    actor: str = "system",
    run_id: str | None = None,
) -> None:
    """Append a load the development opt-out let through (no lock pins the module)."""
    details = {
        "sha256": sha256,
        "plugin_dir": str(plugin_dir),
        "reason": "allow_unpinned",
        "setting": "DATAFLARE_PLUGIN_ALLOW_UNPINNED",
        "run_id": run_id,
    }
    _append(actor, UNPINNED_ACTION, name, details, home)


def record_marketplace_refusal(
    error: Any,
    home: Path | None = None,
    actor: str = "system",
    run_id: str | None = None,
) -> None:
    """Append a refusal by the signed registry (``MarketplaceError``) of an install, a
    verify or a load: plugin, version, reason and its detail (digests, target paths,
    the publisher's or operator's stated reason; never a key or credential)."""
    details = {
        "version": getattr(error, "version", None),
        "reason": error.reason,
        # A registry URL's user:password would come through in a fetch error's text.
        "detail": re.sub(r"://[^/@\s]+@", "://***@", str(error.detail)),
        "stage": getattr(error, "stage", "") or "load",
        "run_id": run_id,
    }
    _append(actor, MARKETPLACE_ACTION, error.plugin, details, home)


def _append(actor: str, action: str, subject: str, details: dict[str, Any], home) -> None:
    try:
        with deployment_audit_log(home) as audit:
            audit.append(actor, action, subject, details)
    except Exception:  # the decision stands whatever the store does
        log.exception("could not audit %s of plugin %s", action, subject)
