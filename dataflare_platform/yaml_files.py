"""The one YAML loader: every YAML file users write (pipelines, governance, route and
alert rules, generator configs) is read here, so a file that cannot be read, does not
parse or is not a mapping is refused the same way, with a ``ConfigError`` naming the file
(field ``<file>``) or its shape (field ``<root>``) before any model looks at it.

A document is also bounded before a model sees it: nesting at most ``MAX_DEPTH`` deep (the
YAML parser recurses per level: about 1000 levels of ``[[[...]]]`` raised a
``RecursionError``), and at most ``MAX_VALUES`` values counted with aliases expanded (a
few lines of ``&a [*b, *b, ...]`` anchors stand for billions of values that validation
would walk one by one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dataflare_platform.errors import ConfigError

MAX_DEPTH = 64
MAX_VALUES = 100_000


def load_yaml_mapping(path: Path | str, what: str) -> dict[str, Any]:
    """The mapping a YAML file holds (an empty file is an empty mapping: the model then
    names the fields it misses). ``what`` says what the file is, for the error."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(what, [("<file>", f"{path}: {err}")]) from None
    except RecursionError:
        raise ConfigError(what, [("<file>", f"{path}: {_TOO_DEEP}")]) from None
    return _mapping(data, what, f"{path}")


def load_yaml_documents(path: Path | str, what: str) -> list[Any]:
    """Every document of a multi-document YAML file (``---`` between them), as parsed."""
    try:
        documents = list(yaml.safe_load_all(Path(path).read_text()))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(what, [("<file>", f"{path}: {err}")]) from None
    except RecursionError:
        raise ConfigError(what, [("<file>", f"{path}: {_TOO_DEEP}")]) from None
    bounded(documents, what, f"{path}")
    return documents


def parse_yaml_mapping(text: str, what: str) -> dict[str, Any]:
    """The mapping a YAML document holds (text from an API or a test, not a file)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(what, [("<file>", str(err))]) from None
    except RecursionError:
        raise ConfigError(what, [("<file>", _TOO_DEEP)]) from None
    return _mapping(data, what, "the document")


_TOO_DEEP = f"nested more than {MAX_DEPTH} levels deep"


def bounded(data: Any, what: str, where: str) -> None:
    """Refuse ``data`` nested deeper than ``MAX_DEPTH`` or holding more than
    ``MAX_VALUES`` values, each alias counted again where it is used. Iterative: the
    walk itself cannot overflow the stack."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    seen = 0
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise ConfigError(
                what,
                [("<root>", f"{where} holds more than {MAX_VALUES} values (aliases expanded)")],
            )
        if isinstance(value, dict):
            children: Any = [*value.keys(), *value.values()]
        elif isinstance(value, list | tuple | set | frozenset):
            children = value
        else:
            continue
        if depth >= MAX_DEPTH and children:
            raise ConfigError(what, [("<root>", f"{where} is {_TOO_DEEP}")])
        stack.extend((child, depth + 1) for child in children)


def _mapping(data: Any, what: str, where: str) -> dict[str, Any]:
    bounded(data, what, where)
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(what, [("<root>", f"{where} must be a mapping, not a {kind}")])
    return data
