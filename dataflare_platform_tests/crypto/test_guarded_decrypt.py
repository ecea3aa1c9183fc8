"""Decryption for people: the real Cedar policy decides, the real audit log records the
decision and the decryption (principal, dataset, column, rows), never a value."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from dataflare_platform.access.default_policy import DEFAULT_POLICY
from dataflare_platform.access.policy import CedarAuthorizer, load_authorizer
from dataflare_platform.access.principal import Principal
from dataflare_platform.compliance.audit import AuditLog
from dataflare_platform.compliance.decryption import GuardedDecryptor
from dataflare_platform.crypto.columns import Binding, ColumnCipher
from dataflare_platform.errors import AccessDeniedError
from dataflare_platform_tests.audit_support import ENTRY_KEY

POLICY = (
    DEFAULT_POLICY
    + """
@id("auditors read encrypted pii")
permit (
  principal in Dataflare::Team::"auditors",
  action == Dataflare::Action::"decrypt",
  resource
)
when { resource has classification && resource.classification == "pii_encrypted" };
"""
)
EMAILS = Binding("customers", "email")
AUDITOR = Principal(name="ines", kind="user", via="local", groups=frozenset({"auditors"}))
ADMIN = Principal(name="root", kind="user", via="local", roles=frozenset({"admin"}))


@pytest.fixture
def log(tmp_path: Path):
    with AuditLog(f"sqlite:///{tmp_path / 'audit.db'}", entry_key=ENTRY_KEY) as log:
        yield log


def test_an_allowed_decryption_is_audited_without_values(
    cipher: ColumnCipher, log: AuditLog
) -> None:
    guard = GuardedDecryptor(cipher, CedarAuthorizer(POLICY), log)
    sealed = cipher.encrypt(pa.array(["ann@example.com", None, "bob@example.com"]), EMAILS)
    plain = guard.decrypt(AUDITOR, sealed, EMAILS, "pii_encrypted")
    assert plain.to_pylist() == ["ann@example.com", None, "bob@example.com"]
    allowed, decrypted = log.tail(2)
    assert allowed.action == "access_allowed" and allowed.actor == "user:ines"
    assert decrypted.action == "decrypted" and decrypted.actor == "user:ines"
    assert decrypted.subject == "column:customers.email"
    body = decrypted.details
    assert '"rows":2' in body and '"dataset":"customers"' in body and '"column":"email"' in body
    assert "example.com" not in body and "example.com" not in allowed.details


@pytest.mark.parametrize(
    ("principal", "classification"),
    [(ADMIN, "pii_encrypted"), (AUDITOR, "pii_masked")],
)
def test_a_denied_decryption_touches_no_key_and_is_audited(
    cipher: ColumnCipher, log: AuditLog, principal: Principal, classification: str
) -> None:
    """Even an admin: decrypt is in no role. And the auditors' rule names one
    classification only."""
    guard = GuardedDecryptor(cipher, CedarAuthorizer(POLICY), log)
    sealed = cipher.encrypt(pa.array(["ann@example.com"]), EMAILS)
    with pytest.raises(AccessDeniedError, match=r"may not decrypt customers\.email"):
        guard.decrypt(principal, sealed, EMAILS, classification)
    (denied,) = log.tail(1)
    assert denied.action == "access_denied" and denied.actor == principal.id


def test_the_default_policy_lets_nobody_decrypt(cipher: ColumnCipher, log: AuditLog) -> None:
    guard = GuardedDecryptor(cipher, load_authorizer(environ={}), log)
    sealed = cipher.encrypt(pa.array(["x"]), EMAILS)
    with pytest.raises(AccessDeniedError):
        guard.decrypt(AUDITOR, sealed, EMAILS, "pii_encrypted")
