"""What one Nexmark query is, for the engine, the tests and the benchmark: the inputs
and columns it reads, the builder of its pipeline on the public API, and its one-shot
DuckDB ground truth. Each group of queries lives in a module of its own that exposes
``SPECS``; ``queries.nexmark`` merges them, so adding a query never edits another's
module."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dataflare_platform.connectors.files import FileSource, nexmark_files
from dataflare_platform.engine import Pipeline, Sink, Source
from dataflare_platform.errors import InvalidInputError, MissingPathError

# Nexmark: the watermark trails the highest event time by 4 s.
WATERMARK_DELAY_MS = 4_000

# One-shot DuckDB SQL runs over tables named bids / persons / auctions, giving the rows
# an engine run produces (in any order). ``ms(t)`` is a macro: duckdb 2.0 cannot apply
# epoch_ms to an Arrow timestamp[ms] column directly ("Unimplemented type for cast").
TRUTH_PRELUDE = "CREATE OR REPLACE TEMP MACRO ms(t) AS epoch_ms(CAST(t AS TIMESTAMP))"


@dataclass
class NexmarkSources:
    bids: Source | None = None
    persons: Source | None = None
    auctions: Source | None = None

    def need(self, kind: str) -> Source:
        source = getattr(self, kind)
        if source is None:
            raise InvalidInputError(f"this query needs the {kind} input")
        return source

    @classmethod
    def from_paths(
        cls,
        query: str,
        bids: Path | None = None,
        persons: Path | None = None,
        auctions: Path | None = None,
    ) -> NexmarkSources:
        """File sources reading only the columns ``query`` uses; a path may be a file
        or a directory of part files."""
        from dataflare_platform.queries.nexmark import COLUMNS

        given = {"bids": bids, "persons": persons, "auctions": auctions}
        made = {}
        for kind, columns in COLUMNS[query].items():
            path = given[kind]
            if path is None:
                raise InvalidInputError(f"{query} needs --{kind} (or --input for bids)")
            path = Path(path)
            if not path.exists():
                raise MissingPathError(f"{kind} input {path}: no such file or directory")
            files = nexmark_files(path) if path.is_dir() else [path]
            made[kind] = FileSource(kind, files, columns=columns)
        return cls(**made)


Builder = Callable[[NexmarkSources, Sink], Pipeline]


@dataclass(frozen=True)
class QuerySpec:
    """One query. ``truth`` is DuckDB SQL over all events at once giving the rows the
    engine's run produces (after ``upsert_keys``: the last row per key); ``approx``
    names float columns compared with a tolerance; ``keeps_state`` says the query holds
    rows in state after its inputs end (a table side of a join, a running aggregate);
    every other query ends with no state rows (checked by the tests); ``dataset`` makes
    the sink the query is meant to write (q10: a partitioned Parquet dataset in the
    folder given), which the benchmark and ``dataflare nexmark run --dataset`` use;
    ``event_time`` is
    False for a query whose rows depend on when the engine runs (processing-time
    windows): ``truth`` is then only the baseline's work, not the rows to compare."""

    columns: dict[str, list[str]]
    build: Builder
    truth: str
    upsert_keys: list[str] | None = None
    approx: tuple[str, ...] = ()
    keeps_state: bool = False
    event_time: bool = True
    dataset: Callable[[Path], Sink] | None = None
    notes: dict[str, str] = field(default_factory=dict)


def pipeline(name: str) -> Pipeline:
    """A Nexmark pipeline: event time with the suite's 4 s watermark delay."""
    return Pipeline(name, out_of_orderness_ms=WATERMARK_DELAY_MS)
