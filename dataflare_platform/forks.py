"""Fork safety: one registry of what a forked child must reset.

Only the forking thread goes on in a child process. A lock another thread held at the
fork stays held there for ever (the next ``with`` deadlocks); an executor's worker thread
is gone, so the executor takes jobs and never runs them; a WASM instance another thread
had checked out never comes back to its pool. multiprocessing forks by default on Linux,
so a Dagster run or a worker pool forked while a plugin or a helper thread was in use
meets exactly that.

Objects that hold such state register here, from any layer (the engine's helper threads,
the plugin runtime's pools, caches and registries); in every forked child their
``_after_fork()`` makes the locks anew and drops what the parent's threads held. It is
one ``os.register_at_fork`` hook over a weak registry, not one hook per object: the hooks
``os`` keeps are never released, so an object registered there directly would live for
ever.
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol


class ForkAware(Protocol):
    def _after_fork(self) -> None: ...


# Keyed by id and held weakly: an object that is gone needs nothing.
_registered: weakref.WeakValueDictionary[int, ForkAware] = weakref.WeakValueDictionary()


def reset_in_forked_child(obj: ForkAware) -> None:
    """Have ``obj._after_fork()`` called in every child forked from now on."""
    _registered[id(obj)] = obj


def _after_fork_in_child() -> None:
    for obj in list(_registered.values()):
        obj._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
