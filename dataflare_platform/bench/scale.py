"""Partition-parallel scaling: Nexmark q1 and q5 over a 4-partition embedded-log topic
keyed by auction, run as 1 worker and as 2 workers (each worker a process of its own,
``bench.scale_worker``), side by side in one invocation; and the recovery of a worker
SIGKILLed mid-run.

Throughput. Every worker process is started and ready (imports done, pipeline built)
before the clock starts; the time runs from "go" to the last partition committing its
topic's end offset (``events / seconds``). Commits come every ``checkpoint_interval``
seconds, so the end is seen within that much, on both sides alike. Each unit writes a
``DigestSink`` (row count and an order-independent digest of the rows, checkpoints in
memory): a sink several processes may write, whose output can be compared between the
1- and 2-worker runs. ``speedup = events_per_s(2 workers) / events_per_s(1 worker)``;
runs alternate (1, 2, 2, 1, ...) and the fastest of ``repeat`` counts on each side.

Per core (``pin_cores``): the same runs again, in the same invocation and interleaved
with the others, with each worker process pinned to a core of its own
(``os.sched_setaffinity``: 1 worker on one core, 2 workers on one core each) and Polars,
Rayon and Arrow limited to one thread (``PINNED_ENV``). One worker may otherwise use both
cores of a 2-core machine (Polars' pool, the units' source and sink threads), leaving a
second process no core of its own; pinned, the ratio is the partition-parallel speed-up
per core, beside the machine's total. Each side reports the CPU of its workers by thread
role and the engine's counters (operators, idle, blocked), where a worker's time goes.

q5 as shipped ranks the auctions of each window (``top``), which spans every key and
is refused for partition-parallel runs; the benchmark runs its keyed form (bid count
per auction per sliding window, no ranking) and reports the refusal.

Recovery (PostgreSQL sink, the sink that takes several writers and commits output and
checkpoint in one transaction): the keyed q5 as 2 workers over the first half of the
bids; once the worker owning partitions 0 and 2 has committed both, the second half is
appended and that worker SIGKILLed at once, with the new events in flight, and a
replacement process started (what Dagster's retry of the worker run does, without the
retry delay); ``recovery_s`` runs from the kill to the replacement committing every
partition the killed worker owned. The table must equal, row for row, that of the same
pipeline run to the end by 2 workers without a kill.
"""

from __future__ import annotations

import json
import os
import queue
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from dataflare_platform.bench.common import machine
from dataflare_platform.errors import DataflareError, InvalidInputError
from dataflare_platform.sql_names import quote_identifier

PARTITIONS = 4
TOPIC = "bids"
SOURCE = "bids"
COLUMNS = ("auction", "bidder", "price", "date_time")
# A pinned worker's environment: one thread in each native pool, the process on one core.
# (DuckDB is not on this path: the units write a DigestSink.)
PINNED_ENV = {
    "POLARS_MAX_THREADS": "1",
    "RAYON_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",  # Arrow's CPU pool takes its size from it
}
MODES = ("free", "pinned")

STEPS = {
    # Nexmark q1: price in euros.
    "q1": ["{with_columns: {price: 'price * 0.908'}}"],
    # Nexmark q5, keyed form: bids per auction per 10 s window sliding by 2 s.
    "q5": ["{key_by: [auction]}", "{window: {sliding: {size: 10s, slide: 2s}, agg: {num: count}}}"],
}
# q5 as shipped (hot_items): the top auction(s) of each window.
Q5_SHIPPED = ["{key_by: [auction]}", "{window: {sliding: {size: 10s, slide: 2s}, "
              "agg: {num: count}, top: {by: num}}}"]  # fmt: skip


def spec_yaml(name: str, steps: list[str], sink: str) -> str:
    lines = "\n".join(f"      - {s}" for s in steps)
    return f"""name: {name}
watermark: {{out_of_orderness: 4s}}
sources:
  {SOURCE}: {{kind: topic, topic: {TOPIC}, columns: [{", ".join(COLUMNS)}]}}
streams:
  out:
    from: {SOURCE}
    steps:
{lines}
output: out
sink: {sink}
"""


def bid_chunks(events: int, seed: int = 42):
    """The Nexmark bids of ``events`` generated events, chunk by chunk."""
    from dataflare_platform.datagen import NexmarkConfig, NexmarkGenerator

    generator = NexmarkGenerator(
        NexmarkConfig(events=events, seed=seed, chunk_events=min(events, 1_000_000))
    )
    for index in generator.chunks():
        yield generator.chunk(index).tables(decode=True)["bids"].select(list(COLUMNS))


def topic(log_dir: Path, schema):
    """The 4-partition topic keyed by auction the benchmark reads."""
    from dataflare_platform.events.log import EventLog

    return EventLog(log_dir).create_topic(
        TOPIC, schema, partitions=PARTITIONS, key="auction", exist_ok=True
    )


def generate(log_dir: Path, events: int) -> dict[int, int]:
    """Bids of ``events`` generated events into the topic; its end offset per partition."""
    appended = None
    for bids in bid_chunks(events):
        appended = topic(log_dir, bids.schema)
        appended.append(bids)
    assert appended is not None
    return appended.committed_ends()


def write_ends(path: Path, ends: dict[int, int]) -> Path:
    """The end offsets the workers stop at (written whole, then renamed into place)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({str(p): n for p, n in ends.items()}))
    tmp.replace(path)
    return path


class ScaleBenchError(DataflareError):
    """A worker process of the benchmark failed, or made no progress in time."""


@dataclass
class Worker:
    """A running ``scale_worker`` process and the JSON lines it printed."""

    proc: subprocess.Popen
    partitions: list[int]
    started: float
    lines: queue.Queue = field(default_factory=queue.Queue)
    seen: list[dict] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    def pump(self) -> None:
        def read_out() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                if line.startswith("{"):
                    self.lines.put(json.loads(line))
            self.lines.put(None)

        def read_err() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.stderr.append(line)
                del self.stderr[:-50]

        threading.Thread(target=read_out, daemon=True).start()
        threading.Thread(target=read_err, daemon=True).start()

    def next(self, deadline: float) -> dict | None:
        """The next line (None: the process closed its output)."""
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            raise ScaleBenchError(f"worker {self.partitions}: no progress in time")
        try:
            item = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise ScaleBenchError(f"worker {self.partitions}: no progress in time") from None
        if item is not None:
            self.seen.append(item)
        return item

    def until(self, deadline: float, what) -> dict:
        while True:
            item = self.next(deadline)
            if item is None:
                raise ScaleBenchError(
                    f"worker {self.partitions} ended (rc {self.proc.wait()}): "
                    + "".join(self.stderr)[-2000:]
                )
            if what(item):
                return item

    def finish(self, deadline: float) -> None:
        while self.next(deadline) is not None:
            pass
        rc = self.proc.wait(max(1.0, deadline - time.monotonic()))
        if rc != 0:
            raise ScaleBenchError(f"worker {self.partitions} exited {rc}: " + "".join(self.stderr))


def start_worker(
    root: Path,
    spec: Path,
    partitions: list[int],
    batch_rows: int,
    interval: float,
    ends_file: Path,
    **kw,
) -> Worker:
    command = [
        sys.executable,
        "-m",
        "dataflare_platform.bench.scale_worker",
        "--spec",
        str(spec),
        "--log",
        str(root / "log"),
        "--dir",
        str(root / "streams"),
        "--ends-file",
        str(ends_file),
        "--source",
        SOURCE,
        "--partitions",
        ",".join(map(str, partitions)),
        "--batch-rows",
        str(batch_rows),
        "--checkpoint-interval",
        str(interval),
        "--sink",
        kw.get("sink", "digest"),
        *(["--no-wait"] if kw.get("no_wait") else []),
    ]
    cpus: set[int] | None = kw.get("cpus")
    pinned_env = PINNED_ENV if cpus is not None else {}
    proc = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **pinned_env},
    )
    if cpus is not None:
        # At once, while the interpreter starts (one thread): threads inherit it. Threads
        # started before this call are pinned by ``pin_threads`` once the worker is ready.
        os.sched_setaffinity(proc.pid, cpus)
    worker = Worker(proc, partitions, time.time())
    worker.pump()
    return worker


def pin_threads(pid: int, cpus: set[int]) -> list[int]:
    """Pin every thread of process ``pid`` to ``cpus`` (``sched_setaffinity`` applies to
    one thread); return the CPUs its threads may now use, all of them together."""
    allowed: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
            allowed |= os.sched_getaffinity(int(task.name))
        except ProcessLookupError:
            continue  # ended in between
    return sorted(allowed)


def core_sets(workers: int) -> list[set[int]]:
    """A core of its own for each of ``workers`` processes, from the CPUs this process
    may use."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < workers:
        raise InvalidInputError(
            f"pinning {workers} workers needs {workers} cores; this process may use {cores}"
        )
    return [{cores[i]} for i in range(workers)]


def owned(workers: int) -> list[list[int]]:
    """Partitions of each worker: every ``workers``-th (``streams.parallel.assign``)."""
    return [list(range(PARTITIONS))[i::workers] for i in range(workers)]


def cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def throughput_run(
    root: Path,
    query: str,
    workers: int,
    ends: dict[int, int],
    batch_rows: int,
    interval: float,
    timeout_s: float,
    run_no: int,
    pinned: bool = False,
) -> dict[str, object]:
    """One measured run: ``workers`` processes over every partition, from "go" to every
    partition's end committed; ``pinned``: each process on a core of its own."""
    name = f"scale_{query}_w{workers}_r{run_no}" + ("_pinned" if pinned else "")
    spec = root / f"{name}.yaml"
    spec.write_text(spec_yaml(name, STEPS[query], "{kind: discard}"))
    deadline = time.monotonic() + timeout_s
    cpu0 = cpu_children()
    ends_file = write_ends(root / f"{name}.ends.json", ends)
    cores = core_sets(workers) if pinned else [None] * workers
    procs = [
        start_worker(root, spec, parts, batch_rows, interval, ends_file, cpus=cpus)
        for parts, cpus in zip(owned(workers), cores, strict=True)
    ]
    try:
        ready = [w.until(deadline, lambda i: "ready" in i) for w in procs]
        affinity = [
            pin_threads(w.proc.pid, cpus) if cpus is not None else r["cpus"]
            for w, r, cpus in zip(procs, ready, cores, strict=True)
        ]
        startup = max(r["ready"] - w.started for r, w in zip(ready, procs, strict=True))
        go = time.time()
        for w in procs:
            assert w.proc.stdin is not None
            w.proc.stdin.write("go\n")
            w.proc.stdin.flush()
        for w in procs:
            w.finish(deadline)
    finally:
        for w in procs:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
    cpu = cpu_children() - cpu0
    reached: dict[int, float] = {}
    finals: dict[int, dict] = {}
    worker_cpu = []
    run_cpu = 0.0
    thread_cpu: dict[str, float] = {}
    cpus_seen = []
    for w in procs:
        for item in w.seen:
            p = item.get("partition")
            if p is not None and item["offset"] >= ends[p] and p not in reached:
                reached[p] = item["at"]
            if "final" in item:
                finals[item["final"]] = item
            if "cpu_s" in item:
                worker_cpu.append(item["cpu_s"])
                run_cpu += item["run_cpu_s"]
                cpus_seen.append(item["cpus_seen"])
                for role, cpu_s in item["thread_cpu_s"].items():
                    thread_cpu[role] = round(thread_cpu.get(role, 0.0) + cpu_s, 2)
    if set(reached) != set(ends) or set(finals) != set(ends):
        raise ScaleBenchError(f"{name}: partitions {sorted(set(ends) - set(reached))} unfinished")
    seconds = max(reached.values()) - go
    events = sum(ends.values())
    return {
        "seconds": round(seconds, 4),
        "events_per_s": round(events / seconds),
        "startup_s": round(startup, 3),
        # CPU of the worker processes, start-up included; over the measured wall time,
        # roughly how many cores the run kept busy.
        "cpu_s": round(cpu, 3),
        "worker_cpu_s": worker_cpu,
        # CPU from "go" to the end (the workers' stop included) over the wall time: the
        # cores the run kept busy. Polars and Arrow release the GIL, so one process
        # running 4 units can use more than one core.
        "run_cpu_s": round(run_cpu, 3),
        "cores_busy": round(run_cpu / seconds, 2),
        "partition_done_s": {str(p): round(t - go, 3) for p, t in sorted(reached.items())},
        "output": {
            str(p): {"events_in": f["events_in"], "rows": f["rows"], "digest": f["digest"]}
            for p, f in sorted(finals.items())
        },
        "pinned": pinned,
        # The CPUs each worker's threads could use: at "go" (after pinning) and any seen
        # during the run; and the size of each worker's Polars pool.
        "worker_cpus": affinity,
        "worker_cpus_seen": cpus_seen,
        "polars_threads": [r["polars_threads"] for r in ready],
        # Where the workers' CPU went, by thread role, from "go" to the end (all workers).
        "thread_cpu_s": dict(sorted(thread_cpu.items(), key=lambda kv: -kv[1])),
        # The engine's own counters per partition: seconds in operators, waiting for input
        # (idle), the source blocked on a full queue, the operators blocked on the sink.
        "engine": {str(p): f["engine"] for p, f in sorted(finals.items())},
    }


def _per(events: int, seconds: float) -> int | None:
    return round(events / seconds) if seconds > 0 else None


def throughput(
    root: Path,
    query: str,
    ends: dict[int, int],
    batch_rows: int,
    interval: float,
    repeat: int,
    timeout_s: float,
    pin_cores: bool = False,
) -> dict[str, object]:
    """Both sides (1 and 2 workers) of ``query``; with ``pin_cores`` both again, pinned,
    interleaved with the free runs (free 1, 2, pinned 1, 2; then the reverse order ...)
    so a change in the neighbours' load falls on every mode and side alike."""
    modes = MODES if pin_cores else MODES[:1]
    runs: dict[str, dict[int, list[dict]]] = {m: {1: [], 2: []} for m in modes}
    for r in range(repeat):
        order = (1, 2) if r % 2 == 0 else (2, 1)
        for mode in modes if r % 2 == 0 else modes[::-1]:
            for workers in order:
                runs[mode][workers].append(
                    throughput_run(
                        root,
                        query,
                        workers,
                        ends,
                        batch_rows,
                        interval,
                        timeout_s,
                        r,
                        pinned=mode == "pinned",
                    )
                )
    outputs = [run["output"] for by in runs.values() for rs in by.values() for run in rs]
    same = all(o == outputs[0] for o in outputs)
    complete = all(
        outputs[0][str(p)]["events_in"] == end for p, end in ends.items()
    )  # every event read once
    result = {
        "query": query,
        "form": {"q1": "nexmark q1", "q5": "nexmark q5 keyed (no top)"}[query],
        **_sides(runs["free"], sum(ends.values())),
        "output_rows": sum(v["rows"] for v in outputs[0].values()),
        "output_identical": same,
        "every_event_read_once": complete,
    }
    if pin_cores:
        result["pinned"] = _sides(runs["pinned"], sum(ends.values()))
    return result


def _sides(runs: dict[int, list[dict]], events: int) -> dict[str, object]:
    """The fastest run of each side and the ratio, with every run."""
    best = {w: min(rs, key=lambda x: x["seconds"]) for w, rs in runs.items()}
    one, two = best[1], best[2]
    return {
        "events_per_s_1_worker": one["events_per_s"],
        "events_per_s_2_workers": two["events_per_s"],
        "speedup": round(two["events_per_s"] / one["events_per_s"], 3),
        # CPU cost per event of each side (from "go" to the end): equal values mean the
        # second process adds no work, and a speed-up below 2 comes from the cores the
        # run could get (one worker already uses more than one: Polars threads).
        "events_per_cpu_s_1_worker": _per(events, one["run_cpu_s"]),
        "events_per_cpu_s_2_workers": _per(events, two["run_cpu_s"]),
        "cores_busy_1_worker": one["cores_busy"],
        "cores_busy_2_workers": two["cores_busy"],
        "seconds_1_worker": one["seconds"],
        "seconds_2_workers": two["seconds"],
        "runs": {"1": runs[1], "2": runs[2]},
    }


def q5_refusal(root: Path) -> str:
    """Why q5 as shipped cannot run partition-parallel (``parallel.refusals``)."""
    from dataflare_platform.events.log import EventLog
    from dataflare_platform.streams import bind
    from dataflare_platform.streams.parallel import refusals
    from dataflare_platform.streams.spec import PipelineSpec

    path = root / "q5_shipped.yaml"
    path.write_text(spec_yaml("q5_shipped", Q5_SHIPPED, "{kind: discard}"))
    pipeline = bind.build(
        PipelineSpec.from_yaml(path), log=EventLog(root / "log"), default_dir=root / "streams"
    )
    return "; ".join(refusals(pipeline))


def _table(dsn: str, schema: str, table: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        quoted = f"{quote_identifier(schema)}.{quote_identifier(table)}"
        return sorted(conn.execute(f"SELECT * FROM {quoted}").fetchall())


def recovery(
    root: Path,
    events: int,
    dsn: str,
    batch_rows: int,
    interval: float,
    timeout_s: float,
) -> dict[str, object]:
    """The keyed q5 into PostgreSQL as 2 workers over the first half of the bids; the
    second half is appended and one worker SIGKILLed at once, with work in flight, and a
    replacement started; then the same pipeline (another table) run by 2 workers without
    a kill over all of it as the reference."""
    import uuid

    import psycopg
    import pyarrow as pa

    bids = pa.concat_tables(list(bid_chunks(events)))
    half = bids.num_rows // 2
    log_dir = root / "log"
    tp = topic(log_dir, bids.schema)
    tp.append(bids.slice(0, half))
    schema = f"dataflare_bench_{uuid.uuid4().hex[:10]}"
    parts = owned(2)
    kw = {"sink": "spec", "no_wait": True}

    def spec_for(name: str) -> Path:
        spec = root / f"{name}.yaml"
        sink = f'{{kind: postgres, dsn: "{dsn}", table: {name}, schema_name: {schema}}}'
        spec.write_text(spec_yaml(name, STEPS["q5"], sink))
        return spec

    procs: list[Worker] = []
    try:
        deadline = time.monotonic() + timeout_s
        spec = spec_for("scale_q5_killed")
        ends_file = root / "killed.ends.json"
        procs = [start_worker(root, spec, p, batch_rows, interval, ends_file, **kw) for p in parts]
        victim, survivor = procs
        last: dict[int, int] = {}

        def committed_all(item: dict) -> bool:
            if item.get("partition") is not None:
                last[item["partition"]] = item["offset"]
            return set(last) == set(victim.partitions)

        # The victim has committed each of its partitions once...
        victim.until(deadline, committed_all)
        # ...then more events arrive, and it dies with them in flight.
        tp.append(bids.slice(half))
        ends = tp.committed_ends()
        write_ends(ends_file, ends)
        killed_at = time.time()
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        while (item := victim.next(deadline)) is not None:  # what it printed before
            if item.get("partition") is not None:
                last[item["partition"]] = item["offset"]
        replacement = start_worker(
            root, spec, victim.partitions, batch_rows, interval, ends_file, **kw
        )
        procs.append(replacement)
        first: dict[int, dict] = {}

        def again(item: dict) -> bool:
            p = item.get("partition")
            if p is not None and p not in first:
                first[p] = item
            return set(first) == set(victim.partitions)

        ready = replacement.until(deadline, lambda i: "ready" in i)
        replacement.until(deadline, again)
        for w in (survivor, replacement):
            w.finish(deadline)
        # The reference: the same events, no kill.
        reference = [
            start_worker(
                root, spec_for("scale_q5_reference"), p, batch_rows, interval, ends_file, **kw
            )
            for p in parts
        ]
        procs.extend(reference)
        for w in reference:
            w.finish(deadline)
        want = _table(dsn, schema, "scale_q5_reference")
        got = _table(dsn, schema, "scale_q5_killed")
        return {
            "query": "nexmark q5 keyed (no top)",
            "sink": "postgres",
            "events": events,
            "bids": bids.num_rows,
            "workers": 2,
            "killed_partitions": victim.partitions,
            "killed_after_commits_at": {str(p): o for p, o in sorted(last.items())},
            "partition_ends": {str(p): ends[p] for p in victim.partitions},
            "restart_delay_s": 0,
            "replacement_ready_s": round(ready["ready"] - killed_at, 3),
            "recovery_s": round(max(i["at"] for i in first.values()) - killed_at, 3),
            "replacement_first_commits": {str(p): i["offset"] for p, i in sorted(first.items())},
            "rows": len(got),
            "reference_rows": len(want),
            "exactly_once": got == want and len(want) > 0,
        }
    finally:
        for w in procs:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {quote_identifier(schema)} CASCADE")


def run(
    events: int = 60_000_000,
    recovery_events: int = 2_000_000,
    queries: tuple[str, ...] = ("q1", "q5"),
    batch_rows: int = 65_536,
    checkpoint_interval: float = 0.1,
    repeat: int = 1,
    dsn: str | None = "postgresql://postgres@127.0.0.1:5432/postgres",
    timeout_s: float = 600.0,
    pin_cores: bool = False,
) -> dict[str, object]:
    unknown = sorted(set(queries) - set(STEPS))
    if unknown:
        raise InvalidInputError(f"queries {unknown}: this benchmark runs {sorted(STEPS)}")
    load_before = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="dataflare-bench-scale-"))
    try:
        t0 = time.perf_counter()
        ends = generate(root / "log", events)
        generate_s = time.perf_counter() - t0
        results = [
            throughput(root, q, ends, batch_rows, checkpoint_interval, repeat, timeout_s, pin_cores)
            for q in queries
        ]
        recovered = None
        if dsn:
            rec_root = root / "recovery"
            rec_root.mkdir()
            recovered = recovery(
                rec_root, recovery_events, dsn, batch_rows, checkpoint_interval, timeout_s
            )
        return {
            "benchmark": "scale",
            "events": events,
            "bids": sum(ends.values()),
            "partitions": PARTITIONS,
            "partition_rows": {str(p): n for p, n in sorted(ends.items())},
            "batch_rows": batch_rows,
            "checkpoint_interval_s": checkpoint_interval,
            "repeat": repeat,
            "generate_s": round(generate_s, 3),
            "baseline": "the same query as 1 worker process (4 partitions), same data, same run",
            "target_speedup_q1": 1.6,
            "queries": results,
            "speedup": {r["query"]: r["speedup"] for r in results},
            # Each worker process on a core of its own (None: not measured, --pin-cores).
            "speedup_pinned": (
                {r["query"]: r["pinned"]["speedup"] for r in results} if pin_cores else None
            ),
            "pinning": (
                {"cores": [sorted(c) for c in core_sets(2)], "env": PINNED_ENV}
                if pin_cores
                else None
            ),
            "q5_shipped_refused": q5_refusal(root) if "q5" in queries else None,
            "recovery": recovered,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "machine": machine(),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
