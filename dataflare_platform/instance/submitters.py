"""Who submitted a run: the principal the run coordinator authorizes, and the tags a
submitter may not set.

There are three ways a run reaches the coordinator, told apart by what the platform itself
controls, never by anything in the run:

1. **Through the platform's web front.** The front authenticates the request and sets
   :data:`CURRENT_PRINCIPAL` around it; the GraphQL launch runs in that context, so the
   coordinator sees the user or service account.
2. **From the daemon** (sensors, schedules, backfills, run retries, declarative
   automation). The daemon process evaluates these itself, in threads it names; the
   coordinator, running inside it, derives a service principal (``sensor:<name>``,
   ``schedule:<name>``, ``backfill:<id>``, ``system:run-retry``, ``system:automation``)
   from the tags the daemon wrote and the run's code location. The trust argument: only
   code running inside the daemon process can run in those threads of that process, and
   anyone able to run code there can equally write to the instance's storage, which no
   coordinator can gate.
3. **In process on the host** (``dagster job execute``, tests, scripts holding the
   instance, a webserver started without the front). No authenticated identity exists;
   the principal is ``system:host`` (``system:webserver`` inside an ungated webserver),
   ``via="host"``, and the audit entry says so: these are out of band (docs/security.md,
   "Authorization"). The default policy allows ``system:host`` and refuses
   ``system:webserver``: an ungated webserver is a door anyone on the machine can open,
   and ``dataflare ui`` is the gated one.

A submitter never names its own principal: tags in the reserved ``dataflare/`` namespace
are refused unless they come from code (the job definition, a sensor or schedule), and so
are the daemon's own tags (``dagster/sensor_name``,
``dagster/schedule_name``, ``dagster/backfill``) when a user submits through the front,
unless a tag is inherited unchanged from the parent run of a re-execution.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping

from dataflare_platform.access.principal import (
    CURRENT_PRINCIPAL,
    DAEMON_ORIGIN_TAGS,
    PRINCIPAL_TAG,
    RESERVED_TAG_PREFIX,
    Principal,
)

SENSOR_NAME_TAG = "dagster/sensor_name"
SCHEDULE_NAME_TAG = "dagster/schedule_name"
BACKFILL_ID_TAG = "dagster/backfill"
PARENT_RUN_ID_TAG = "dagster/parent_run_id"
RETRY_NUMBER_TAG = "dagster/retry_number"
AUTOMATION_TAGS = ("dagster/auto_materialize", "dagster/asset_evaluation_id")
# Tags only the daemon writes (DAEMON_ORIGIN_TAGS, from access.principal): a user claiming
# one would claim to be automation.
assert (SENSOR_NAME_TAG, SCHEDULE_NAME_TAG, BACKFILL_ID_TAG) == DAEMON_ORIGIN_TAGS

# Threads of the daemon process that submit runs (dagster 1.13: the controller's
# "dagster-daemon-<TYPE>" threads and the daemons' worker pools).
DAEMON_THREAD_PREFIXES = (
    "dagster-daemon-",
    "sensor_daemon_worker",
    "sensor_submit_worker",
    "schedule_daemon_worker",
    "schedule_submit_worker",
    "backfill_daemon_worker",
    "backfill_submit_worker",
    "asset_daemon_worker",
)


def in_daemon() -> bool:
    """True inside the daemon process, on a thread the daemon submits runs from."""
    return "dagster._daemon.controller" in sys.modules and (
        threading.current_thread().name.startswith(DAEMON_THREAD_PREFIXES)
    )


def in_webserver() -> bool:
    return "dagster_webserver" in sys.modules


def daemon_principal(tags: Mapping[str, str], location: str | None) -> Principal:
    """The service principal of a run the daemon submits; the most restricted claim wins
    (a sensor's run is the sensor's even when it also names a backfill)."""
    if tags.get(SENSOR_NAME_TAG):
        return Principal(name=tags[SENSOR_NAME_TAG], kind="sensor", via="daemon", location=location)
    if tags.get(SCHEDULE_NAME_TAG):
        return Principal(
            name=tags[SCHEDULE_NAME_TAG], kind="schedule", via="daemon", location=location
        )
    if tags.get(BACKFILL_ID_TAG):
        return Principal(name=tags[BACKFILL_ID_TAG], kind="backfill", via="daemon")
    if tags.get(RETRY_NUMBER_TAG):
        return Principal(name="run-retry", kind="system", via="daemon")
    if any(tags.get(t) for t in AUTOMATION_TAGS):
        return Principal(name="automation", kind="system", via="daemon")
    return Principal(name="daemon", kind="system", via="daemon")


UNGATED_WEBSERVER = "webserver"
UNGATED_HINT = (
    "a webserver started without the platform's front (plain `dagster dev` or "
    "dagster-webserver) has no authenticated user, so anyone reaching its port could launch: "
    "start the UI with `dataflare ui`"
)


def host_principal() -> Principal:
    """``system:webserver`` inside a webserver the front does not wrap, else ``system:host``
    (``via="host"`` both: the default policy allows only the latter, as out of band)."""
    name = UNGATED_WEBSERVER if in_webserver() else "host"
    return Principal(name=name, kind="system", via="host")


UNRECORDED_BACKFILL_HINT = (
    "the backfill has no requester recorded by the platform's front (it was made with "
    "`dagster job backfill`, a script or a webserver without the front), so nobody is "
    "answerable for its runs: request backfills through `dataflare ui` or "
    '`dataflare backfill`, or permit principal.kind == "backfill" in the policy'
)


def is_unrecorded_backfill(principal: Principal) -> bool:
    """A daemon backfill run whose backfill names no requester (see the coordinator)."""
    return principal.kind == "backfill" and principal.backfill is None


def is_ungated_webserver(principal: Principal) -> bool:
    return principal.via == "host" and principal.name == UNGATED_WEBSERVER


def submitting_principal(tags: Mapping[str, str], location: str | None) -> Principal:
    """Who is submitting, from the platform's own context (see the module docstring)."""
    current = CURRENT_PRINCIPAL.get()
    if current is not None:
        return current
    if in_daemon():
        return daemon_principal(tags, location)
    return host_principal()


def refused_tags(
    tags: Mapping[str, str],
    principal: Principal,
    parent_tags: Mapping[str, str] | None,
    code_tags: Mapping[str, str] | None = None,
) -> list[str]:
    """The tags this submission may not carry, each with why.

    A ``dataflare/`` tag is accepted only where it comes from code, not from the caller:
    equal to the job definition's own tag (``code_tags``), written by a sensor or
    schedule the daemon evaluated, or inherited unchanged from the parent run (a
    re-execution or retry copies its parent's tags). :data:`PRINCIPAL_TAG` is never
    accepted from anyone but the parent run: only the coordinator writes it.
    """
    parent = parent_tags or {}
    code = code_tags or {}
    # The daemon submits sensor, schedule and backfill runs (a backfill's run is decided
    # as its requester, marked with the backfill): their tags come from code or from a
    # backfill the front recorded, not from a caller of this submission.
    from_daemon = principal.via == "daemon" or principal.backfill is not None

    def inherited(key: str) -> bool:
        return key in parent and parent[key] == tags[key]

    def from_code(key: str) -> bool:
        if key == PRINCIPAL_TAG:
            return False
        return (key in code and code[key] == tags[key]) or from_daemon

    problems = [
        f"{key}: the {RESERVED_TAG_PREFIX} tag namespace is reserved to the platform"
        for key in sorted(tags)
        if key.startswith(RESERVED_TAG_PREFIX) and not inherited(key) and not from_code(key)
    ]
    if principal.via not in ("daemon", "host") and not from_daemon:
        problems += [
            f"{key}: only the daemon sets it (a {principal.kind} cannot launch as automation)"
            for key in DAEMON_ORIGIN_TAGS
            if key in tags and not inherited(key)
        ]
    return problems
