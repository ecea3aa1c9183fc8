"""A metrics directory per test; the process's metrics are off again afterwards (import the
fixture where needed)."""

from __future__ import annotations

import pytest

from dataflare_platform import observability
from dataflare_platform.observability import ObservabilitySettings


@pytest.fixture
def metrics_dir(tmp_path, monkeypatch):
    """Metrics on (Prometheus exporter) into a fresh directory; off again afterwards."""
    directory = tmp_path / "metrics"
    # configure() exports the directory to children through the environment: restore it.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    monkeypatch.setenv("DATAFLARE_METRICS", "1")
    observability.configure(
        ObservabilitySettings(enabled=True, exporters=("prometheus",), metrics_dir=directory)
    )
    yield directory
    observability.configure(None)
