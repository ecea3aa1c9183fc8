"""Reading the endpoint's text format back into numbers (the tests' side of a scrape)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str | bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` of one exposition."""
    if isinstance(text, bytes):
        text = text.decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str | bytes, name: str, **labels: str) -> float | None:
    """The sample ``name`` with exactly ``labels``, or None when absent."""
    return samples(text).get((name, tuple(sorted(labels.items()))))
