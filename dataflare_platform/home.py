"""The project home: one directory that holds every piece of local state.

Embedded defaults keep a laptop install self-contained: Dagster's instance (SQLite,
telemetry off), the DuckDB warehouse and the local event data all live under one
root, so deleting it resets the platform and nothing lands in the user's home.
"""

from __future__ import annotations

import hashlib
import os
import stat
import warnings
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError, field_validator

from dataflare_platform.errors import ConfigError
from dataflare_platform.models import StrictModel

HOME_ENV_VAR = "DATAFLARE_HOME"

# The code location: one module and one name wherever it is loaded (the repository's
# workspace.yaml, `dataflare ui`, the demo's runs, `dg`), so runs, the Overview timeline
# and job pages all refer to the same location. A test holds them together.
DEFINITIONS_MODULE = "dataflare_platform.definitions"
LOCATION_NAME = "dataflare_platform"
WORKSPACE_YAML = f"""\
load_from:
  - python_module:
      module_name: {DEFINITIONS_MODULE}
      location_name: {LOCATION_NAME}
"""
DEFAULT_HOME_DIRNAME = ".dataflare"

# Least exposure: the home is the owner's alone (0700; files 0600). The umask is set by
# the entry points (the CLI, the code location's definitions) so files that Dagster and
# the libraries create under the home (SQLite storages, compute logs, DuckDB, segments)
# are owner-only too.
PRIVATE_UMASK = 0o077
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


# Kept identical to deployments/local/dagster.yaml (a test holds them together); it is
# embedded so that an installed wheel can set up a home without the repository.
# First line of deployments/production/dagster.yaml: a home whose instance config starts
# with it is a production deployment's (PostgreSQL storage, docs/deploy.md), and `ensure`
# leaves it as the operator wrote it instead of restoring the local SQLite one.
PRODUCTION_INSTANCE_MARKER = "# DataFlare production instance"
LOCAL_DAGSTER_YAML = """\
# Local (embedded) Dagster instance: SQLite storage under DAGSTER_HOME, no telemetry.
storage:
  sqlite:
    base_dir:
      env: DAGSTER_HOME
telemetry:
  enabled: false
# Runs stuck STARTING (launch lost) or CANCELING (worker gone) are failed / canceled after
# the timeouts. The default run launcher cannot check a STARTED run's worker and cannot
# resume a run (max_resume_run_attempts must stay 0); a killed worker of a live code server
# is marked FAILED by that server within a second (docs/operations.md, "Continuous runs").
run_monitoring:
  enabled: true
  poll_interval_seconds: 30
  start_timeout_seconds: 180
  cancel_timeout_seconds: 180
  max_resume_run_attempts: 0
# The daemon re-executes a FAILED run only if it opts in with the dagster/max_retries tag
# (the <pipeline>_continuous jobs do: 3 retries per run group, each resuming from the
# pipeline's checkpoint after a growing delay). Other jobs are never retried.
run_retries:
  enabled: true
  max_retries: 0
# One writer per DuckDB file: assets and ops writing one declare the same pool
# (defs/pools.py), and a run waits in the queue while another run holds that pool.
concurrency:
  pools:
    default_limit: 1
    granularity: run
# The platform's loggers also reach each run's event log (their records stay JSON lines
# on stderr too, which the compute logs capture; docs/observability.md, "Logs").
python_logs:
  managed_python_loggers:
    - dataflare_platform
  # Each run and step as an OpenTelemetry span, continuing the launch's trace (off unless
  # OTEL_TRACES_EXPORTER is set; dataflare_platform/instance/run_spans.py).
  dagster_handler_config:
    handlers:
      run_spans:
        class: dataflare_platform.instance.run_spans.RunSpanHandler
# Every submitted run is authorized before it is queued (UI, GraphQL, sensors, schedules,
# backfills, retries, in-process): dataflare_platform/instance/run_coordinator.py, policy in
# $DATAFLARE_POLICY or the shipped default (docs/security.md, "Authorization"). It is a
# QueuedRunCoordinator, so its config is the run queue's (Dagster refuses a run_queue entry
# next to run_coordinator): the daemon hands queued runs to the launcher every second
# (Dagster's default: 5 s), so a sensor-launched micro-batch run waits at most 1 s in the
# queue (docs/benchmarks.md).
run_coordinator:
  module: dataflare_platform.instance.run_coordinator
  class: AuthorizingRunCoordinator
  config:
    dequeue_interval_seconds: 1
    # At most 8 partition-parallel worker runs per pipeline (<pipeline>_workers jobs carry
    # the tag; `dataflare scale` beyond it leaves the rest queued).
    tag_concurrency_limits:
      - key: dataflare/workers_of
        value:
          applyLimitPerUniqueValue: true
        limit: 8
"""


class ProjectHome(StrictModel):
    """Where local state lives; validated so an unusable path fails before any work."""

    root: Path

    @field_validator("root")
    @classmethod
    def _must_be_writable(cls, root: Path) -> Path:
        root = root.expanduser().absolute()
        probe = root
        while not probe.exists():
            if probe.parent == probe:
                break
            probe = probe.parent
        if probe.exists() and not probe.is_dir():
            raise ValueError(f"{probe} exists and is not a directory")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise ValueError(f"{probe} is not writable")
        return root

    @classmethod
    def resolve(cls, root: str | Path | None = None) -> ProjectHome:
        """Pick the home: explicit argument, then $DATAFLARE_HOME, then ./.dataflare."""
        chosen = root or os.environ.get(HOME_ENV_VAR) or Path.cwd() / DEFAULT_HOME_DIRNAME
        try:
            return cls(root=Path(chosen))
        except ValidationError as err:
            (_, message), *_ = ConfigError.from_validation("project home", err).problems
            raise ConfigError("project home", [("home", message)]) from None

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def warehouse_path(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def events_dir(self) -> Path:
        return self.root / "events"

    @property
    def event_log_dir(self) -> Path:
        """Root of the embedded event log (one directory per topic)."""
        return self.events_dir / "log"

    @property
    def nexmark_dir(self) -> Path:
        """Landing directory of generated Nexmark files (persons/, auctions/, bids/)."""
        return self.events_dir / "nexmark"

    def ensure(self) -> ProjectHome:
        """Create the layout and the instance config; safe to call again.

        The home is created 0700 (its config files 0600). An existing home that others
        can reach (group/other bits on its root) is tightened to 0700 with a
        ``UserWarning``: the root's mode alone keeps everything under it from
        other users, so its contents are not walked (a large event log would make every
        command slow)."""
        try:
            self._private_root()
            for directory in (self.dagster_home, self.events_dir):
                directory.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
            dagster_yaml = self.dagster_home / "dagster.yaml"
            current = dagster_yaml.read_text() if dagster_yaml.exists() else None
            if current is not None and current.startswith(PRODUCTION_INSTANCE_MARKER):
                pass  # a production instance (deployments/production): the operator's
            elif current != LOCAL_DAGSTER_YAML:
                write_private(dagster_yaml, LOCAL_DAGSTER_YAML)
            elif stat.S_IMODE(dagster_yaml.stat().st_mode) & 0o077:
                dagster_yaml.chmod(PRIVATE_FILE_MODE)  # a home from before 0600
        except OSError as err:
            raise ConfigError("project home", [("home", f"{self.root}: {err}")]) from None
        return self

    def _private_root(self) -> None:
        """Create the root 0700, or tighten an existing one that others can reach."""
        if not self.root.exists():
            self.root.mkdir(mode=PRIVATE_DIR_MODE, parents=True)
            self.root.chmod(PRIVATE_DIR_MODE)  # mkdir's mode is masked by the umask
            return
        mode = stat.S_IMODE(self.root.stat().st_mode)
        if mode & 0o077:
            self.root.chmod(PRIVATE_DIR_MODE)
            warnings.warn(
                f"project home {self.root} was mode {mode:04o} (readable by others); "
                f"tightened to {PRIVATE_DIR_MODE:04o}",
                UserWarning,
                stacklevel=3,
            )

    @property
    def workspace_path(self) -> Path:
        """A workspace file identical to the repository's ``workspace.yaml`` (written by
        ``write_workspace``), for ``dataflare ui`` run outside the repository."""
        return self.root / "workspace.yaml"

    def write_workspace(self) -> Path:
        path = self.workspace_path
        if not path.exists() or path.read_text() != WORKSPACE_YAML:
            write_private(path, WORKSPACE_YAML)
        return path

    def environ(self) -> dict[str, str]:
        """Variables a child process (Dagster CLI, webserver) needs to use this home."""
        return {HOME_ENV_VAR: str(self.root), "DAGSTER_HOME": str(self.dagster_home)}


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600), whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), PRIVATE_FILE_MODE)
        handle.write(text)


def user_config_dir(home_root: Path, environ: Mapping[str, str] | None = None) -> Path:
    """The per-user folder outside the home where this home's keys live (audit signing
    key, field-encryption keyring): ``$XDG_CONFIG_HOME/dataflare/<first 16 hex of SHA-256
    of the home path>``. Outside the home so that whoever can rewrite the home cannot also
    re-sign its log or read the keys of its data."""
    env = os.environ if environ is None else environ
    base = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    digest = hashlib.sha256(str(Path(home_root).resolve()).encode()).hexdigest()[:16]
    return base / "dataflare" / digest


def path_inside(path: Path, root: Path) -> bool:
    """True when ``path`` resolves to ``root`` or somewhere under it (links followed)."""
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
    except ValueError:
        return False
    return True
