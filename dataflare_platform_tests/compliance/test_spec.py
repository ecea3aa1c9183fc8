from __future__ import annotations

from pathlib import Path

import pytest

from dataflare_platform.compliance.contracts import check_contract
from dataflare_platform.compliance.pii import Classification
from dataflare_platform.compliance.spec import load_dataset_spec, load_dataset_specs
from dataflare_platform.errors import ConfigError

FULL = """
asset: streams/hot_items
data: {duckdb: {path: streams/hot_items.duckdb, table: hot_items}}
pii:
  columns: {email: pii_masked, card: pii_encrypted, phone: pii_allowed}
  scan: [email, notes]
contract:
  columns:
    - {name: window_end, type: "Datetime(ms)", nullable: false}
    - {name: item, type: String}
  allow_extra: true
freshness: {max_lag: 2h}
retention:
  keep: 30d
  time_column: window_end
  target: {parquet: leaderboards/hot_items}
expectations:
  - expect_column_values_to_not_be_null: {column: item}
"""


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def test_a_full_spec_loads_with_paths_left_relative_to_the_project_home(tmp_path: Path):
    spec = load_dataset_spec(_write(tmp_path / "gov", "hot.yaml", FULL))
    assert spec.asset_path == ["streams", "hot_items"]
    assert spec.pii is not None and spec.pii.columns["email"] is Classification.MASKED
    assert spec.pii.scan == ["email", "notes"]
    assert spec.freshness is not None and spec.freshness.max_lag_ms == 2 * 3_600_000
    assert spec.retention is not None and spec.retention.keep_ms == 30 * 86_400_000
    assert spec.retention_target.parquet == Path("leaderboards/hot_items")
    assert spec.data.duckdb.path == Path("streams/hot_items.duckdb")
    assert spec.contract is not None and spec.contract.allow_extra
    drift = check_contract({"window_end": spec.contract.columns[0].dtype}, spec.contract)
    assert [(d.kind, d.column) for d in drift] == [("missing", "item")]
    suite = spec.expectations
    assert suite.name == "streams_hot_items_suite" and suite.blocking
    assert [e.type for e in suite.expectations] == ["expect_column_values_to_not_be_null"]


def test_retention_applies_to_the_data_unless_given_a_target(tmp_path: Path):
    spec = load_dataset_spec(
        _write(
            tmp_path,
            "s.yaml",
            "asset: nexmark/bids\ndata: {duckdb: {table: bids}}\n"
            "retention: {keep: 90d, time_column: date_time}\n"
            "expectations: {name: bids_soft, blocking: false, expectations: "
            "[{expect_column_values_to_not_be_null: {column: bidder}}]}\n",
        )
    )
    assert spec.retention_target == spec.data
    assert spec.data.duckdb.path == Path("warehouse.duckdb")  # the warehouse by default
    assert spec.expectations.name == "bids_soft" and not spec.expectations.blocking


def test_every_section_is_optional(tmp_path: Path):
    spec = load_dataset_spec(_write(tmp_path, "bare.yaml", "asset: raw/bids\n"))
    assert (spec.pii, spec.contract, spec.freshness, spec.retention) == (None,) * 4


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("asset: a\npii: {columns: {email: hashed}}\n", "pii.columns.email"),
        ("asset: a\nfreshness: {max_lag: soon}\n", "freshness.max_lag"),
        ("asset: a\ncontract: {columns: [{name: x, type: Int65}]}\n", "contract.columns.0.type"),
        (
            "asset: a\nretention: {keep: 1d, target: {topic: t, parquet: d}}\n",
            "retention.target",
        ),
        ("asset: a\nretention: {keep: 1d, target: {duckdb: {table: t}}}\n", "<root>"),
        ("asset: a\nretention: {keep: 1d}\n", "<root>"),
        ("asset: a\npii: {columns: {email: pii_masked}}\n", "<root>"),
        (
            "asset: a\ndata: {topic: t}\nexpectations: [{expect_nothing_at_all: {}}]\n",
            "expectations.expectations.0.type",
        ),
        ("asset: a\nfreshnes: {max_lag: 2h}\n", "freshnes"),
        ("asset: ../etc\n", "asset"),
        ("pii: {}\n", "asset"),
        ("asset: a\nexpectations: {not: a list}\n", "expectations.not"),
    ],
)
def test_bad_specs_name_the_file_and_the_field(tmp_path: Path, text: str, field: str):
    path = _write(tmp_path, "bad.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_dataset_spec(path)
    assert field in err.value.fields
    assert str(path) in str(err.value)


def test_unreadable_yaml_and_non_mappings_are_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"bad\.yaml") as err:
        load_dataset_spec(_write(tmp_path, "bad.yaml", "asset: [unclosed\n"))
    assert err.value.fields == ["<file>"]
    with pytest.raises(ConfigError) as err:
        load_dataset_spec(_write(tmp_path, "list.yaml", "- a\n"))
    assert err.value.fields == ["<root>"]


def test_a_folder_loads_in_file_order_and_refuses_two_specs_for_one_asset(tmp_path: Path):
    _write(tmp_path, "b.yaml", "asset: streams/b\n")
    _write(tmp_path, "a.yml", "asset: streams/a\nfreshness: {max_lag: 5m}\n")
    _write(tmp_path, "notes.txt", "not a spec")
    assert [s.asset for s in load_dataset_specs(tmp_path)] == ["streams/a", "streams/b"]
    _write(tmp_path, "c.yaml", "asset: streams/a\n")
    with pytest.raises(ConfigError, match=r"c\.yaml") as err:
        load_dataset_specs(tmp_path)
    assert err.value.fields == ["asset"] and "a.yml" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_dataset_specs(tmp_path / "missing")
    assert err.value.fields == ["<folder>"]
