"""Shared by the component tests: a component built in a dg sandbox project, and the
text of a loading error (dg wraps our ConfigError in its own exceptions: the message,
naming the file and the field, is what matters)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster.components.testing import create_defs_folder_sandbox

from dataflare_platform.components import StreamPipelineComponent


def error_chain(err: BaseException | None) -> str:
    text = []
    while err is not None:
        text.append(str(err))
        err = err.__cause__ or err.__context__
    return "\n".join(text)


@contextmanager
def built_pipeline(
    defs_path: str, contents: dict[str, Any]
) -> Iterator[tuple[StreamPipelineComponent, dg.Definitions, Path]]:
    """A StreamPipelineComponent scaffolded with ``contents`` and its definitions."""
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(
            StreamPipelineComponent, defs_path=defs_path, defs_yaml_contents=contents
        )
        with sandbox.load_component_and_build_defs(defs_path=path) as (component, defs):
            yield component, defs, path


def pipeline_loading_error(defs_path: str, contents: dict[str, Any]) -> str:
    """The text of the error a StreamPipelineComponent with ``contents`` fails to load
    with (fails the test if it loads)."""
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(
            StreamPipelineComponent, defs_path=defs_path, defs_yaml_contents=contents
        )
        with pytest.raises(Exception) as err, sandbox.load_component_and_build_defs(path):
            pass
    return error_chain(err.value)
