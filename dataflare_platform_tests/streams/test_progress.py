"""The current rate over a window and the lag per partition, with a clock the test
controls (no wall-clock waits)."""

import pytest

from dataflare_platform.errors import InvalidInputError
from dataflare_platform.streams.progress import RateWindow, partition_lag


def test_rate_is_over_the_last_window_not_the_lifetime():
    rates = RateWindow(window_s=10.0)
    rates.add(0.0, 0)
    # 100 s idle-ish: 1 000 events; then 10 s at 5 000 events/s.
    rates.add(100.0, 1_000)
    for second in range(1, 11):
        rates.add(100.0 + second, 1_000 + 5_000 * second)
    assert rates.rate(110.0) == pytest.approx(5_000.0)
    lifetime = 51_000 / 110.0
    assert lifetime < 500  # what a lifetime average would have shown


def test_rate_before_the_window_is_full_uses_the_first_sample():
    rates = RateWindow(window_s=20.0)
    rates.add(0.0, 0)
    rates.add(4.0, 2_000)
    assert rates.rate(4.0) == pytest.approx(500.0)


def test_rate_decays_when_events_stop():
    rates = RateWindow(window_s=10.0)
    rates.add(0.0, 0)
    rates.add(10.0, 10_000)
    assert rates.rate(10.0) == pytest.approx(1_000.0)
    assert rates.rate(15.0) == pytest.approx(10_000 / 15.0)  # baseline still t=0
    rates.add(20.0, 10_000)  # a checkpoint with nothing new
    assert rates.rate(20.0) == pytest.approx(0.0)
    assert rates.rate(40.0) == 0.0


def test_rate_without_two_points_in_time_is_zero():
    rates = RateWindow(window_s=10.0)
    assert rates.rate(5.0) == 0.0
    rates.add(5.0, 100)
    assert rates.rate(5.0) == 0.0


def test_rate_window_refuses_bad_input():
    with pytest.raises(InvalidInputError, match="rate window must be positive"):
        RateWindow(window_s=0)
    rates = RateWindow(window_s=1.0)
    rates.add(2.0, 1)
    with pytest.raises(AssertionError, match="time order"):
        rates.add(1.0, 2)


def test_partition_lag_counts_events_behind_per_partition():
    ends = {"bids/1": 50, "bids/0": 120}
    assert partition_lag({"bids/0": 100, "bids/1": 60}, ends) == {"bids/0": 20, "bids/1": 0}
    assert partition_lag({}, ends) == {"bids/0": 120, "bids/1": 50}
