"""Observability of the data plane: the one place meters (and later tracers) come from.

``instruments()`` returns the process's :class:`Instruments`, configured from the
deployment's environment on first use (``ObservabilitySettings.from_env``), or ``None``
when metrics are off: callers hold the result and skip all work on ``None``, so metrics
off cost one check per batch. ``configure(settings)`` sets them explicitly (tests, the
CLI). No Dagster here (import-linter contract ``data-plane-without-dagster``).
"""

from __future__ import annotations

import threading

from dataflare_platform.observability.catalog import METRICS, MetricSpec
from dataflare_platform.observability.instruments import Instrument, Instruments
from dataflare_platform.observability.settings import ObservabilitySettings

__all__ = [
    "METRICS",
    "Instrument",
    "Instruments",
    "MetricSpec",
    "ObservabilitySettings",
    "configure",
    "instruments",
]

_lock = threading.Lock()
_UNSET = object()
_current: object = _UNSET


def configure(settings: ObservabilitySettings | None) -> Instruments | None:
    """Set this process's instruments (``None`` or disabled settings: metrics off)."""
    global _current
    with _lock:
        if isinstance(_current, Instruments):
            _current.shutdown()
        _current = Instruments(settings) if settings is not None and settings.enabled else None
        return _current  # type: ignore[return-value]


def instruments() -> Instruments | None:
    """The process's instruments, configured from the environment on first call."""
    current = _current
    if current is _UNSET:
        return configure(ObservabilitySettings.from_env())
    return current  # type: ignore[return-value]
