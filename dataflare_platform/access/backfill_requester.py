"""Who requested a backfill, carried with it so that each of its runs is authorized as
that requester when the daemon submits it.

A backfill is requested at the web front (``launchPartitionBackfill``, re-executed with
``reexecutePartitionBackfill``, resumed with ``resumePartitionBackfill``); its runs are
submitted later by the daemon, where no request and no user exist. The front therefore
writes the authenticated principal into the backfill's tags under :data:`REQUESTER_TAG`
(in the reserved ``dataflare/`` namespace: a caller's own value is refused, and the front
writes its own over whatever a re-execution inherited), and the run coordinator reads it
back from the backfill record in the instance, re-reads the requester's current rights,
and decides each run as the requester.
"""

from __future__ import annotations

import json

from dataflare_platform.access.principal import RESERVED_TAG_PREFIX, Principal
from dataflare_platform.errors import InvalidInputError

REQUESTER_TAG = f"{RESERVED_TAG_PREFIX}backfill_requester"


def requester_tag_value(principal: Principal) -> str:
    """The tag value recording ``principal`` (its id, how it signed in, its roles and
    teams at request time: a directory or OIDC user's roles cannot be re-read later)."""
    return json.dumps(
        {
            "id": principal.id,
            "kind": principal.kind,
            "name": principal.name,
            "via": principal.via,
            "roles": sorted(principal.roles),
            "groups": sorted(principal.groups),
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def parse_requester(value: str) -> Principal:
    """The principal recorded by :func:`requester_tag_value`; ``InvalidInputError`` when the
    value is not one (validated like any principal, and its id must match)."""
    try:
        data = json.loads(value)
    except json.JSONDecodeError as err:
        raise InvalidInputError(f"{REQUESTER_TAG} is not JSON") from err
    if not isinstance(data, dict):
        raise InvalidInputError(f"{REQUESTER_TAG} is not an object")
    recorded_id = data.pop("id", None)
    principal = Principal.model_validate(data)
    if principal.kind not in ("user", "service") or principal.via in ("daemon", "host"):
        raise InvalidInputError(f"{REQUESTER_TAG} names a {principal.kind} via {principal.via}")
    if recorded_id != principal.id:
        raise InvalidInputError(f"{REQUESTER_TAG} id does not match its fields")
    return principal
