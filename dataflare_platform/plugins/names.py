"""Plugin names, and the only way a name becomes a path.

A plugin name comes from a pipeline's YAML, a Python pipeline, a CLI argument or a
resource call, and it ends up as ``<plugin_dir>/<name>.wasm``. Validating it where each of
those enters is not enough (one forgotten entry and ``name: ../outside/evil`` loads a file
outside the folder), so every place that turns a name into a path calls
:func:`plugin_file`, which checks the name against :data:`PLUGIN_NAME` and, as a second
wall, that the path it builds stays directly inside the directory.
"""

from __future__ import annotations

import re
from pathlib import Path

from dataflare_platform.errors import ConfigError
from dataflare_platform.streams.fields import PLUGIN_NAME

__all__ = ["PLUGIN_NAME", "check_plugin_name", "is_plugin_name", "plugin_file"]

_NAME = re.compile(PLUGIN_NAME)


def is_plugin_name(name: object) -> bool:
    """True for a plain identifier (lowercase letter, then letters, digits, ``_``, ``-``)."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def check_plugin_name(name: object, field: str = "plugin.name") -> str:
    """``name`` if it is a plain identifier, else a ``ConfigError`` naming ``field``."""
    if not is_plugin_name(name):
        raise ConfigError(
            "plugin name",
            [(field, f"{name!r} is not a plugin name (must match {PLUGIN_NAME}: no path)")],
        )
    return str(name)


def plugin_file(directory: Path, name: object, suffix: str, field: str = "plugin.name") -> Path:
    """``directory/<name><suffix>`` for a checked ``name``; refused (naming ``field``) if the
    name is not an identifier or the path would not sit directly in ``directory``."""
    checked = check_plugin_name(name, field)
    path = directory / f"{checked}{suffix}"
    if path.parent != directory or path.name != f"{checked}{suffix}":
        raise ConfigError("plugin name", [(field, f"{name!r} leaves the plugin folder")])
    return path
