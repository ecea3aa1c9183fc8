"""The lifecycle of a submitted plugin version (issue 20 §2) as a state machine:

    draft → submitted → scanned → approved → published → deprecated → yanked → revoked

Why a state machine with roles rather than free status edits: a version reaches users
only through an admitted scan and a reviewer's approval, and each step is taken by the
role accountable for it. Only the transitions in :data:`TRANSITIONS` exist; each is an
action of the access model (``plugin_<step>`` on a resource of kind ``plugin`` carrying
the release's namespace) that the deployment's Cedar policy must permit (deny unless
allowed; ``access/default_policy.py`` grants them to these roles of its role table):

- ``publisher``: submit, publish, deprecate, yank, only in its own namespaces
  (``publisher@<namespace>`` in its role assignment);
- ``scanner``: record the scan (the ``plugin_admission`` job's service principal);
- ``reviewer``: approve (only a scan that admitted the module can be approved);
- ``operator``: revoke (final: the kill switch, from any released state).

Every transition and every refusal is appended to the deployment's hash-chained audit
log (``compliance.audit.AuditLog``, passed in as anything with its ``append``) with the
principal's id and the role it acted in, before the new state is written: a state
change the audit log did not take does not happen. The state lives in a JSON file (by
default ``<registry>/lifecycle.json``), written atomically under a file lock.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from dataflare_platform.access.decisions import Action, Authorizer, Resource
from dataflare_platform.access.principal import Principal
from dataflare_platform.durable import WriterLock, write_atomic
from dataflare_platform.errors import AccessDeniedError, ConflictError, NotFoundError

STATES = (
    "draft",
    "submitted",
    "scanned",
    "approved",
    "published",
    "deprecated",
    "yanked",
    "revoked",
)
# (from, to) -> the role that may take it
TRANSITIONS: dict[tuple[str, str], str] = {
    ("draft", "submitted"): "publisher",
    ("submitted", "scanned"): "scanner",
    ("scanned", "approved"): "reviewer",
    ("approved", "published"): "publisher",
    ("published", "deprecated"): "publisher",
    ("published", "yanked"): "publisher",
    ("deprecated", "yanked"): "publisher",
    ("published", "revoked"): "operator",
    ("deprecated", "revoked"): "operator",
    ("yanked", "revoked"): "operator",
}
# The access model's action for reaching each state (``draft``: creating the release).
STEP_ACTIONS: dict[str, Action] = {
    "draft": "plugin_submit",
    "submitted": "plugin_submit",
    "scanned": "plugin_scan",
    "approved": "plugin_approve",
    "published": "plugin_publish",
    "deprecated": "plugin_deprecate",
    "yanked": "plugin_yank",
    "revoked": "plugin_revoke",
}
ACTION = "plugin_lifecycle"
REFUSED_ACTION = "plugin_lifecycle_refused"


class AuditAppender(Protocol):
    def append(
        self, actor: str, action: str, subject: str, details: Mapping[str, Any] | None = None
    ) -> Any: ...


class LifecycleError(ConflictError):
    """A transition the state machine does not have (names both states and what is
    possible from the current one)."""


@dataclass(frozen=True)
class Release:
    key: str  # <ns>/<name>@<version>
    state: str
    history: list[dict[str, Any]]
    admitted: bool | None = None  # the last scan's verdict
    score: int | None = None


def release_key(namespace: str, name: str, version: str) -> str:
    return f"{namespace}/{name}@{version}"


class LifecycleStore:
    """The lifecycle state of every release in one JSON file. ``authorizer`` decides
    who may take each step (default: the deployment's policy, ``DATAFLARE_POLICY`` or the
    shipped default)."""

    def __init__(
        self, path: Path, audit: AuditAppender, authorizer: Authorizer | None = None
    ) -> None:
        self.path = Path(path)
        self.audit = audit
        if authorizer is None:
            from dataflare_platform.access.policy import load_authorizer

            authorizer = load_authorizer()
        self.authorizer = authorizer

    @classmethod
    def for_registry(
        cls, registry: Path, audit: AuditAppender, authorizer: Authorizer | None = None
    ) -> LifecycleStore:
        return cls(Path(registry) / "lifecycle.json", audit, authorizer)

    def _read(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.path.read_bytes()))
        except FileNotFoundError:
            return {}

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        guard = WriterLock(self.path.with_name(f".{self.path.name}.flock"))
        guard.acquire(timeout_s=60)
        try:
            yield self._read()
        finally:
            guard.release()

    def get(self, key: str) -> Release:
        raw = self._read().get(key)
        if raw is None:
            raise NotFoundError(f"no release {key!r} in the lifecycle store")
        return Release(key, raw["state"], raw["history"], raw.get("admitted"), raw.get("score"))

    def create(self, key: str, principal: Principal) -> Release:
        """A new ``draft`` (by a publisher); an existing release is never recreated."""
        self._require(key, principal, "(new)", "draft")
        with self._locked() as data:
            if key in data:
                raise LifecycleError(f"release {key} already exists ({data[key]['state']})")
            step = self._step(principal, "publisher", None, "draft", "")
            self.audit.append(principal.id, ACTION, key, step)
            data[key] = {"state": "draft", "history": [step]}
            self._write(data)
        return self.get(key)

    def transition(
        self,
        key: str,
        to: str,
        principal: Principal,
        reason: str = "",
        admitted: bool | None = None,
        score: int | None = None,
    ) -> Release:
        """Move ``key`` to ``to`` as ``principal``; a transition that does not exist
        raises LifecycleError, a principal without its role AccessDeniedError (both
        audited). ``admitted``/``score`` are recorded with a ``scanned`` step."""
        if to not in STATES:
            raise LifecycleError(f"{to!r} is not a lifecycle state (states: {', '.join(STATES)})")
        with self._locked() as data:
            if key not in data:
                raise NotFoundError(f"no release {key!r} in the lifecycle store")
            current = data[key]["state"]
            role = TRANSITIONS.get((current, to))
            if role is None:
                possible = sorted(t for (f, t) in TRANSITIONS if f == current)
                self._refuse(principal, key, current, to, "no such transition")
                raise LifecycleError(
                    f"release {key} cannot go from {current} to {to}"
                    f" (from {current}: {', '.join(possible) or 'nothing, it is final'})"
                )
            self._require(key, principal, current, to)
            if to == "approved" and data[key].get("admitted") is not True:
                self._refuse(principal, key, current, to, "the scan did not admit it")
                raise LifecycleError(f"release {key} cannot be approved: its scan did not admit it")
            step = self._step(principal, role, current, to, reason)
            if to == "scanned":
                step.update(admitted=admitted, score=score)
            self.audit.append(principal.id, ACTION, key, step)
            data[key]["state"] = to
            data[key]["history"].append(step)
            if to == "scanned":
                data[key].update(admitted=admitted, score=score)
            self._write(data)
        return self.get(key)

    def require(self, key: str, to: str, principal: Principal) -> None:
        """Refuse (audited, AccessDeniedError) unless the policy lets ``principal`` move
        ``key`` to ``to``: for callers that must know before doing the work a step
        records (publishing the module before the release moves to ``published``)."""
        self._require(key, principal, self.get(key).state, to)

    def _require(self, key: str, principal: Principal, current: str, to: str) -> None:
        namespace = key.partition("/")[0]
        action = STEP_ACTIONS[to]
        resource = Resource(kind="plugin", name=key, namespace=namespace)
        decision = self.authorizer.decide(principal, action, resource)
        if not decision.allowed:
            role = TRANSITIONS.get((current, to), "publisher")
            self._refuse(principal, key, current, to, f"{action}: {decision.reason}")
            raise AccessDeniedError(
                f"{principal.id} may not move release {key} from {current} to {to}:"
                f" that needs the {role} role"
                f"{f' for namespace {namespace}' if role == 'publisher' else ''}"
                f" (has: {', '.join(sorted(principal.roles)) or 'none'}; {decision.reason})"
            )

    def _refuse(self, principal: Principal, key: str, current: str, to: str, why: str) -> None:
        details = {"from": current, "to": to, "reason": why, "roles": sorted(principal.roles)}
        self.audit.append(principal.id, REFUSED_ACTION, key, details)

    @staticmethod
    def _step(
        principal: Principal, role: str, current: str | None, to: str, reason: str
    ) -> dict[str, Any]:
        return {
            "from": current,
            "to": to,
            "principal": principal.id,
            "role": role,
            "reason": reason,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
