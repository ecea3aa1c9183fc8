"""Pipelines written with the Python builder API that the code location picks up like
YAML ones: a function decorated with :func:`stream_pipeline` takes one ``Stream`` per
source and returns the output stream; the decorator attaches the same ``PipelineSpec``
a YAML file would give (sources, sink, watermark, catalog), so sensors, continuous runs,
replay and the Dagster asset come for free.

    @stream_pipeline(
        name="big_bids",
        sources={"bids": {"kind": "topic", "topic": "nexmark.bids"}},
        sink={"kind": "duckdb", "table": "big_bids"},
    )
    def big_bids(bids: Stream) -> Stream:
        return bids.filter(pl.col("price") > 1_000_000)
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dataflare_platform.engine.pipeline import Stream
from dataflare_platform.errors import ConfigError
from dataflare_platform.streams.spec import PipelineSpec

SPEC_ATTRIBUTE = "pipeline_spec"
BUILDERS_DIR = "builders"

Builder = Callable[..., Stream]


def stream_pipeline(**spec: Any) -> Callable[[Builder], Builder]:
    """Declare the decorated builder as a pipeline; ``spec`` holds the fields of a
    ``PipelineSpec`` other than ``streams``/``output`` (checked here, errors naming the
    field)."""

    def attach(builder: Builder) -> Builder:
        setattr(builder, SPEC_ATTRIBUTE, PipelineSpec.load({**spec, "builder": builder}))
        return builder

    return attach


def _import(path: Path) -> Any:
    """The module at ``path``: by its package name when it is part of this package (so
    a run worker imports the same module), else under a private name."""
    package_root = Path(__file__).resolve().parents[2]
    resolved = path.resolve()
    if resolved.is_relative_to(package_root):
        name = ".".join(resolved.relative_to(package_root).with_suffix("").parts)
        return importlib.import_module(name)
    name = f"dataflare_user_pipelines.{path.parent.parent.name}.{path.stem}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    return module


def load_python_specs(directory: Path) -> list[tuple[Path, PipelineSpec]]:
    """``(file, spec)`` of every ``@stream_pipeline`` in ``directory/builders/*.py``, in
    file and definition order. A module that fails to import is reported naming it."""
    found: list[tuple[Path, PipelineSpec]] = []
    for path in sorted((Path(directory) / BUILDERS_DIR).glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:
            module = _import(path)
        except ConfigError as err:
            raise ConfigError(f"pipeline file {path}", err.problems) from None
        except Exception as err:  # a user module: any import error is its author's to see
            raise ConfigError(
                f"pipeline file {path}", [("<module>", f"{type(err).__name__}: {err}")]
            ) from err
        for value in vars(module).values():
            spec = getattr(value, SPEC_ATTRIBUTE, None)
            if isinstance(spec, PipelineSpec) and getattr(value, "__module__", None) == (
                module.__name__
            ):
                found.append((path, spec.with_folder(Path(directory))))
    return found
