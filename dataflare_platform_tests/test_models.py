"""The one strict pydantic base: unknown fields refused, frozen, errors naming the field."""

import pydantic
import pytest
from pydantic import ConfigDict, Field

from dataflare_platform.errors import ConfigError
from dataflare_platform.models import StrictModel, validated


class Window(StrictModel):
    size_ms: int = Field(ge=1)
    column: str = "date_time"


class Aliased(StrictModel):
    model_config = ConfigDict(populate_by_name=True)

    table_schema: str = Field(alias="schema")


def test_a_misspelt_field_is_refused_by_name():
    with pytest.raises(ConfigError, match="invalid window") as err:
        Window.validated({"size_ms": 10, "colum": "t"}, "window")
    assert err.value.fields == ["colum"]


def test_a_bad_value_is_refused_by_its_path():
    with pytest.raises(ConfigError) as err:
        validated(Window, "window", {"size_ms": 0})
    assert err.value.fields == ["size_ms"]


def test_instances_are_frozen_and_subclass_settings_merge():
    window = Window.validated({"size_ms": 10}, "window")
    with pytest.raises(pydantic.ValidationError):
        window.size_ms = 20  # type: ignore[misc]
    assert Aliased.validated({"table_schema": "s"}, "a").table_schema == "s"
    with pytest.raises(ConfigError) as err:
        Aliased.validated({"schema": "s", "other": 1}, "a")
    assert err.value.fields == ["other"]
