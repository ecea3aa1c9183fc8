"""Recording a refused plugin load (``plugin_refused``) in the deployment's audit log.

A load is refused when the module's SHA-256 is not the one its lock pins, or no lock
pins it and the deployment refuses unpinned plugins. The entry names the plugin, both
digests (the expected one is None when unpinned) and the lock file; it never holds the
module or anything of the run config. Successful loads are recorded by the audit trail
from the run's materialization (``plugin_loaded``); a refused run has none, hence this.
"""

from __future__ import annotations

import logging
from pathlib import Path

from dataflare_platform.compliance.override_refusals import deployment_audit_log

ACTION = "plugin_refused"
log = logging.getLogger(__name__)


def record_refusal(
    plugin: str,
    actual: str,
    expected: str | None,
    lock: Path | None,
    plugin_dir: Path,
    home: Path | None = None,
    actor: str = "system",
) -> None:
    """Append the refusal; a failing audit store is logged, never turns the refusal into
    an acceptance (the caller raises either way)."""
    details = {
        "sha256": actual,
        "expected_sha256": expected,
        "lock": str(lock) if lock else None,
        "plugin_dir": str(plugin_dir),
        "reason": "digest_mismatch" if expected else "unpinned",
    }
    try:
        with deployment_audit_log(home) as audit:
            audit.append(actor, ACTION, plugin, details)
    except Exception:  # the refusal stands whatever the store does
        log.exception("could not audit the refusal of plugin %s", plugin)
