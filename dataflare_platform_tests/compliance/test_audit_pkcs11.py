"""Checkpoints signed inside a real PKCS#11 token: SoftHSM2 (Debian's ``softhsm2``, which
``.ci/run`` installs) with its token directory and config in a tmp dir. SoftHSM2 reads
its config once per process, so the module shares one token holding both key types."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from dataflare_platform.compliance.audit import AuditLog
from dataflare_platform.compliance.audit_keys import (
    ENV_TRUSTED_KEYS,
    AuditSettings,
    load_trusted_keys,
    public_pem,
)
from dataflare_platform.compliance.audit_pkcs11 import (
    ENV_KEY,
    ENV_MODULE,
    ENV_PIN_FILE,
    ENV_TOKEN,
    Pkcs11Error,
    Pkcs11Signer,
    generate_token_key,
)
from dataflare_platform_tests.audit_support import ENTRY_KEY
from dataflare_platform_tests.softhsm import init_token

PIN = "4711-audit"


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A fresh SoftHSM2 token with an Ed25519 and an EC P-256 key pair."""
    made = init_token(tmp_path_factory.mktemp("softhsm"), "dataflare", PIN, "so-pin-4711")
    os.environ["SOFTHSM2_CONF"] = str(made.conf)  # read by the library at its first load
    module = made.module
    generate_token_key(module, "dataflare", PIN, "audit-ed25519", "ed25519")
    generate_token_key(module, "dataflare", PIN, "audit-p256", "ecdsa-p256-sha256")
    yield {"module": module, "pin_file": str(made.pin_file)}
    os.environ.pop("SOFTHSM2_CONF", None)


@pytest.mark.parametrize(
    ("label", "algorithm"), [("audit-ed25519", "ed25519"), ("audit-p256", "ecdsa-p256-sha256")]
)
def test_a_token_key_signs_checkpoints_that_verify_with_the_pinned_key(
    token, home, tmp_path, monkeypatch, label, algorithm
):
    for var, value in (
        (ENV_MODULE, token["module"]),
        (ENV_TOKEN, "dataflare"),
        (ENV_KEY, label),
        (ENV_PIN_FILE, token["pin_file"]),
    ):
        monkeypatch.setenv(var, value)
    signer = AuditSettings.resolve().signer()
    assert isinstance(signer, Pkcs11Signer) and signer.algorithm == algorithm
    trusted = tmp_path / "trusted.pem"
    trusted.write_bytes(public_pem(signer.public_key))
    monkeypatch.setenv(ENV_TRUSTED_KEYS, str(trusted))
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    log = AuditLog(url, entry_key=ENTRY_KEY)
    for i in range(3):
        log.append("service:etl", "materialization", f"shop/t{i}", {"i": i})

    cp = log.checkpoint(signer)

    assert (cp.algorithm, cp.entries, cp.key_id) == (algorithm, 3, signer.key_id)
    pinned = AuditSettings.resolve().trusted()
    assert list(pinned) == [signer.key_id] == list(load_trusted_keys(trusted))
    assert log.verify(pinned).ok
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_entries WHERE seq = 3"))
    engine.dispose()
    report = log.verify(pinned)
    assert not report.ok and report.bad_checkpoints


def test_a_wrong_pin_is_a_clear_error_without_the_pin(token):
    with pytest.raises(Pkcs11Error, match="PKCS#11 login") as err:
        Pkcs11Signer(token["module"], "dataflare", "0000", "audit-ed25519")
    assert "0000" not in str(err.value) and PIN not in str(err.value)
