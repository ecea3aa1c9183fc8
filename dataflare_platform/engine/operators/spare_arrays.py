"""Arrays made before they are needed, on the merge thread, for states about to grow
(:mod:`key_slots`' hash buckets, :mod:`pane_stores`' held pane rooms)."""

from __future__ import annotations

from concurrent.futures import Future

import numpy as np

from dataflare_platform.engine.operators.keyed_store import merge_executor


class SpareArrays:
    """Arrays made and written once on the merge thread before they are needed, for a
    state about to grow: memory the process has never touched costs a page fault per
    4 KiB on first write, and on this machine (a VM) that, not the copy, is most of a
    growth: filling 64 MB inline took 99 ms, refilling it once touched 2.2 ms, and the
    batch thread went on with at most a 2.6 ms pause while another thread filled 128 MB
    (measured with ``np.full``). A state asks for the next size when it is three
    quarters of the way to growing (``prepare``) and uses the arrays if they are ready
    and large enough when it grows (``take``); otherwise it allocates inline as before.
    They are nobody's state until taken, so savepoints and rollbacks need not know."""

    def __init__(self) -> None:
        self._future: Future | None = None
        self._kinds: tuple[tuple[str, int], ...] = ()
        self._size = 0

    def prepare(self, size: int, kinds: tuple[tuple[str, int], ...]) -> None:
        """Start making arrays of ``size`` entries, one per ``(dtype, fill)``, unless
        arrays at least as large of those kinds are made or being made."""
        if self._future is not None and self._kinds == kinds and self._size >= size:
            return
        self._kinds, self._size = kinds, size
        self._future = merge_executor().submit(_filled, size, kinds)

    def take(self, size: int, kinds: tuple[tuple[str, int], ...]) -> list[np.ndarray] | None:
        """The prepared arrays if they are of ``kinds``, hold ``size`` entries at least,
        and are ready (once); else None."""
        future = self._future
        if future is None or self._kinds != kinds or self._size < size or not future.done():
            return None
        self._future = None
        return future.result()


def _filled(size: int, kinds: tuple[tuple[str, int], ...]) -> list[np.ndarray]:
    out = []
    for dtype, fill in kinds:
        array = np.empty(size, dtype)
        array.fill(fill)  # written: its pages are faulted in here, on this thread
        out.append(array)
    return out
