import pytest

from dataflare_platform.datagen import NexmarkConfig
from dataflare_platform.errors import ConfigError


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("events", -5),
        ("events", 0),
        ("chunk_events", -1),
        ("seed", -1),
        ("events_per_second", 0),
        ("max_out_of_order_ms", -10),
        ("format", "csv"),
        ("late_fraction", 1.5),
        ("late_fraction", -0.1),
        ("shape", "zipf"),
        ("zipf_exponent", 1.0),
    ],
)
def test_bad_values_are_refused_naming_the_field(field, value):
    with pytest.raises(ConfigError) as err:
        NexmarkConfig.load({field: value})
    assert err.value.fields == [field]
    assert field in str(err.value)


def test_unknown_fields_are_refused():
    with pytest.raises(ConfigError) as err:
        NexmarkConfig.load({"events": 10, "evnets": 10})
    assert err.value.fields == ["evnets"]


def test_yaml_config_reports_every_bad_field(tmp_path):
    path = tmp_path / "gen.yaml"
    path.write_text("events: 100\nseed: -3\nbogus: true\n")
    with pytest.raises(ConfigError) as err:
        NexmarkConfig.from_yaml(path)
    assert sorted(err.value.fields) == ["bogus", "seed"]


def test_yaml_that_is_not_a_mapping_is_refused(tmp_path):
    path = tmp_path / "gen.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        NexmarkConfig.from_yaml(path)


def test_overrides_win_over_file_and_none_means_unset(tmp_path):
    path = tmp_path / "gen.yaml"
    path.write_text("events: 100\nseed: 7\n")
    cfg = NexmarkConfig.from_yaml(path, events=50, seed=None)
    assert (cfg.events, cfg.seed) == (50, 7)


def test_chunks_cover_all_events_once():
    cfg = NexmarkConfig(events=1234, chunk_events=500)
    ranges = [cfg.chunk_range(i) for i in range(cfg.num_chunks)]
    assert ranges == [(0, 500), (500, 1000), (1000, 1234)]
