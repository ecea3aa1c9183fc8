"""Deployment settings from the environment; a bad value is one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataflare_platform.errors import ConfigError
from dataflare_platform.observability import ObservabilitySettings


def test_settings_from_the_environment():
    s = ObservabilitySettings.from_env(
        {
            "DATAFLARE_METRICS": "on",
            "DATAFLARE_METRICS_EXPORTERS": "prometheus, memory",
            "PROMETHEUS_MULTIPROC_DIR": "/x/m",
            "OTEL_RESOURCE_ATTRIBUTES": "code_location=dataflare_platform,pipeline=p",
        }
    )
    assert s.enabled and s.exporters == ("prometheus", "memory")
    assert s.resolved_metrics_dir() == Path("/x/m")
    assert s.resource == {"code_location": "dataflare_platform", "pipeline": "p"}


def test_off_by_default_and_under_the_home():
    s = ObservabilitySettings.from_env({"DATAFLARE_HOME": "/h"})
    assert not s.enabled
    assert s.resolved_metrics_dir({"DATAFLARE_HOME": "/h"}) == Path("/h/metrics")


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"DATAFLARE_METRICS": "maybe"}, "DATAFLARE_METRICS"),
        ({"DATAFLARE_METRICS_EXPORTERS": "prometheus,zipkin"}, "exporters"),
        ({"OTEL_RESOURCE_ATTRIBUTES": "novalue"}, "OTEL_RESOURCE_ATTRIBUTES"),
    ],
)
def test_bad_settings_name_the_field(env, field):
    with pytest.raises(ConfigError) as err:
        ObservabilitySettings.from_env(env)
    assert any(f.startswith(field) for f in err.value.fields)
