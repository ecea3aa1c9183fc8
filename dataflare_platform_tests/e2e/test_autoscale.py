"""The autoscaler with its daemon in the production topology (deployments/production:
PostgreSQL instance, daemon, code server, front): a producer appends to a 4-partition
topic at 2 k events/s, steps up to 20 k/s, then back to 2 k/s. The pipeline's
``<pipeline>_autoscaler`` sensor, started through the front, sizes its workers from their
measurements alone: 1 worker, then 4, then 1 again. Each change is audited by the
sensor's principal and recorded as a decision observation; through both rescales the
PostgreSQL table stays exactly once (every 1 s window per auction equals the ground
truth).

A worker's capacity is made a known number (``spec_location``'s ``costly`` step: 100 µs
per event under a per-process lock, so 10 k events/s per worker process): at 2 k/s one
worker is enough, at 20 k/s the Flink model asks ceil(20 k / (10 k * 0.7)) = 3 workers,
aligned up to 4 (a divisor of the 4 partitions), and at 2 k/s over 4 workers it asks for
1 again. The timings are printed (``pytest -s``), not asserted."""

import itertools
import json
import threading
import time
import uuid

import polars as pl
import pyarrow as pa
import pytest

from dataflare_platform.client import DataflareClient
from dataflare_platform.compliance.audit import AuditLog
from dataflare_platform.compliance.audit_keys import AuditSettings
from dataflare_platform.defs.streams.autoscaler import DECISION_KEY
from dataflare_platform.events.log import EventLog
from dataflare_platform.gateway.topology import PostgresTarget, running_topology
from dataflare_platform.home import ProjectHome
from dataflare_platform.streams.workers import unit_key
from dataflare_platform_tests.e2e.test_stream_sensor import STOP_SENSOR
from dataflare_platform_tests.streams.test_workers import (
    PARTITIONS,
    SCHEMA,
    closers,
    committed,
    counts_spec,
    table,
    truth,
)
from dataflare_platform_tests.waits import wait_until

pytestmark = pytest.mark.e2e

CEILING_S = 600.0  # run launches on a loaded 2-core machine take tens of seconds each
PIPELINE = "scaled_bids"
JOB = f"{PIPELINE}_workers"
SENSOR = f"{PIPELINE}_autoscaler"
SPEC_ENV = "DFTEST_PIPELINE_SPEC"  # spec_location reads the spec it names
LOW, HIGH = 2_000, 20_000  # events/s
POLICY = {
    "min_workers": 1,
    "max_workers": 4,
    "interval_s": 5,
    "catch_up_s": 30,
    "scale_up_cooldown_s": 0,
    "scale_down_cooldown_s": 15,
}
IN_PROGRESS_RUNS = """
query Runs($job: String!) {
  runsOrError(filter: {pipelineName: $job, statuses: [QUEUED, NOT_STARTED, STARTING, STARTED]}) {
    ... on Runs { results { runId status runConfigYaml } }
  }
}
"""
OBSERVATIONS = """
query Observations($path: [String!]!) {
  assetOrError(assetKey: {path: $path}) {
    ... on Asset { assetObservations(limit: 500) {
      metadataEntries { label ... on JsonMetadataEntry { jsonString } } } }
  }
}
"""
SENSOR_ID = """
query Sensor($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) { __typename ... on Sensor { id } }
}
"""


class Producer:
    """Appends to the topic every 100 ms at ``rate`` events/s, with event times following
    the wall clock (100 ms of event time per append), keeping every table it appended."""

    def __init__(self, topic, rate: int) -> None:
        self.topic = topic
        self.rate = rate
        self.appended: list[pa.Table] = []
        self.sent = 0
        self.clock_ms = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="producer", daemon=True)

    def _run(self) -> None:
        due = time.monotonic()
        while not self.stop.is_set():
            n = self.rate // 10
            i = pl.int_range(self.sent, self.sent + n, eager=True)
            batch = pl.DataFrame(
                {
                    "auction": ((i * 7919) % 50).cast(pl.Int64),
                    "price": ((i * 31) % 1000).cast(pl.Int64),
                    "date_time": (self.clock_ms + (i - self.sent) * 100 // n).cast(pl.Int64),
                }
            ).to_arrow()
            self.topic.append(batch.cast(SCHEMA))
            self.appended.append(batch.cast(SCHEMA))
            self.sent += n
            self.clock_ms += 100
            due += 0.1
            self.stop.wait(max(0.0, due - time.monotonic()))

    def __enter__(self) -> "Producer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def _workers(client: DataflareClient) -> list[dict]:
    """The worker runs queued or running, each with the worker count it was launched for."""
    runs = client.query(IN_PROGRESS_RUNS, {"job": JOB})["runsOrError"]["results"]
    return runs


def _settled_at(client: DataflareClient, n: int) -> bool:
    """``n`` worker runs, all started, each launched as one of ``n``."""
    runs = _workers(client)
    return len(runs) == n and all(
        r["status"] == "STARTED" and f"workers: {n}" in r["runConfigYaml"] for r in runs
    )


def _sensor_selector(client: DataflareClient) -> dict:
    ref = next(r for r in client.jobs() if r.name == JOB)
    return {
        "repositoryLocationName": ref.location,
        "repositoryName": ref.repository,
        "sensorName": SENSOR,
    }


def test_the_autoscaler_follows_a_producer_stepping_up_and_down(tmp_path, dsn, pg_schema):
    spec_path = tmp_path / f"{PIPELINE}.yaml"
    source = {"kind": "topic", "topic": "bids", "columns": ["auction", "price", "date_time"]}
    spec_path.write_text(
        counts_spec(
            source, dsn, pg_schema, PIPELINE, steps=({"costly": 100},), more={"autoscaling": POLICY}
        )
    )
    root = tmp_path / "topology"
    home = ProjectHome.resolve(root / "home").ensure()  # the home running_topology uses
    topic = EventLog(home.event_log_dir).create_topic(
        "bids", SCHEMA, partitions=PARTITIONS, key="auction"
    )
    target = PostgresTarget(db_name=f"dataflare_e2e_{uuid.uuid4().hex[:12]}")
    timings: dict[str, float] = {}
    try:
        with (
            running_topology(
                root,
                target,
                code_module="dataflare_platform_tests.e2e.spec_location",
                extra_env={SPEC_ENV: str(spec_path)},
            ) as topology,
            Producer(topic, LOW) as producer,
        ):
            assert topology.front is not None
            token = topology.front.service_token("e2e-autoscale", ("editor",))
            client = DataflareClient(port=topology.front.port, timeout_s=60, token=token)
            # On by default (``autoscaling:`` declared); no worker runs: it starts the
            # minimum, one, and keeps it at 2 k/s once it has measured it.
            _wait(client, "one worker", lambda: _settled_at(client, 1))
            first = {r["runId"] for r in _workers(client)}
            measured = _wait(client, "a decision from measurements", lambda: _measured(client, 1))
            assert measured["workers"] == 1, measured
            assert {r["runId"] for r in _workers(client)} == first

            producer.rate = HIGH
            stepped = time.monotonic()
            _wait(client, "four workers", lambda: _settled_at(client, 4))
            timings["up_s"] = time.monotonic() - stepped

            producer.rate = LOW
            stepped = time.monotonic()
            _wait(client, "one worker again", lambda: _settled_at(client, 1))
            timings["down_s"] = time.monotonic() - stepped

            selector = _sensor_selector(client)
            sensor_id = client.query(SENSOR_ID, {"selector": selector})["sensorOrError"]["id"]
            stopped = client.query(STOP_SENSOR, {"id": sensor_id})["stopSensor"]
            assert stopped["__typename"] == "StopSensorMutationResult", stopped
            producer.__exit__()
            # One event a minute ahead in every partition closes every window (an hour
            # ahead would be dead-lettered: "more than 3600000 ms ahead of the stream").
            end_ms = producer.clock_ms + 60_000
            topic.append(closers(topic, end_ms))
            ends = topic.committed_ends()

            def caught_up() -> bool:
                offsets = committed(dsn, pg_schema)
                return all(
                    offsets.get(unit_key(PIPELINE, p), {}).get(f"bids/{p}") == ends[p]
                    for p in range(PARTITIONS)
                )

            wait_until("every partition committed to the end", caught_up, CEILING_S, poll_s=1)
            last = client.scale(PIPELINE, 0)
            for run_id in last.stopped:
                assert client.wait(run_id, timeout_s=CEILING_S) == "SUCCESS"
            decisions = _decisions(client)
            with AuditLog(AuditSettings.resolve(home=home.root).url) as audit:
                rescaled = [e for e in audit.tail(200) if e.action == "workers_rescaled"]
    finally:
        target.drop()

    # Exactly once through two rescales: every window of every auction, once.
    got = table(dsn, pg_schema)
    want = truth(producer.appended, end_ms)
    missing = want.join(got, on=["auction", "start"], how="anti")
    extra = got.join(want, on=["auction", "start"], how="anti")
    assert missing.height == extra.height == 0, (missing, extra, ends, end_ms)
    assert got.height == want.height > 0
    assert got.to_dicts() == want.to_dicts()
    # Every change audited by the sensor, with the numbers behind it.
    changes = [(json.loads(e.details)["from"], json.loads(e.details)["to"]) for e in rescaled]
    # Up to four and back to one, in one step or in several (a measurement taken while the
    # rate was changing asks for fewer workers first, seen under load: 1 -> 2 -> 4 and
    # 4 -> 2 -> 1); never against the producer's direction.
    targets = [to for _, to in changes]
    assert changes[0] == (0, 1), changes
    assert all(a[1] == b[0] for a, b in itertools.pairwise(changes)), changes
    peak = targets.index(4)
    rising, falling = targets[: peak + 1], targets[peak:]
    assert rising == sorted(set(rising)) and falling == sorted(set(falling), reverse=True), changes
    assert targets[-1] == 1, changes
    assert {e.actor for e in rescaled} == {f"sensor:{SENSOR}"}
    assert {e.subject for e in rescaled} == {f"pipeline:{PIPELINE}"}
    # Decisions that changed the count while workers ran (one step or several, as above).
    ups = [d for d in decisions if d["workers"] > d["current"] >= 1]
    downs = [d for d in decisions if 1 <= d["workers"] < d["current"]]
    assert ups and all(d["reason"].startswith("scale up") for d in ups), ups
    assert downs and all(d["reason"].startswith("scale down") for d in downs), downs
    # The capacity it measured per worker is the step's: 10 k/s (busy time, not CPU).
    assert 5_000 < ups[-1]["capacity_per_worker"] < 15_000, ups[-1]
    print(
        f"\nautoscaler: 1 -> 4 workers {timings['up_s']:.1f} s after the step up, "
        f"4 -> 1 {timings['down_s']:.1f} s after the step down; decisions "
        + json.dumps([{k: d[k] for k in ("current", "workers", "reason")} for d in decisions])
    )


def _decisions(client: DataflareClient) -> list[dict]:
    """The autoscaler's recorded decisions, oldest first: observations of the pipeline's
    asset (what the asset's page in the UI lists), read through the front."""
    got = client.query(OBSERVATIONS, {"path": ["streams", PIPELINE]})["assetOrError"]
    found = []
    for obs in got.get("assetObservations") or []:
        for entry in obs["metadataEntries"]:
            if entry["label"] == DECISION_KEY and entry.get("jsonString"):
                found.append(json.loads(entry["jsonString"]))
    return found[::-1]  # listed newest first


def _measured(client: DataflareClient, current: int) -> dict | None:
    """The newest decision made from measurements while ``current`` workers ran."""
    found = [
        d
        for d in _decisions(client)
        if d["current"] == current and d.get("capacity_per_worker") is not None
    ]
    return found[-1] if found else None


def _wait(client: DataflareClient, what: str, condition):
    """``wait_until`` that, on timeout, says what the autoscaler decided and what runs."""
    try:
        return wait_until(what, condition, CEILING_S, poll_s=1)
    except pytest.fail.Exception:
        decisions = [
            {k: d[k] for k in ("current", "workers", "reason")} for d in _decisions(client)
        ]
        runs = [(r["runId"][:8], r["status"]) for r in _workers(client)]
        pytest.fail(f"{what}: not within {CEILING_S:g} s; decisions {decisions}; runs {runs}")
