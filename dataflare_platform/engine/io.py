"""The two contracts between the engine and the systems it reads and writes.

A **source** is a set of partitions, each a dense sequence of rows addressed by offset:
``read(partition, offset, n)`` returns the rows from ``offset`` on and the runner
advances by exactly the rows it got, so a checkpoint is one integer per partition and a
restart from it is exact. A source that cannot place a stored item at an offset (a
corrupt message, a trimmed range) still fills those offsets, with all-null rows that the
runner dead-letters, so offsets never shift. ``end_offset`` is the end of bounded data, or
None while a partition grows.

A **sink** receives each batch's output and side rows (late rows, dead letters) and is
asked to commit at checkpoints. A *transactional* sink writes everything since the last
commit together with the checkpoint, atomically, and hands that checkpoint back from
``open``: a restart after a crash then reproduces exactly the output of an uninterrupted
run. :class:`TransactionalSink` holds what every such sink shares (buffering between
commits, newest-row-per-key for upserts, clearing only after success), so a connector
writes only its one atomic step, :meth:`TransactionalSink.commit_batch`.

Connectors (``dataflare_platform.connectors``) implement these for external systems.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import polars as pl
import pyarrow as pa

from dataflare_platform.engine.checkpoint import Checkpoint


@runtime_checkable
class Source(Protocol):
    """What the runner needs from a source.

    Optional hooks the runner calls when present: ``next_offset(partition)`` after each
    read, for a source whose offsets are not dense (Kafka: transaction markers and aborted
    records occupy offsets no reader sees): where the next read starts, instead of the
    offset plus the rows read (a read of ``n`` from ``o`` must then return only records
    from offsets ``o`` to ``o + n - 1``); ``on_commit(offsets)`` once offsets are
    durable in the sink (consumer-group lag), ``close()`` when the run ends.
    """

    name: str
    time_column: str

    @property
    def schema(self) -> pa.Schema: ...

    def partitions(self) -> list[str]: ...

    def read(self, partition: str, offset: int, max_rows: int) -> pa.Table:
        """Up to ``max_rows`` rows from ``offset``; an empty table means no data (yet)."""
        ...

    def end_offset(self, partition: str) -> int | None:
        """Offset one past the last row for bounded data; None if the partition grows."""
        ...


class Sink:
    """Base of every sink; the default is at-least-once (no checkpoint is kept)."""

    transactional: bool = False

    def open(self, pipeline: str) -> Checkpoint | None:
        """Prepare and return the last committed checkpoint, if any."""
        return None

    def write(self, output: pl.DataFrame | None, side: pl.DataFrame | None) -> None:
        raise NotImplementedError

    def commit(self, checkpoint: Checkpoint) -> None:
        return None

    def close(self) -> None:
        return None


def newest_per_key(output: pl.DataFrame, keys: list[str] | None) -> pl.DataFrame:
    """Each key's last row (an upsert target keeps only the newest); all rows if no keys."""
    if not keys:
        return output
    return output.unique(subset=keys, keep="last", maintain_order=True)


class TransactionalSink(Sink):
    """Buffers output and side rows between checkpoints and hands them, concatenated, to
    :meth:`commit_batch` together with the checkpoint; the buffers are cleared only once
    it returns, so a failed commit loses nothing a retry would need.

    A subclass implements ``open`` (return the checkpoint of its last commit, after
    discarding anything written past it) and ``commit_batch`` (write output, side rows
    and checkpoint in one atomic step). Its ``open`` should call ``discard_pending``:
    a reopened sink starts from its last commit, not from a failed run's leftovers.
    """

    transactional = True

    def write(self, output: pl.DataFrame | None, side: pl.DataFrame | None) -> None:
        buffers = self._buffers()
        if output is not None and output.height:
            buffers[0].append(output)
        if side is not None and side.height:
            buffers[1].append(side)

    def commit(self, checkpoint: Checkpoint) -> None:
        outputs, sides = self._buffers()
        output = pl.concat(outputs, how="vertical_relaxed") if outputs else None
        side = pl.concat(sides) if sides else None
        self.commit_batch(output, side, checkpoint)
        self.discard_pending()

    def commit_batch(
        self, output: pl.DataFrame | None, side: pl.DataFrame | None, checkpoint: Checkpoint
    ) -> None:
        """Write ``output`` and ``side`` (None when there were no rows) and
        ``checkpoint``, all or nothing."""
        raise NotImplementedError

    def discard_pending(self) -> None:
        outputs, sides = self._buffers()
        outputs.clear()
        sides.clear()

    @property
    def pending_rows(self) -> int:
        return sum(f.height for f in self._buffers()[0])

    def _buffers(self) -> tuple[list[pl.DataFrame], list[pl.DataFrame]]:
        # Created on first use, so subclasses (dataclasses among them) need not call an
        # __init__ of ours.
        try:
            return self.__pending
        except AttributeError:
            self.__pending: tuple[list[pl.DataFrame], list[pl.DataFrame]] = ([], [])
            return self.__pending
