"""Cold start (issue 21 §1): a fresh process running any Nexmark query, or a declarative
stream pipeline with a DuckDB sink and a dead-lettered row, through its first checkpoint
and beyond, never imports a library the engine does not need.

Each case runs in its own fresh interpreter (``sys.executable``): a module imported by
an earlier test in this process would hide the import. The child records the stack of
the first import of each denied module with a ``sys.meta_path`` finder (pyarrow's
compiled code imports through ``importlib``, not ``builtins.__import__``); a
``find_spec`` probe that only asks whether a module is installed (polars does that for
pandas at import) is not an import and is not counted.
"""

import datetime
import json
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest

from dataflare_platform.bench.restart import bid_counts_pipeline
from dataflare_platform.datagen import NexmarkConfig
from dataflare_platform.queries.nexmark import COLUMNS, QUERIES
from dataflare_platform.sql_names import quote_identifier
from dataflare_platform_tests.nexmark_data import nexmark_tables

# What the engine must never import, and why:
# - pandas: pyarrow imports it lazily on the first ``pa.array``/``pa.scalar`` of a list or
#   numpy array (its pandas shim asks whether the input is a pandas object); ~0.9 s and
#   340 modules, paid by the first batch or checkpoint of every run. The engine works on
#   Arrow, Polars and numpy.
# - great_expectations: data-quality checks run as Dagster asset checks, not in the data
#   plane; importing it costs seconds and pulls pandas with it.
# - dagster: the data plane is importable and runnable without the orchestrator (the
#   static rule is lint-imports'; this catches lazy imports inside functions).
DENIED = ("pandas", "great_expectations", "dagster")
# Client libraries of connectors a pipeline does not use: a pipeline over the event log
# and files must not pay for them (nats-py with aiohttp ~0.15 s, redis ~0.1 s).
OTHER_CLIENTS = ("nats", "aiohttp", "redis", "confluent_kafka")

# A declarative pipeline as ``dataflare`` binds it: the pipeline file's one spec, run
# bounded to the sources' ends as they are now with a checkpoint every 2 batches.
BOUNDED_CHILD = """
from pathlib import Path
from dataflare_platform.engine import RunnerConfig
from dataflare_platform.engine.runner import Runner
from dataflare_platform.events.log import EventLog
from dataflare_platform.streams import bind
from dataflare_platform.streams.ranges import load_specs, source_ends

specs, log_dir, out = (Path(a) for a in sys.argv[1:4])
(spec,) = load_specs(specs)
log = EventLog(log_dir)
pipeline = bind.build(spec, log=log, default_dir=out)
try:
    runner = Runner(
        pipeline, RunnerConfig(batch_rows=500, checkpoint_every=2), on_commit=on_commit
    )
    result = runner.run(mode="bounded", until=source_ends(spec, log))
finally:
    bind.close_sources(pipeline)
"""

CHILD_PRELUDE = textwrap.dedent(
    """
    import json, sys, traceback

    DENIED = {denied!r}
    FIRST = {{}}

    class RecordImports:
        def find_spec(self, name, path=None, target=None):
            top = name.split(".")[0]
            if top in DENIED and top not in FIRST:
                stack = traceback.extract_stack()
                probe = any(
                    f.name == "find_spec" and "importlib" in f.filename and "util" in f.filename
                    for f in stack
                )
                if not probe:
                    FIRST[top] = "".join(traceback.format_list(stack[-25:-1]))
            return None

    sys.meta_path.insert(0, RecordImports())
    commits = []

    def on_commit(checkpoint, metrics):
        commits.append(metrics.events_in)
    """
)

CHILD_REPORT = textwrap.dedent(
    """
    already = [m for m in DENIED if m in sys.modules and m not in FIRST]
    print(json.dumps({
        "imported": FIRST,
        "in_sys_modules": [m for m in DENIED if m in sys.modules],
        "already": already,
        "commits": len(commits),
        "finished": result.finished,
        "events_in": result.metrics.events_in,
        "events_out": result.metrics.events_out,
        "dead_letters": result.metrics.dead_letters,
    }))
    """
)


def _run_child(body: str, *args: str, denied: tuple[str, ...] = DENIED) -> dict:
    code = CHILD_PRELUDE.format(denied=denied) + textwrap.dedent(body) + CHILD_REPORT
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _assert_nothing_denied(report: dict) -> None:
    stacks = "\n".join(f"--- {m} first imported at:\n{s}" for m, s in report["imported"].items())
    assert report["in_sys_modules"] == [], stacks or report


@pytest.fixture(scope="module")
def nexmark_ipc(tmp_path_factory):
    """Small Nexmark tables as Arrow IPC files, the format ``make bench-nexmark`` reads."""
    root = tmp_path_factory.mktemp("nexmark-ipc")
    tables = nexmark_tables(NexmarkConfig(events=6_000, events_per_second=200.0, seed=21))
    for kind, table in tables.items():
        (root / kind).mkdir()
        with pa.ipc.new_file(root / kind / "part-0.arrow", table.schema) as writer:
            writer.write_table(table)
    return root


@pytest.mark.parametrize("query", QUERIES)
def test_a_nexmark_query_never_imports_denied_modules(nexmark_ipc, tmp_path, query):
    report = _run_child(
        """
        from pathlib import Path
        from dataflare_platform.connectors.duckdb.sink import DuckDBSink
        from dataflare_platform.engine import Runner, RunnerConfig
        from dataflare_platform.queries.nexmark import BUILDERS, NexmarkSources

        query, data, db = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
        sources = NexmarkSources.from_paths(
            query, data / "bids", data / "persons", data / "auctions"
        )
        runner = Runner(
            BUILDERS[query](sources, DuckDBSink(db, "out")),
            RunnerConfig(batch_rows=500, checkpoint_every=2),
            on_commit=on_commit,
        )
        result = runner.run()
        """,
        query,
        str(nexmark_ipc),
        str(tmp_path / "out.duckdb"),
    )
    assert report["finished"] and report["events_out"] > 0
    # Several checkpoints: the first one (where pandas used to come in) and later ones.
    events = sum(
        pa.ipc.open_file(nexmark_ipc / k / "part-0.arrow").read_all().num_rows
        for k in COLUMNS[query]
    )
    assert report["commits"] >= min(3, events // 1_000)
    _assert_nothing_denied(report)


PIPELINE_YAML = bid_counts_pipeline("cold_bids", "4s", "10s")


def _pipeline_with_a_dead_letter(tmp_path) -> int:
    """The YAML pipeline in ``tmp_path/pipelines`` and its bids (one of them to be
    dead-lettered) in the event log at ``tmp_path/log``; returns the number of bids."""
    tables = nexmark_tables(NexmarkConfig(events=6_000, events_per_second=200.0, seed=22))
    bids = tables["bids"]
    # One bid ten days ahead of the stream: the engine dead-letters it into the DuckDB
    # sink's side table (the dead-letter encoding is on the path under test).
    times = bids.column("date_time").to_pylist()
    times[700] = times[700] + datetime.timedelta(days=10)
    at = bids.schema.get_field_index("date_time")
    bids = bids.set_column(at, bids.schema.field(at), pa.array(times, pa.timestamp("ms")))
    specs = tmp_path / "pipelines"
    specs.mkdir()
    (specs / "cold_bids.yaml").write_text(PIPELINE_YAML)
    from dataflare_platform.events.log import EventLog

    EventLog(tmp_path / "log").create_topic("nexmark.bids", bids.schema).append(bids)
    return bids.num_rows


def test_a_stream_pipeline_with_dead_letters_never_imports_denied_modules(tmp_path):
    _pipeline_with_a_dead_letter(tmp_path)
    report = _run_child(
        BOUNDED_CHILD,
        str(tmp_path / "pipelines"),
        str(tmp_path / "log"),
        str(tmp_path / "out"),
        denied=DENIED + OTHER_CLIENTS,
    )
    assert report["events_out"] > 0, report
    assert report["dead_letters"] == 1, report
    assert report["commits"] >= 3
    _assert_nothing_denied(report)
    import duckdb

    with duckdb.connect(str(tmp_path / "out" / "cold_bids.duckdb"), read_only=True) as conn:
        tables_in_file = {r[0] for r in conn.sql("SHOW TABLES").fetchall()}
        side = next(t for t in tables_in_file if t.endswith("_side"))
        reasons = [str(r) for r in conn.sql(f"SELECT * FROM {quote_identifier(side)}").fetchall()]
    assert any("ahead of the stream" in r for r in reasons), reasons


def test_a_continuous_run_reading_past_the_end_never_imports_denied_modules(tmp_path):
    """Continuous mode polls the log after its end (an empty read, then checkpoints by
    time): the path of a pipeline restarted by a retry or a scale-out."""
    bids = _pipeline_with_a_dead_letter(tmp_path)
    report = _run_child(
        """
        from pathlib import Path
        from dataflare_platform.engine import RunnerConfig
        from dataflare_platform.events.log import EventLog
        from dataflare_platform.streams.continuous import ContinuousRun
        from dataflare_platform.streams.ranges import load_specs

        specs, log_dir, out = (Path(a) for a in sys.argv[1:4])
        total = int(sys.argv[4])
        (spec,) = load_specs(specs)
        config = RunnerConfig(batch_rows=500, checkpoint_every=2, checkpoint_interval_s=0.05)
        run = ContinuousRun(spec, EventLog(log_dir), out, config=config).start()
        reports = run.reports()
        for report in reports:  # the runner's checkpoint reports, as they come
            commits.append(report.events_in_total)
            if report.events_in_total >= total:
                break
        assert run.stop(60)
        list(reports)
        result = run.result
        """,
        str(tmp_path / "pipelines"),
        str(tmp_path / "log"),
        str(tmp_path / "out"),
        str(bids - 1),  # events_in counts the rows that were not dead-lettered
    )
    assert report["commits"] >= 1 and report["dead_letters"] == 1, report
    _assert_nothing_denied(report)


def test_column_encryption_never_imports_denied_modules(tmp_path):
    """A pipeline's encrypt/decrypt steps (PII columns) run on every batch: strings, int64
    and float64 with nulls, both modes, several key versions and a rewrap, all on Arrow
    buffers and numpy (pyarrow's ``Array.to_numpy`` and ``pa.array(ndarray)`` import
    pandas)."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    report = _run_child(
        """
        from pathlib import Path
        import pyarrow as pa
        from dataflare_platform.crypto.columns import Binding, key_versions
        from dataflare_platform.crypto.settings import CryptoSettings
        from dataflare_platform.engine import arrays

        home, keyring = Path(sys.argv[1]), Path(sys.argv[2])
        cipher = CryptoSettings.resolve(home=home, keyring_dir=keyring, environ={}).cipher()
        columns = {
            "email": arrays.strings(["ann@example.com", None, "bob@example.org"] * 50),
            "age": arrays.from_numpy(
                list(range(150)), pa.int64(), valid=[i % 7 > 0 for i in range(150)]
            ),
            "score": arrays.from_numpy([i / 3 for i in range(150)], pa.float64()),
        }
        checked = 0
        for name, values in columns.items():
            binding = Binding("customers", name)
            for deterministic in (False, True):
                sealed = cipher.encrypt(values, binding, deterministic=deterministic)
                cipher.envelope.rotate("customers")
                newer = cipher.encrypt(values, binding, deterministic=deterministic)
                mixed = pa.concat_arrays([sealed, newer])
                assert len(set(key_versions(mixed).tolist()) - {-1}) == 2
                rewrapped, changed = cipher.rewrap(mixed, binding)
                assert changed == len(values) - values.null_count
                back = cipher.decrypt(rewrapped, binding)
                assert back.to_pylist() == values.to_pylist() * 2
                checked += 1
                commits.append(checked)

        from types import SimpleNamespace as Fields

        counts = Fields(events_in=checked, events_out=checked, dead_letters=0)
        result = Fields(finished=checked == 6, metrics=counts)  # what CHILD_REPORT reads
        """,
        str(home),
        str(tmp_path / "keyring"),
    )
    assert report["finished"] and report["commits"] == 6, report
    _assert_nothing_denied(report)
