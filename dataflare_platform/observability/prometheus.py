"""Prometheus' multiprocess mode: many worker processes, one scrape endpoint.

Why ``prometheus_client``'s multiprocess mode and not the OpenTelemetry Prometheus
reader: that reader serves the values held in one process's memory, so a forked run
worker either starts a second endpoint or inherits (and re-reports) its parent's totals.
Here every process writes its values into memory-mapped files named by its pid in one
directory (0700 under the home); ``prometheus_client`` notices a pid change after ``fork``
and starts fresh files, so a child never re-reports its parent's counts. The endpoint
(``dataflare metrics serve``) sums the files:

- counters and histograms of dead workers stay in the sum, so a total never goes
  backwards when a worker crashes or restarts (a restarted worker adds a new file);
- gauges use a ``live*`` mode: ``mark_process_dead`` removes a dead worker's gauge files,
  so its last lag or state size disappears. The endpoint does that itself before every
  scrape for the pids whose process is gone (``reap_dead``), and supervisors may call
  ``mark_dead`` as soon as they reap a child.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
_PID_FILE = re.compile(r"_(\d+)\.db$")


def private_dir(path: Path) -> Path:
    """Create (or tighten) the multiprocess directory: owner only."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != PRIVATE_DIR_MODE:
        path.chmod(PRIVATE_DIR_MODE)
    return path


def use_multiprocess(directory: Path) -> None:
    """Point ``prometheus_client`` at ``directory`` for this process and its children.

    ``prometheus_client.values`` picks its value class when first imported; this sets the
    multiprocess one explicitly, so the order of imports does not matter."""
    private_dir(directory)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    from prometheus_client import values

    # A value class keeps its open files per process; a new directory needs a new one.
    if getattr(values.ValueClass, "_dataflare_dir", None) != str(directory):
        value_class = values.MultiProcessValue()
        value_class._dataflare_dir = str(directory)
        values.ValueClass = value_class


def pids(directory: Path) -> set[int]:
    return {int(m.group(1)) for f in directory.glob("*.db") if (m := _PID_FILE.search(f.name))}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def mark_dead(pid: int, directory: Path) -> None:
    """A worker ended: drop its live gauges (its counters stay in the totals)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(directory))


def reap_dead(directory: Path) -> list[int]:
    """``mark_dead`` every pid with files in ``directory`` whose process is gone."""
    dead = sorted(pid for pid in pids(directory) if not _alive(pid))
    for pid in dead:
        mark_dead(pid, directory)
    return dead


def exposition(directory: Path) -> bytes:
    """The text a scrape returns: every process's files summed (dead workers reaped)."""
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    reap_dead(directory)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))
    return generate_latest(registry)
