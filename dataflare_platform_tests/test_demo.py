"""The demo's event-time window: it ends now, and a rerun within a day keeps its data."""

from datetime import UTC, datetime, timedelta

from dataflare_platform.datagen import NexmarkConfig, write_nexmark
from dataflare_platform.demo import DEMO_CONFIG, ending_now, landed_config

NOW = datetime(2026, 12, 4, 11, 40, 7, tzinfo=UTC)


def test_events_end_at_the_top_of_the_current_hour():
    shifted = ending_now(DEMO_CONFIG, NOW)
    span = timedelta(seconds=DEMO_CONFIG.events / DEMO_CONFIG.events_per_second)
    assert shifted.first_event_time + span == datetime(2026, 12, 4, 11, tzinfo=UTC)
    # Everything else is the demo's config.
    assert shifted.model_copy(update={"first_event_time": DEMO_CONFIG.first_event_time}) == (
        DEMO_CONFIG
    )


def test_a_rerun_within_a_day_keeps_the_landed_data_and_a_later_one_moves_on():
    landed = ending_now(DEMO_CONFIG, NOW)
    assert ending_now(DEMO_CONFIG, NOW + timedelta(hours=5), landed=landed) == landed
    later = ending_now(DEMO_CONFIG, NOW + timedelta(days=1, hours=1), landed=landed)
    assert later.first_event_time == landed.first_event_time + timedelta(days=1, hours=1)
    # Other settings than the start differ: the new config wins.
    other = ending_now(DEMO_CONFIG.model_copy(update={"seed": 7}), NOW, landed=landed)
    assert other.seed == 7


def test_landed_config_reads_the_manifest(tmp_path):
    assert landed_config(tmp_path) is None
    config = ending_now(NexmarkConfig(events=500, chunk_events=500), NOW)
    write_nexmark(config, tmp_path)
    assert landed_config(tmp_path) == config
