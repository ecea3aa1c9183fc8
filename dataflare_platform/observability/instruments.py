"""The one instrumentation API: instruments from the metric list, recorded once.

An instrument records into each configured exporter from one call:

- ``prometheus``: a ``prometheus_client`` metric in multiprocess mode (fork-safe, see
  ``observability.prometheus``), read by the one scrape endpoint;
- ``console`` / ``memory``: an OpenTelemetry SDK ``MeterProvider`` with the deployment's
  resource (service name, code location, pipeline, ...), exporting periodically to the
  console, or in memory for tests. OTLP exporters plug in here later.

Label values are passed as a tuple in the order of the metric's ``labels``; the
per-label-set children are cached, so a record is a dict lookup plus the exporters' own
update (callers record per batch, never per row).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dataflare_platform.observability.catalog import METRICS, MetricSpec
from dataflare_platform.observability.settings import ObservabilitySettings

Recorder = Callable[[float], None]


class Instrument:
    """One metric of the list, bound to the configured exporters."""

    __slots__ = ("_children", "_otel", "_prom", "spec")

    def __init__(self, spec: MetricSpec, prom: Any | None, otel: Any | None) -> None:
        self.spec = spec
        self._prom = prom
        self._otel = otel
        self._children: dict[tuple[str, ...], tuple[Recorder, ...]] = {}

    def record(self, value: float, labels: tuple[str, ...]) -> None:
        """Add (counter), set (gauge) or observe (histogram) ``value``."""
        recorders = self._children.get(labels)
        if recorders is None:
            recorders = self._bind(labels)
        for recorder in recorders:
            recorder(value)

    def _bind(self, labels: tuple[str, ...]) -> tuple[Recorder, ...]:
        if len(labels) != len(self.spec.labels):
            raise ValueError(f"{self.spec.name} takes labels {self.spec.labels}, got {labels}")
        kind = self.spec.kind
        recorders: list[Recorder] = []
        if self._prom is not None:
            child = self._prom.labels(*labels)
            recorders.append(
                child.inc if kind == "counter" else child.set if kind == "gauge" else child.observe
            )
        if self._otel is not None:
            attrs = dict(zip(self.spec.labels, labels, strict=True))
            method = (
                self._otel.add
                if kind == "counter"
                else self._otel.set
                if kind == "gauge"
                else self._otel.record
            )
            recorders.append(lambda v, m=method, a=attrs: m(v, attributes=a))
        bound = tuple(recorders)
        self._children[labels] = bound
        return bound


class Instruments:
    """Every metric of the list, by name (``instruments["dataflare_..."]``)."""

    def __init__(self, settings: ObservabilitySettings) -> None:
        self.settings = settings
        self.meter_provider: Any | None = None
        self.memory_reader: Any | None = None
        prom_factory = self._prometheus() if "prometheus" in settings.exporters else None
        meter = self._otel_meter()
        self._by_name: dict[str, Instrument] = {}
        for spec in METRICS:
            prom = prom_factory(spec) if prom_factory is not None else None
            otel = _otel_instrument(meter, spec) if meter is not None else None
            self._by_name[spec.name] = Instrument(spec, prom, otel)

    def __getitem__(self, name: str) -> Instrument:
        return self._by_name[name]

    def _prometheus(self) -> Callable[[MetricSpec], Any]:
        from dataflare_platform.observability.prometheus import use_multiprocess

        use_multiprocess(self.settings.resolved_metrics_dir())
        import prometheus_client as pc

        def make(spec: MetricSpec) -> Any:
            # registry=None: in multiprocess mode the files are the registry; the
            # endpoint's MultiProcessCollector reads them.
            name = spec.name.removesuffix("_total") if spec.kind == "counter" else spec.name
            if spec.kind == "counter":
                return pc.Counter(name, spec.description, spec.labels, registry=None)
            if spec.kind == "gauge":
                return pc.Gauge(
                    name,
                    spec.description,
                    spec.labels,
                    registry=None,
                    multiprocess_mode=spec.multiprocess_mode,
                )
            return pc.Histogram(
                name, spec.description, spec.labels, registry=None, buckets=spec.buckets
            )

        return make

    def _otel_meter(self) -> Any | None:
        wanted = [e for e in self.settings.exporters if e in ("console", "memory")]
        if not wanted:
            return None
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import (
            ConsoleMetricExporter,
            InMemoryMetricReader,
            PeriodicExportingMetricReader,
        )
        from opentelemetry.sdk.resources import Resource

        readers = []
        if "memory" in wanted:
            self.memory_reader = InMemoryMetricReader()
            readers.append(self.memory_reader)
        if "console" in wanted:
            readers.append(
                PeriodicExportingMetricReader(
                    ConsoleMetricExporter(),
                    export_interval_millis=self.settings.export_interval_ms,
                )
            )
        resource = Resource.create(
            {"service.name": self.settings.service_name, **self.settings.resource}
        )
        # A provider of our own, not the global one: the platform never takes over an
        # application's OpenTelemetry set-up when embedded.
        self.meter_provider = MeterProvider(metric_readers=readers, resource=resource)
        return self.meter_provider.get_meter("dataflare_platform")

    def shutdown(self) -> None:
        if self.meter_provider is not None:
            self.meter_provider.shutdown()


def _otel_instrument(meter: Any, spec: MetricSpec) -> Any:
    if spec.kind == "counter":
        return meter.create_counter(spec.name, unit=spec.unit, description=spec.description)
    if spec.kind == "gauge":
        return meter.create_gauge(spec.name, unit=spec.unit, description=spec.description)
    return meter.create_histogram(
        spec.name,
        unit=spec.unit,
        description=spec.description,
        explicit_bucket_boundaries_advisory=list(spec.buckets),
    )
