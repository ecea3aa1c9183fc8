"""The keyring in a real PKCS#11 token: SoftHSM2 (Debian's ``softhsm2``, installed by
``.ci/run``) with its own token directory. SoftHSM2 reads its config once per process
and the audit signer's tests load it with theirs, so the keyring runs in a child
interpreter with this module's token: the real library, the real token, no mock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dataflare_platform_tests.softhsm import init_token

PIN = "4711-keyring"

CHILD = r"""
import json, sys
import pyarrow as pa
import pkcs11
from pkcs11 import Attribute, ObjectClass
from dataflare_platform.crypto.columns import Binding, DecryptionError, key_versions
from dataflare_platform.crypto.keyring import KeyDestroyedError, KeyRetiredError
from dataflare_platform.crypto.pkcs11_keyring import Pkcs11Keyring
from dataflare_platform.crypto.settings import CryptoSettings

out = {}
settings = CryptoSettings.resolve()
keyring = settings.keyring()
out["backend"] = type(keyring).__name__
cipher = settings.cipher()
b = Binding("customers", "email")
values = pa.array(["ann@example.com", None, "bob@example.com"])
old = cipher.encrypt(values, b)
out["roundtrip"] = cipher.decrypt(old, b).to_pylist()
cipher.envelope.rotate("customers")
new, changed = cipher.rewrap(old, b)
out["rewrapped"] = changed
out["versions"] = key_versions(new).tolist()
cipher.envelope.retire_below("customers", 2)
try:
    cipher.decrypt(old, b)
    out["old_after_retire"] = "decrypted"
except KeyRetiredError:
    out["old_after_retire"] = "retired"
out["new_after_retire"] = cipher.decrypt(new, b).to_pylist()
out["state"] = list(Pkcs11Keyring.from_env().state("customers").usable)
# The KEK cannot leave the token.
lib = pkcs11.lib(sys.argv[1])
with lib.get_token(token_label="keyring").open(user_pin=sys.argv[2]) as s:
    (kek,) = list(s.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY,
                                  Attribute.LABEL: "dataflare-kek/customers/v2"}))
    out["extractable"] = kek[Attribute.EXTRACTABLE]
    try:
        kek[Attribute.VALUE]
        out["value_readable"] = True
    except pkcs11.PKCS11Error:
        out["value_readable"] = False
cipher.envelope.destroy("customers")
try:
    settings.cipher().decrypt(new, b)
    out["after_destroy"] = "decrypted"
except KeyDestroyedError:
    out["after_destroy"] = "destroyed"
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    made = init_token(tmp_path_factory.mktemp("softhsm-keyring"), "keyring", PIN, "so-4711")
    return {"module": made.module, "conf": str(made.conf), "pin_file": str(made.pin_file)}


def test_keys_in_a_pkcs11_token_rotate_retire_and_shred(token, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    env = {
        **os.environ,
        "SOFTHSM2_CONF": token["conf"],
        "DATAFLARE_HOME": str(home),
        "DATAFLARE_KEYRING_DIR": str(tmp_path / "unused-keyring"),
        "DATAFLARE_KEYRING_PKCS11_MODULE": token["module"],
        "DATAFLARE_KEYRING_PKCS11_TOKEN": "keyring",
        "DATAFLARE_KEYRING_PKCS11_PIN_FILE": token["pin_file"],
    }
    done = subprocess.run(
        [sys.executable, "-c", CHILD, token["module"], PIN],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["backend"] == "Pkcs11Keyring"
    assert out["roundtrip"] == ["ann@example.com", None, "bob@example.com"]
    assert out["rewrapped"] == 2 and out["versions"] == [2, -1, 2]
    assert out["old_after_retire"] == "retired"
    assert out["new_after_retire"] == ["ann@example.com", None, "bob@example.com"]
    assert out["state"] == [2]
    assert out["extractable"] is False and out["value_readable"] is False
    assert out["after_destroy"] == "destroyed"
    assert not (tmp_path / "unused-keyring").exists()  # no KEK file anywhere


def test_a_pin_file_readable_by_others_is_refused(token, tmp_path: Path) -> None:
    from dataflare_platform.crypto.pkcs11_keyring import ENV_PIN_FILE, _pin
    from dataflare_platform.errors import ConfigError

    loose = tmp_path / "pin"
    loose.write_text(PIN)
    loose.chmod(0o644)
    with pytest.raises(ConfigError, match=ENV_PIN_FILE):
        _pin({ENV_PIN_FILE: str(loose)})
