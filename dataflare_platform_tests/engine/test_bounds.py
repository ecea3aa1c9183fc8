"""The engine's own bounds on time settings (issue 17): the builder API refuses what the
YAML spec refuses, so a Python pipeline cannot slip a zero, overflowing or unbounded
window past validation either."""

import pytest

from dataflare_platform.engine.durations import (
    MAX_WINDOW_MS,
    MAX_WINDOWS_PER_EVENT,
    bounded_ms,
    format_ms,
    to_ms,
)
from dataflare_platform.engine.operators.windows import Session, Sliding, Tumbling
from dataflare_platform.errors import InvalidInputError


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Tumbling(0), "tumbling window size must be a positive"),
        (lambda: Tumbling(2**63 - 1), "over the limit of 366d"),
        (lambda: Tumbling(-5), "must be a positive"),
        (lambda: Session(0), "session gap must be a positive"),
        (lambda: Sliding(86_400_000, 1), "over the limit of 1000 windows per event"),
        (lambda: Sliding(MAX_WINDOW_MS + 1000, 1000), "over the limit of 366d"),
        (lambda: Sliding(10_000, 0), "slide must be positive"),
    ],
)
def test_window_kinds_refuse_sizes_out_of_bounds(make, message):
    with pytest.raises(InvalidInputError, match=message):
        make()


def test_window_kinds_within_bounds_are_accepted():
    assert Tumbling(MAX_WINDOW_MS).size_ms == MAX_WINDOW_MS
    ratio = Sliding(MAX_WINDOWS_PER_EVENT * 10, 10)
    assert ratio.size_ms // ratio.slide_ms == MAX_WINDOWS_PER_EVENT


@pytest.mark.parametrize(
    "value", ["-1s", "1 week", "", "9" * 5000 + "d", "99999999999999999999d", 2**70, True, 1.5]
)
def test_durations_that_are_not_or_overflow_are_refused(value):
    with pytest.raises(InvalidInputError) as err:
        to_ms(value)
    assert "\n" not in str(err.value) and len(str(err.value)) < 200


def test_bounded_durations():
    assert bounded_ms("1d", positive=True) == 86_400_000
    assert bounded_ms(0, positive=False) == 0
    with pytest.raises(InvalidInputError, match="must be positive"):
        bounded_ms("0s", positive=True)
    with pytest.raises(InvalidInputError, match="over the limit of 366d"):
        bounded_ms("367d", positive=True)
    assert format_ms(MAX_WINDOW_MS) == "366d" and format_ms(1500) == "1500ms"


def test_dedup_and_lateness_of_the_builder_are_bounded():
    import pyarrow as pa

    from dataflare_platform.engine import Pipeline
    from dataflare_platform.engine.sources import TableSource

    p = Pipeline("bounds")
    s = p.source(TableSource.single("t", pa.table({"k": [1], "date_time": [1]})))
    with pytest.raises(InvalidInputError, match="must be positive"):
        s.key_by("k").dedup(0)
    with pytest.raises(InvalidInputError, match="over the limit"):
        s.key_by("k").window(Tumbling(1000), lateness="400d")
