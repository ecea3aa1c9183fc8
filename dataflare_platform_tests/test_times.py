"""The one time helper: naive means UTC, epoch milliseconds are exact integers."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from dataflare_platform.times import as_utc, epoch_ms, now_ms, utc_now

CET = timezone(timedelta(hours=1))


def test_naive_aware_and_epoch_ms_name_the_same_instant():
    naive = datetime(2026, 1, 1, 12, 0, 0, 123_000)
    aware = datetime(2026, 1, 1, 13, 0, 0, 123_000, tzinfo=CET)
    ms = 1_767_268_800_123
    assert as_utc(naive) == as_utc(aware) == as_utc(ms)
    assert as_utc(aware).tzinfo is UTC
    assert epoch_ms(naive) == epoch_ms(aware) == epoch_ms("2026-01-01T12:00:00.123") == ms


def test_epoch_ms_is_exact_where_float_seconds_are_not():
    # int(value.timestamp() * 1000), the conversion this replaced in places, gives
    # 274_438_050_455 for this millisecond-precise instant: one millisecond early.
    value = datetime(1978, 9, 12, 8, 47, 30, 456_000, tzinfo=UTC)
    assert epoch_ms(value) == 274_438_050_456
    assert as_utc(epoch_ms(value)) == value


def test_booleans_are_not_times():
    with pytest.raises(TypeError):
        as_utc(True)
    with pytest.raises(TypeError):
        epoch_ms(False)


def test_clocks_are_aware_utc_and_agree():
    before = utc_now()
    ms = now_ms()
    after = utc_now()
    assert before.tzinfo is UTC
    assert epoch_ms(before) <= ms <= epoch_ms(after)
