"""The partition-key check the client runs before a launch: which keys are nearest, and
which error a missing, malformed, unknown or unexpected key gets."""

from datetime import date, timedelta

import pytest

from dataflare_platform.client import (
    MalformedPartitionError,
    MissingPartitionError,
    NotPartitionedError,
    PartitionError,
    UnknownPartitionError,
)
from dataflare_platform.client.partitions import check_partition, nearest_keys, time_format
from dataflare_platform.errors import DataflareError

DAYS = [(date(2026, 1, 1) + timedelta(days=i)).isoformat() for i in range(31)]
HOURS = [f"2026-01-01-{h:02d}:00" for h in range(24)]
STATIC = ["eu-west", "eu-north", "us-east", "us-west", "ap-south"]


def test_time_format_is_read_from_the_keys():
    assert time_format(DAYS) == "%Y-%m-%d"
    assert time_format(HOURS) == "%Y-%m-%d-%H:%M"
    assert time_format(["2026-01", "2026-02"]) == "%Y-%m"
    assert time_format(STATIC) is None
    assert time_format([]) is None


def test_nearest_dates_surround_a_missing_day():
    gap = [d for d in DAYS if d != "2026-01-15"]
    assert nearest_keys("2026-01-15", gap, n=2) == ["2026-01-14", "2026-01-16"]
    # Equally far on both sides: the earlier day wins the tie.
    assert nearest_keys("2026-01-15", gap) == ["2026-01-13", "2026-01-14", "2026-01-16"]


def test_nearest_dates_outside_the_range_are_its_edge():
    assert nearest_keys("2025-06-01", DAYS) == ["2026-01-01", "2026-01-02", "2026-01-03"]
    assert nearest_keys("2027-06-01", DAYS) == ["2026-01-29", "2026-01-30", "2026-01-31"]
    assert nearest_keys("2026-01-01-07:30", HOURS, n=2) == ["2026-01-01-07:00", "2026-01-01-08:00"]


def test_nearest_static_keys_by_string_similarity():
    assert nearest_keys("us-eats", STATIC)[0] == "us-east"
    assert nearest_keys("eu-wst", STATIC, n=1) == ["eu-west"]
    # Nothing similar: the newest keys, so the message still lists valid ones.
    assert nearest_keys("zzzzzzzz", STATIC, n=2) == ["us-west", "ap-south"]
    assert nearest_keys("x", []) == []


def test_valid_keys_and_unpartitioned_targets_pass():
    check_partition("2026-01-05", DAYS, "job 'daily'")
    check_partition("eu-west", STATIC, "job 'regions'")
    check_partition(None, None, "job 'ingest'")


def test_missing_key_is_refused_with_the_range():
    with pytest.raises(MissingPartitionError) as err:
        check_partition(None, DAYS, "job 'daily'")
    message = str(err.value)
    assert message.startswith("partition: job 'daily' is partitioned and needs a partition key")
    assert "2026-01-01 … 2026-01-31 (31 keys)" in message and "'2026-01-31'" in message
    assert "\n" not in message


def test_unknown_date_names_the_nearest_days():
    with pytest.raises(UnknownPartitionError) as err:
        check_partition("2026-02-02", DAYS, "job 'daily'")
    assert err.value.nearest == ["2026-01-29", "2026-01-30", "2026-01-31"]
    assert "no partition '2026-02-02' in job 'daily'" in str(err.value)
    assert str(err.value).endswith("nearest: 2026-01-29, 2026-01-30, 2026-01-31")


@pytest.mark.parametrize("key", ["yesterday", "2026-13-01", "2026-1-5", "2026/01/05", ""])
def test_malformed_date_is_one_line_naming_the_format(key):
    with pytest.raises(MalformedPartitionError) as err:
        check_partition(key, DAYS, "job 'daily'")
    message = str(err.value)
    assert message == (
        f"partition: {key!r} is not a partition key of job 'daily': expected format "
        "%Y-%m-%d (e.g. '2026-01-31')"
    )


def test_unknown_static_key_names_the_similar_ones():
    with pytest.raises(UnknownPartitionError) as err:
        check_partition("us-eats", STATIC, "job 'regions'")
    assert err.value.nearest[0] == "us-east"


def test_key_for_an_unpartitioned_job_is_refused():
    with pytest.raises(NotPartitionedError, match="job 'ingest' is not partitioned"):
        check_partition("2026-01-05", None, "job 'ingest'")


def test_every_partition_error_is_a_dataflare_error():
    for cls in (
        MissingPartitionError,
        UnknownPartitionError,
        MalformedPartitionError,
        NotPartitionedError,
    ):
        assert issubclass(cls, PartitionError) and issubclass(cls, DataflareError)
