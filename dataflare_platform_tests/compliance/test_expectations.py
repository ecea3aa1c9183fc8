"""GX suites from YAML: names checked at load without importing GX, each expectation's
outcome kept in declaration order with its failing values, and expectations GX cannot
evaluate reported as failures that say why."""

import subprocess
import sys

import polars as pl
import pytest
import yaml

from dataflare_platform.compliance.expectations import SuiteSpec, run_suite
from dataflare_platform.errors import ConfigError

SUITE_YAML = """
name: bids_rules
expectations:
  - expect_column_values_to_be_between: {column: price, min_value: 1, severity: warn}
  - expect_column_values_to_not_be_null: {column: bidder}
  - expect_column_values_to_be_unique: {column: id}
  - expect_table_row_count_to_be_between: {min_value: 1, max_value: 10}
"""


def test_outcomes_follow_the_declaration_order_with_samples():
    suite = SuiteSpec.load(yaml.safe_load(SUITE_YAML))
    frame = pl.DataFrame(
        {"id": [1, 2, 2, 4], "price": [5, 0, 3, -1], "bidder": ["a", None, "c", "d"]}
    )
    result = run_suite(frame, suite)
    assert [o.type for o in result.outcomes] == [e.type for e in suite.expectations]
    price, bidder, unique, count = result.outcomes
    assert not price.success and price.unexpected_count == 2 and sorted(price.sample) == [-1, 0]
    assert price.severity == "warn"
    assert not bidder.success and bidder.unexpected_count == 1
    assert not unique.success and unique.sample == [2, 2]
    assert count.success and count.observed_value == 4
    assert result.severity == "error" and result.rows == 4


def test_a_clean_frame_passes_every_expectation():
    suite = SuiteSpec.load(yaml.safe_load(SUITE_YAML))
    frame = pl.DataFrame({"id": [1, 2], "price": [5, 9], "bidder": ["a", "b"]})
    result = run_suite(frame, suite)
    assert result.success and result.severity is None and len(result.outcomes) == 4


def test_expectations_gx_cannot_evaluate_fail_and_say_why():
    suite = SuiteSpec.load(
        {
            "name": "broken",
            "expectations": [
                {"expect_column_values_to_be_between": {"column": "nope", "min_value": 0}},
                {"expect_column_values_to_be_between": {"colum": "price"}},
                {"expect_column_values_to_not_be_null": {"column": "price"}},
            ],
        }
    )
    missing, bad_argument, fine = run_suite(pl.DataFrame({"price": [1, 2]}), suite).outcomes
    assert not missing.success and "nope" in missing.error
    assert not bad_argument.success and "ValidationError" in bad_argument.error
    assert fine.success and fine.error is None


@pytest.mark.parametrize(
    ("item", "field", "message"),
    [
        ({"expect_colum_values_to_not_be_null": {"column": "x"}}, "expectations", "not a Great"),
        ({"column": "x"}, "expectations", "arguments as a mapping"),
        ({"columns": {"x": 1}}, "expectations", "name an expectation"),
        (
            {"expect_column_values_to_not_be_null": {"column": "x", "severity": "loud"}},
            "expectations",
            "severity",
        ),
    ],
)
def test_bad_suites_are_refused_at_load_naming_the_field(item, field, message):
    with pytest.raises(ConfigError) as err:
        SuiteSpec.load({"name": "s", "expectations": [item]})
    assert err.value.fields[0].startswith(field) and message in str(err.value)
    assert ".0" in err.value.fields[0]  # the item is named


def test_loading_a_suite_does_not_import_great_expectations():
    code = (
        "import sys, yaml\n"
        "from dataflare_platform.compliance.expectations import SuiteSpec\n"
        f"SuiteSpec.load(yaml.safe_load({SUITE_YAML!r}))\n"
        "print('great_expectations' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
