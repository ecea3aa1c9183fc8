"""Structured logs (observability/logs.py): the JSON line and its context, the settings, one
idempotent configuration, redaction, and data-dropping warnings that are also counted."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pytest
from opentelemetry.sdk.trace import TracerProvider

from dataflare_platform.engine import CollectSink, Runner, RunnerConfig, TableSource
from dataflare_platform.errors import ConfigError
from dataflare_platform.events.log import EventLog
from dataflare_platform.observability.logs import (
    LogSettings,
    configure_logging,
    log_context,
    report_dropped,
    unconfigure_logging,
)
from dataflare_platform.observability.prometheus import exposition
from dataflare_platform.secrets import SecretRef
from dataflare_platform_tests.engine.helpers import T0, events
from dataflare_platform_tests.engine.test_time_and_bad_input import windowed_count
from dataflare_platform_tests.observability.fixtures import metrics_dir
from dataflare_platform_tests.observability.scrape import value

__all__ = ["metrics_dir"]

LOG = logging.getLogger("dataflare_platform.tests.logs")


@pytest.fixture
def json_lines():
    """The platform's handler configured (JSON, DEBUG) into a buffer; removed afterwards.
    Returns a function giving the lines logged so far, parsed."""
    buffer = io.StringIO()
    configure_logging(LogSettings(format="json", level="DEBUG"), stream=buffer)

    def lines() -> list[dict]:
        return [json.loads(line) for line in buffer.getvalue().splitlines()]

    yield lines
    unconfigure_logging()


def test_a_json_line_has_the_fields_and_the_context(json_lines):
    tracer = TracerProvider().get_tracer("test")  # a provider of its own: API lookup only
    with log_context(pipeline="hot_items", partition="2026-01-01", source=None):
        with tracer.start_as_current_span("batch") as span:
            LOG.info("processed %d rows", 5, extra={"rows": 5})
        LOG.warning("outside the span")
    LOG.debug("no context")
    first, second, third = json_lines()
    ctx = span.get_span_context()
    assert first["message"] == "processed 5 rows"
    assert first["level"] == "INFO"
    assert first["logger"] == "dataflare_platform.tests.logs"
    assert first["timestamp"].endswith("+00:00")
    assert first["trace_id"] == format(ctx.trace_id, "032x")
    assert first["span_id"] == format(ctx.span_id, "016x")
    assert (first["pipeline"], first["partition"], first["rows"]) == ("hot_items", "2026-01-01", 5)
    assert "source" not in first  # None values are left out
    assert "trace_id" not in second and second["pipeline"] == "hot_items"
    assert "pipeline" not in third and third["level"] == "DEBUG"


def test_exceptions_and_multiline_messages_stay_on_one_line(json_lines):
    try:
        raise RuntimeError("bad\nthing")
    except RuntimeError:
        LOG.exception("failed:\n%s", "second line")
    (line,) = json_lines()
    assert line["message"] == "failed:\nsecond line"
    assert "RuntimeError: bad\nthing" in line["exception"]


def test_configure_is_idempotent_and_sets_platform_and_per_logger_levels():
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        buffer = io.StringIO()
        settings = LogSettings(format="json", level="WARNING", levels={"some.library": "DEBUG"})
        configure_logging(settings, stream=buffer)
        handler = configure_logging(settings, stream=buffer)
        assert [h for h in root.handlers if h not in before] == [handler]  # one, not two
        LOG.info("filtered")
        LOG.warning("kept")
        logging.getLogger("some.library").debug("library debug")
        assert [json.loads(x)["message"] for x in buffer.getvalue().splitlines()] == [
            "kept",
            "library debug",
        ]
    finally:
        unconfigure_logging()
    assert root.handlers == before
    assert logging.getLogger("dataflare_platform").level == logging.NOTSET


def test_settings_come_from_the_environment_and_bad_values_name_the_variable():
    settings = LogSettings.from_env(
        {
            "DATAFLARE_LOG_FORMAT": "JSON",
            "DATAFLARE_LOG_LEVEL": "debug",
            "DATAFLARE_LOG_LEVELS": "dagster=info, dataflare_platform.events=WARNING",
        }
    )
    assert settings == LogSettings(
        format="json",
        level="DEBUG",
        levels={"dagster": "INFO", "dataflare_platform.events": "WARNING"},
    )
    for env, name in (
        ({"DATAFLARE_LOG_FORMAT": "xml"}, "DATAFLARE_LOG_FORMAT"),
        ({"DATAFLARE_LOG_LEVEL": "loud"}, "DATAFLARE_LOG_LEVEL"),
        ({"DATAFLARE_LOG_LEVELS": "dagster"}, "DATAFLARE_LOG_LEVELS"),
    ):
        with pytest.raises(ConfigError) as err:
            LogSettings.from_env(env)
        assert err.value.fields == [name]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_default_format_is_text_on_a_terminal_and_json_otherwise():
    default = LogSettings()
    assert default.resolved_format(_Tty()) == "text"
    assert default.resolved_format(io.StringIO()) == "json"
    assert LogSettings(format="json").resolved_format(_Tty()) == "json"
    buffer = _Tty()
    configure_logging(LogSettings(), stream=buffer)
    try:
        with log_context(pipeline="p"):
            LOG.warning("for a person", extra={"dropped": 3})
    finally:
        unconfigure_logging()
    line = buffer.getvalue().strip()
    assert line.endswith(
        "WARNING dataflare_platform.tests.logs: for a person  pipeline=p dropped=3"
    )


def test_known_secrets_and_url_passwords_are_redacted_in_every_form(json_lines, monkeypatch):
    from_env = "envsecret-" + secrets.token_urlsafe(16)
    read = "read/secret+" + secrets.token_urlsafe(16)
    monkeypatch.setenv("DATAFLARE_SECRET_LOGS_TEST", from_env)
    monkeypatch.setenv("OTHER_VARIABLE_WITH_SECRET", read)
    assert SecretRef(env="OTHER_VARIABLE_WITH_SECRET").read() == read  # now known
    forms = [
        f(v)
        for v in (from_env, read)
        for f in (
            lambda s: s,
            lambda s: quote(s, safe=""),
            lambda s: base64.b64encode(s.encode()).decode(),
        )
    ]
    for form in forms:
        LOG.debug("client said %s", form, extra={"detail": {"nested": [form]}})
    LOG.error("connect to redis://user:hunter2hunter2@127.0.0.1:6379/0 failed")
    try:
        raise OSError(f"auth {read} refused")
    except OSError:
        LOG.exception("connection")
    text = json.dumps(json_lines())
    for form in forms:
        assert form not in text
    assert "hunter2hunter2" not in text
    assert "redis://user:***@127.0.0.1:6379/0" in text
    assert text.count("***") >= len(forms) * 2 + 2


def test_report_dropped_logs_a_warning_with_the_count_and_counts_the_metric(
    json_lines, metrics_dir
):
    report_dropped(LOG, "landing", "file_refused", 2, "2 files not read", source="dir")
    report_dropped(LOG, "landing", "file_refused", 0, "nothing")  # no line, no count
    (line,) = json_lines()
    assert line["level"] == "WARNING"
    assert (line["dropped"], line["component"], line["reason"]) == (2, "landing", "file_refused")
    text = exposition(metrics_dir)
    labels = {"component": "landing", "reason": "file_refused"}
    assert value(text, "dataflare_data_dropped_total", **labels) == 2


def test_an_engine_run_that_dead_letters_and_drops_late_rows_says_so_and_counts_it(
    json_lines, metrics_dir
):
    good = events([*range(0, 60_000, 100), 25_000, 59_500, 20_000])  # two late rows
    wrong_schema = pa.table({"key": [1, 2], "date_time": pa.array([5, 6], pa.int64())})
    with_nulls = events([61_000, 62_000]).set_column(
        2, "date_time", pa.array([T0 + 61_000, None], pa.timestamp("ms"))
    )
    source = TableSource("e", {"a": good, "b": wrong_schema, "c": with_nulls})
    pipeline = windowed_count(source, CollectSink())
    result = Runner(pipeline, RunnerConfig(batch_rows=100)).run()
    m = result.metrics
    assert (m.dead_letters, m.late_events) == (3, 2)
    warned = [x for x in json_lines() if x["level"] == "WARNING" and "dropped" in x]
    by_reason: dict[str, int] = {}
    for line in warned:
        assert line["pipeline"] == pipeline.name and line["component"] == "engine"
        assert str(line["dropped"]) in line["message"]
        by_reason[line["reason"]] = by_reason.get(line["reason"], 0) + line["dropped"]
    assert by_reason == {"dead_lettered": 3, "late": 2}
    text = exposition(metrics_dir)
    for reason, count in by_reason.items():
        labels = {"component": "engine", "reason": reason}
        assert value(text, "dataflare_data_dropped_total", **labels) == count


def _damaged_log(root: Path, small_nexmark) -> None:
    bids = small_nexmark["bids"]
    topic = EventLog(root).create_topic("bids", bids.schema)
    for start in range(0, 1000, 250):
        topic.append(bids.slice(start, 250))
    seg = topic.partition(0).segments()[2]  # offsets 500..749, then 750..999
    data = bytearray(seg.path.read_bytes())
    data[len(data) // 2 :] = bytes(len(data) - len(data) // 2)
    seg.path.write_bytes(bytes(data))


def test_cli_json_logs_parse_line_by_line_and_a_truncated_log_is_counted(tmp_path, small_nexmark):
    """`dataflare topics recover` on a log with a damaged segment, JSON logs at DEBUG and
    metrics on, in a process of its own: every stderr line is one JSON object; the
    quarantine is a WARNING with the offsets dropped, and the same count is exported."""
    root = tmp_path / "log"
    _damaged_log(root, small_nexmark)
    metrics = tmp_path / "metrics"
    env = {
        **os.environ,
        "DATAFLARE_LOG_FORMAT": "json",
        "DATAFLARE_LOG_LEVEL": "DEBUG",
        "DATAFLARE_METRICS": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
        "DATAFLARE_HOME": str(tmp_path / "home"),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dataflare_platform.cli",
            "topics",
            "recover",
            "bids",
            "--all",
            "--log-dir",
            str(root),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
    assert lines, "no log line"
    (warning,) = [x for x in lines if x.get("reason") == "segment_quarantined"]
    assert warning["level"] == "WARNING"
    assert warning["logger"] == "dataflare_platform.events.log.partition"
    assert (warning["dropped"], warning["topic"], warning["partition"]) == (500, "bids", 0)
    assert "offsets 500 to 999" in warning["message"]
    assert json.loads(proc.stdout)["topic"] == "bids"  # stdout stays the command's JSON
    text = exposition(metrics)
    labels = {"component": "event_log", "reason": "segment_quarantined"}
    assert value(text, "dataflare_data_dropped_total", **labels) == 500


class _LoggingSource(TableSource):
    """A source that logs on each read, as a connector does (on the runner's source thread)."""

    def read(self, partition, offset, max_rows):
        logging.getLogger("dataflare_platform.connectors.fake").info("reading at %d", offset)
        return super().read(partition, offset, max_rows)


def test_lines_logged_by_a_source_during_a_run_name_the_pipeline_and_the_partition(json_lines):
    source = _LoggingSource("e", {"a": events(range(0, 3_000, 100))})
    pipeline = windowed_count(source, CollectSink())
    Runner(pipeline, RunnerConfig(batch_rows=10)).run()
    reads = [x for x in json_lines() if x["logger"] == "dataflare_platform.connectors.fake"]
    assert reads, "the source logged nothing"
    assert {(x["pipeline"], x["source"]) for x in reads} == {(pipeline.name, "e/a")}


def test_a_gap_in_the_event_log_is_a_warning_at_every_open_but_not_counted_as_a_loss(
    tmp_path, small_nexmark, json_lines, metrics_dir
):
    """A gap is a state (a segment file deleted or moved by someone), met at every open:
    each open warns with its size; adding it to the drop counter each time would count
    one loss many times, so it is not."""
    bids = small_nexmark["bids"]
    topic = EventLog(tmp_path / "log").create_topic("bids", bids.schema)
    for start in range(0, 1000, 250):
        topic.append(bids.slice(start, 250))
    EventLog(tmp_path / "log").topic("bids")  # verified once
    topic.partition(0).segments()[1].path.unlink()  # offsets 250..499 gone
    warnings = EventLog(tmp_path / "log").topic("bids").recover(full=True)
    assert any("offsets 250 to 499 are missing" in w for w in warnings)
    lines = [x for x in json_lines() if x.get("reason") == "offsets_missing"]
    assert len(lines) == 2  # the open, then the explicit recovery
    for line in lines:
        assert (line["level"], line["missing"], line["component"]) == ("WARNING", 250, "event_log")
    text = exposition(metrics_dir)
    labels = {"component": "event_log", "reason": "offsets_missing"}
    assert not value(text, "dataflare_data_dropped_total", **labels)


def test_a_landed_file_moved_to_the_quarantine_is_a_warning_and_counted(
    tmp_path, small_nexmark, json_lines, metrics_dir
):
    from dataflare_platform.connectors.landing.directory import LandingDirectorySource
    from dataflare_platform_tests.connectors.test_landing import SCHEMA, write

    bids = small_nexmark["bids"].select(SCHEMA.names).cast(SCHEMA)
    d = tmp_path / "landing"
    d.mkdir()
    write(d / "01-good.ndjson", bids.slice(0, 100))
    write(d / os.fsdecode(b"02-caf\xe9.csv"), bids.slice(100, 50))  # not UTF-8: moved
    source = LandingDirectorySource("bids", d, SCHEMA, settle_s=0)
    assert source.end_offset("0") == 100
    source.close()
    (line,) = [x for x in json_lines() if x.get("reason") == "file_quarantined"]
    assert (line["level"], line["dropped"], line["component"]) == ("WARNING", 1, "landing")
    assert line["source"] == str(d) and "02-caf\\xe9.csv" in line["message"]
    text = exposition(metrics_dir)
    labels = {"component": "landing", "reason": "file_quarantined"}
    assert value(text, "dataflare_data_dropped_total", **labels) == 1
