"""Arrays made ahead on the merge thread: filled, taken only when of the kinds and size
asked and ready, and only once."""

import numpy as np

from dataflare_platform.engine.operators.spare_arrays import SpareArrays


def test_spare_arrays_are_filled_ready_and_taken_once():
    spare = SpareArrays()
    kinds = (("int64", -1), ("float64", 0))
    assert spare.take(10, kinds) is None  # nothing prepared
    spare.prepare(1_000, kinds)
    spare._future.result()
    assert spare.take(1_000, (("int64", 0),)) is None  # other kinds
    assert spare.take(1_001, kinds) is None  # too small
    got = spare.take(500, kinds)
    assert [a.size for a in got] == [1_000, 1_000]
    assert (got[0] == -1).all() and (got[1] == 0).all() and got[1].dtype == np.float64
    assert spare.take(500, kinds) is None  # once only
