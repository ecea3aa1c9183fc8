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

from dataflare_platform.errors import InvalidInputError
from dataflare_platform.observability.catalog import METRICS, MetricSpec
from dataflare_platform.observability.settings import ObservabilitySettings

Recorder = Callable[[float], None]


class Instrument:
    """One metric of the list, bound to the configured exporters."""

    __slots__ = ("_children", "_many", "_otel", "_prom", "spec")

    def __init__(self, spec: MetricSpec, prom: Any | None, otel: Any | None) -> None:
        self.spec = spec
        self._prom = prom
        self._otel = otel
        self._children: dict[tuple[str, ...], tuple[Recorder, ...]] = {}
        self._many: dict[tuple[str, ...], Callable[[list[float]], None]] = {}

    def record(self, value: float, labels: tuple[str, ...]) -> None:
        """Add (counter), set (gauge) or observe (histogram) ``value``."""
        recorders = self._children.get(labels)
        if recorders is None:
            recorders = self._bind(labels)
        for recorder in recorders:
            recorder(value)

    def record_many(self, values: list[float], labels: tuple[str, ...]) -> None:
        """Observe many values of a histogram at once (latencies buffered per flush).

        ``prometheus_client`` has no bulk observe: one ``observe`` costs two locked writes
        into the mmap file (~5-15 us here), so the values are bucketed with numpy and each
        touched bucket is incremented once. That reaches into the histogram's
        ``_upper_bounds``/``_buckets``/``_sum`` (stable since prometheus_client 0.4;
        ``test_instruments`` pins it against ``observe``)."""
        if not values:
            return
        many = self._many.get(labels)
        if many is None:
            many = self._bind_many(labels)
        many(values)

    def _bind_many(self, labels: tuple[str, ...]) -> Callable[[list[float]], None]:
        if self.spec.kind != "histogram":
            raise InvalidInputError(f"{self.spec.name} is a {self.spec.kind}, not a histogram")
        self._bind(labels)
        parts: list[Callable[[list[float]], None]] = []
        if self._prom is not None:
            import numpy as np

            child = self._prom.labels(*labels) if labels else self._prom
            bounds = np.asarray(child._upper_bounds, dtype=np.float64)
            buckets, total = child._buckets, child._sum

            def prom_many(values: list[float]) -> None:
                arr = np.asarray(values, dtype=np.float64)
                counts = np.bincount(np.searchsorted(bounds, arr, side="left"))
                for i in np.flatnonzero(counts):
                    buckets[i].inc(int(counts[i]))
                total.inc(float(arr.sum()))

            parts.append(prom_many)
        if self._otel is not None:
            attrs = dict(zip(self.spec.labels, labels, strict=True))
            otel = self._otel

            def otel_many(values: list[float]) -> None:
                for v in values:
                    otel.record(v, attributes=attrs)

            parts.append(otel_many)

        def many(values: list[float]) -> None:
            for part in parts:
                part(values)

        self._many[labels] = many
        return many

    def _bind(self, labels: tuple[str, ...]) -> tuple[Recorder, ...]:
        if len(labels) != len(self.spec.labels):
            raise InvalidInputError(
                f"{self.spec.name} takes labels {self.spec.labels}, got {labels}"
            )
        kind = self.spec.kind
        recorders: list[Recorder] = []
        if self._prom is not None:
            child = self._prom.labels(*labels) if labels else self._prom
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
