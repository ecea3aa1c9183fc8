"""The role policy: deny by default, each role its own actions and those below it, and
every decision recorded in the real audit log with principal, action, resource and policy
version."""

import itertools

import pytest

from dataflare_platform.access.decisions import Resource
from dataflare_platform.access.policy import ROLE_ACTIONS, load_authorizer
from dataflare_platform.access.principal import Principal
from dataflare_platform.compliance.access_log import AuditDecisionRecorder
from dataflare_platform.compliance.audit import AuditLog
from dataflare_platform.errors import ConfigError

JOB = Resource(kind="job", name="nexmark_ingest_job", location="dataflare_platform")


def who(*roles: str) -> Principal:
    return Principal(name="ana", kind="user", via="local", roles=frozenset(roles))


@pytest.mark.parametrize(
    ("roles", "action", "allowed"),
    [
        ((), "view", False),
        (("viewer",), "view", True),
        (("viewer",), "launch", False),
        (("launcher",), "launch", True),
        (("launcher",), "set_cursor", False),
        (("editor",), "toggle_automation", True),
        (("editor",), "delete_run", False),
        (("admin",), "delete_run", True),
        (("admin",), "decrypt", False),
        (("unknown-role",), "view", False),
        (("viewer", "editor"), "set_cursor", True),
    ],
)
def test_roles_grant_only_their_actions(roles, action, allowed):
    decision = load_authorizer().decide(who(*roles), action, JOB)
    assert decision.allowed is allowed
    assert decision.policy_version
    assert ("deny by default" in decision.reason) is (not allowed)


def test_roles_are_ordered():
    order = ["viewer", "launcher", "editor", "admin"]
    for lower, higher in itertools.pairwise(order):
        assert ROLE_ACTIONS[lower] < ROLE_ACTIONS[higher]


@pytest.mark.parametrize("name", ["", "a b", "x\nuser:admin", "é", "a" * 129, "-lead"])
def test_principal_names_are_safe_for_the_audit_log(name):
    with pytest.raises(Exception) as err:
        Principal.validated({"name": name, "kind": "user", "via": "local"}, "principal")
    assert err.type is ConfigError


def test_decisions_are_audited(tmp_path):
    log = AuditLog(f"sqlite:///{tmp_path / 'audit.db'}")
    recorder = AuditDecisionRecorder(log)
    authorizer = load_authorizer()
    recorder.record(authorizer.decide(who("viewer"), "launch", JOB))
    recorder.record(authorizer.decide(who("launcher"), "launch", JOB))
    entries = log.tail(10)
    assert [(e.actor, e.action, e.subject) for e in entries] == [
        ("user:ana", "access_denied", "job:nexmark_ingest_job"),
        ("user:ana", "access_allowed", "job:nexmark_ingest_job"),
    ]
    assert entries[0].payload()["policy_version"] == authorizer.policy_version
    assert entries[0].payload()["action"] == "launch"
