"""The one YAML loader: every YAML file users write (pipelines, governance, route and
alert rules, generator configs) is read here, so a file that cannot be read, does not
parse or is not a mapping is refused the same way, with a ``ConfigError`` naming the file
(field ``<file>``) or its shape (field ``<root>``) before any model looks at it.

A document is also bounded before a model sees it: nesting at most ``MAX_DEPTH`` deep (the
YAML parser recurses per level: about 1000 levels of ``[[[...]]]`` raised a
``RecursionError``), and at most ``MAX_VALUES`` values counted with aliases expanded (a
few lines of ``&a [*b, *b, ...]`` anchors stand for billions of values that validation
would walk one by one). A key given twice in one mapping is refused naming it and its
line (YAML's loader silently keeps the last: a second ``steps:`` block would replace the
first without a word); a ``<<`` merge may still be overridden, as YAML intends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dataflare_platform.errors import ConfigError

MAX_DEPTH = 64
MAX_VALUES = 100_000
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in the same mapping."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:
                    continue  # unhashable: the base loader refuses it with its own reason
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {key!r}",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _load(text: str) -> Any:
    return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass


def _load_all(text: str) -> list[Any]:
    return list(yaml.load_all(text, Loader=_UniqueKeyLoader))


def load_yaml_mapping(path: Path | str, what: str) -> dict[str, Any]:
    """The mapping a YAML file holds (an empty file is an empty mapping: the model then
    names the fields it misses). ``what`` says what the file is, for the error."""
    try:
        data = _load(Path(path).read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(what, [("<file>", f"{path}: {err}")]) from None
    except RecursionError:
        raise ConfigError(what, [("<file>", f"{path}: {_TOO_DEEP}")]) from None
    return _mapping(data, what, f"{path}")


def load_yaml_documents(path: Path | str, what: str) -> list[Any]:
    """Every document of a multi-document YAML file (``---`` between them), as parsed."""
    try:
        documents = _load_all(Path(path).read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(what, [("<file>", f"{path}: {err}")]) from None
    except RecursionError:
        raise ConfigError(what, [("<file>", f"{path}: {_TOO_DEEP}")]) from None
    bounded(documents, what, f"{path}")
    return documents


def parse_yaml_mapping(text: str, what: str) -> dict[str, Any]:
    """The mapping a YAML document holds (text from an API or a test, not a file)."""
    try:
        data = _load(text)
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
