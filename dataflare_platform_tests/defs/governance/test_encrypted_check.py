"""The ``pii_encrypted`` promise in the real ``pii_compliance`` check (a real Dagster run,
a real keyring outside the home): real ciphertext that decrypts passes; a base64 blob, a
plain binary column, or ciphertext moved from another column fails."""

import base64

import dagster as dg
import duckdb
import polars as pl
import pyarrow as pa
import pytest

from dataflare_platform.compliance.spec import GovernedDataset
from dataflare_platform.crypto.columns import Binding
from dataflare_platform.defs.governance.checks import pii_check
from dataflare_platform.defs.resources import ProjectHomeResource

KEY = dg.AssetKey(["crm", "cards"])
SPEC = GovernedDataset.model_validate(
    {
        "asset": "crm/cards",
        "data": {"duckdb": {"path": "crm.duckdb", "table": "cards"}},
        "pii": {
            "columns": {"card": "pii_encrypted"},
            "scan": "all_strings",
            "encryption": {"dataset": "crm_cards"},
        },
    }
)
CARDS = ["4111 1111 1111 1111", "5500 0000 0000 0004", None, "3400 0000 0000 009"]


def run(resources, rows: pl.DataFrame) -> dg.AssetCheckEvaluation:
    @dg.asset(key=KEY)
    def cards(dataflare: ProjectHomeResource) -> None:
        with duckdb.connect(str(dataflare.home.root / "crm.duckdb")) as conn:
            conn.register("rows", rows.to_arrow())
            conn.execute("CREATE OR REPLACE TABLE cards AS SELECT * FROM rows")

    result = dg.materialize([cards, pii_check(KEY, SPEC)], resources=resources)
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def _sealed(resources, column: str = "card") -> pl.Series:
    cipher = resources["governance"].cipher()
    return pl.Series("card", cipher.encrypt(pa.array(CARDS), Binding("crm_cards", column)))


def test_real_ciphertext_passes_and_reports_versions(resources):
    rows = pl.DataFrame({"id": [1, 2, 3, 4]}).with_columns(_sealed(resources))
    evaluation = run(resources, rows)
    assert evaluation.passed, evaluation.description
    detail = evaluation.metadata["encrypted_columns"].value
    assert detail == {"card": {"rows": 3, "key_versions": [1], "sample_decrypted": 3}}


@pytest.mark.parametrize(
    ("card", "message"),
    [
        (
            pl.Series("card", [base64.b64encode(b"x" * 40).decode()] * 4),
            "holds String, not ciphertext",
        ),
        (pl.Series("card", [b"\x07" * 40] * 4, dtype=pl.Binary), "no ciphertext header"),
    ],
)
def test_blobs_that_only_look_encrypted_fail(resources, card, message):
    evaluation = run(resources, pl.DataFrame({"id": [1, 2, 3, 4], "card": card}))
    assert not evaluation.passed and message in evaluation.description


def test_ciphertext_from_another_column_fails(resources):
    rows = pl.DataFrame({"id": [1, 2, 3, 4]}).with_columns(_sealed(resources, "iban"))
    evaluation = run(resources, rows)
    assert not evaluation.passed and "sample does not decrypt" in evaluation.description
    assert "4111" not in evaluation.description


def test_without_a_declared_binding_the_check_fails_closed(resources):
    unbound = SPEC.model_copy(
        update={"pii": SPEC.pii.model_copy(update={"encryption": None})}  # type: ignore[union-attr]
    )

    @dg.asset(key=KEY)
    def cards(dataflare: ProjectHomeResource) -> None:
        rows = pl.DataFrame({"id": [1, 2, 3, 4]}).with_columns(_sealed(resources))
        with duckdb.connect(str(dataflare.home.root / "crm.duckdb")) as conn:
            conn.register("rows", rows.to_arrow())
            conn.execute("CREATE OR REPLACE TABLE cards AS SELECT * FROM rows")

    result = dg.materialize([cards, pii_check(KEY, unbound)], resources=resources)
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert "no pii.encryption binding declared" in evaluation.description
