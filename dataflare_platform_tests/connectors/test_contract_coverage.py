"""Every kind in the connector registry runs the shared contract suite: a connector
without a contract fixture fails here, naming its kind."""

from __future__ import annotations

import importlib
import pkgutil

import dataflare_platform_tests.connectors as tests
from dataflare_platform.connectors.registry import SINKS, SOURCES
from dataflare_platform_tests.connectors.contract import SourceContract, TransactionalSinkContract

# Sinks that are not transactional by design: no checkpoint, no exactly-once to test.
AT_LEAST_ONCE_SINKS = {"file", "discard"}


def _covered(base: type) -> set[str]:
    for info in pkgutil.iter_modules(tests.__path__):
        if info.name.startswith("test_"):
            importlib.import_module(f"{tests.__name__}.{info.name}")
    found, todo = set(), [base]
    while todo:
        for sub in todo.pop().__subclasses__():
            found.add(sub.KIND)
            todo.append(sub)
    return found


def test_every_source_kind_runs_the_source_contract():
    assert set(SOURCES) - _covered(SourceContract) == set()


def test_every_transactional_sink_kind_runs_the_sink_contract():
    assert set(SINKS) - AT_LEAST_ONCE_SINKS - _covered(TransactionalSinkContract) == set()
