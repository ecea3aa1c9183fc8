"""The step registry: a step kind is one decorated function and its model; YAML steps
are parsed by the registered kind, errors name the field, names are unique."""

from __future__ import annotations

import polars as pl
import pytest
import yaml
from pydantic import Field

from dataflare_platform.engine import CollectSink, Runner, Stream, TableSource
from dataflare_platform.errors import ConfigError
from dataflare_platform.models import StrictModel
from dataflare_platform.streams.spec import PipelineSpec
from dataflare_platform.streams.steps import STEPS, StepContext, step

SPEC = """
name: steps
catalog: {micro_batch: false}
sources:
  bids: {path: unused, columns: [auction, price, date_time]}
streams:
  out:
    from: bids
    steps: []
output: out
sink: {discard: {}}
"""

SHIPPED = [
    "dedup",
    "encrypt",
    "enrich",
    "filter",
    "flat_map",
    "interval_join_agg",
    "interval_join_winner",
    "join",
    "key_by",
    "plugin",
    "reduce",
    "reduce_last",
    "select",
    "top_n",
    "unique",
    "window",
    "window_join",
    "with_columns",
]


def _spec(*steps: object) -> dict:
    data = yaml.safe_load(SPEC)
    data["streams"]["out"]["steps"] = list(steps)
    return data


def _run(spec: PipelineSpec, bids: pl.DataFrame) -> pl.DataFrame:
    sink = CollectSink()
    source = TableSource.single("bids", bids.to_arrow())
    Runner(spec.build(sink=sink, sources={"bids": source})).run()
    return sink.result()


def test_every_shipped_step_is_registered():
    assert STEPS.names() == SHIPPED


def test_an_unknown_step_kind_names_the_field_and_lists_the_known_kinds():
    with pytest.raises(ConfigError) as err:
        PipelineSpec.load(_spec({"select": ["auction"]}, {"dedupe": {"horizon": "1s"}}))
    ((field, message),) = err.value.problems
    assert field == "streams.out.steps.1"
    assert "unknown step 'dedupe'" in message
    assert str(SHIPPED) in message  # every known kind, sorted


@pytest.mark.parametrize(
    ("bad_step", "message"),
    [
        ({"dedup": {"horizon": "soon"}}, "dedup.horizon: not a duration: 'soon'"),
        ({"dedup": {"horizn": "1s"}}, "dedup.horizon: Field required"),
        ({"filter": "price >>> 1"}, "filter: not a valid expression 'price >>> 1'"),
        ({"with_columns": {"p": "price +"}}, "with_columns.p: not a valid expression"),
        (
            {"window": {"sliding": {"size": "10s", "slide": "3s"}, "agg": {"n": "count"}}},
            "window.sliding: slide must divide size",
        ),
        # Bounds (issue 17): each refused at validation, one line, naming the field.
        ({"dedup": {"horizon": "-1s"}}, "dedup.horizon: not a duration: '-1s'"),
        ({"dedup": {"horizon": 0}}, "dedup.horizon: duration must be positive"),
        (
            {"window": {"tumbling": "0s", "agg": {"n": "count"}}},
            "window.tumbling: duration must be positive",
        ),
        (
            {"window": {"tumbling": 2**63 - 1, "agg": {"n": "count"}}},
            "window.tumbling: duration 9223372036854775807 is over the limit",
        ),
        (
            {"window": {"tumbling": "99999999999999999999d", "agg": {"n": "count"}}},
            "window.tumbling: duration '99999999999999999999d' is over the limit",
        ),
        (
            {"window": {"tumbling": "400d", "agg": {"n": "count"}}},
            "window.tumbling: duration '400d' is over the limit of 366d",
        ),
        (
            {"window": {"sliding": {"size": "1d", "slide": 1}, "agg": {"n": "count"}}},
            "window.sliding: size / slide is 86400000",
        ),
        (
            {"window": {"sliding": {"size": "10s", "slide": 0}, "agg": {"n": "count"}}},
            "window.sliding.slide: duration must be positive",
        ),
        (
            {"window": {"session": "0ms", "agg": {"n": "count"}, "lateness": "-5s"}},
            "window.session: duration must be positive",
        ),
        ({"filter": " OR ".join(f"price = {i}" for i in range(10_000))}, "filter: expression of"),
        (
            {"window": {"tumbling": "1s", "agg": {"n": "count"}, "top": {"by": "n", "n": 10**30}}},
            "window.top.n: Input should be less than or equal to 100000",
        ),
        ({"filter": " OR ".join(f"price = {i}" for i in range(300))}, "filter: expression of"),
        ({"filter": "(" * 40 + "price" + ")" * 40 + " > 1"}, "filter: expression nests"),
        ({"with_columns": {"p": "+".join(["price"] * 2000)}}, "with_columns.p: expression of"),
    ],
)
def test_a_bad_step_argument_names_the_field_inside_the_step(bad_step, message):
    with pytest.raises(ConfigError) as err:
        PipelineSpec.load(_spec(bad_step))
    ((field, got),) = err.value.problems
    assert field == "streams.out.steps.0"
    assert got.startswith(message), got
    assert "Value error" not in got


def test_registering_a_step_name_twice_is_refused():
    before = STEPS["dedup"]

    def other_dedup(stream: Stream, arg: object, context: StepContext) -> Stream:
        return stream

    with pytest.raises(ConfigError) as err:
        step("dedup", dict)(other_dedup)
    assert err.value.fields == ["dedup"]
    assert "already registered by dataflare_platform.streams.steps.builtin:dedup" in str(err.value)
    assert STEPS["dedup"] is before  # the first registration stands


class ScaleSpec(StrictModel):
    column: str
    factor: float = Field(gt=0)


@pytest.fixture
def scale_step():
    """A step kind a user adds: one model, one decorated function."""

    @step("scale", ScaleSpec)
    def scale(stream: Stream, spec: ScaleSpec, context: StepContext) -> Stream:
        return stream.with_columns(pl.col(spec.column) * spec.factor)

    yield scale
    STEPS.unregister("scale")


def test_a_step_registered_later_works_in_a_yaml_spec(scale_step):
    spec = PipelineSpec.load(
        _spec({"filter": "price > 10"}, {"scale": {"column": "price", "factor": 0.5}})
    )
    bids = pl.DataFrame(
        {"auction": [1, 2, 3], "price": [5, 20, 40], "date_time": [1_000, 2_000, 3_000]},
        schema_overrides={"date_time": pl.Datetime("ms")},
    )
    out = _run(spec, bids)
    assert out.sort("auction")["price"].to_list() == [10.0, 20.0]
    # Its own model checks its argument, errors naming the field.
    with pytest.raises(ConfigError) as err:
        PipelineSpec.load(_spec({"scale": {"column": "price", "factor": 0}}))
    assert "scale.factor: Input should be greater than 0" in str(err.value)


def test_an_unregistered_step_is_unknown_again(scale_step):
    STEPS.unregister("scale")
    with pytest.raises(ConfigError, match="unknown step 'scale'"):
        PipelineSpec.load(_spec({"scale": {"column": "price", "factor": 2}}))


@pytest.mark.parametrize(
    ("steps", "where", "column"),
    [
        ([{"filter": "pricee > 1"}], "streams.out.steps[0].filter", "pricee"),
        ([{"with_columns": {"p": "CAST(bidder AS DOUBLE)"}}], "steps[0].with_columns", "bidder"),
        ([{"select": ["auction"]}, {"filter": "price > 1"}], "steps[1].filter", "price"),
        ([{"key_by": ["seller"]}], "steps[0].key_by", "seller"),
        ([{"unique": ["auction", "nope"]}], "steps[0].unique", "nope"),
    ],
)
def test_columns_the_steps_name_must_exist_in_the_declared_source_columns(steps, where, column):
    with pytest.raises(ConfigError) as err:
        PipelineSpec.load(_spec(*steps))
    assert where in str(err.value) and f"no column {column!r}" in str(err.value)
    assert len(str(err.value).splitlines()) == 2  # the header and one problem


def test_columns_are_followed_through_the_steps_that_make_them():
    spec = PipelineSpec.load(
        _spec(
            {"with_columns": {"cents": "price * 100"}},
            {"filter": "cents > 1"},
            {"select": ["auction", "cents", "date_time"]},
            {"key_by": ["auction"]},
            {"window": {"tumbling": "10s", "agg": {"n": "count"}}},
            {"filter": "n > 1"},  # after a window: not followed (its output is not spelt out)
        )
    )
    assert spec.streams["out"].steps[1].arg == "cents > 1"
