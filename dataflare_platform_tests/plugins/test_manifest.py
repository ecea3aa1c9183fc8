"""The manifest parser: any bytes give a Manifest or a ConfigError naming the file's
problem, never a RecursionError or another traceback (deep nesting, huge files, junk)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflare_platform.errors import ConfigError
from dataflare_platform.plugins.manifest import Manifest, parse_manifest
from dataflare_platform_tests.plugins.hostile import AGG_MANIFEST


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_deeply_nested_json_is_a_config_error_not_a_recursion_error(opener):
    closer = "]" if opener == "[" else "}"
    data = (opener * 100_000 + "1" + closer * 100_000).encode()
    with pytest.raises(ConfigError) as err:
        parse_manifest(data, "deep.json")
    assert "deep.json" in str(err.value) and "nested 100000 levels deep" in str(err.value)


def test_brackets_inside_strings_do_not_count_as_nesting():
    doc = {**AGG_MANIFEST, "description": "[" * 1000 + '\\"{' * 100}
    assert parse_manifest(json.dumps(doc).encode(), "m.json").description == doc["description"]


def test_a_huge_manifest_is_refused_by_size():
    with pytest.raises(ConfigError) as err:
        parse_manifest(b" " * (2 * 1024 * 1024), "huge.json")
    assert "a manifest is at most" in str(err.value)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)
FIELDS = st.fixed_dictionaries({}, optional={k: JSON for k in AGG_MANIFEST})


@settings(max_examples=300, deadline=None)
@given(st.one_of(JSON, FIELDS, st.builds(lambda d, f: {**AGG_MANIFEST, **f}, JSON, FIELDS)))
def test_any_json_document_is_a_manifest_or_a_config_error(doc):
    try:
        got = parse_manifest(json.dumps(doc).encode(), "fuzz.json")
    except ConfigError as err:
        assert "fuzz.json" in str(err)
    else:
        assert isinstance(got, Manifest)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_are_a_manifest_or_a_config_error(data):
    try:
        parse_manifest(data, "junk.json")
    except ConfigError as err:
        assert "junk.json" in str(err)


_BASE = {
    "abi_version": 1,
    "name": "hostile",
    "version": "0.0.1",
    "kind": "map",
    "input": [{"name": "x", "type": "int64"}],
    "output": [{"name": "y", "type": "int64"}],
    "license": "MIT",
}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"input": [{"name": "a\nb", "type": "int64"}]}, "input.0.name"),
        ({"input": [{"name": "a\x00b", "type": "int64"}]}, "input.0.name"),
        ({"output": [{"name": "y\x1b[2J", "type": "int64"}]}, "output.0.name"),
        ({"output": [{"name": "y" * 5000, "type": "int64"}]}, "output.0.name"),
        ({"input": [{"name": "x", "type": "int64"}, {"name": "x", "type": "int32"}]}, "input"),
        ({"output": [{"name": "y", "type": "int64"}, {"name": "y", "type": "int64"}]}, "output"),
        ({"name": "a" * 10_000}, "name"),
        ({"license": "MIT\x1b[31m"}, "license"),
        ({"description": "ok\x00\x1b]0;pwned\x07"}, "description"),
        ({"capabilities": ["log\n"]}, "capabilities.0"),
    ],
)
def test_control_characters_long_and_duplicate_names_are_refused_naming_the_field(change, field):
    """Column names with NUL, newlines or terminal escapes, 5 000-character names and a
    column declared twice were accepted: they reach DataFrames, logs, ``plugin inspect``
    output and SQL sinks."""
    with pytest.raises(ConfigError) as err:
        Manifest.validated({**_BASE, **change}, "manifest")
    assert field in err.value.fields


def test_unicode_column_names_without_control_characters_still_load():
    manifest = Manifest.validated(
        {**_BASE, "output": [{"name": "prïce_€", "type": "int64"}]}, "manifest"
    )
    assert manifest.output[0].name == "prïce_€"


@settings(max_examples=200, deadline=None)
@given(name=st.text(min_size=1, max_size=300))
@pytest.mark.fuzz
def test_any_column_name_is_kept_verbatim_or_refused_with_a_config_error(name):
    try:
        manifest = Manifest.validated(
            {**_BASE, "output": [{"name": name, "type": "int64"}]}, "manifest"
        )
    except ConfigError as err:
        assert err.fields  # a field is named
        return
    assert manifest.output[0].name == name
    assert name.isprintable() and len(name) <= 128
