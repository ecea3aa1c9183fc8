"""Declarative routing: rules that send each record of a source topic to target topics by
Polars SQL predicates, loaded from YAML and checked before anything runs.

    source: bids
    mode: first_match          # or fan_out
    routes:
      - name: big
        when: "price > 10000000"
        to: bids.big
      - name: channel_a
        when: "channel = 'channel-1'"
        to: bids.channel1
    default: bids.other        # optional; without it unmatched rows are dead-lettered

``first_match`` sends a record to the first route whose predicate holds; ``fan_out`` to
every such route (a target named by several matching routes gets the record once). A
predicate that is null counts as false, as in SQL ``WHERE``. Records no route takes go
to ``default``, or else to the source's dead-letter topic with reason "no route matched".

Routing is vectorised: one Polars ``select`` computes every predicate of a batch as a
boolean column, then one filter per target topic moves the rows; no Python runs per
record. A predicate that fails on a batch's data (a CAST of a value that does not
convert) dead-letters that batch with the reason instead of stopping the router.
Every record is accounted for: rows in == rows delivered + rows dead-lettered.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import Field, field_validator

from dataflare_platform.engine import arrays
from dataflare_platform.engine.expressions import parse_expr
from dataflare_platform.errors import ConfigError
from dataflare_platform.events.codec import dead_letters, encode_json
from dataflare_platform.events.deadletter import DeadLetters
from dataflare_platform.events.groups import ConsumerGroup
from dataflare_platform.events.log import TOPIC_NAME, EventLog, Topic, TopicNotFoundError
from dataflare_platform.models import StrictModel, validated
from dataflare_platform.yaml_files import load_yaml_mapping

NO_ROUTE = "no route matched"
_ROUTE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$"


def _parse_expr(text: str) -> str:
    """A Polars SQL predicate, bounded (``engine.expressions``: a 10 000-term one
    overflowed Polars' parser) and parsed once."""
    parse_expr(text)  # InvalidInputError, one line
    return text


class Route(StrictModel):
    name: str = Field(pattern=_ROUTE_NAME)
    when: str = Field(min_length=1)  # a Polars SQL predicate over the source's columns
    to: str = Field(pattern=TOPIC_NAME)

    _check_when = field_validator("when")(_parse_expr)


class RouteRules(StrictModel):
    source: str = Field(pattern=TOPIC_NAME)
    mode: Literal["first_match", "fan_out"] = "first_match"
    routes: list[Route] = Field(min_length=1)
    default: str | None = Field(default=None, pattern=TOPIC_NAME)

    @classmethod
    def load(
        cls, data: Any, what: str = "route rules", schema: pa.Schema | None = None
    ) -> RouteRules:
        """Validate ``data``; with the source's ``schema`` the predicates are checked
        against its columns and types too. Raises ConfigError naming every bad field."""
        if not isinstance(data, dict):
            raise ConfigError(what, [("<root>", "the rules must be a mapping")])
        rules = validated(cls, what, data)
        problems = rules.problems(schema)
        if problems:
            raise ConfigError(what, problems)
        return rules

    def problems(self, schema: pa.Schema | None = None) -> list[tuple[str, str]]:
        """What is wrong beyond the shape: duplicate names, loops back into the source
        and, given the source's schema, predicates that do not fit it."""
        out: list[tuple[str, str]] = []
        seen: dict[str, int] = {}
        for i, route in enumerate(self.routes):
            if route.name in seen:
                out.append(
                    (
                        f"routes.{i}.name",
                        f"duplicate route name {route.name!r} (also routes.{seen[route.name]})",
                    )
                )
            seen.setdefault(route.name, i)
            if route.to == self.source:
                out.append((f"routes.{i}.to", "a route cannot write back to its source topic"))
            if schema is not None:
                problem = predicate_problem(route.when, schema, self.source)
                if problem is not None:
                    out.append((f"routes.{i}.when", problem))
        if self.default == self.source:
            out.append(("default", "the default cannot be the source topic"))
        return out

    def targets(self) -> list[str]:
        """Target topics in order of first mention (the default last)."""
        names = [r.to for r in self.routes] + ([self.default] if self.default else [])
        return list(dict.fromkeys(names))


def predicate_problem(text: str, schema: pa.Schema, source: str) -> str | None:
    """Why ``text`` is no boolean predicate over ``schema``, or None. The types are
    checked by evaluating it on one row of nulls: that finds a string compared with a
    number, which a plan alone does not."""
    expr = pl.sql_expr(text)
    unknown = [c for c in dict.fromkeys(expr.meta.root_names()) if c not in schema.names]
    if unknown:
        return f"unknown column {unknown[0]!r} in {text!r}; {source} has {', '.join(schema.names)}"
    nulls = pl.from_arrow(pa.table({f.name: pa.nulls(1, f.type) for f in schema}))
    assert isinstance(nulls, pl.DataFrame)
    try:
        dtype = nulls.select(expr).to_series().dtype
    except Exception as err:  # polars raises several error types
        return f"{text!r} does not apply to the columns of {source}: {_first_line(err)}"
    if dtype != pl.Boolean:
        return f"{text!r} is not a predicate: it gives {dtype}, not a boolean"
    return None


def load_routes(path: Path | str, schema: pa.Schema | None = None) -> RouteRules:
    """Read a rule file; errors name the file and the field."""
    what = f"route rules {path}"
    return RouteRules.load(load_yaml_mapping(path, what), what, schema)


@dataclass
class RouteResult:
    rows_in: int = 0
    routed: dict[str, int] = field(default_factory=dict)  # target topic -> rows appended
    dead_lettered: int = 0
    failed_batches: int = 0  # batches dead-lettered whole because a predicate failed

    @property
    def delivered(self) -> int:
        """Rows that reached at least one target (in == delivered + dead_lettered)."""
        return self.rows_in - self.dead_lettered

    def add(self, other: RouteResult) -> None:
        self.rows_in += other.rows_in
        for name, rows in other.routed.items():
            self.routed[name] = self.routed.get(name, 0) + rows
        self.dead_lettered += other.dead_lettered
        self.failed_batches += other.failed_batches

    def as_dict(self) -> dict[str, object]:
        return {
            "rows_in": self.rows_in,
            "delivered": self.delivered,
            "dead_lettered": self.dead_lettered,
            "failed_batches": self.failed_batches,
            "routed": dict(self.routed),
        }


class Router:
    """Applies rules to batches of the source topic. Making one checks the rules against
    the source's schema and creates missing target topics like the source (schema, time
    column, partitions, key)."""

    def __init__(self, log: EventLog, rules: RouteRules, what: str = "route rules") -> None:
        self.log = log
        self.rules = rules
        try:
            self.source = log.topic(rules.source)
        except TopicNotFoundError:
            raise ConfigError(
                what, [("source", f"no topic {rules.source!r} in {log.root}")]
            ) from None
        problems = rules.problems(self.source.schema)
        if problems:
            raise ConfigError(what, problems)
        self.targets = {name: self._target(name, what) for name in rules.targets()}
        self.dead = DeadLetters(log, self.source)
        # Per route, the index of its target; the predicates, null as false.
        names = list(self.targets)
        self._route_target = [names.index(r.to) for r in rules.routes]
        self._predicates = [pl.sql_expr(r.when).fill_null(False) for r in rules.routes]
        # A target laid out like the source gets each row in the source's partition, so
        # the order within a partition is kept; others place rows by their own key.
        self._keep_partition = {
            name: t.config.key is None and len(t.parts) == len(self.source.parts)
            for name, t in self.targets.items()
        }

    @classmethod
    def from_file(cls, log: EventLog, path: Path | str) -> Router:
        return cls(log, load_routes(path), what=f"route rules {path}")

    def _target(self, name: str, what: str) -> Topic:
        src = self.source
        field_name = next(
            (f"routes.{i}.to" for i, r in enumerate(self.rules.routes) if r.to == name), "default"
        )
        if not self.log.exists(name):
            return self.log.create_topic(
                name,
                src.schema,
                time_column=src.time_column,
                partitions=len(src.parts),
                key=src.config.key,
                exist_ok=True,
            )
        topic = self.log.topic(name)
        if not topic.schema.equals(src.schema):
            raise ConfigError(
                what, [(field_name, f"topic {name!r} exists with a schema unlike {src.name!r}")]
            )
        if topic.config.transactional:
            raise ConfigError(
                what, [(field_name, f"topic {name!r} is transactional (a pipeline's output)")]
            )
        return topic

    # -- one batch -----------------------------------------------------------------------
    def route(self, batch: pa.Table, partition: int = 0, first_offset: int = 0) -> RouteResult:
        """Route one batch read from ``partition`` of the source at ``first_offset``
        (the offsets are kept on dead letters)."""
        result = RouteResult(rows_in=batch.num_rows)
        if batch.num_rows == 0:
            return result
        df = pl.from_arrow(batch)
        assert isinstance(df, pl.DataFrame)
        try:
            masks = self._masks(df)
        except Exception as err:  # a predicate failed on this data: the batch is dead
            reason = self._failure(df, err)
            self._dead_letter(batch, np.ones(batch.num_rows, bool), partition, first_offset, reason)
            result.dead_lettered = batch.num_rows
            result.failed_batches = 1
            return result
        for i, (name, target) in enumerate(self.targets.items()):
            rows = batch.filter(masks.get_column(f"t{i}").to_arrow())
            if rows.num_rows:
                target.append(rows, partition=partition if self._keep_partition[name] else None)
                result.routed[name] = rows.num_rows
        unmatched = masks.get_column("unmatched").to_numpy()
        if unmatched.any():
            self._dead_letter(batch, unmatched, partition, first_offset, NO_ROUTE)
            result.dead_lettered = int(unmatched.sum())
        return result

    def _masks(self, df: pl.DataFrame) -> pl.DataFrame:
        """One boolean column per target (``t0``, ``t1``...) and ``unmatched``: a select
        of every predicate (``r0``, ``r1``...), then a select of the masks."""
        n = range(len(self._predicates))
        # The row index keeps the height when every predicate is a constant (``true``).
        flags = df.select(
            pl.int_range(pl.len()).alias("row"),
            *(p.alias(f"r{i}") for i, p in enumerate(self._predicates)),
        )
        none = ~pl.any_horizontal([pl.col(f"r{i}") for i in n])
        first = pl.coalesce([pl.when(pl.col(f"r{i}")).then(pl.lit(i, pl.Int32)) for i in n])
        cols = []
        for t, name in enumerate(self.targets):
            mine = [i for i in n if self._route_target[i] == t]
            if not mine:
                takes = pl.lit(False)
            elif self.rules.mode == "first_match":
                takes = first.is_in(mine).fill_null(False)
            else:
                takes = pl.any_horizontal([pl.col(f"r{i}") for i in mine])
            if name == self.rules.default:
                takes = takes | none
            cols.append(takes.alias(f"t{t}"))
        unmatched = none if self.rules.default is None else pl.lit(False)
        return flags.select(pl.col("row"), *cols, unmatched.alias("unmatched"))

    def _failure(self, df: pl.DataFrame, err: Exception) -> str:
        """Name the route whose predicate fails (one select per route, on the error path
        only)."""
        for route, predicate in zip(self.rules.routes, self._predicates, strict=True):
            try:
                df.select(predicate)
            except Exception as route_err:
                return f"route {route.name!r} failed ({route.when}): {_first_line(route_err)}"
        return f"routing failed: {_first_line(err)}"

    def _dead_letter(
        self, batch: pa.Table, mask: np.ndarray, partition: int, first_offset: int, reason: str
    ) -> None:
        rows = batch.filter(arrays.booleans(mask))
        offsets = (np.flatnonzero(mask) + first_offset).tolist()
        self.dead.write(
            dead_letters(
                self.source.name,
                str(partition),
                offsets,
                [reason] * len(offsets),
                encode_json(rows),
            )
        )

    # -- consuming the source ------------------------------------------------------------
    def run(
        self,
        group: str = "router",
        max_rows: int = 10_000,
        follow: bool = False,
        poll_interval_s: float = 0.5,
        stop: Callable[[], bool] | None = None,
    ) -> RouteResult:
        """Route the source from consumer group ``group``'s committed offsets.

        Bounded (``follow=False``): up to the ends the source has when the run starts.
        ``follow=True``: keep polling until ``stop()`` is true. After each batch is
        appended to its targets the group's offset is committed: at-least-once, so a
        crash between the two routes that batch again (targets can hold it twice).
        """
        totals = RouteResult()
        consumer_group = ConsumerGroup(self.source, group)
        positions = consumer_group.committed()
        ends = None if follow else self.source.committed_ends()
        while True:
            progressed = False
            for p, position in list(positions.items()):
                limit = max_rows if ends is None else min(max_rows, ends[p] - position)
                if limit <= 0:
                    continue
                batch = self.source.read(p, position, limit)
                if batch.num_rows == 0:
                    continue
                totals.add(self.route(batch, p, position))
                positions[p] = position + batch.num_rows
                consumer_group.commit({p: positions[p]})
                progressed = True
            if stop is not None and stop():
                break
            if not progressed:
                if not follow:
                    break
                time.sleep(poll_interval_s)
        return totals


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
