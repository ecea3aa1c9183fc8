"""Several processes encrypting under a new key name at once (pipelines starting
together): one data key is made, and every ciphertext any of them wrote decrypts."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pyarrow as pa

from dataflare_platform.crypto.columns import Binding
from dataflare_platform.crypto.settings import CryptoSettings

CHILD = r"""
import base64, sys, time
from pathlib import Path
import pyarrow as pa
from dataflare_platform.crypto.columns import Binding
from dataflare_platform.crypto.settings import CryptoSettings

go = Path(sys.argv[3])
while not go.exists():  # start together
    time.sleep(0.005)
cipher = CryptoSettings.resolve(home=sys.argv[1], keyring_dir=sys.argv[2], environ={}).cipher()
sealed = cipher.encrypt(pa.array([sys.argv[4]]), Binding("fresh", "v"))
print(base64.b64encode(sealed[0].as_py()).decode())
"""


def test_concurrent_first_use_makes_one_data_key(tmp_path: Path) -> None:
    home, keys, go = tmp_path / "home", tmp_path / "keys", tmp_path / "go"
    home.mkdir()
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(home), str(keys), str(go), f"value-{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    go.touch()
    outputs = [child.communicate(timeout=300) for child in children]
    assert all(child.returncode == 0 for child in children), [err for _, err in outputs]
    sealed = pa.array([base64.b64decode(out.strip()) for out, _ in outputs], pa.large_binary())
    cipher = CryptoSettings.resolve(home=home, keyring_dir=keys, environ={}).cipher()
    assert cipher.decrypt(sealed, Binding("fresh", "v")).to_pylist() == [
        f"value-{i}" for i in range(4)
    ]
    assert sorted(p.name for p in (keys / "fresh").glob("*.kek")) == ["v1.kek"]
