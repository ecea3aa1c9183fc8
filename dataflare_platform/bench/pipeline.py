"""Produce-to-visible latency of a stream pipeline under the real platform UI (the front
as ``dataflare ui`` starts it: webserver app, daemon, code server), in micro-batch mode
and in continuous mode, and what a sensor-launched run spends around its work.

Method (docs/benchmarks.md, "Pipeline latency"): a fresh project home; the front with
``DATAFLARE_SENSOR_INTERVAL`` set (default 5 s); every sensor but the pipeline's is
stopped (the other shipped pipelines read the same topic; their runs would queue ahead).
Each sample appends ``events`` Nexmark bids stamped *now* to the pipeline's topic after a
random pause (so produces fall at every phase of the sensor's tick) and waits until the
asset's latest materialization records a checkpoint covering them. The sink commits the
rows and the checkpoint in one transaction before the step reports it, so that moment is
when the rows are in the output table; the DuckDB file itself cannot be read meanwhile
(one process per file: a reader would make the next run's writer fail), it is read once at
the end to confirm the offsets. Continuous mode: the ``<name>_continuous`` run with its
default checkpoint interval, recording a materialization at every checkpoint
(``progress_interval_s`` tiny: the 30 s default progress interval is a reporting rate, not
when rows are committed), the same samples. Baseline in the same process: the engine alone
processing the same ``events`` over the same pipeline (``run_range``, no Dagster), the
floor of the work.

Dagster is reached through the front and client the CLI hands in (``ServeDagster``,
``PipelineControl``: the benchmarks stay out of the gateway and Dagster layers).
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from dataflare_platform.bench.common import machine
from dataflare_platform.errors import DataflareError
from dataflare_platform.home import ProjectHome

CODE_LOCATION = "dataflare_platform.definitions"
TARGET_MICRO_BATCH_S = 15.0
TARGET_CONTINUOUS_S = 3.0

SENSORS_QUERY = """
query Sensors($selector: RepositorySelector!) {
  sensorsOrError(repositorySelector: $selector) {
    __typename
    ... on Sensors { results { id name sensorState { status } } }
    ... on PythonError { message }
  }
}
"""
STOP_SENSOR = """
mutation Stop($id: String) {
  stopSensor(id: $id) { __typename }
}
"""


class BenchError(DataflareError):
    """The benchmark could not run (server did not start, a run failed, a wait ran out)."""


class PipelineControl(Protocol):
    """What the benchmark asks of Dagster (``DataflareClient`` provides it)."""

    def query(self, query: str, variables: dict | None = None) -> dict[str, Any]: ...
    def jobs(self) -> list[Any]: ...
    def launch_job(self, job: str, run_config: dict | None = None) -> str: ...
    def terminate(self, run_id: str) -> None: ...
    def wait(self, run_id: str, timeout_s: float = 600.0) -> str: ...
    def status(self, run_id: str) -> str: ...
    def runs(self, limit: int = 20, job: str | None = None) -> list[Any]: ...
    def logs(self, run_id: str, limit: int | None = None) -> list[dict[str, Any]]: ...
    def asset_metadata(self, asset_key: str) -> dict: ...


def _wait(what: str, fn: Callable[[], Any], timeout_s: float, every_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(every_s)
    raise BenchError(f"timed out after {timeout_s:g} s waiting for {what}")


class ServeDagster(Protocol):
    """Start the platform's UI (front, daemon, code server) on a home and yield a control
    connected to it, stopping it all at the end (the CLI hands in the front's own start,
    ``dataflare_platform.gateway.process.running_front``, with a token that may stop
    sensors: the benchmarks stay below the gateway and Dagster layers)."""

    def __call__(
        self, home: ProjectHome, env: dict[str, str], log_path: Path, timeout_s: float
    ) -> AbstractContextManager[PipelineControl]: ...


def stop_sensors_except(control: PipelineControl, keep: str, quiet_s: float = 6.0) -> None:
    """Stop every running sensor but ``keep``; again until none came back for
    ``quiet_s`` (a tick in flight when the stop lands writes its stale state back)."""
    ref = control.jobs()[0]
    selector = {"repositoryLocationName": ref.location, "repositoryName": ref.repository}
    quiet_since = time.monotonic()
    deadline = quiet_since + 120
    while time.monotonic() - quiet_since < quiet_s:
        if time.monotonic() > deadline:
            raise BenchError("sensors keep turning themselves back on")
        result = control.query(SENSORS_QUERY, {"selector": selector})["sensorsOrError"]
        if result["__typename"] != "Sensors":
            raise BenchError(f"cannot list sensors: {result}")
        for sensor in result["results"]:
            if sensor["name"] != keep and sensor["sensorState"]["status"] == "RUNNING":
                control.query(STOP_SENSOR, {"id": sensor["id"]})
                quiet_since = time.monotonic()
        time.sleep(0.5)


def live_bids(events: int, seed: int):
    """About ``events`` Nexmark bids whose event times start now (a live producer's)."""
    from dataflare_platform.datagen import NexmarkConfig, NexmarkGenerator

    config = NexmarkConfig(
        events=max(1, round(events * 50 / 46)),
        seed=seed,
        first_event_time=datetime.now(UTC),
        events_per_second=10_000.0,
        max_out_of_order_ms=0,
    )
    return NexmarkGenerator(config).chunk(0).tables(decode=True)["bids"]


def _summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "min": None, "max": None}
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def _covered(control: PipelineControl, asset: str, key: str, end: int) -> bool:
    offsets = control.asset_metadata(asset).get("offsets") or {}
    return isinstance(offsets, dict) and offsets.get(key, 0) >= end


def _first(events: list[dict[str, Any]], *kinds: str) -> float | None:
    """Timestamp of the run's first event of one of ``kinds`` (GraphQL names them RUN_*,
    older servers PIPELINE_*)."""
    found = [e["timestamp"] for e in events if e["event_type"] in kinds]
    return min(found) if found else None


def _run_timing(control: PipelineControl, run: Any) -> dict[str, float] | None:
    """Where a run's time goes, from its event log: in the queue (enqueued to the
    daemon's launch: it dequeues every ``dequeue_interval_seconds``), launching (the code
    server spawns a worker process, which imports Dagster and loads the code location),
    to its first step, the steps (the asset, then its checks), and after them."""
    events = control.logs(run.run_id)
    enqueued = _first(events, "RUN_ENQUEUED", "PIPELINE_ENQUEUED") or run.created
    starting = _first(events, "RUN_STARTING", "PIPELINE_STARTING") or enqueued
    started = _first(events, "RUN_START", "PIPELINE_START")
    step_start = _first(events, "STEP_START")
    step_ends = [
        e["timestamp"] for e in events if e["event_type"] in ("STEP_SUCCESS", "STEP_FAILURE")
    ]
    if started is None or step_start is None or not step_ends or run.ended is None:
        return None
    steps = max(step_ends) - step_start
    return {
        "queue_s": starting - enqueued,
        "launch_s": started - starting,
        "start_to_step_s": step_start - started,
        "create_to_step_s": step_start - run.created,
        "step_s": steps,
        "step_end_to_run_end_s": run.ended - max(step_ends),
        "run_total_s": run.ended - run.created,
        "overhead_s": (run.ended - run.created) - steps,
    }


def _produce_samples(
    control: PipelineControl,
    topic,
    asset: str,
    key: str,
    events: int,
    samples: int,
    pause_s: float,
    timeout_s: float,
    rng: random.Random,
    produced: list[float] | None = None,
) -> list[float]:
    """Latency of each sample; ``produced`` collects the wall times of the appends."""
    latencies = []
    for i in range(samples):
        time.sleep(rng.uniform(0, pause_s))
        bids = live_bids(events, seed=1000 + i)
        started = time.time()
        (_, end), *_ = topic.append(bids).values()
        if produced is not None:
            produced.append(started)
        _wait(
            f"offset {end} to be visible", lambda e=end: _covered(control, asset, key, e), timeout_s
        )
        latencies.append(time.time() - started)
    return latencies


def _engine_floor(pipeline: str, events: int, samples: int) -> list[float]:
    """The same pipeline over the same number of events, in this process, no Dagster."""
    from dataflare_platform.events.log import EventLog
    from dataflare_platform.streams.ranges import load_specs, run_range, source_ends, topics_of

    spec = next(s for s in load_specs() if s.name == pipeline)
    (topic_name,) = set(topics_of(spec).values())
    with tempfile.TemporaryDirectory(prefix="dataflare-bench-floor-") as tmp:
        log = EventLog(Path(tmp) / "log")
        topic = None
        seconds = []
        for i in range(samples + 1):  # the first one warms imports and plugins up
            bids = live_bids(events, seed=1000 + i)
            if topic is None:
                topic = log.create_topic(topic_name, bids.schema)
            topic.append(bids)
            started = time.perf_counter()
            run_range(spec, log, source_ends(spec, log), Path(tmp) / "streams")
            if i:
                seconds.append(time.perf_counter() - started)
        return seconds


def code_location_load_s(env: dict[str, str], cwd: Path, repeat: int = 3) -> float:
    """Fastest fresh-interpreter import of the code location: what every run worker
    (and every multiprocess step) pays before its first step."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", f"import {CODE_LOCATION}"], env=env, cwd=cwd, check=True
        )
        best = min(best, time.perf_counter() - started)
    return round(best, 3)


def bench_pipeline(
    serve: ServeDagster,
    pipeline: str = "hot_items",
    events: int = 2_000,
    samples: int = 7,
    sensor_interval_s: int = 5,
    modes: tuple[str, ...] = ("micro_batch", "continuous"),
    timeout_s: float = 300.0,
    code_path: Path | None = None,
    seed: int = 7,
) -> list[dict[str, object]]:
    """One JSON-able result per mode, plus the code-location load (see the module)."""
    from dataflare_platform.events.log import EventLog
    from dataflare_platform.streams.ranges import load_specs, topics_of

    specs = {s.name: s for s in load_specs()}
    if pipeline not in specs:
        raise BenchError(f"--pipeline: no pipeline {pipeline!r}; one of {sorted(specs)}")
    spec = specs[pipeline]
    sources = topics_of(spec)
    if len(sources) != 1 or spec.sink.kind != "duckdb":
        raise BenchError(f"--pipeline: {pipeline!r} must read one topic into DuckDB")
    ((source, topic_name),) = sources.items()
    key, asset = f"{source}/0", f"streams/{pipeline}"
    rng = random.Random(seed)
    floor = _engine_floor(pipeline, events, samples)
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="dataflare-bench-pipeline-") as tmp:
        home = ProjectHome.resolve(Path(tmp) / "home").ensure()
        env = {**os.environ, **home.environ(), "DATAFLARE_SENSOR_INTERVAL": f"{sensor_interval_s}s"}
        if code_path is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(code_path), env.get("PYTHONPATH")) if p
            )
        load_s = code_location_load_s(env, Path(tmp))
        common = {
            "benchmark": "pipeline",
            "pipeline": pipeline,
            "events_per_sample": events,
            "samples": samples,
            "code": str(code_path) if code_path else "this checkout",
            "code_location_load_s": load_s,
            "baseline": "engine alone, same events, same process (run_range, no Dagster)",
            "baseline_s": _summary(floor),
        }
        started = time.monotonic()
        with serve(home, env, Path(tmp) / "front.log", timeout_s) as control:
            server_up_s = time.monotonic() - started
            stop_sensors_except(control, f"{pipeline}_sensor")
            topic = EventLog(home.event_log_dir).create_topic(topic_name, live_bids(1, seed).schema)
            if "micro_batch" in modes:
                produced: list[float] = []
                latencies = _produce_samples(
                    control,
                    topic,
                    asset,
                    key,
                    events,
                    samples,
                    sensor_interval_s,
                    timeout_s,
                    rng,
                    produced,
                )
                job = f"{pipeline}_job"
                runs = control.runs(limit=100, job=job)
                for run in runs:
                    control.wait(run.run_id, timeout_s)
                timings = [
                    t for r in control.runs(limit=100, job=job) if (t := _run_timing(control, r))
                ]
                overhead = (
                    {name: _summary([t[name] for t in timings]) for name in timings[0]}
                    if timings
                    else {}
                )
                created = sorted(r.created for r in runs)
                # Produce to the sensor's request: the first run created after each append.
                to_request = [
                    next(c for c in created if c >= p) - p
                    for p in produced
                    if any(c >= p for c in created)
                ]
                step = statistics.median(t["step_s"] for t in timings) if timings else None
                total = statistics.median(t["run_total_s"] for t in timings) if timings else None
                median = statistics.median(latencies)
                results.append(
                    {
                        **common,
                        "mode": "micro_batch",
                        "sensor_interval_s": sensor_interval_s,
                        "server_up_s": round(server_up_s, 1),
                        "produce_to_visible_s": _summary(latencies),
                        "target_median_s": TARGET_MICRO_BATCH_S,
                        "meets_target": median <= TARGET_MICRO_BATCH_S,
                        "runs": len(runs),
                        "produce_to_run_created_s": _summary(to_request),
                        "run_overhead_s": overhead,
                        "step_share_of_run": round(step / total, 3) if step and total else None,
                        "ratio_to_baseline": round(median / statistics.median(floor), 1),
                        "load_avg_1m": round(os.getloadavg()[0], 2),
                        **machine(),
                    }
                )
            if "continuous" in modes:
                stop_sensors_except(control, keep="")
                # Record every checkpoint (the default progress interval, 30 s, is a
                # reporting rate): what is measured is when the output is committed.
                job = f"{pipeline}_continuous"
                run_id = control.launch_job(
                    job, {"ops": {f"run_{job}": {"config": {"progress_interval_s": 0.01}}}}
                )
                launched = time.monotonic()
                _wait(
                    "the continuous run to start",
                    lambda: control.status(run_id) == "STARTED",
                    timeout_s,
                )
                start_s = time.monotonic() - launched
                try:
                    latencies = _produce_samples(
                        control, topic, asset, key, events, samples, 1.0, timeout_s, rng
                    )
                finally:
                    control.terminate(run_id)
                    status = control.wait(run_id, timeout_s)
                median = statistics.median(latencies)
                results.append(
                    {
                        **common,
                        "mode": "continuous",
                        "launch_to_started_s": round(start_s, 2),
                        "produce_to_visible_s": _summary(latencies),
                        "target_median_s": TARGET_CONTINUOUS_S,
                        "meets_target": median <= TARGET_CONTINUOUS_S,
                        "end_status": status,
                        "ratio_to_baseline": round(median / statistics.median(floor), 1),
                        "load_avg_1m": round(os.getloadavg()[0], 2),
                        **machine(),
                    }
                )
        _confirm_output(home, spec, key, topic.committed_ends()[0])
    return results


def _confirm_output(home, spec, key: str, end: int) -> None:
    """Once nothing runs: the output file's checkpoint covers every produced event."""
    import duckdb

    from dataflare_platform.engine.checkpoint import Checkpoint

    path = home.root / "streams" / f"{spec.name}.duckdb"
    with duckdb.connect(str(path), read_only=True) as conn:
        rows = conn.execute(
            "SELECT state FROM dataflare_checkpoints WHERE pipeline = $p", {"p": spec.name}
        ).fetchall()
    offsets = Checkpoint.decode(bytes(rows[0][0])).offsets if rows else {}
    if offsets.get(key, 0) < end:
        raise BenchError(f"{path} covers {offsets} but {end} events were produced")
