"""Observability settings: set by the deployment (environment), never by a launch.

- ``DATAFLARE_METRICS``: ``1``/``true``/``on`` turns metrics on (default off);
- ``DATAFLARE_METRICS_EXPORTERS``: comma list of ``prometheus``, ``console``, ``memory``
  (default ``prometheus``);
- ``PROMETHEUS_MULTIPROC_DIR``: where worker processes write their metric files (default
  ``<home>/metrics``);
- ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``: the OpenTelemetry resource
  (``k=v,k=v``: code location, pipeline, partition, ...);
- ``OTEL_TRACES_EXPORTER``: ``none`` (default), ``otlp`` (HTTP protobuf), ``console``,
  ``memory`` (tests); ``OTEL_TRACES_SAMPLER_ARG``: the ratio of new traces kept (default
  1.0; children follow their parent's decision); ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
  or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (+ ``/v1/traces``): where OTLP goes (default
  ``http://127.0.0.1:4318/v1/traces``). Traces: ``observability/tracing.py``.

Off by default: a process that never turns metrics on pays one ``None`` check per
flushed batch (see docs/observability.md for the measurement).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dataflare_platform.errors import ConfigError
from dataflare_platform.secrets import url_credential_problem

Exporter = Literal["prometheus", "console", "memory"]
TraceExporter = Literal["none", "otlp", "console", "memory"]

ENABLED_ENV = "DATAFLARE_METRICS"
EXPORTERS_ENV = "DATAFLARE_METRICS_EXPORTERS"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
HOME_ENV = "DATAFLARE_HOME"  # home.HOME_ENV_VAR (not imported: home pulls in pydantic models)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


class ObservabilitySettings(BaseModel):
    """What the deployment chose; ``from_env`` reads it, tests build it directly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    exporters: tuple[Exporter, ...] = ("prometheus",)
    metrics_dir: Path | None = None  # PROMETHEUS_MULTIPROC_DIR; None: <home>/metrics
    service_name: str = "dataflare"
    resource: dict[str, str] = {}
    export_interval_ms: int = 10_000  # console exporter
    traces_exporter: TraceExporter = "none"
    trace_sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    otlp_traces_endpoint: str = "http://127.0.0.1:4318/v1/traces"

    @field_validator("otlp_traces_endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        # Credentials go in OTEL_EXPORTER_OTLP_HEADERS (environment), never in a URL;
        # checked first, and the value is never echoed (it may hold one).
        if url_credential_problem(value, token_user=True) is not None:
            raise ValueError("credentials in the URL are refused (use OTEL_EXPORTER_OTLP_HEADERS)")
        url = urlsplit(value)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError("not an http(s) URL with a host")
        return value

    @field_validator("exporters")
    @classmethod
    def _some_exporter(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("an exporter is listed twice")
        return value

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ObservabilitySettings:
        env = os.environ if environ is None else environ
        flag = env.get(ENABLED_ENV, "").strip().lower()
        if flag not in _TRUE | _FALSE:
            raise ConfigError("observability", [(ENABLED_ENV, f"not a switch: {flag!r}")])
        exporters = tuple(
            e.strip() for e in env.get(EXPORTERS_ENV, "prometheus").split(",") if e.strip()
        )
        resource: dict[str, str] = {}
        for pair in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
            if not pair.strip():
                continue
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                raise ConfigError(
                    "observability", [("OTEL_RESOURCE_ATTRIBUTES", f"not key=value: {pair!r}")]
                )
            resource[key.strip()] = value.strip()
        directory = env.get(MULTIPROC_ENV)
        traces: dict[str, object] = {}
        if env.get("OTEL_TRACES_EXPORTER", "").strip():
            traces["traces_exporter"] = env["OTEL_TRACES_EXPORTER"].strip().lower()
        ratio = env.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
        if ratio:
            try:
                traces["trace_sample_ratio"] = float(ratio)
            except ValueError:
                raise ConfigError(
                    "observability", [("OTEL_TRACES_SAMPLER_ARG", f"not a number: {ratio!r}")]
                ) from None
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        if endpoint or base:
            traces["otlp_traces_endpoint"] = endpoint or base.rstrip("/") + "/v1/traces"
        try:
            return cls(
                enabled=flag in _TRUE,
                exporters=exporters,
                metrics_dir=Path(directory) if directory else None,
                service_name=env.get("OTEL_SERVICE_NAME", "dataflare"),
                resource=resource,
                **traces,
            )
        except ValidationError as err:
            raise ConfigError.from_validation("observability", err) from None

    def resolved_metrics_dir(self, environ: Mapping[str, str] | None = None) -> Path:
        """The multiprocess directory: explicit, else ``<home>/metrics``."""
        if self.metrics_dir is not None:
            return self.metrics_dir.expanduser().absolute()
        env = os.environ if environ is None else environ
        home = env.get(HOME_ENV) or str(Path.cwd() / ".dataflare")
        return Path(home).expanduser().absolute() / "metrics"
