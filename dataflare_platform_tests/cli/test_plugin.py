"""``dataflare plugin``: scaffold -> build -> run round trip, inspect, clear errors.

A freshly scaffolded plugin is unpinned: the developer loop runs it under the audited
development opt-out ``DATAFLARE_PLUGIN_ALLOW_UNPINNED=true`` (without it the same run is
refused, see ``test_without_the_opt_out_a_scaffolded_plugin_is_refused``)."""

from __future__ import annotations

import json

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from dataflare_platform.cli.plugin import plugin_app

runner = CliRunner()


def ok(args: list[str]) -> dict:
    result = runner.invoke(plugin_app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def err(args: list[str]) -> str:
    result = runner.invoke(plugin_app, args)
    assert result.exit_code == 2, result.output
    return " ".join(result.output.split())  # rich wraps long lines


@pytest.fixture(autouse=True)
def developer_home(audited_home, monkeypatch):
    """Each test in its own home (its lock, key and audit log), unpinned plugins allowed."""
    monkeypatch.setenv("DATAFLARE_PLUGIN_ALLOW_UNPINNED", "true")
    return audited_home


@pytest.fixture(scope="module")
def scaffolded(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("cli")
    out = {}
    for kind in ("map", "filter"):
        created = ok(["new", f"my_{kind}", "--kind", kind, "--dir", str(root)])
        built = ok(["build", created["created"], "--out", str(root / "dist")])
        out[kind] = built["wasm"]
    return out


@pytest.fixture
def data(tmp_path):
    df = pl.DataFrame({"id": range(10), "x": [1.5, None, -2.0, 3.0, 0.0, 4.0, None, 5.5, -1, 9]})
    df.write_parquet(tmp_path / "in.parquet")
    df.write_csv(tmp_path / "in.csv")
    return df


def test_scaffold_build_run_map(scaffolded, data, tmp_path):
    summary = ok(
        [
            "run",
            scaffolded["map"],
            "--input",
            str(tmp_path / "in.parquet"),
            "--output",
            str(tmp_path / "out.parquet"),
            "--param",
            "factor=3",
            "--batch-rows",
            "4",
        ]
    )
    assert summary["rows_in"] == summary["rows_out"] == 10
    assert summary["batches"] == 3 and summary["dead_letter_rows"] == 0
    assert summary["params"] == {"factor": 3.0}
    got = pl.read_parquet(tmp_path / "out.parquet")
    assert_frame_equal(got, data.with_columns((pl.col("x") * 3).alias("y")))


def test_scaffold_build_run_filter_from_csv_with_column_binding(scaffolded, data, tmp_path):
    renamed = data.rename({"x": "value"})
    renamed.write_csv(tmp_path / "v.csv")
    summary = ok(
        [
            "run",
            scaffolded["filter"],
            "--input",
            str(tmp_path / "v.csv"),
            "--output",
            str(tmp_path / "out.parquet"),
            "-p",
            "threshold=1",
            "-c",
            "x=value",
        ]
    )
    expected = renamed.filter(pl.col("value") > 1)
    assert summary["rows_out"] == expected.height == 5
    assert_frame_equal(pl.read_parquet(tmp_path / "out.parquet"), expected)


def test_failing_batches_are_dead_lettered_and_reported(scaffolded, tmp_path):
    pl.DataFrame({"x": ["a", "b"]}).write_parquet(tmp_path / "text.parquet")
    result = runner.invoke(
        plugin_app,
        [
            "run",
            scaffolded["map"],
            "--input",
            str(tmp_path / "text.parquet"),
            "--output",
            str(tmp_path / "out.parquet"),
            "--dead-letters",
            str(tmp_path / "dead.parquet"),
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["dead_letter_rows"] == 2 and summary["rows_out"] == 0
    assert "schema" in summary["dead_letter_reasons"][0]
    assert "1 of 1 batches failed" in result.stderr
    dead = pl.read_parquet(tmp_path / "dead.parquet")
    assert dead["x"].to_list() == ["a", "b"] and dead["reason"].str.contains("schema").all()


def test_run_a_sample_by_name_built_on_demand(tmp_path):
    pl.DataFrame({"text": ["mail bob@x.org", None, ""]}).write_parquet(tmp_path / "t.parquet")
    summary = ok(
        [
            "run",
            "pii_mask",
            "--dir",
            str(tmp_path / "plugins"),
            "--input",
            str(tmp_path / "t.parquet"),
            "--output",
            str(tmp_path / "o.parquet"),
        ]
    )
    assert summary["plugin"] == "pii_mask"
    assert pl.read_parquet(tmp_path / "o.parquet")["text"].to_list() == ["mail ***@x.org", None, ""]


def test_inspect(scaffolded):
    info = ok(["inspect", scaffolded["map"]])
    assert info["manifest"]["name"] == "my_map" and info["manifest"]["kind"] == "map"
    names = {e["name"] for e in info["exports"]}
    assert {"memory", "dataflare_abi_version", "dataflare_alloc", "dataflare_map"} <= names
    assert info["imports"] == []
    (memory,) = info["memory"]
    assert memory["min_pages"] >= 1 and memory["min_bytes"] == memory["min_pages"] * 65536
    assert info["loads_with_defaults"] is True
    assert len(info["sha256"]) == 64


def test_clear_errors(scaffolded, data, tmp_path):
    run = ["run", scaffolded["map"], "--output", str(tmp_path / "o.parquet"), "--input"]
    assert "no such file" in err([*run, str(tmp_path / "missing.parquet")])
    assert "params.factor: expected float, got 'big'" in err(
        [*run, str(tmp_path / "in.parquet"), "-p", "factor=big"]
    )
    assert "params.speed: unknown parameter" in err(
        [*run, str(tmp_path / "in.parquet"), "-p", "speed=1"]
    )
    assert "--param: 'factor' is not KEY=VALUE" in err(
        [*run, str(tmp_path / "in.parquet"), "-p", "factor"]
    )
    assert "columns.z" in err([*run, str(tmp_path / "in.parquet"), "-c", "z=x"])
    assert "no plugin file or directory" in err(["inspect", str(tmp_path / "nope.wasm")])
    assert "no plugin named 'nope'" in err(["inspect", "nope", "--dir", str(tmp_path)])
    assert "is not one of" in err(["new", "p", "--kind", "reduce", "--dir", str(tmp_path)])
    assert "must match" in err(["new", "Bad Name", "--dir", str(tmp_path)])
    assert "no plugin.c" in err(["build", str(tmp_path)])


def test_build_reports_compiler_errors(tmp_path):
    ok(["new", "broken", "--dir", str(tmp_path)])
    (tmp_path / "broken" / "plugin.c").write_text("int oops(void) { return }\n")
    assert "failed" in err(["build", str(tmp_path / "broken")])


def _hostile_plugin(tmp_path, wat: str) -> str:
    """A plugin file pair from a hostile WAT module (``tests.plugins.hostile``)."""
    import wasmtime

    from dataflare_platform_tests.plugins.hostile import MANIFEST

    (tmp_path / "hostile.wasm").write_bytes(wasmtime.wat2wasm(wat))
    (tmp_path / "hostile.json").write_text(MANIFEST.model_dump_json())
    return str(tmp_path / "hostile.wasm")


def test_inspect_shows_every_memory_and_table_even_of_a_refused_module(tmp_path):
    from dataflare_platform_tests.plugins.hostile import module

    wasm = _hostile_plugin(tmp_path, module(imports="(memory $hidden 300) (table $t 5 funcref)"))
    info = ok(["inspect", wasm])
    assert [(m["name"], m["min_pages"]) for m in info["memory"]] == [(None, 300), ("memory", 2)]
    assert info["tables"] == [{"imported": False, "elem": "funcref", "min": 5, "max": None}]
    assert "2 memories" in info["loads_with_defaults"]
    assert info["shape"]["functions"] == 3


def test_errors_are_not_wrapped_when_not_on_a_terminal(tmp_path):
    """A batch failure summary longer than 80 columns stays on one line (for grep)."""
    from dataflare_platform_tests.plugins.hostile import TRAP, module

    wasm = _hostile_plugin(tmp_path, module())
    pl.DataFrame({"x": [TRAP, 1, 2]}).write_parquet(tmp_path / "in.parquet")
    result = runner.invoke(
        plugin_app,
        ["run", wasm, "--input", str(tmp_path / "in.parquet"), "--output", str(tmp_path / "o.pq")],
    )
    assert result.exit_code == 0, result.output
    (line,) = [ln for ln in result.stderr.splitlines() if "batches failed" in ln]
    assert len(line) > 80
    assert line.endswith("wasm trap: wasm `unreachable` instruction executed")


def test_without_the_opt_out_a_scaffolded_plugin_is_refused(
    scaffolded, data, tmp_path, monkeypatch, developer_home
):
    from dataflare_platform.compliance.audit import AuditLog

    args = ["run", scaffolded["map"], "--input", str(tmp_path / "in.parquet")]
    args += ["--output", str(tmp_path / "out.parquet")]
    ok(args)
    monkeypatch.delenv("DATAFLARE_PLUGIN_ALLOW_UNPINNED")
    assert "is not pinned by any lock file" in err(args)
    with AuditLog(f"sqlite:///{developer_home.root / 'audit.db'}") as log:
        actions = [(e.action, e.subject) for e in log.tail(10)]
    assert actions == [("plugin_unpinned_loaded", "my_map"), ("plugin_refused", "my_map")]


def test_admit_reports_every_check_and_exits_1_when_one_refuses():
    """A shipped sample with its self-test vectors is admitted; one that ships none is
    refused with exit 1, every other check still reported as passed."""
    admitted = ok(["admit", "currency", "--json"])
    assert admitted["admitted"] is True
    assert {c["check"] for c in admitted["checks"]} == {
        "structure",
        "abi",
        "capabilities",
        "licence",
        "self_test",
    }
    result = runner.invoke(plugin_app, ["admit", "pii_mask", "--json"])
    assert result.exit_code == 1, result.output
    refused = json.loads(result.stdout)
    failing = [c for c in refused["checks"] if not c["passed"]]
    assert [c["check"] for c in failing] == ["self_test"]
    assert "ships no self-test vectors" in failing[0]["detail"]
