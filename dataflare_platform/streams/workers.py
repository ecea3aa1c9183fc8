"""Partition-parallel workers: a stream pipeline run as N workers, each owning whole
source partitions, each partition with its own state and checkpoint.

A worker runs one continuous engine per partition it owns (a *unit*): the unit reads that
partition only and checkpoints under its own key (``<pipeline>#p<N>``) in the pipeline's
sink, with the output, in one transaction. So a partition's state and offsets move with
the partition: when N changes, or a worker dies and another takes its partitions, the
new owner resumes each partition exactly where its last commit left it, and the output
stays exactly once. Keyed state may be split this way only when every key lives in one
partition (``streams.parallel.refusals``); anything else is refused before a unit starts.
A pipeline that ran as one run before carries on from there: its single checkpoint is
split into the unit checkpoints before any unit starts (``streams.split``).

**Ownership** is an exclusive lease per partition: an ``flock`` on
``<leases>/<pipeline>/p<N>.lock``. The operating system drops it when its holder dies
(SIGKILL and OOM included), so a successor takes the partition over as soon as the old
owner is gone, and two workers never run one partition at once (a worker started while
the previous owner is still finishing waits for it). The lease is local to one machine
(or a filesystem with working ``flock``); across machines the sink's own writer lock per
checkpoint (PostgreSQL advisory lock) still refuses a second writer.

**Ownership by consumer group** instead, for a pipeline whose one source is a Kafka topic
declared with ``membership:`` (``connectors.kafka.membership``): each worker is a member
of the source's consumer group, every worker is given every partition, and Kafka's
rebalances decide who runs which. A revoked partition's unit finishes its batch and
commits before the member gives the partition up; an assigned one resumes from its
checkpoint, as with leases. This spreads partitions over workers on any number of
machines without a shared filesystem, at the price of the group's timeouts (a killed
worker's partitions wait for its session timeout, docs/events.md).

Each unit's watermark is its own partition's: an idle partition never holds back the
others; its own windows close when its idle timeout (``watermark.idle_timeout``) passes.

No Dagster here: the worker runs (one Dagster run per worker) build on this.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dataflare_platform.connectors.kafka import KafkaSourceSettings, group_id
from dataflare_platform.engine.io import Sink
from dataflare_platform.engine.runner import RunnerConfig, RunResult
from dataflare_platform.errors import ConfigError, InvalidInputError
from dataflare_platform.events.log import EventLog
from dataflare_platform.streams import bind
from dataflare_platform.streams.continuous import CheckpointReport, ContinuousRun
from dataflare_platform.streams.lag import unit_prefix
from dataflare_platform.streams.parallel import ParallelismError, refusals
from dataflare_platform.streams.spec import PipelineSpec
from dataflare_platform.streams.split import SplitReport, split_single_run

if TYPE_CHECKING:  # librdkafka loads only when a group-owned pipeline runs
    from dataflare_platform.connectors.kafka.membership import GroupMember

__all__ = [
    "PartitionLease",
    "PartitionWorker",
    "UnitReport",
    "check_splittable",
    "group_membership",
    "unit_key",
]

LEASES_DIR = "_leases"


def unit_key(pipeline: str, partition: int) -> str:
    """The checkpoint key of one partition of a partition-parallel pipeline."""
    return f"{unit_prefix(pipeline)}{partition}"


class PartitionLease:
    """An exclusive claim on one partition of a pipeline (see the module)."""

    def __init__(self, root: Path, pipeline: str, partition: int) -> None:
        if partition < 0:
            raise InvalidInputError(f"partition {partition} is negative")
        self.path = Path(root) / pipeline / f"p{partition}.lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lease if no live process holds it; never waits."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for operators
        self._fd = fd
        return True

    def holder(self) -> str:
        """The pid the lease file names (its last holder's, if nobody holds it now)."""
        try:
            return self.path.read_text().strip()
        except FileNotFoundError:
            return ""

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def group_membership(spec: PipelineSpec) -> tuple[str, KafkaSourceSettings] | None:
    """The Kafka source whose consumer group owns the partitions (``membership:``), with
    its name; None when leases do. Refused (``ConfigError`` naming the field) unless it
    is the pipeline's only source: the group hands out that topic's partitions."""
    members = [
        (name, source)
        for name, source in spec.sources.items()
        if isinstance(source, KafkaSourceSettings) and source.membership is not None
    ]
    if not members:
        return None
    name, source = members[0]
    if len(spec.sources) > 1:
        raise ConfigError(
            f"pipeline {spec.name!r}",
            [
                (
                    f"sources.{name}.membership",
                    "consumer-group ownership needs the Kafka source to be the pipeline's"
                    f" only source (it has {sorted(spec.sources)})",
                )
            ],
        )
    return name, source


@dataclass(frozen=True)
class UnitReport:
    """A committed checkpoint of one owned partition."""

    partition: int
    report: CheckpointReport


def check_splittable(
    spec: PipelineSpec,
    log: EventLog,
    default_dir: Path,
    plugins: dict | None = None,
    on_split: Callable[[SplitReport], None] | None = None,
) -> list[int]:
    """The source partition numbers of ``spec``, after refusing (``ParallelismError``,
    every reason at once) a pipeline whose state cannot be split by partition or whose
    sources cannot read one partition alone.

    A pipeline that made progress as one run (its sink holds a checkpoint under the
    pipeline's own name) has that checkpoint split into one checkpoint per partition
    here, atomically and once (``streams.split``), so the units carry on exactly where
    the single run stopped; ``on_split`` hears about it. State the split cannot
    attribute to partitions is refused, and the single checkpoint stays as it was."""
    whole = bind.build(spec, log=log, default_dir=default_dir, plugins=plugins)
    probe = None
    try:
        reasons = refusals(whole)
        counts = {n.source.name: n.source.partitions() for n in whole.sources()}  # type: ignore[union-attr]
        numbers = sorted({int(p) for parts in counts.values() for p in parts if p.isdigit()})
        probe = bind.build(spec, log=log, default_dir=default_dir, plugins=plugins, partitions=(0,))
        for node in probe.sources():
            if node.source.partitions() != ["0"]:  # type: ignore[union-attr]
                reasons.append(
                    f"source {node.source.name!r} cannot read one partition alone "  # type: ignore[union-attr]
                    "(partition-parallel runs read embedded-log topics, Kafka topics, and NATS"
                    " or Redis sources declared with partitions: N)"
                )
        probe.sink.close()  # type: ignore[union-attr]
        if reasons:
            whole.sink.close()  # type: ignore[union-attr]
            raise ParallelismError(
                f"pipeline {spec.name!r} cannot run partition-parallel: " + "; ".join(reasons)
            )
        try:
            report = split_single_run(whole, whole.sink, numbers, unit_key)  # type: ignore[arg-type]
        except ParallelismError as err:
            raise ParallelismError(
                f"pipeline {spec.name!r} cannot switch from one run to partition-parallel"
                f" workers: {err}. It keeps running as one run; to start the workers from"
                " nothing instead, reset it first"
            ) from None
    finally:  # opened to be asked, never read
        bind.close_sources(whole)
        bind.close_sources(probe)
    if report is not None and on_split is not None:
        on_split(report)
    return numbers


class PartitionWorker:
    """One worker of a partition-parallel pipeline: the units of the partitions it owns.

    ``run(stop)`` claims each partition's lease (waiting, while ``stop`` is unset, for a
    previous owner that still holds one), runs a continuous engine per claimed partition,
    and hands each unit's checkpoint reports to ``on_report`` (on the caller's thread).
    When ``stop`` is set, every unit finishes its batch and commits a last checkpoint,
    then the leases are released. A unit's failure stops the others the same way and is
    raised. ``sinks``: a sink per partition instead of the declared one (benchmarks).

    With a Kafka source declared with ``membership:``, the worker owns partitions as a
    member of the source's consumer group instead (see the module): ``partitions`` must
    then be all of them, and the group's rebalances start and stop units while it runs.

    The pipeline is refused unless it can run partition-parallel (``check_splittable``).
    A caller that has just run that check for the same spec, log and directory passes
    the partition numbers it returned as ``checked_partitions``, and it is not run again.
    """

    def __init__(
        self,
        spec: PipelineSpec,
        log: EventLog,
        default_dir: Path,
        partitions: Sequence[int],
        *,
        config: RunnerConfig | None = None,
        plugins: dict | None = None,
        lease_root: Path | None = None,
        checked_partitions: Sequence[int] | None = None,
        sinks: Callable[[int], Sink] | None = None,
    ) -> None:
        if not partitions:
            raise InvalidInputError(f"a worker of {spec.name!r} needs at least one partition")
        known = (
            list(checked_partitions)
            if checked_partitions is not None
            else check_splittable(spec, log, default_dir, plugins)
        )
        unknown = sorted(set(partitions) - set(known))
        if unknown:
            raise InvalidInputError(
                f"pipeline {spec.name!r} has no partition(s) {unknown}; it has {known}"
            )
        self.group = group_membership(spec)
        if self.group is not None and sorted(set(partitions)) != sorted(known):
            raise InvalidInputError(
                f"pipeline {spec.name!r}: its consumer group decides which worker owns which"
                f" partition (sources.{self.group[0]}.membership), so every worker is given"
                f" all of them ({known}), not {sorted(set(partitions))}"
            )
        self.spec = spec
        self.log = log
        self.default_dir = default_dir
        self.partitions = sorted(set(partitions))
        self.config = config
        self.plugins = plugins
        root = lease_root if lease_root is not None else Path(default_dir) / LEASES_DIR
        self.leases = (
            {p: PartitionLease(root, spec.name, p) for p in self.partitions}
            if self.group is None
            else {}
        )
        self.units: dict[int, ContinuousRun] = {}
        self.stopped: dict[int, ContinuousRun] = {}  # units whose partition moved away
        self.pumps: list[threading.Thread] = []
        self.sinks = sinks

    def _start(self, partition: int) -> None:
        self.units[partition] = ContinuousRun(
            self.spec,
            self.log,
            self.default_dir,
            plugins=self.plugins,
            config=self.config,
            partitions=(partition,),
            checkpoint_key=unit_key(self.spec.name, partition),
            sink=None if self.sinks is None else self.sinks(partition),
        ).start()

    def run(
        self,
        stop: threading.Event,
        on_report: Callable[[UnitReport], None] | None = None,
        poll_s: float = 0.2,
        on_poll: Callable[[], None] | None = None,
    ) -> dict[int, RunResult | None]:
        """Run the owned partitions until ``stop`` is set (or a unit fails: raised).
        ``on_report`` gets each unit's checkpoint reports and ``on_poll`` is called
        every ``poll_s``, both on the caller's thread: a stream that goes quiet commits
        no checkpoint, so what must happen on time (the autoscaler's measurements, which
        must show an idle worker as idle) hangs off ``on_poll``."""
        reports: queue.Queue[UnitReport] = queue.Queue()
        error: BaseException | None = None
        member: GroupMember | None = None

        def deliver(unit: UnitReport) -> None:
            if member is not None:
                member.commit(self._group_offsets(unit.partition, unit.report.offsets))
            if on_report is not None:
                on_report(unit)

        try:  # joined inside: a stop while the group is joined still cleans up
            member = self._join(reports) if self.group is not None else None
            while not stop.is_set() and error is None:
                if member is not None:
                    member.poll()  # rebalance callbacks start and stop units
                else:
                    for partition, lease in self.leases.items():
                        if partition not in self.units and lease.try_acquire():
                            self._start(partition)
                            self.pumps.append(self._pump(partition, reports))
                error = self._failed()
                self._drain(reports, deliver, poll_s)
                if on_poll is not None:
                    on_poll()
        finally:
            self._stop_units(list(self.units))
            for pump in self.pumps:
                pump.join()
            self._drain(reports, deliver, 0)
            if member is not None:
                member.close()
            for lease in self.leases.values():
                lease.release()
        error = error or self._failed()
        if error is not None:
            raise error
        return {p: u.result for p, u in {**self.stopped, **self.units}.items()}

    def _join(self, reports: queue.Queue[UnitReport]) -> GroupMember:
        """Join the source's consumer group; its rebalance callbacks run units."""
        from dataflare_platform.connectors.kafka.membership import GroupMember

        assert self.group is not None
        name, settings = self.group
        assert settings.membership is not None

        def assigned(partitions: list[int]) -> None:
            for partition in partitions:
                if partition not in self.units:
                    self._start(partition)
                    self.pumps.append(self._pump(partition, reports))

        def revoked(partitions: list[int]) -> dict[int, int]:
            self._stop_units(partitions)
            final: dict[int, int] = {}
            for partition in partitions:
                result = self.stopped[partition].result if partition in self.stopped else None
                if result is not None:
                    final.update(self._group_offsets(partition, result.checkpoint.offsets))
            return final

        return GroupMember(
            settings,
            settings.membership,
            group_id(settings, self.spec.name),
            assigned=assigned,
            revoked=revoked,
            lost=self._stop_units,
            where=f"sources.{name}",
        )

    def _group_offsets(self, partition: int, offsets: dict[str, int]) -> dict[int, int]:
        """A unit's checkpoint offset of its own partition (key ``<source>/<n>``)."""
        key = f"{self.group[0] if self.group else ''}/{partition}"
        return {partition: offsets[key]} if key in offsets else {}

    def _stop_units(self, partitions: list[int]) -> None:
        """Each unit finishes its batch and commits a last checkpoint (all at once)."""
        units = [(p, self.units.pop(p)) for p in partitions if p in self.units]
        for _, unit in units:
            unit.stop_event.set()
        for partition, unit in units:
            unit.stop()
            self.stopped[partition] = unit

    def _pump(self, partition: int, out: queue.Queue[UnitReport]) -> threading.Thread:
        unit = self.units[partition]

        def pump() -> None:
            with contextlib.suppress(BaseException):  # the error is read from the unit
                for report in unit.reports():
                    out.put(UnitReport(partition, report))

        thread = threading.Thread(target=pump, name=f"df-unit-{partition}", daemon=True)
        thread.start()
        return thread

    def _failed(self) -> BaseException | None:
        for unit in [*self.units.values(), *self.stopped.values()]:
            if not unit.running and unit.error is not None:
                return unit.error
        return None

    @staticmethod
    def _drain(
        reports: queue.Queue[UnitReport],
        on_report: Callable[[UnitReport], None] | None,
        wait_s: float,
    ) -> None:
        deadline = time.monotonic() + wait_s
        while True:
            timeout = max(0.0, deadline - time.monotonic())
            try:
                item = reports.get(timeout=timeout) if timeout else reports.get_nowait()
            except queue.Empty:
                return
            if on_report is not None:
                on_report(item)
