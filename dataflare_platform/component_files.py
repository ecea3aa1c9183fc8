"""Component instance files (``defs.yaml``) read without Dagster.

A shipped pipeline or governed dataset is a Dagster component instance: a ``defs.yaml``
under ``dataflare_platform/defs/`` with ``type:`` naming the component and the spec under
``attributes:``. Dagster's ``dg`` loads them into the code location; the data plane (the
CLI's ``pipeline validate|run FILE``, replay, the demo, tests) reads the same files here,
so one file stays the single source of a pipeline. A bare spec file (no ``type:``) is
still accepted everywhere a file is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dataflare_platform.errors import ConfigError
from dataflare_platform.yaml_files import load_yaml_documents, load_yaml_mapping

DEFS_DIR = Path(__file__).parent / "defs"
INSTANCE_FILE = "defs.yaml"
COMPONENTS_MODULE = "dataflare_platform.components"
STREAM_PIPELINE = "StreamPipelineComponent"
GOVERNED_DATASET = "GovernedDatasetComponent"


def is_component_instance(data: object) -> bool:
    """A mapping shaped like a dg component instance (``type`` + ``attributes``)."""
    return isinstance(data, dict) and isinstance(data.get("type"), str) and "attributes" in data


def load_spec_mapping(path: Path | str, what: str) -> dict[str, Any]:
    """The spec a file holds: a component instance's ``attributes``, or the whole file
    when it is a bare spec; ConfigError about ``what`` otherwise."""
    data = load_yaml_mapping(path, what)
    if not is_component_instance(data):
        return data
    attributes = data["attributes"]
    if attributes is None:
        return {}
    if not isinstance(attributes, dict):
        raise ConfigError(what, [("attributes", f"{path}: must be a mapping")])
    return attributes


def component_name(type_name: str) -> str | None:
    """``StreamPipelineComponent`` for any spelling dg accepts of one of ours
    (``dataflare_platform.components.X`` or ``dataflare_platform.components.<module>.X``);
    None for another library's component."""
    if not type_name.startswith(COMPONENTS_MODULE + "."):
        return None
    return type_name.rsplit(".", 1)[-1]


def find_instances(component: str, root: Path = DEFS_DIR) -> list[tuple[Path, dict[str, Any]]]:
    """``(file, attributes)`` of every instance of ``component`` in the ``defs.yaml``
    files under ``root`` (a file may hold several YAML documents), in path order. A file
    that does not parse is refused naming it; the spec loaders check the attributes."""
    found: list[tuple[Path, dict[str, Any]]] = []
    for path in sorted(Path(root).rglob(INSTANCE_FILE)):
        if any(part.startswith(".") or part == "__pycache__" for part in path.parts):
            continue
        for document in load_yaml_documents(path, f"component file {path}"):
            if is_component_instance(document) and component_name(document["type"]) == (component):
                found.append((path, document["attributes"] or {}))
    return found
