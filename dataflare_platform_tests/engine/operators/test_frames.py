"""``frames.keep_columns`` / ``without``: the columns asked for, in the order asked, with
the rows unchanged, as ``select`` / ``drop`` would give them."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from dataflare_platform.engine.operators.frames import keep_columns, without

FRAME = pl.DataFrame(
    {"a": [1, None, 3], "s": ["x", "y", None], "t": [1.5, 2.5, 3.5], "__wm": [0, 0, 1]}
)


@pytest.mark.parametrize("names", [["s", "a"], ("t",), dict.fromkeys(["__wm", "s", "__wm"])])
def test_keep_columns_equals_select_in_the_order_asked(names):
    assert_frame_equal(keep_columns(FRAME, names), FRAME.select(list(names)))


def test_without_equals_drop_and_ignores_nothing_else():
    assert_frame_equal(without(FRAME, "__wm"), FRAME.drop("__wm"))
    assert_frame_equal(without(FRAME, "s", "__wm"), FRAME.drop("s", "__wm"))
    assert without(FRAME).columns == FRAME.columns
    assert FRAME.columns == ["a", "s", "t", "__wm"]  # the input is left as it was
