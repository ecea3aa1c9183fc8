"""A real PKCS#11 token for the tests: SoftHSM2 (Debian's ``softhsm2``, which ``.ci/run``
installs) with its own token directory and config under a temporary folder. Shared by
the audit signer's and the keyring's tests; a missing SoftHSM2 fails, never skips."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

MODULES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so")


@dataclass(frozen=True)
class SoftHsmToken:
    module: str  # the PKCS#11 library to load
    conf: Path  # SOFTHSM2_CONF naming this token's directory
    label: str
    pin_file: Path  # the user PIN, 0600


def init_token(root: Path, label: str, pin: str, so_pin: str) -> SoftHsmToken:
    """Initialise a fresh token ``label`` with ``pin`` under ``root`` and write its PIN
    file. SoftHSM2 reads ``SOFTHSM2_CONF`` once per process, at the library's first load:
    the caller decides whether that is this process or a child."""
    util = shutil.which("softhsm2-util")
    module = next((m for m in MODULES if Path(m).is_file()), None)
    if util is None or module is None:
        pytest.fail("SoftHSM2 is not installed: apt-get install softhsm2 (.ci/run does)")
    (root / "tokens").mkdir(parents=True)
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\n")
    subprocess.run(
        [util, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", so_pin],
        check=True,
        capture_output=True,
        env={**os.environ, "SOFTHSM2_CONF": str(conf)},
    )
    pin_file = root / "pin"
    pin_file.write_text(pin)
    pin_file.chmod(0o600)
    return SoftHsmToken(module, conf, label, pin_file)
