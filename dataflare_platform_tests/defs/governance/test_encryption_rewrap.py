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


# -- Parquet: a parquet_dataset written by a pipeline's encrypt step --------------------

PARQUET_SPEC = GovernedDataset.model_validate(
    {
        "asset": "crm/card_events",
        "data": {"parquet": "lake/card_events"},
        "pii": {
            "columns": {"card": "pii_encrypted", "holder": "pii_encrypted"},
            "encryption": {"dataset": "crm_cards"},
        },
    }
)

ENCRYPTING_PIPELINE = """
name: card_events
catalog: {micro_batch: false}
sources:
  cards: {path: unused, columns: [id, card, holder, date_time]}
streams:
  out:
    from: cards
    steps:
      - encrypt: {dataset: crm_cards, columns: [card, holder], deterministic: [holder]}
output: out
sink: {discard: {}}
"""


def _run_encrypting_pipeline(root, *batches: int) -> None:
    """The encrypt step of a YAML pipeline (real engine, the deployment's keyring) into a
    ``parquet_dataset`` sink, files partitioned by day. The source holds every batch so
    far: the run resumes after what the sink's checkpoint says it already wrote."""
    import yaml

    from dataflare_platform.connectors.parquet_dataset import ParquetDatasetSink
    from dataflare_platform.engine import Runner, RunnerConfig, TableSource
    from dataflare_platform.streams.spec import PipelineSpec

    spec = PipelineSpec.load(yaml.safe_load(ENCRYPTING_PIPELINE))
    sink = ParquetDatasetSink(root, time_column="date_time", fsync=False)
    frame = pl.concat([_card_frame(offset) for offset in batches])
    source = TableSource.single("cards", frame.to_arrow())
    Runner(spec.build(sink=sink, sources={"cards": source}), RunnerConfig(batch_rows=17)).run()


def _card_frame(offset: int) -> pl.DataFrame:
    import datetime as dt

    start = dt.datetime(2026, 1, 1, 22)  # five hours from 22:00: two days
    times = [start + dt.timedelta(minutes=3 * (offset + i)) for i in range(51)]
    return pl.DataFrame(
        {
            "id": range(offset, offset + 51),
            "card": CARDS,
            "holder": HOLDERS,
            "date_time": pl.Series(times, dtype=pl.Datetime("ms")),  # the engine's unit
        }
    )


def test_a_parquet_dataset_is_rewrapped_file_by_file(resources, instance):
    from dataflare_platform.compliance.datasets import read_dataset
    from dataflare_platform.compliance.rewrap import parquet_files
    from dataflare_platform.connectors.parquet_dataset import ParquetDatasetSink

    home_root = resources["dataflare"].home.root
    root = home_root / "lake" / "card_events"
    _run_encrypting_pipeline(root, 0, 51)  # key version 1, one file per day
    cipher = resources["governance"].cipher()
    cipher.envelope.rotate("crm_cards")
    files = parquet_files(root)
    assert len(files) == 2  # one per day
    defs = encryption_definitions([PARQUET_SPEC])
    before_check = _check(defs, resources)
    assert not before_check.passed and before_check.severity == dg.AssetCheckSeverity.WARN

    result = dg.materialize(
        [*defs.assets, *defs.asset_checks], resources=resources, instance=instance
    )
    (mat,) = result.asset_materializations_for_node("governance__encryption_rewrap")
    detail = mat.metadata["detail"].value["crm/card_events"]
    assert detail["rewrapped"] == {"card": 100, "holder": 102}
    assert detail["versions_after"] == {"card": [2], "holder": [2]}
    assert detail["files"] == detail["files_rewritten"] == len(files)
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert "rewrap crm/card_events.card: 102/102 rows" in messages  # progress
    assert not any("4111 1111" in m for m in messages)
    (after,) = result.get_asset_check_evaluations()
    assert after.passed
    # Same file names (the sink's manifest still names them), no temporary left behind,
    # and the sink opens over them (its recovery keeps every committed file).
    assert parquet_files(root) == files
    assert not [p for p in root.rglob("*") if "rewrap" in p.name]
    sink = ParquetDatasetSink(root, time_column="date_time", fsync=False)
    assert sink.open("card_events") is not None
    sink.close()
    assert parquet_files(root) == files
    # Every value decrypts with the old version retired; a second rewrap touches nothing.
    cipher.envelope.retire_below("crm_cards", 2)
    stored = read_dataset(PARQUET_SPEC.data, home_root).sort("id")
    back = cipher.decrypt(stored["card"], Binding("crm_cards", "card")).to_pylist()
    assert back == CARDS + CARDS
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    again = dg.materialize([*defs.assets], resources=resources)
    (mat,) = again.asset_materializations_for_node("governance__encryption_rewrap")
    assert mat.metadata["values_rewrapped"].value == 0
    assert mat.metadata["detail"].value["crm/card_events"]["files_rewritten"] == 0
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes


# -- Event-log topics: not rewritten; old ciphertext ages out with retention ------------

TOPIC_SPEC = GovernedDataset.model_validate(
    {
        "asset": "crm/card_stream",
        "data": {"topic": "card_stream"},
        "pii": {"columns": {"card": "pii_encrypted"}, "encryption": {"dataset": "crm_cards"}},
    }
)


def test_a_topic_is_left_to_retention_and_the_check_follows_it(resources, instance):
    """What a transit-encryption service does with an append-only log: the rewrap asset
    leaves the topic's immutable segments as they are (and says so); once retention has
    deleted the segments written before the rotation, the check passes and the old
    version can be retired."""
    import datetime as dt

    from dataflare_platform.compliance.retention import RetentionPolicy, delete_topic_segments
    from dataflare_platform.events.log import EventLog

    log = EventLog(resources["dataflare"].home.event_log_dir)
    schema = pa.schema([("date_time", pa.timestamp("ms")), ("card", pa.large_binary())])
    topic = log.create_topic("card_stream", schema)
    cipher = resources["governance"].cipher()
    start = dt.datetime(2026, 3, 1)

    def append(day: int) -> None:
        times = [start + dt.timedelta(days=day, minutes=m) for m in range(10)]
        sealed = cipher.encrypt(pa.array(CARDS[:10]), Binding("crm_cards", "card"))
        topic.append(pa.table({"date_time": times, "card": sealed}, schema=schema))

    append(0)  # key version 1
    cipher.envelope.rotate("crm_cards")
    append(20)  # version 2
    defs = encryption_definitions([TOPIC_SPEC])
    result = dg.materialize(
        [*defs.assets, *defs.asset_checks], resources=resources, instance=instance
    )
    (mat,) = result.asset_materializations_for_node("governance__encryption_rewrap")
    detail = mat.metadata["detail"].value["crm/card_stream"]
    assert "retention" in detail["not_rewrapped"] and mat.metadata["values_rewrapped"].value == 0
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["below_latest_version"].value == {"crm/card_stream": {"card": 10}}

    now = start + dt.timedelta(days=25)
    action = delete_topic_segments(log, "card_stream", RetentionPolicy(keep="10d"), now)
    assert action.rows_deleted == 10
    assert _check(defs, resources).passed
    cipher.envelope.retire_below("crm_cards", 2)
    assert _check(defs, resources).passed
