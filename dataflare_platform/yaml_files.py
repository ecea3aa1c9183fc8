"""The one YAML loader: every YAML file users write (pipelines, governance, route and
alert rules, generator configs) is read here, so a file that cannot be read, does not
parse or is not a mapping is refused the same way, with a ``ConfigError`` naming the file
(field ``<file>``) or its shape (field ``<root>``) before any model looks at it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dataflare_platform.errors import ConfigError


def load_yaml_mapping(path: Path | str, what: str) -> dict[str, Any]:
    """The mapping a YAML file holds (an empty file is an empty mapping: the model then
    names the fields it misses). ``what`` says what the file is, for the error."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(what, [("<file>", f"{path}: {err}")]) from None
    return _mapping(data, what, f"{path}")


def load_yaml_documents(path: Path | str, what: str) -> list[Any]:
    """Every document of a multi-document YAML file (``---`` between them), as parsed."""
    try:
        return list(yaml.safe_load_all(Path(path).read_text()))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(what, [("<file>", f"{path}: {err}")]) from None


def parse_yaml_mapping(text: str, what: str) -> dict[str, Any]:
    """The mapping a YAML document holds (text from an API or a test, not a file)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(what, [("<file>", str(err))]) from None
    return _mapping(data, what, "the document")


def _mapping(data: Any, what: str, where: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(what, [("<root>", f"{where} must be a mapping, not a {kind}")])
    return data
