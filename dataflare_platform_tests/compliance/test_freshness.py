from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import polars as pl
import pytest
from pydantic import ValidationError

from dataflare_platform.compliance.freshness import FreshnessPolicy, check_freshness, newest_time

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POLICY = FreshnessPolicy(max_lag="2h")


def test_within_the_limit_is_fresh_and_past_it_is_stale():
    fresh = check_freshness(NOW - timedelta(hours=2), NOW, POLICY)
    assert fresh.fresh and fresh.lag == timedelta(hours=2)
    stale = check_freshness(NOW - timedelta(hours=2, milliseconds=1), NOW, POLICY)
    assert not stale.fresh and stale.lag == timedelta(hours=2, milliseconds=1)
    assert stale.message.startswith("stale") and "2:00:00" in stale.message


def test_naive_aware_and_epoch_ms_times_mean_the_same_instant():
    paris = timezone(timedelta(hours=1))
    last = [
        datetime(2026, 3, 1, 11, 0),  # naive: UTC
        datetime(2026, 3, 1, 12, 0, tzinfo=paris),
        int(datetime(2026, 3, 1, 11, 0, tzinfo=UTC).timestamp() * 1000),
    ]
    lags = {check_freshness(t, NOW, POLICY).lag for t in last}
    assert lags == {timedelta(hours=1)}


def test_never_updated_is_stale_and_the_future_is_flagged_as_skew():
    never = check_freshness(None, NOW, POLICY)
    assert not never.fresh and never.lag is None
    ahead = check_freshness(NOW + timedelta(minutes=5), NOW, POLICY)
    assert ahead.fresh and ahead.lag == -timedelta(minutes=5) and "skew" in ahead.message


def test_newest_event_time_of_a_frame_drives_the_check():
    frame = pl.DataFrame(
        {"window_end": [datetime(2026, 3, 1, 8), datetime(2026, 3, 1, 9, 30), None]}
    )
    newest = newest_time(frame, "window_end")
    assert newest == datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    assert not check_freshness(newest, NOW, POLICY).fresh
    assert newest_time(frame.to_arrow(), "window_end") == newest
    assert newest_time(frame.clear(), "window_end") is None
    with pytest.raises(TypeError):
        newest_time(pl.DataFrame({"t": ["x"]}), "t")


@pytest.mark.parametrize("bad", ["2 hours", "0s", "-1h", ""])
def test_bad_lag_limits_are_refused_naming_the_field(bad: str):
    with pytest.raises(ValidationError) as err:
        FreshnessPolicy(max_lag=bad)
    assert err.value.errors()[0]["loc"][0] == "max_lag"
