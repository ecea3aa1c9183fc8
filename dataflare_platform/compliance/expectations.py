"""Data-quality suites run with Great Expectations 1.x, declared in YAML:

    expectations:
      - expect_column_values_to_not_be_null: {column: auction}
      - expect_column_values_to_be_between: {column: num, min_value: 1, severity: warn}

Each item names one GX expectation (snake case) and its arguments; ``severity``
(``error`` by default, or ``warn``) is ours, not GX's. Names are checked at load against
the expectation modules GX ships, found on disk so that loading a code location does not
import GX (4–5 s and ~300 MB); GX itself is imported only when a suite runs, and its
arguments are checked then (a bad argument fails that expectation with GX's message).

GX 1.x has no Polars data source: frames go through pandas (≈ 30 ms per million rows).
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import threading
import uuid
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import polars as pl
import pyarrow as pa
from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from dataflare_platform.errors import ConfigError
from dataflare_platform.models import StrictModel
from dataflare_platform.observability.counters import count

Severity = Literal["error", "warn"]
SAMPLE_SIZE = 5
_NAME = re.compile(r"^expect_[a-z0-9_]+$")


@cache
def known_expectations() -> frozenset[str]:
    """Snake-case names of the expectations GX ships (one module each), without
    importing GX."""
    found = importlib.util.find_spec("great_expectations")
    if found is None or not found.submodule_search_locations:
        raise ConfigError("expectations", [("<gx>", "great-expectations is not installed")])
    root = Path(next(iter(found.submodule_search_locations))) / "expectations" / "core"
    return frozenset(p.stem for p in root.glob("expect_*.py"))


class ExpectationSpec(StrictModel):
    type: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    severity: Severity = "error"

    @field_validator("type")
    @classmethod
    def _known(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError(f"{name!r}: name an expectation like expect_column_values_to_be_…")
        if name not in known_expectations():
            close = sorted(n for n in known_expectations() if n.startswith(name[:20]))[:3]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"{name!r} is not a Great Expectations expectation{hint}")
        return name

    @property
    def column(self) -> str | None:
        return self.kwargs.get("column")

    @model_validator(mode="before")
    @classmethod
    def _from_item(cls, item: Any) -> Any:
        """``{expect_x: {column: c, ..., severity: warn}}`` → type, kwargs, severity."""
        if not isinstance(item, dict) or "type" in item:
            return item
        if len(item) != 1:
            raise ValueError("each expectation is a mapping with one key, the expectation")
        ((name, args),) = item.items()
        if args is not None and not isinstance(args, dict):
            raise ValueError(f"{name}: give its arguments as a mapping")
        args = dict(args or {})
        return {"type": name, "kwargs": args, "severity": args.pop("severity", "error")}


class SuiteSpec(StrictModel):
    """The expectations of one dataset. ``blocking``: a failed error-severity
    expectation stops downstream work (the Dagster check is blocking)."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,100}$")
    expectations: list[ExpectationSpec] = Field(min_length=1)
    blocking: bool = True

    @classmethod
    def load(cls, data: dict[str, Any], what: str = "expectation suite") -> SuiteSpec:
        return cls.validated(data, what)


@dataclass(frozen=True)
class ExpectationOutcome:
    type: str
    column: str | None
    severity: Severity
    success: bool
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    sample: list[Any] = field(default_factory=list)  # a few failing values
    observed_value: Any = None
    error: str | None = None  # GX could not evaluate it (e.g. bad argument, no column)

    def describe(self) -> str:
        where = f" on {self.column}" if self.column else ""
        if self.error:
            return f"{self.type}{where}: could not run: {self.error}"
        if self.unexpected_count is not None:
            return (
                f"{self.type}{where}: {self.unexpected_count} unexpected "
                f"({self.unexpected_percent or 0:.2f}%), e.g. {self.sample}"
            )
        return f"{self.type}{where}: observed {self.observed_value!r}"


@dataclass(frozen=True)
class SuiteResult:
    suite: str
    rows: int
    outcomes: list[ExpectationOutcome]

    @property
    def failed(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    @property
    def severity(self) -> Severity | None:
        """The worst severity among failures; None when everything passed."""
        if not self.failed:
            return None
        return "error" if any(o.severity == "error" for o in self.failed) else "warn"

    @property
    def success(self) -> bool:
        return not self.failed


_lock = threading.Lock()


@cache
def _context() -> Any:
    """One ephemeral GX context per process, quiet (no progress bars, no analytics)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _plain(value: Any) -> Any:
    """JSON-friendly sample values (NaN → None, numpy scalars → Python)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def run_suite(data: pl.DataFrame | pa.Table, suite: SuiteSpec) -> SuiteResult:
    """Validate ``data`` against ``suite``; every expectation gets an outcome."""
    import great_expectations as gx

    frame = pl.from_arrow(data) if isinstance(data, pa.Table) else data
    pandas_frame = frame.to_pandas()
    tag = uuid.uuid4().hex[:12]
    with _lock:  # the context's registries are not thread-safe
        context = _context()
        source = context.data_sources.add_pandas(f"ds_{tag}")
        batch = source.add_dataframe_asset("frame").add_batch_definition_whole_dataframe("all")
        gx_suite = gx.ExpectationSuite(name=f"{suite.name}_{tag}")
        outcomes: list[ExpectationOutcome | Any] = []  # an outcome, or the GX expectation
        for spec in suite.expectations:
            try:
                outcomes.append(gx_suite.add_expectation(_expectation(spec)))
            except Exception as err:  # GX raises pydantic / its own errors for bad args
                outcomes.append(
                    ExpectationOutcome(
                        spec.type, spec.column, spec.severity, False, error=_first_line(err)
                    )
                )
        gx_suite = context.suites.add(gx_suite)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"v_{tag}", data=batch, suite=gx_suite)
        )
    try:
        result = definition.run(
            batch_parameters={"dataframe": pandas_frame},
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": SAMPLE_SIZE},
        )
    finally:
        with _lock:
            context.validation_definitions.delete(definition.name)
            context.suites.delete(gx_suite.name)
            context.data_sources.delete(source.name)
    # GX does not keep the suite's order in its results: match them by expectation id.
    by_id = {r.expectation_config.id: r for r in result.results}
    final = [
        outcome if isinstance(outcome, ExpectationOutcome) else _outcome(spec, by_id[outcome.id])
        for spec, outcome in zip(suite.expectations, outcomes, strict=True)
    ]
    for outcome in final:
        passed = "passed" if outcome.success else "failed"
        count("dataflare_quality_expectations_total", (suite.name, outcome.type, passed))
    return SuiteResult(suite.name, frame.height, final)


def _expectation(spec: ExpectationSpec) -> Any:
    import great_expectations.expectations as gxe

    class_name = "".join(part.capitalize() for part in spec.type.split("_"))
    return getattr(gxe, class_name)(**spec.kwargs)


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def _exception_message(info: dict[str, Any]) -> str | None:
    """GX reports a failed evaluation either flat or keyed by the metric that raised."""
    if info.get("raised_exception") or info.get("exception_message"):
        return str(info.get("exception_message") or "raised an exception")
    for value in info.values():
        if isinstance(value, dict) and value.get("exception_message"):
            return str(value["exception_message"])
    return None


def _outcome(spec: ExpectationSpec, result: Any) -> ExpectationOutcome:
    details = result.result or {}
    exception = _exception_message(result.exception_info or {})
    if exception:
        return ExpectationOutcome(
            spec.type, spec.column, spec.severity, False, error=str(exception)[:300]
        )
    return ExpectationOutcome(
        type=spec.type,
        column=spec.column,
        severity=spec.severity,
        success=bool(result.success),
        unexpected_count=details.get("unexpected_count"),
        unexpected_percent=details.get("unexpected_percent"),
        sample=[_plain(v) for v in details.get("partial_unexpected_list") or []][:SAMPLE_SIZE],
        observed_value=_plain(details.get("observed_value")),
    )
