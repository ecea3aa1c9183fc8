"""Rotation end to end through Dagster: rotate, the check warns (values below the newest
version), the rewrap asset re-encrypts the stored table (progress in the log, totals in
metadata), the check passes, the old version is retired and everything still decrypts;
retiring before rewrapping fails the check."""

import dagster as dg
import duckdb
import polars as pl
import pyarrow as pa
import pytest

from dataflare_platform.compliance.spec import GovernedDataset
from dataflare_platform.crypto.columns import Binding, key_versions
from dataflare_platform.defs.governance.encryption import REWRAP_KEY, encryption_definitions

SPEC = GovernedDataset.model_validate(
    {
        "asset": "crm/cards",
        "data": {"duckdb": {"path": "crm.duckdb", "table": "cards"}},
        "pii": {
            "columns": {"card": "pii_encrypted", "holder": "pii_encrypted"},
            "encryption": {"dataset": "crm_cards"},
        },
    }
)
CARDS = [f"4111 1111 1111 {i:04d}" for i in range(50)] + [None]
HOLDERS = [f"holder {i % 7}" for i in range(51)]


def _store(resources, frame: pl.DataFrame) -> None:
    with duckdb.connect(str(resources["dataflare"].home.root / "crm.duckdb")) as conn:
        conn.register("rows", frame.to_arrow())
        conn.execute("CREATE OR REPLACE TABLE cards AS SELECT * FROM rows")


def _read(resources) -> pl.DataFrame:
    with duckdb.connect(str(resources["dataflare"].home.root / "crm.duckdb")) as conn:
        return pl.from_arrow(conn.sql("SELECT * FROM cards").to_arrow_table())


def _seal(cipher, values, column, deterministic=False):
    binding = Binding("crm_cards", column)
    return pl.Series(column, cipher.encrypt(pa.array(values), binding, deterministic))


def _store_sealed_then_rotate(resources, deterministic_holders: bool = False):
    """The table encrypted under version 1, then the key rotated to version 2: every
    stored value is below the newest version. Returns the cipher."""
    cipher = resources["governance"].cipher()
    sealed = [
        pl.Series("id", range(51)),
        _seal(cipher, CARDS, "card"),
        _seal(cipher, HOLDERS, "holder", deterministic_holders),
    ]
    _store(resources, pl.DataFrame(sealed))
    cipher.envelope.rotate("crm_cards")
    return cipher


@pytest.fixture
def defs():
    return encryption_definitions([SPEC])


def _check(defs, resources) -> dg.AssetCheckEvaluation:
    (check,) = defs.asset_checks
    result = dg.materialize(
        [*defs.assets, check],
        resources=resources,
        selection=dg.AssetSelection.checks_for_assets(REWRAP_KEY),
    )
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def test_rotate_rewrap_retire(resources, defs, instance):
    cipher = _store_sealed_then_rotate(resources, deterministic_holders=True)

    before = _check(defs, resources)
    assert not before.passed and before.severity == dg.AssetCheckSeverity.WARN
    assert before.metadata["below_latest_version"].value == {
        "crm/cards": {"card": 50, "holder": 51}
    }

    result = dg.materialize(
        [*defs.assets, *defs.asset_checks], resources=resources, instance=instance
    )
    (materialization,) = result.asset_materializations_for_node("governance__encryption_rewrap")
    assert materialization.metadata["values_rewrapped"].value == 101
    detail = materialization.metadata["detail"].value["crm/cards"]
    assert detail["versions_after"] == {"card": [2], "holder": [2]}
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert "rewrap crm/cards.card: 51/51 rows" in messages  # progress
    assert not any("4111 1111" in m for m in messages)
    (after,) = result.get_asset_check_evaluations()
    assert after.passed

    cipher.envelope.retire_below("crm_cards", 2)
    assert _check(defs, resources).passed
    stored = _read(resources)
    assert key_versions(stored["card"]).tolist() == [2] * 50 + [-1]
    back = cipher.decrypt(stored["card"], Binding("crm_cards", "card")).to_pylist()
    assert back == CARDS
    holders = stored["holder"].to_list()
    assert holders[0] == holders[7]  # deterministic values stay equal after the rewrap


def test_retiring_before_rewrapping_fails_the_check(resources, defs):
    cipher = _store_sealed_then_rotate(resources)
    cipher.envelope.retire_below("crm_cards", 2)
    evaluation = _check(defs, resources)
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["below_min_version"].value == {
        "crm/cards": {"card": 50, "holder": 51}
    }


def test_no_encrypted_dataset_builds_nothing():
    plain = SPEC.model_copy(update={"pii": None})
    assert list(encryption_definitions([plain]).assets or []) == []
