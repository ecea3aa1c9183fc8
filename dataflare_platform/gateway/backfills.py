"""The front records who requested a backfill, on the backfill itself.

A backfill's runs are submitted later by the daemon, where no request and no user exist;
for the run coordinator to authorize each of them as the user or service that asked for
the backfill, that principal must travel with it. Every backfill the webserver stores
while serving an authenticated request (``launchPartitionBackfill``,
``reexecutePartitionBackfill``: ``add_backfill``; ``resumePartitionBackfill``:
``update_backfill`` back to REQUESTED) passes through :func:`record_backfill_requesters`,
which writes the request's principal under :data:`REQUESTER_TAG`, over whatever a
re-executed backfill inherited. A caller's own ``dataflare/`` tag on a new backfill is
refused (and the refusal audited): those tags would reach every run of the backfill, and
the daemon's submissions accept ``dataflare/`` tags as the platform's own. So are the
daemon's own tags (``dagster/sensor_name``, ``dagster/schedule_name``,
``dagster/backfill``): on a backfill's runs they would make the run coordinator decide
them as that sensor or schedule instead of the requester.

The hook is on the webserver's instance object in the front's process (the instance's
public ``add_backfill`` / ``update_backfill``), so it sees the backfill exactly as Dagster
is about to store it, after the front authorized the mutation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dataflare_platform.access.backfill_requester import REQUESTER_TAG, requester_tag_value
from dataflare_platform.access.decisions import Decision, Resource
from dataflare_platform.access.principal import (
    CURRENT_PRINCIPAL,
    DAEMON_ORIGIN_TAGS,
    RESERVED_TAG_PREFIX,
)
from dataflare_platform.errors import AccessDeniedError

RecordRefusal = Callable[[Decision], None]


def _stamped(backfill: Any, principal: Any) -> Any:
    tags = {**(backfill.tags or {}), REQUESTER_TAG: requester_tag_value(principal)}
    return backfill._replace(tags=tags)


def record_backfill_requesters(
    instance: Any, record_refusal: RecordRefusal, policy_version: Callable[[], str]
) -> None:
    """Wrap ``instance.add_backfill`` / ``update_backfill`` so that a backfill stored
    while serving a request carries the request's principal (see the module docstring)."""
    from dagster._core.execution.backfill import BulkActionStatus
    from dagster._core.storage.tags import PARENT_BACKFILL_ID_TAG

    add, update = instance.add_backfill, instance.update_backfill

    def add_backfill(backfill: Any) -> None:
        principal = CURRENT_PRINCIPAL.get()
        if principal is None:
            return add(backfill)
        parent = backfill.tags.get(PARENT_BACKFILL_ID_TAG) if backfill.tags else None
        parent_backfill = instance.get_backfill(parent) if parent else None
        inherited = parent_backfill.tags if parent_backfill is not None else {}
        caller_set = sorted(
            key
            for key, value in (backfill.tags or {}).items()
            if (key.startswith(RESERVED_TAG_PREFIX) or key in DAEMON_ORIGIN_TAGS)
            and (inherited or {}).get(key) != value
        )
        if caller_set:
            reason = (
                f"refused: {', '.join(caller_set)}: the {RESERVED_TAG_PREFIX} tag namespace "
                "and the daemon's own tags are reserved to the platform"
            )
            record_refusal(
                Decision(
                    principal=principal,
                    action="launch",
                    resource=Resource(kind="backfill", name=backfill.backfill_id),
                    allowed=False,
                    policy_version=policy_version(),
                    reason=reason,
                )
            )
            raise AccessDeniedError(
                f"{principal.id} may not launch backfill {backfill.backfill_id}: {reason}"
            )
        return add(_stamped(backfill, principal))

    def update_backfill(backfill: Any) -> None:
        principal = CURRENT_PRINCIPAL.get()
        if principal is not None and backfill.status == BulkActionStatus.REQUESTED:
            backfill = _stamped(backfill, principal)  # resumed: its runs are the resumer's
        return update(backfill)

    instance.add_backfill = add_backfill
    instance.update_backfill = update_backfill
