"""The one YAML loader: unreadable, unparsable and non-mapping files are refused the same
way, naming the file."""

from pathlib import Path

import pytest

from dataflare_platform.errors import ConfigError
from dataflare_platform.yaml_files import load_yaml_mapping, parse_yaml_mapping


def test_a_mapping_loads_and_an_empty_file_is_an_empty_mapping(tmp_path: Path):
    (tmp_path / "ok.yaml").write_text("name: q7\nsize: 10\n")
    (tmp_path / "empty.yaml").write_text("")
    assert load_yaml_mapping(tmp_path / "ok.yaml", "spec") == {"name": "q7", "size": 10}
    assert load_yaml_mapping(tmp_path / "empty.yaml", "spec") == {}


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("name: [unclosed\n", "<file>", "bad.yaml"),
        ("- a\n- b\n", "<root>", "must be a mapping, not a list"),
        ("just text\n", "<root>", "must be a mapping, not a str"),
    ],
)
def test_bad_files_are_refused_naming_the_file(tmp_path: Path, text, field, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="invalid pipeline spec") as err:
        load_yaml_mapping(path, "pipeline spec")
    assert err.value.fields == [field]
    assert message in str(err.value)


def test_a_missing_file_is_refused_naming_it(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"nowhere\.yaml") as err:
        load_yaml_mapping(tmp_path / "nowhere.yaml", "alert rules")
    assert err.value.fields == ["<file>"]


def test_text_is_held_to_the_same_rules():
    assert parse_yaml_mapping("a: 1", "rules") == {"a": 1}
    with pytest.raises(ConfigError) as err:
        parse_yaml_mapping("- 1", "rules")
    assert err.value.fields == ["<root>"]


BOMB = "".join(
    f"{name}: &{name} [{', '.join([prev] * 10)}]\n"
    for name, prev in zip("abcdefghi", ["x", *(f"*{c}" for c in "abcdefgh")], strict=True)
)


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("a: " + "[" * 2000 + "]" * 2000, "<file>", "nested more than 64 levels deep"),
        ("a: " + "[" * 70 + "]" * 70, "<root>", "nested more than 64 levels deep"),
        ("a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 80)), "<root>", "nested"),
        (BOMB, "<root>", "holds more than 100000 values (aliases expanded)"),
    ],
)
def test_deep_and_alias_bomb_documents_are_refused(tmp_path: Path, text, field, message):
    """A RecursionError traceback (about 1000 levels) and a billion-values alias bomb
    (validation would walk every value) before; one refusal naming the file now."""
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    for load in (lambda: load_yaml_mapping(path, "spec"), lambda: parse_yaml_mapping(text, "spec")):
        with pytest.raises(ConfigError) as err:
            load()
        assert err.value.fields == [field] and message in str(err.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("steps: [a]\nname: p\nsteps: [b]\n", "steps"),  # the first block silently lost
        ("sources:\n  bids: {kind: nats}\n  bids: {kind: redis}\n", "bids"),
        ("a: {x: 1, x: 2}\n", "x"),
        ("1: a\n1: b\n", "1"),
    ],
)
def test_a_duplicate_key_is_refused_naming_it_and_its_line(tmp_path: Path, text, key):
    """YAML's loader keeps the last of two equal keys without a word: a pipeline with
    two ``steps:`` blocks ran only the second."""
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    for load in (lambda: load_yaml_mapping(path, "spec"), lambda: parse_yaml_mapping(text, "spec")):
        with pytest.raises(ConfigError) as err:
            load()
        assert err.value.fields == ["<file>"]
        assert f"duplicate key {key!r}" in str(err.value) or f"duplicate key {int(key)}" in str(
            err.value
        )
        assert "line" in str(err.value)


def test_merge_keys_may_still_be_overridden():
    text = "base: &b {x: 1, y: 2}\nderived:\n  <<: *b\n  x: 3\n"
    assert parse_yaml_mapping(text, "spec")["derived"] == {"x": 3, "y": 2}
