"""Undo steps for state changed in place.

The runner takes a savepoint before every batch, and a batch that fails at run time must
leave no trace in any operator's state. State made of immutable frames is saved by
holding a reference; state that is changed in place because copying it per batch would
cost the whole state (``pane_stores.ArrayPanes``' held panes) records, for each change,
how to undo it, and the savepoint is the list of steps since it was taken.
"""

from __future__ import annotations

from collections.abc import Callable


class Journal:
    """Undo steps since the last ``start``, run newest first by ``undo``. Nothing is
    recorded before the first ``start`` (no savepoint to go back to), and each ``start``
    drops the steps before it, so the journal holds one batch's changes at most."""

    def __init__(self) -> None:
        self._steps: list[Callable[[], None]] | None = None

    def start(self) -> list[Callable[[], None]]:
        self._steps = []
        return self._steps

    def record(self, step: Callable[[], None]) -> None:
        if self._steps is not None:
            self._steps.append(step)

    @staticmethod
    def undo(steps: list[Callable[[], None]]) -> None:
        for step in reversed(steps):
            step()
        steps.clear()
