"""The one API records into OpenTelemetry (SDK in-memory reader) and Prometheus at once."""

from __future__ import annotations

import pytest

from dataflare_platform import observability
from dataflare_platform.observability import METRICS, ObservabilitySettings
from dataflare_platform.observability.prometheus import exposition
from dataflare_platform_tests.observability.scrape import samples, value


@pytest.fixture
def both(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "m"))
    inst = observability.configure(
        ObservabilitySettings(
            enabled=True,
            exporters=("prometheus", "memory"),
            metrics_dir=tmp_path / "m",
            resource={"code_location": "dataflare_platform"},
        )
    )
    yield inst, tmp_path / "m"
    observability.configure(None)


def test_one_record_reaches_both_exporters(both):
    inst, directory = both
    inst["dataflare_engine_records_out_total"].record(7, ("p",))
    inst["dataflare_engine_records_out_total"].record(3, ("p",))
    inst["dataflare_source_records_lag"].record(12, ("p", "s", "0"))
    inst["dataflare_sink_commit_seconds"].record(0.004, ("p",))
    data = inst.memory_reader.get_metrics_data()
    (resource_metrics,) = data.resource_metrics
    assert resource_metrics.resource.attributes["code_location"] == "dataflare_platform"
    points = {
        m.name: m.data.data_points[0] for s in resource_metrics.scope_metrics for m in s.metrics
    }
    assert points["dataflare_engine_records_out_total"].value == 10
    assert dict(points["dataflare_source_records_lag"].attributes) == {
        "pipeline": "p",
        "source": "s",
        "partition": "0",
    }
    assert points["dataflare_sink_commit_seconds"].count == 1
    text = exposition(directory)
    assert value(text, "dataflare_engine_records_out_total", pipeline="p") == 10
    assert (
        value(text, "dataflare_source_records_lag", pipeline="p", source="s", partition="0") == 12
    )


def test_wrong_labels_are_refused(both):
    inst, _ = both
    with pytest.raises(ValueError, match="takes labels"):
        inst["dataflare_engine_records_out_total"].record(1, ("p", "extra"))


def test_every_metric_is_named_by_convention():
    for m in METRICS:
        assert m.name.startswith("dataflare_")
        assert m.name.endswith("_total") == (m.kind == "counter"), m.name
        assert m.multiprocess_mode.startswith("live"), m.name  # dead workers' gauges go


def test_bulk_observe_matches_one_by_one(tmp_path, monkeypatch):
    """``record_many`` reaches into prometheus_client's histogram: pinned against
    ``observe`` value by value."""
    values = [0.0005, 0.001, 0.0011, 0.004, 0.2, 0.2, 7.0, 100.0]
    texts = []
    for i, bulk in enumerate((False, True)):
        directory = tmp_path / f"m{i}"
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
        inst = observability.configure(ObservabilitySettings(enabled=True, metrics_dir=directory))
        h = inst["dataflare_engine_latency_seconds"]
        if bulk:
            h.record_many(values, ("p",))
        else:
            for v in values:
                h.record(v, ("p",))
        texts.append(exposition(directory))
    observability.configure(None)
    one, bulk = samples(texts[0]), samples(texts[1])
    assert one.keys() == bulk.keys()
    for key in one:  # the sum may differ in its last bits (numpy adds pairwise)
        assert bulk[key] == pytest.approx(one[key], rel=1e-12), key
    assert value(texts[1], "dataflare_engine_latency_seconds_count", pipeline="p") == 8
    assert value(texts[1], "dataflare_engine_latency_seconds_bucket", pipeline="p", le="0.001") == 2
