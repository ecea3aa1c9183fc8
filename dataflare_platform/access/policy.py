"""The authorization policy: Cedar rules the deployment writes, deny by default.

Policies are Cedar (https://www.cedarpolicy.com), evaluated by ``cedarpy``, the Python
binding of the Rust engine maintained by the Cedar project: a policy is code that can be
reviewed, diffed and validated against a schema, and the engine is not ours to get wrong.
The deployment names its policy file with ``DATAFLARE_POLICY``; without it the shipped
default (:data:`DEFAULT_POLICY`, identical to ``deployments/local/policy.cedar``) applies,
which reproduces the role table viewer < launcher < editor < admin.

A policy is checked at load: it must parse, validate against the schema
(:mod:`dataflare_platform.access.cedar_schema`: a misspelt attribute or action is an error,
not a rule that never matches), and grant ``decrypt`` only in rules that name that action
and test ``resource.classification``. A refused policy raises :class:`ConfigError` naming
the rule and the problem, so a deployment never starts on a policy it did not mean.

Each decision carries the policy version (the first 16 hex digits of SHA-256 of the policy
text), so an audit entry says which text decided it. An evaluation error (a rule erroring
on a request) denies, with the error as the reason: a ``forbid`` that errored must not turn
into an allow.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cedarpy

from dataflare_platform.access.cedar_schema import (
    NAMESPACE,
    ROLE_ACTIONS,
    schema_text,
)
from dataflare_platform.access.decisions import Action, Decision, Resource
from dataflare_platform.access.default_policy import DEFAULT_POLICY
from dataflare_platform.access.principal import Principal
from dataflare_platform.errors import ConfigError

__all__ = ["POLICY_ENV_VAR", "ROLE_ACTIONS", "CedarAuthorizer", "load_authorizer"]

POLICY_ENV_VAR = "DATAFLARE_POLICY"
DENY_BY_DEFAULT = "deny by default"


def policy_version(text: str) -> str:
    return "cedar:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _rule_name(policy_id: str, est: Mapping[str, Any]) -> str:
    """A rule's ``@id`` annotation when it has one (what its author named it), else
    Cedar's positional id (``policy3`` is the fourth rule in the file)."""
    label = est.get("annotations", {}).get("id")
    return f"{label!r} ({policy_id})" if label else policy_id


def _may_match_decrypt(action: Mapping[str, Any]) -> bool:
    op = action.get("op")
    if op == "All":
        return True
    entities = action.get("entities") or [action.get("entity") or {}]
    return any(e.get("id") == "decrypt" for e in entities)


def _decrypt_problems(static: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str]]:
    """``decrypt`` is granted only by a rule that names it and tests the classification."""
    problems = []
    for policy_id, est in static.items():
        if est.get("effect") != "permit" or not _may_match_decrypt(est.get("action", {})):
            continue
        rule = _rule_name(policy_id, est)
        if est["action"].get("op") == "All":
            problems.append(
                (rule, "permits every action, decrypt included: name the actions it grants")
            )
        elif '"classification"' not in json.dumps(est.get("conditions", [])):
            problems.append(
                (rule, "permits decrypt without a condition on resource.classification")
            )
    return problems


class CedarAuthorizer:
    """Decides with a validated Cedar policy set; deny unless a rule permits and none
    forbids."""

    def __init__(self, text: str, source: str = "<policy>") -> None:
        self.source = source
        self.text = text
        self.policy_version = policy_version(text)
        try:
            self._schema = cedarpy.Schema.from_str(schema_text())
            self._policies = cedarpy.PolicySet.from_str(text)
            est = json.loads(cedarpy.policies_to_json_str(text))
        except ValueError as err:
            raise ConfigError(f"policy {source}", [("syntax", str(err))]) from None
        if est.get("templates"):
            raise ConfigError(
                f"policy {source}", [("templates", "policy templates are not supported")]
            )
        static = est.get("staticPolicies", {})
        if not static:
            raise ConfigError(f"policy {source}", [("rules", "no rule: every action denied")])
        result = cedarpy.validate_policies(text, self._schema)
        labels = result.id_annotations_by_policy_id
        problems = [
            (
                f"{labels[e.policy_id]!r} ({e.policy_id})"
                if e.policy_id in labels
                else e.policy_id or "policy",
                e.error,
            )
            for e in result.errors
        ]
        problems += _decrypt_problems(static)
        if problems:
            raise ConfigError(f"policy {source}", problems)
        self._labels = {pid: _rule_name(pid, body) for pid, body in static.items()}

    @classmethod
    def from_file(cls, path: Path) -> CedarAuthorizer:
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError("policy", [(POLICY_ENV_VAR, f"{path}: {err}")]) from None
        return cls(text, source=str(path))

    def _entities(self, principal: Principal, resource: Resource) -> list[dict[str, Any]]:
        attrs: dict[str, Any] = {
            "kind": principal.kind,
            "name": principal.name,
            "via": principal.via,
            "roles": sorted(principal.roles),
            "teams": sorted(principal.groups),
            "namespaces": sorted(principal.namespaces),
        }
        if principal.location:
            attrs["location"] = principal.location
        if principal.backfill:
            attrs["backfill"] = principal.backfill
        # ``publisher@acme`` is the Role ``publisher`` (its scope is ``namespaces``).
        parents = [{"type": f"{NAMESPACE}::Role", "id": r} for r in sorted(principal.role_names)]
        parents += [{"type": f"{NAMESPACE}::Team", "id": g} for g in sorted(principal.groups)]
        entities = [
            {
                "uid": {"type": f"{NAMESPACE}::Principal", "id": principal.id},
                "attrs": attrs,
                "parents": parents,
            },
            {
                "uid": {"type": f"{NAMESPACE}::Resource", "id": _resource_id(resource)},
                "attrs": resource.model_dump(exclude_none=True),
                "parents": [],
            },
        ]
        entities += [{"uid": p, "attrs": {}, "parents": []} for p in parents]
        return entities

    def _request(self, principal: Principal, action: Action, resource: Resource) -> dict:
        return {
            "principal": {"type": f"{NAMESPACE}::Principal", "id": principal.id},
            "action": {"type": f"{NAMESPACE}::Action", "id": action},
            "resource": {"type": f"{NAMESPACE}::Resource", "id": _resource_id(resource)},
            "context": {},
        }

    def decide(self, principal: Principal, action: Action, resource: Resource) -> Decision:
        try:
            result = cedarpy.is_authorized(
                self._request(principal, action, resource),
                self._policies,
                self._entities(principal, resource),
                self._schema,
            )
        except Exception as err:
            return self._decision(principal, action, resource, None, err)
        return self._decision(principal, action, resource, result, None)

    def decide_many(
        self, principal: Principal, actions: Sequence[Action], resource: Resource
    ) -> list[Decision]:
        """One decision per action on one resource, in one call into the engine (the
        entities are built and parsed once): what a UI asking for all of a principal's
        permissions on a location needs."""
        try:
            results = cedarpy.is_authorized_batch(
                [self._request(principal, a, resource) for a in actions],
                self._policies,
                self._entities(principal, resource),
                self._schema,
            )
        except Exception as err:
            return [self._decision(principal, a, resource, None, err) for a in actions]
        return [
            self._decision(principal, a, resource, r, None)
            for a, r in zip(actions, results, strict=True)
        ]

    def _decision(
        self,
        principal: Principal,
        action: Action,
        resource: Resource,
        result: Any,
        failure: Exception | None,
    ) -> Decision:
        if failure is not None or result is None:
            errors, allowed, rules = [f"{type(failure).__name__}: {failure}"], False, []
        else:
            errors = list(result.diagnostics.errors)
            allowed = result.allowed and not errors
            rules = [self._labels.get(r, r) for r in result.diagnostics.reasons]
        if errors:
            reason = "policy evaluation error, denied: " + "; ".join(str(e) for e in errors)
        elif allowed:
            reason = f"permitted by rule {', '.join(rules)}"
        elif rules:
            reason = f"forbidden by rule {', '.join(rules)}"
        else:
            reason = (
                f"no rule permits {action} on {resource.kind} for {principal.id} "
                f"({DENY_BY_DEFAULT})"
            )
        return Decision(
            principal=principal,
            action=action,
            resource=resource,
            allowed=allowed,
            policy_version=self.policy_version,
            reason=reason,
        )


def _resource_id(resource: Resource) -> str:
    return f"{resource.kind}:{resource.location or ''}:{resource.name}"


def load_authorizer(
    path: Path | str | None = None, environ: Mapping[str, str] | None = None
) -> CedarAuthorizer:
    """The deployment's authorizer: the policy at ``path``, else at ``$DATAFLARE_POLICY``,
    else the shipped default. Raises :class:`ConfigError` for a policy refused at load."""
    env = os.environ if environ is None else environ
    chosen = path or env.get(POLICY_ENV_VAR) or None
    if chosen is None:
        return _default_authorizer()
    return CedarAuthorizer.from_file(Path(chosen))


_DEFAULT: list[CedarAuthorizer] = []


def _default_authorizer() -> CedarAuthorizer:
    if not _DEFAULT:
        _DEFAULT.append(CedarAuthorizer(DEFAULT_POLICY, source="default"))
    return _DEFAULT[0]
