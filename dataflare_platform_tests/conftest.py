"""Shared fixtures: every test gets its own project home; nothing touches ./.dataflare."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from dataflare_platform.datagen import NexmarkConfig, write_nexmark
from dataflare_platform.home import ProjectHome
from dataflare_platform.sql_names import quote_identifier
from dataflare_platform_tests.nexmark_data import nexmark_tables, skewed_tables
from dataflare_platform_tests.tls_ca import TestCA, make_test_ca

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"

# 40k events at 0.3 events/s of event time: ~1.5 days, so two daily partitions.
SMALL_CONFIG = NexmarkConfig(events=40_000, chunk_events=15_000, events_per_second=0.3)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ProjectHome:
    project = ProjectHome.resolve(tmp_path / "home").ensure()
    for key, value in project.environ().items():
        monkeypatch.setenv(key, value)
    # The audit key `dataflare audit init` provisions lives in a per-user config dir:
    # each test gets its own, and no deployment audit settings leak in.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    for key in list(os.environ):
        if key.startswith("DATAFLARE_AUDIT_"):
            monkeypatch.delenv(key)
    return project


@pytest.fixture
def audited_home(home: ProjectHome) -> ProjectHome:
    """``home`` with its audit keys provisioned (as `dataflare audit init` or the first
    start of `dataflare ui` does): for tests whose code appends to the audit log, which
    needs the entry key."""
    from dataflare_platform.compliance.audit_keys import provision

    provision(home.root)
    return home


@pytest.fixture
def entry_key_file(home: ProjectHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tests' audit entry key (``audit_support.ENTRY_KEY``) as the deployment's
    (``DATAFLARE_AUDIT_ENTRY_KEY``, outside the home), for tests that write a log with
    ``AuditLog(url, entry_key=ENTRY_KEY)`` and read it back through the CLI or settings."""
    from dataflare_platform_tests.audit_support import write_entry_key

    path = write_entry_key(tmp_path / "entry.key")
    monkeypatch.setenv("DATAFLARE_AUDIT_ENTRY_KEY", str(path))
    return path


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory):
    """A real slapd for one test module (``identity/slapd_server.py``); modules that use
    it mark themselves ``pytestmark = REQUIRES_SLAPD``."""
    from dataflare_platform_tests.identity.slapd_server import running_slapd

    with running_slapd(Path(tmp_path_factory.mktemp("slapd"))) as server:
        yield server


@pytest.fixture
def landed_home(home: ProjectHome) -> ProjectHome:
    """A home with SMALL_CONFIG's Nexmark files landed (not yet loaded)."""
    write_nexmark(SMALL_CONFIG, home.nexmark_dir)
    return home


@pytest.fixture(scope="session")
def small_nexmark():
    """3000 events at 100 events/s: 30 s of event time, several 10 s windows."""
    return nexmark_tables(NexmarkConfig(events=3_000, events_per_second=100.0, seed=3))


@pytest.fixture(scope="session")
def skewed_nexmark():
    """A stream unlike the reference generator's (the ``skewed`` shape: Zipf-popular
    auctions and people, sparse ids, mixed-case channels, odd urls) with 20 % of events up
    to 2 s late: 20k events at 200 events/s, 100 s of event time across midnight."""
    midnight = datetime(2026, 3, 28, 23, 59, 10, tzinfo=UTC)
    return skewed_tables(17, 0.2, 2_000, first_event_time=midnight)


@pytest.fixture(scope="session")
def medium_nexmark():
    """60k events at 500 events/s: 2 minutes of event time, ~1100 persons/auctions."""
    return nexmark_tables(NexmarkConfig(events=60_000, events_per_second=500.0, seed=5))


@pytest.fixture(scope="session")
def dsn() -> str:
    """The real PostgreSQL server the tests talk to (``.ci/run`` starts it): unreachable
    is a failure, not a skip."""
    dsn = os.environ.get("DATAFLARE_TEST_POSTGRES_DSN", DEFAULT_POSTGRES_DSN)
    try:
        with psycopg.connect(dsn, connect_timeout=5):
            pass
    except psycopg.OperationalError as err:
        pytest.fail(
            f"PostgreSQL is not reachable at {dsn} ({str(err).strip()}): start it or set"
            " DATAFLARE_TEST_POSTGRES_DSN",
            pytrace=False,
        )
    return dsn


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """One test CA per session (server and client certificates, a rogue CA): see
    ``tls_ca``."""
    return make_test_ca(tmp_path_factory.mktemp("test-ca"))


@pytest.fixture
def pg_schema(dsn: str):
    """A fresh schema on the test PostgreSQL server, dropped afterwards."""
    import uuid

    name = f"dataflare_test_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {quote_identifier(name)} CASCADE")


@pytest.fixture
def span_memory():
    """Traces on for the test, exported to the SDK's in-memory exporter; off after."""
    from dataflare_platform.observability import ObservabilitySettings
    from dataflare_platform.observability.tracing import configure_tracing

    tracing = configure_tracing(ObservabilitySettings(traces_exporter="memory"))
    assert tracing is not None and tracing.memory is not None
    yield tracing.memory
    configure_tracing(None)


_worker_ends: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """On the xdist controller: when each worker's last test ended."""
    node = getattr(report, "node", None)
    if node is not None and report.when == "teardown":
        _worker_ends[node.gateway.id] = time.monotonic()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How long the last worker ran alone: the part of the suite the workers did not
    share. ``--dist loadfile`` hands out whole modules, those with the most tests first
    (pytest-xdist 3.8 sorts them so and ignores the collection order unless
    ``--no-loadscope-reorder``), so a long module with few tests can run last, alone
    (the 15th session's CI: 5 s alone of 30 min 44 s)."""
    if len(_worker_ends) > 1:
        ends = sorted(_worker_ends.items(), key=lambda kv: kv[1])
        alone = ends[-1][1] - ends[0][1]
        terminalreporter.write_line(
            f"xdist: {ends[-1][0]} ran alone for the last {alone:.0f} s "
            f"({', '.join(w for w, _ in ends)} in the order they finished)"
        )
