"""GX suites as blocking asset checks, in a real (ephemeral) Dagster instance: bad data
fails the check, names the failing expectation with sample values, and the downstream
asset of the same run does not run."""

import dagster as dg
import duckdb
import polars as pl

from dataflare_platform.compliance.datasets import DatasetRef
from dataflare_platform.compliance.expectations import SuiteSpec
from dataflare_platform.defs.governance.quality import expectation_check
from dataflare_platform.defs.resources import ProjectHomeResource

KEY = dg.AssetKey(["shop", "orders"])
REF = DatasetRef.model_validate({"duckdb": {"path": "shop.duckdb", "table": "orders"}})
SUITE = SuiteSpec.load(
    {
        "name": "orders_rules",
        "expectations": [
            {"expect_column_values_to_not_be_null": {"column": "order_id"}},
            {"expect_column_values_to_be_between": {"column": "amount", "min_value": 0}},
            {"expect_column_values_to_be_in_set": {"column": "currency", "value_set": ["EUR"]}},
            {"expect_table_row_count_to_be_between": {"min_value": 1, "severity": "warn"}},
        ],
    }
)


def definitions(rows: pl.DataFrame, suite: SuiteSpec = SUITE):
    built: list[str] = []

    @dg.asset(key=KEY)
    def orders(dataflare: ProjectHomeResource) -> None:
        with duckdb.connect(str(dataflare.home.root / "shop.duckdb")) as conn:
            conn.register("rows", rows.to_arrow())
            conn.execute("CREATE OR REPLACE TABLE orders AS SELECT * FROM rows")

    @dg.asset(key=["shop", "revenue"], deps=[KEY])
    def revenue() -> None:
        built.append("revenue")

    return [orders, revenue, expectation_check(KEY, suite, REF)], built


def run(home, rows, suite=SUITE):
    assets, built = definitions(rows, suite)
    result = dg.materialize(
        assets,
        resources={"dataflare": ProjectHomeResource(path=str(home.root))},
        raise_on_error=False,
    )
    (evaluation,) = result.get_asset_check_evaluations()
    return result, evaluation, built


def test_good_data_passes_and_downstream_runs(home):
    rows = pl.DataFrame({"order_id": [1, 2, 3], "amount": [5.0, 0.0, 7.5], "currency": ["EUR"] * 3})
    result, evaluation, built = run(home, rows)
    assert evaluation.passed and result.success
    assert evaluation.metadata["failed_expectations"].value == 0
    assert evaluation.metadata["rows_checked"].value == 3
    assert built == ["revenue"]


def test_bad_data_fails_the_blocking_check_and_downstream_does_not_run(home):
    rows = pl.DataFrame(
        {
            "order_id": [1, None, 3, 4],
            "amount": [5.0, -2.0, 7.5, -9.0],
            "currency": ["EUR", "EUR", "USD", "EUR"],
        }
    )
    result, evaluation, built = run(home, rows)
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert built == []  # blocked
    assert not result.success
    materialized = {m.asset_key for m in result.get_asset_materialization_events()}
    assert materialized == {KEY}
    meta = evaluation.metadata
    assert meta["failed_expectations"].value == 3
    amount = meta["failed/expect_column_values_to_be_between[amount]"].value
    assert amount["unexpected_count"] == 2 and sorted(amount["sample"]) == [-9.0, -2.0]
    currency = meta["failed/expect_column_values_to_be_in_set[currency]"].value
    # shop/orders has no PII classification: its failing strings are masked (fail closed)
    assert currency["sample"] == ["***"]
    assert "USD" not in evaluation.description
    assert "expect_column_values_to_not_be_null on order_id" in evaluation.description


def test_warn_only_failures_do_not_block(home):
    suite = SuiteSpec.load(
        {
            "name": "soft",
            "expectations": [
                {
                    "expect_column_values_to_be_between": {
                        "column": "amount",
                        "min_value": 0,
                        "severity": "warn",
                    }
                }
            ],
        }
    )
    rows = pl.DataFrame({"order_id": [1], "amount": [-1.0], "currency": ["EUR"]})
    result, evaluation, built = run(home, rows, suite)
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert built == ["revenue"] and result.success


def test_a_missing_table_fails_the_check_saying_so(home):
    @dg.asset(key=KEY)
    def orders() -> None:
        return None

    result = dg.materialize(
        [orders, expectation_check(KEY, SUITE, REF)],
        resources={"dataflare": ProjectHomeResource(path=str(home.root))},
        raise_on_error=False,
    )
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed and "no data to check" in evaluation.description
