"""Connector metrics: round trips, their latency, redeliveries and acks per broker.

A connector binds one :class:`ConnectorMetrics` when it is built (``for_connector``) and
calls it around each round trip. With metrics off that is the shared :data:`OFF` object,
whose methods do nothing, so a connector pays one method call per round trip (which is
per batch of messages, never per message) and no ``if`` at each site.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from dataflare_platform.observability import instruments


class ConnectorMetrics:
    """The connector metrics of one (connector kind, stream/topic/table)."""

    def __init__(self, connector: str, stream: str) -> None:
        exported = instruments()
        assert exported is not None
        self._labels = (connector, stream)
        self._requests = exported["dataflare_connector_requests_total"]
        self._seconds = exported["dataflare_connector_request_seconds"]
        self._redeliveries = exported["dataflare_connector_redeliveries_total"]
        self._acks = exported["dataflare_connector_acks_total"]

    @contextlib.contextmanager
    def request(self, operation: str) -> Iterator[None]:
        """Time one round trip; an exception counts it as outcome=error and propagates."""
        t0 = time.perf_counter()
        outcome = "error"
        try:
            yield
            outcome = "ok"
        finally:
            labels = (*self._labels, operation)
            self._seconds.record(time.perf_counter() - t0, labels)
            self._requests.record(1, (*labels, outcome))

    def redelivered(self, messages: int) -> None:
        if messages:
            self._redeliveries.record(messages, self._labels)

    def acked(self, messages: int, outcome: str = "ack") -> None:
        if messages:
            self._acks.record(messages, (*self._labels, outcome))


class _Off(ConnectorMetrics):
    """Metrics off: every call is a no-op."""

    def __init__(self) -> None:  # no instruments to bind
        pass

    @contextlib.contextmanager
    def request(self, operation: str) -> Iterator[None]:
        yield

    def redelivered(self, messages: int) -> None:
        pass

    def acked(self, messages: int, outcome: str = "ack") -> None:
        pass


OFF: ConnectorMetrics = _Off()


def for_connector(connector: str, stream: str) -> ConnectorMetrics:
    """The metrics of ``connector`` (nats, redis, postgres, log) on ``stream``, or
    :data:`OFF` when this process exports no metrics."""
    if instruments() is None:
        return OFF
    return ConnectorMetrics(connector, stream)
