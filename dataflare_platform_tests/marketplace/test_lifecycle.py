"""The release lifecycle state machine: the one path a version takes to users, each step
by its role, every transition and refusal in the hash-chained audit log."""

from __future__ import annotations

import json

import pytest

from dataflare_platform.access.principal import Principal
from dataflare_platform.compliance.audit import AuditLog
from dataflare_platform.compliance.override_refusals import deployment_audit_log
from dataflare_platform.errors import AccessDeniedError, NotFoundError
from dataflare_platform.marketplace.lifecycle import (
    ACTION,
    REFUSED_ACTION,
    STATES,
    TRANSITIONS,
    LifecycleError,
    LifecycleStore,
)

PUBLISHER = Principal(name="alice", kind="user", via="local", roles={"publisher@acme"})
REVIEWER = Principal(name="bob", kind="user", via="local", roles={"reviewer"})
OPERATOR = Principal(name="carol", kind="user", via="local", roles={"operator"})
SCANNER = Principal(name="plugin-admission", kind="service", via="host", roles={"scanner"})
KEY = "acme/currency@1.0.0"


@pytest.fixture
def audit(audited_home) -> AuditLog:
    log = deployment_audit_log(audited_home.root)
    yield log
    log.close()


@pytest.fixture
def store(tmp_path, audit) -> LifecycleStore:
    return LifecycleStore.for_registry(tmp_path / "repo", audit)


def to_scanned(store: LifecycleStore, admitted: bool = True) -> None:
    store.create(KEY, PUBLISHER)
    store.transition(KEY, "submitted", PUBLISHER)
    store.transition(KEY, "scanned", SCANNER, admitted=admitted, score=90)


def test_the_whole_path_is_taken_by_each_role_and_audited_in_order(store, audit):
    to_scanned(store)
    store.transition(KEY, "approved", REVIEWER, reason="looks good")
    store.transition(KEY, "published", PUBLISHER)
    store.transition(KEY, "deprecated", PUBLISHER, reason="use 2.0")
    store.transition(KEY, "yanked", PUBLISHER, reason="bug")
    release = store.transition(KEY, "revoked", OPERATOR, reason="malware")
    assert release.state == "revoked"
    assert [s["to"] for s in release.history] == list(STATES)
    assert [s["role"] for s in release.history] == [
        "publisher", "publisher", "scanner", "reviewer",
        "publisher", "publisher", "publisher", "operator",
    ]  # fmt: skip
    entries = [e for e in audit.tail(50) if e.action == ACTION]
    assert [(e.actor, e.payload()["to"]) for e in entries] == [
        (s["principal"], s["to"]) for s in release.history
    ]
    assert entries[3].payload()["role"] == "reviewer"
    assert entries[3].actor == "user:bob"
    report = audit.verify({}, allow_unanchored_tail=True)  # the chain and every entry's tag
    assert report.first_bad_entry is None
    assert report.authenticated == report.entries >= len(entries)


def test_a_transition_the_machine_lacks_is_refused_clearly_and_audited(store, audit):
    store.create(KEY, PUBLISHER)
    with pytest.raises(LifecycleError, match="cannot go from draft to published") as err:
        store.transition(KEY, "published", PUBLISHER)
    assert "from draft: submitted" in str(err.value)
    assert store.get(KEY).state == "draft"
    refused = audit.last(REFUSED_ACTION)
    assert refused is not None and refused.payload()["to"] == "published"


def test_revocation_is_final(store):
    to_scanned(store)
    store.transition(KEY, "approved", REVIEWER)
    store.transition(KEY, "published", PUBLISHER)
    store.transition(KEY, "revoked", OPERATOR)
    for state in STATES:
        with pytest.raises(LifecycleError, match="nothing, it is final"):
            store.transition(KEY, state, OPERATOR)


@pytest.mark.parametrize(
    ("who", "step"),
    [
        (REVIEWER, "submitted"),  # only a publisher submits
        (PUBLISHER, "approved"),  # a publisher never approves its own release
        (PUBLISHER, "revoked"),  # only an operator revokes
    ],
)
def test_a_principal_without_the_role_is_denied_and_audited(store, audit, who, step):
    store.create(KEY, PUBLISHER)
    path = {
        "submitted": [],
        "approved": ["submitted", "scanned"],
        "revoked": ["submitted", "scanned", "approved", "published"],
    }[step]
    actors = {
        "submitted": PUBLISHER,
        "scanned": SCANNER,
        "approved": REVIEWER,
        "published": PUBLISHER,
    }
    for s in path:
        store.transition(KEY, s, actors[s], admitted=True if s == "scanned" else None)
    before = store.get(KEY).state
    with pytest.raises(AccessDeniedError, match=f"needs the {TRANSITIONS[(before, step)]} role"):
        store.transition(KEY, step, who)
    assert store.get(KEY).state == before
    refused = audit.last(REFUSED_ACTION)
    assert refused is not None and refused.actor == who.id


def test_a_scan_that_did_not_admit_cannot_be_approved(store):
    to_scanned(store, admitted=False)
    with pytest.raises(LifecycleError, match="its scan did not admit it"):
        store.transition(KEY, "approved", REVIEWER)
    assert store.get(KEY).state == "scanned"


def test_unknown_state_and_release_are_refused(store):
    store.create(KEY, PUBLISHER)
    with pytest.raises(LifecycleError, match="'live' is not a lifecycle state"):
        store.transition(KEY, "live", PUBLISHER)
    with pytest.raises(NotFoundError):
        store.transition("acme/other@1.0.0", "submitted", PUBLISHER)
    with pytest.raises(LifecycleError, match="already exists"):
        store.create(KEY, PUBLISHER)


def test_the_state_survives_a_new_store_over_the_same_file(store, audit):
    to_scanned(store)
    again = LifecycleStore(store.path, audit)
    assert (again.get(KEY).state, again.get(KEY).score) == ("scanned", 90)


OTHER_PUBLISHER = Principal(
    name="dave", kind="user", via="local", roles={"publisher@globex", "viewer"}
)
ADMIN = Principal(name="erin", kind="user", via="local", roles={"admin"})


@pytest.mark.parametrize(
    ("who", "step"),
    [
        (OTHER_PUBLISHER, "submitted"),  # a publisher acts in its own namespaces only
        (ADMIN, "submitted"),  # the plugin roles are in no other role, admin included
        (Principal(name="frank", kind="user", via="local", roles={"publisher"}), "submitted"),
    ],
)
def test_the_access_model_scopes_a_publisher_to_its_namespaces(store, audit, who, step):
    store.create(KEY, PUBLISHER)
    with pytest.raises(AccessDeniedError, match="needs the publisher role for namespace acme"):
        store.transition(KEY, step, who)
    refused = audit.last(REFUSED_ACTION)
    assert refused is not None and refused.actor == who.id
    assert "deny by default" in json.loads(refused.details)["reason"]
    assert store.get(KEY).state == "draft"
    # the same publisher role, in its own namespace, may
    globex = "globex/currency@1.0.0"
    store.create(globex, OTHER_PUBLISHER)
    assert store.transition(globex, "submitted", OTHER_PUBLISHER).state == "submitted"


def test_a_person_holding_the_scanner_role_may_not_record_a_scan(store):
    store.create(KEY, PUBLISHER)
    store.transition(KEY, "submitted", PUBLISHER)
    person = Principal(name="mallory", kind="user", via="local", roles={"scanner"})
    with pytest.raises(AccessDeniedError, match="needs the scanner role"):
        store.transition(KEY, "scanned", person, admitted=True, score=100)


def test_the_deployment_policy_decides_the_steps(tmp_path, audit):
    """A deployment's own policy (here: reviewers may also revoke) is what the lifecycle
    asks, not a table of role strings."""
    from dataflare_platform.access.default_policy import DEFAULT_POLICY
    from dataflare_platform.access.policy import CedarAuthorizer

    text = DEFAULT_POLICY + (
        '@id("reviewers revoke")\n'
        'permit (principal in Dataflare::Role::"reviewer",'
        ' action == Dataflare::Action::"plugin_revoke", resource);\n'
    )
    store = LifecycleStore.for_registry(tmp_path / "r2", audit, CedarAuthorizer(text))
    to_scanned(store)
    store.transition(KEY, "approved", REVIEWER)
    store.transition(KEY, "published", PUBLISHER)
    assert store.transition(KEY, "revoked", REVIEWER, reason="cve").state == "revoked"
