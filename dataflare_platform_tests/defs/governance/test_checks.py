"""PII and schema-contract checks on an asset's rows, in a real Dagster run."""

import dagster as dg
import duckdb
import polars as pl
import pytest

from dataflare_platform.compliance.spec import GovernedDataset
from dataflare_platform.connectors.duckdb import DuckDBSink
from dataflare_platform.defs.governance.checks import contract_check, pii_check
from dataflare_platform.defs.governance.definitions import dataset_checks
from dataflare_platform.defs.resources import ProjectHomeResource

KEY = dg.AssetKey(["crm", "contacts"])
SPEC = GovernedDataset.model_validate(
    {
        "asset": "crm/contacts",
        "data": {"duckdb": {"path": "crm.duckdb", "table": "contacts"}},
        "pii": {"columns": {"email": "pii_masked"}, "scan": "all_strings"},
        "contract": {
            "columns": [
                {"name": "id", "type": "Int64", "nullable": False},
                {"name": "email", "type": "String"},
                {"name": "notes", "type": "String"},
            ]
        },
    }
)


def run(resources, rows: pl.DataFrame, checks):
    @dg.asset(key=KEY)
    def contacts(dataflare: ProjectHomeResource) -> None:
        with duckdb.connect(str(dataflare.home.root / "crm.duckdb")) as conn:
            conn.register("rows", rows.to_arrow())
            conn.execute("CREATE OR REPLACE TABLE contacts AS SELECT * FROM rows")

    result = dg.materialize([contacts, *checks], resources=resources, raise_on_error=False)
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


CLEAN = pl.DataFrame(
    {
        "id": [1, 2, 3],
        "email": ["***@***.com", "j***@e***.org", None],
        # 16 digits that fail the Luhn check are not card numbers.
        "notes": ["order 4111 1111 1111 1112", "called back", "vip"],
    }
)


def test_masked_and_luhn_invalid_data_passes(resources):
    evaluations = run(resources, CLEAN, [pii_check(KEY, SPEC), contract_check(KEY, SPEC)])
    pii = evaluations["pii_compliance"]
    assert pii.passed and pii.metadata["violations"].value == 0
    assert pii.metadata["rows_scanned"].value == 3
    assert evaluations["schema_contract"].passed


def test_pii_planted_in_an_unclassified_column_fails_with_redacted_samples(resources):
    planted = CLEAN.with_columns(
        pl.Series("notes", ["mail ann@example.com", "card 4111 1111 1111 1111", "ssn 123-45-6789"])
    )
    pii = run(resources, planted, [pii_check(KEY, SPEC)])["pii_compliance"]
    assert not pii.passed and pii.severity == dg.AssetCheckSeverity.ERROR
    found = {(f["column"], f["kind"]) for f in pii.metadata["findings_detail"].value}
    assert found == {("notes", "email"), ("notes", "card"), ("notes", "national_id")}
    detail = str(pii.metadata["findings_detail"].value)
    assert "ann@example.com" not in detail and "4111 1111 1111 1111" not in detail
    assert pii.metadata["violations"].value == 3


def test_unmasked_values_in_a_masked_column_fail(resources):
    leaked = CLEAN.with_columns(pl.Series("email", ["***@***.com", "bob@corp.io", None]))
    pii = run(resources, leaked, [pii_check(KEY, SPEC)])["pii_compliance"]
    assert not pii.passed
    assert "email" in pii.description


def test_schema_drift_fails_the_contract_naming_each_change(resources):
    drifted = CLEAN.drop("notes").with_columns(pl.col("id").cast(pl.String))
    contract = run(resources, drifted, [contract_check(KEY, SPEC)])["schema_contract"]
    assert not contract.passed
    kinds = {(d["kind"], d["column"]) for d in contract.metadata["drift"].value}
    assert kinds == {("missing", "notes"), ("type", "id")}


@pytest.mark.parametrize("section", ["pii", "contract"])
def test_each_section_yields_its_check(section):
    spec = GovernedDataset.model_validate(
        {
            k: v
            for k, v in SPEC.model_dump(mode="json", exclude_none=True).items()
            if k in ("asset", "data", section)
        }
    )
    (check,) = dataset_checks(spec)
    (key,) = check.check_keys
    assert key.asset_key == KEY
    assert key.name == {"pii": "pii_compliance", "contract": "schema_contract"}[section]


def run_without_output(resources, checks, sink_opened: bool):
    """The asset runs but writes no output rows; with ``sink_opened`` its file holds what
    a pipeline sink creates at open (a fresh topic, no window closed yet)."""

    @dg.asset(key=KEY)
    def contacts(dataflare: ProjectHomeResource) -> None:
        with duckdb.connect(str(dataflare.home.root / "crm.duckdb")) as conn:
            if sink_opened:
                sink = DuckDBSink(dataflare.home.root / "crm.duckdb", "contacts")
                conn.close()
                sink.open("contacts_pipeline")
                sink.close()

    result = dg.materialize([contacts, *checks], resources=resources, raise_on_error=False)
    return result.success, {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_a_stream_output_with_no_rows_yet_passes_with_a_warning(resources):
    """A pipeline whose sink opened its file but emitted nothing (no window closed yet)
    breaks no contract: the blocking check passes, saying why, and the run stays green."""
    ok, evaluations = run_without_output(
        resources, [pii_check(KEY, SPEC), contract_check(KEY, SPEC)], sink_opened=True
    )
    assert ok
    for name in ("schema_contract", "pii_compliance"):
        evaluation = evaluations[name]
        assert evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
        assert "no rows yet in 'contacts'" in evaluation.description
        assert evaluation.metadata["rows_scanned"].value == 0


def test_a_missing_table_still_fails_the_blocking_contract(resources):
    ok, evaluations = run_without_output(resources, [contract_check(KEY, SPEC)], sink_opened=False)
    contract = evaluations["schema_contract"]
    assert not contract.passed and contract.severity == dg.AssetCheckSeverity.ERROR
    assert "no data to check" in contract.description
    assert not ok  # blocking: the run fails
