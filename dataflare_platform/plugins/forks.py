"""Fork safety of the plugin layer's locks and pools.

Only the forking thread goes on in a child process: a lock another thread held at the
fork stays held there for ever (the next ``with`` deadlocks), and a WASM instance another
thread had checked out never comes back to its pool (a pool of one then waits for ever;
were it handed out again, two calls would share a store left mid-call). multiprocessing
forks by default on Linux, so a Dagster run or a worker pool forked while a plugin was
in use meets exactly that. Objects that hold such state register here; in every forked
child their ``_after_fork()`` makes the locks anew and drops what the parent's threads
held. (The epoch ticker thread is restarted by ``plugins.engine``.)
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol


class ForkAware(Protocol):
    def _after_fork(self) -> None: ...


# Keyed by id and held weakly: a plugin that is gone needs nothing.
_registered: weakref.WeakValueDictionary[int, ForkAware] = weakref.WeakValueDictionary()


def reset_in_forked_child(obj: ForkAware) -> None:
    """Have ``obj._after_fork()`` called in every child forked from now on."""
    _registered[id(obj)] = obj


def _after_fork_in_child() -> None:
    for obj in list(_registered.values()):
        obj._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
