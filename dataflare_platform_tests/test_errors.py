"""Every exception class a user can meet derives from ``DataflareError`` (the CLI's one
error boundary catches it). Private classes (``_Name``) never leave their module."""

from __future__ import annotations

import ast
import importlib

from dataflare_platform.errors import DataflareError
from dataflare_platform_tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "dataflare_platform"


def _modules_defining_classes() -> dict[str, list[str]]:
    """Module name -> public class names defined at its top level (from the source)."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py":  # runs the command when imported
            continue
        tree = ast.parse(path.read_text())
        names = [
            node.name
            for node in tree.body
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_")
        ]
        if names:
            module = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
            found[module.removesuffix(".__init__")] = names
    return found


def test_every_public_exception_class_derives_from_dataflare_error():
    exceptions = {}
    for module_name, names in _modules_defining_classes().items():
        module = importlib.import_module(module_name)
        for name in names:
            cls = getattr(module, name)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                exceptions[f"{module_name}.{name}"] = cls
    # The walk found the classes the rule is about (not an empty pass).
    assert {
        "dataflare_platform.errors.ConfigError",
        "dataflare_platform.client.errors.RunTimeoutError",
        "dataflare_platform.events.log.topic.TopicNotFoundError",
        "dataflare_platform.plugins.build.BuildError",
    } <= set(exceptions)
    assert len(exceptions) >= 25
    outside = sorted(
        name for name, cls in exceptions.items() if not issubclass(cls, DataflareError)
    )
    assert outside == []


def test_builtin_bases_are_kept_for_callers_that_catch_them():
    from dataflare_platform.client import RunTimeoutError
    from dataflare_platform.connectors.postgres import PostgresUnavailableError
    from dataflare_platform.events.deadletter import NoSuchDeadLetterError
    from dataflare_platform.events.log import OffsetOutOfRangeError, TopicNotFoundError

    assert issubclass(TopicNotFoundError, KeyError)
    assert str(TopicNotFoundError("bids")) == "no topic 'bids'"  # not KeyError's repr
    assert issubclass(OffsetOutOfRangeError, ValueError)
    assert issubclass(NoSuchDeadLetterError, LookupError)
    assert issubclass(PostgresUnavailableError, ConnectionError)
    assert issubclass(RunTimeoutError, TimeoutError)
