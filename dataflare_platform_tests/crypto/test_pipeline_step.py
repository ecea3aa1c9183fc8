"""The ``encrypt`` step in a YAML pipeline (real engine, real keyring from the
deployment's environment) and from Python; bad arguments refused at load, naming the
field."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import yaml

from dataflare_platform.crypto.columns import key_versions
from dataflare_platform.crypto.frames import EncryptionSpec, decrypt_frame, encrypt_frame
from dataflare_platform.crypto.settings import CryptoSettings
from dataflare_platform.engine import CollectSink, Runner, TableSource
from dataflare_platform.errors import ConfigError
from dataflare_platform.streams.spec import PipelineSpec

SPEC = """
name: customers_in
catalog: {micro_batch: false}
sources:
  customers: {path: unused, columns: [customer_id, email, score, date_time]}
streams:
  out:
    from: customers
    steps:
      - encrypt:
          dataset: customers
          columns: [email, customer_id, score]
          deterministic: [customer_id]
output: out
sink: {discard: {}}
"""

CUSTOMERS = pl.DataFrame(
    {
        "customer_id": ["c1", "c2", "c1", None],
        "email": ["ann@example.com", "bob@example.com", "ann@example.com", None],
        "score": [10, None, 30, 40],
        "date_time": [1, 2, 3, 4],
    }
)


@pytest.fixture
def deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CryptoSettings:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("DATAFLARE_HOME", str(home))
    monkeypatch.setenv("DATAFLARE_KEYRING_DIR", str(tmp_path / "keys"))
    return CryptoSettings.resolve()


def _spec_data(**encrypt: object) -> dict:
    data = yaml.safe_load(SPEC)
    if encrypt:
        data["streams"]["out"]["steps"] = [{"encrypt": encrypt}]
    return data


def test_yaml_encrypt_step_writes_ciphertext_that_decrypts(deployment: CryptoSettings) -> None:
    spec = PipelineSpec.load(_spec_data())
    sink = CollectSink()
    source = TableSource.single("customers", CUSTOMERS.to_arrow())
    Runner(spec.build(sink=sink, sources={"customers": source})).run()
    out = sink.result()
    for column in ("email", "customer_id", "score"):
        assert out[column].dtype == pl.Binary
        assert out[column].null_count() == CUSTOMERS[column].null_count()
    assert b"ann@example.com" not in b"".join(v for v in out["email"].to_list() if v)
    ids = out["customer_id"].to_list()
    assert ids[0] == ids[2] != ids[1]  # deterministic
    assert key_versions(out["email"]).tolist() == [1, 1, 1, -1]
    (step,) = spec.streams["out"].steps
    back = decrypt_frame(deployment.cipher(), out, step.arg)
    assert back.equals(CUSTOMERS)


@pytest.mark.parametrize(
    ("encrypt", "message"),
    [
        ({"dataset": "customers", "columns": ["email"], "deterministic": ["x"]}, "not in columns"),
        ({"dataset": "customers", "columns": []}, "encrypt.columns"),
        ({"dataset": "customers", "columns": ["email"], "key": "../evil"}, "encrypt.key"),
        ({"columns": ["email"]}, "encrypt.dataset: Field required"),
        ({"dataset": "crm/cards", "columns": ["e"]}, "dataset names the key"),
        ({"dataset": "c", "columns": ["e"], "keyring_dir": "/tmp/x"}, "encrypt.keyring_dir"),
    ],
)
def test_bad_encrypt_arguments_are_refused_at_load(
    deployment: CryptoSettings, encrypt: dict, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        PipelineSpec.load(_spec_data(**encrypt))
    ((field, got),) = err.value.problems
    assert field == "streams.out.steps.0" and message in got, got


def test_python_callers_use_the_same_spec(deployment: CryptoSettings) -> None:
    spec = EncryptionSpec(dataset="customers", columns=["email"])
    cipher = deployment.cipher()
    sealed = encrypt_frame(cipher, CUSTOMERS, spec)
    assert sealed["customer_id"].to_list() == CUSTOMERS["customer_id"].to_list()
    assert decrypt_frame(cipher, sealed, spec).equals(CUSTOMERS)
