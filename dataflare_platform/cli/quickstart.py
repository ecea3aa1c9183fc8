"""``dataflare quickstart`` (``make stream``): streaming as a user first meets it.

One command that leaves nothing to set up by hand and nothing running afterwards:

1. creates the ``nexmark.*`` topics the shipped pipelines read (keyed, two partitions);
2. starts the web UI as ``dataflare ui`` does (the authenticating front with the web
   server's app in process, the daemon, the code server) on the project home in its own
   process group, so stopping it stops all of it; its own launches use a service token it
   creates for the session and revokes at the end;
3. launches every shipped pipeline's ``<name>_continuous`` job *through Dagster* (the
   GraphQL client, as the UI's Launch button would), so the runs, their checkpoints and
   their metadata are in the instance and the UI like any others;
4. runs the live Nexmark producer (event time = now, paced) in this process;
5. every few seconds prints the producer's rate and, per stream table, the rows its
   continuous run has written (``events_out`` of its newest progress report) and its
   current ``events_per_s``;
6. on Ctrl-C / SIGTERM: terminates the runs (each finishes its batch, checkpoints and
   ends SUCCESS), stops the producer, then the web front's process group.

Why continuous runs and not the sensors' micro-batch runs: a continuous run shows output
about two seconds after the events are produced; a sensor-launched run costs tens of
seconds of overhead. Each stream sensor skips while its pipeline runs continuously.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dataflare_platform.cli._common import HomeOption, err_console
from dataflare_platform.errors import DataflareError

if TYPE_CHECKING:
    from dataflare_platform.client import DataflareClient
    from dataflare_platform.events.log import EventLog
    from dataflare_platform.gateway.process import RunningFront

IN_PROGRESS = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED")
TERMINAL = ("SUCCESS", "FAILURE", "CANCELED")
SERVE_TIMEOUT_S = 300.0
RUN_STOP_TIMEOUT_S = 180.0
DAGSTER_STOP_TIMEOUT_S = 60.0
# A label, not an identity (the run coordinator writes who launched): outside the
# platform's reserved dataflare/ tag namespace, which callers may not set.
LAUNCHED_BY = {"launched_by": "quickstart"}
QUICKSTART_ACCOUNT = "dataflare-quickstart"
# The quickstart is watched live: record progress every few seconds, not at the 30 s
# default of catalog.progress_interval (which suits a pipeline nobody is staring at).
PROGRESS_INTERVAL_S = 5.0

_MATERIALIZATIONS_QUERY = """
query DataflareQuickstartMaterializations($key: AssetKeyInput!, $after: String) {
  assetOrError(assetKey: $key) {
    __typename
    ... on Asset {
      assetMaterializations(afterTimestampMillis: $after, limit: 1000) {
        runId timestamp
        metadataEntries {
          __typename label
          ... on IntMetadataEntry { intValue intRepr }
          ... on FloatMetadataEntry { floatValue }
        }
      }
    }
  }
}
"""


class QuickstartError(DataflareError):
    """The quickstart could not start (the web server did not come up, a launch failed)."""


@dataclass
class StreamStatus:
    """What the quickstart knows of one pipeline's continuous run."""

    name: str
    asset_path: list[str]
    run_id: str = ""
    run_status: str = "-"
    rows: int = 0
    events_per_s: float = 0.0
    events_in_total: int = 0
    seen_after_ms: str | None = None
    seen: set[str] = field(default_factory=set)

    def describe(self) -> str:
        return f"{self.name}: {self.rows:,} rows, {self.events_per_s:,.0f} events/s" + (
            "" if self.run_status == "STARTED" else f" [{self.run_status}]"
        )


def _metadata(entries: list[dict[str, Any]]) -> dict[str, float]:
    values: dict[str, float] = {}
    for e in entries:
        if e["__typename"] == "IntMetadataEntry":
            values[e["label"]] = int(
                e["intRepr"] if e.get("intRepr") is not None else e["intValue"]
            )
        elif e["__typename"] == "FloatMetadataEntry" and e["floatValue"] is not None:
            values[e["label"]] = float(e["floatValue"])
    return values


def refresh(client: DataflareClient, stream: StreamStatus) -> None:
    """Take the newest progress the run reported since the last refresh: rows written
    (``events_out``, counted from the run's start: each report carries the run's total,
    so the newest one is the count) and the current rate (``events_per_s``)."""
    found = client.query(
        _MATERIALIZATIONS_QUERY,
        {"key": {"path": stream.asset_path}, "after": stream.seen_after_ms},
    )["assetOrError"]
    if found["__typename"] != "Asset":
        return
    newest: tuple[float, dict[str, float]] | None = None
    for m in found["assetMaterializations"]:
        ident = f"{m['runId']}:{m['timestamp']}"
        if m["runId"] != stream.run_id or ident in stream.seen:
            continue
        stream.seen.add(ident)
        values = _metadata(m["metadataEntries"])
        ts = float(m["timestamp"])
        if newest is None or ts > newest[0]:
            newest = (ts, values)
    if newest is not None:
        stream.rows = max(stream.rows, int(newest[1].get("events_out", 0)))
        stream.events_per_s = float(newest[1].get("events_per_s", 0.0))
        stream.events_in_total = int(newest[1].get("events_in_total", 0))
        # Re-read the boundary millisecond next time (``seen`` drops the duplicates).
        stream.seen_after_ms = str(int(newest[0]) - 1)
    stream.run_status = client.status(stream.run_id)


def stop_runs(
    client: DataflareClient,
    streams: list[StreamStatus],
    say: Callable[[str], None],
    timeout_s: float = RUN_STOP_TIMEOUT_S,
) -> None:
    """Terminate every run and wait until all have ended. Dagster refuses to terminate a
    STARTING run, so a run still starting is asked again once it has started."""
    deadline = time.monotonic() + timeout_s
    asked: set[str] = set()
    pending = [s for s in streams if s.run_id]
    while pending and time.monotonic() < deadline:
        for stream in list(pending):
            try:
                stream.run_status = client.status(stream.run_id)
                if stream.run_status in TERMINAL:
                    pending.remove(stream)
                elif stream.run_status != "STARTING" and stream.run_id not in asked:
                    client.terminate(stream.run_id)
                    asked.add(stream.run_id)
            except DataflareError as err:
                say(f"{stream.name}: {err}")
        if pending:
            time.sleep(1.0)
    for stream in pending:
        say(f"{stream.name}: run {stream.run_id} still {stream.run_status} after {timeout_s:g} s")


def quickstart(
    home: HomeOption = None,
    port: Annotated[int, typer.Option(help="Port of the Dagster web UI (127.0.0.1).")] = 3000,
    rate: Annotated[float, typer.Option(min=1, help="Events/s of the live producer.")] = 1000.0,
    seed: Annotated[
        int | None, typer.Option(min=0, help="Producer seed (default: random, printed).")
    ] = None,
    status_every: Annotated[
        float, typer.Option(min=0.5, help="Seconds between status lines.")
    ] = 3.0,
) -> None:
    """Create the Nexmark topics, start Dagster, run every shipped pipeline continuously
    and a live producer, and print the output as it arrives; Ctrl-C stops all of it."""
    from dataflare_platform.cli.project import print_first_credentials
    from dataflare_platform.events.live import ensure_nexmark_topics
    from dataflare_platform.events.log import EventLog
    from dataflare_platform.gateway.process import (
        FrontStartCancelledError,
        FrontStartError,
        running_front,
    )
    from dataflare_platform.home import ProjectHome
    from dataflare_platform.identity.bootstrap import bootstrap
    from dataflare_platform.streams.ranges import load_specs

    console = err_console()

    def say(text: str) -> None:
        console.print(text, highlight=False, soft_wrap=True)

    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())

    project = ProjectHome.resolve(home).ensure()
    os.environ.update(project.environ())
    log = EventLog(project.event_log_dir)
    topics = ensure_nexmark_topics(log)
    say(f"topics: {', '.join(t.name for t in topics.values())} (home {project.root})")
    specs = load_specs()

    # The UI is the one `dataflare ui` serves: behind the authenticating front. The first
    # start on a home prints an admin account and a service token once; the quickstart's
    # own launches use a token of their own, revoked when it stops.
    from dataflare_platform.compliance.audit_keys import provision_embedded

    provision_embedded(project.root)  # every audit entry is tagged with its entry key
    first = bootstrap(project.root)
    if first is not None:
        print_first_credentials(first)
    log_path = project.root / "logs" / "quickstart-dagster.log"
    with contextlib.ExitStack() as stack:
        try:
            front = stack.enter_context(
                running_front(
                    project,
                    log_path,
                    port=port,
                    ceiling_s=SERVE_TIMEOUT_S,
                    stop_grace_s=DAGSTER_STOP_TIMEOUT_S,
                    cancel=stopping,
                    on_start=lambda proc: say(
                        f"web front (process group {proc.pid}) starting; log {log_path}"
                    ),
                )
            )
        except FrontStartCancelledError:
            say("stopped while the web front was starting")
            return
        except FrontStartError as err:
            raise QuickstartError(str(err)) from None
        # Revoked when the front stops (the helper revokes the tokens it made).
        token = front.service_token(QUICKSTART_ACCOUNT, ("launcher",))
        _run_streams(front, token, specs, log, rate, seed, status_every, stopping, say)
    say("web front stopped")


def _run_streams(
    front: RunningFront, token: str, specs: list, log: EventLog, rate: float,
    seed: int | None, status_every: float, stopping: threading.Event,
    say: Callable[[str], None],
) -> None:  # fmt: skip
    """Launch every pipeline's continuous run through the front, run the producer and
    print status until asked to stop; then stop the runs and the producer."""
    import secrets

    from dataflare_platform.client import DataflareClient
    from dataflare_platform.defs.streams.continuous import continuous_job_name
    from dataflare_platform.defs.streams.factory import output_key
    from dataflare_platform.events.live import LiveNexmarkProducer

    producer: LiveNexmarkProducer | None = None
    thread: threading.Thread | None = None
    streams: list[StreamStatus] = []
    proc = front.proc
    client = DataflareClient(port=front.port, timeout_s=60, token=token)
    try:
        say(f"Dagster UI on http://127.0.0.1:{front.port}")
        for spec in specs:
            if stopping.is_set():
                return
            job = continuous_job_name(spec)
            stream = StreamStatus(spec.name, list(output_key(spec).path))
            running = client.runs(limit=1, job=job, statuses=list(IN_PROGRESS))
            stream.run_id = (
                running[0].run_id
                if running
                else client.launch_job(
                    job,
                    run_config={
                        "ops": {
                            f"run_{job}": {"config": {"progress_interval_s": PROGRESS_INTERVAL_S}}
                        }
                    },
                    tags=LAUNCHED_BY,
                )
            )
            stream.seen_after_ms = str(int(time.time() * 1000))
            streams.append(stream)
            say(f"launched {job}: run {stream.run_id}")
        seed = secrets.randbelow(2**31) if seed is None else seed
        producer = LiveNexmarkProducer(log, rate=rate, seed=seed)
        thread = threading.Thread(target=producer.run, name="live-producer", daemon=True)
        thread.start()
        say(f"producing at {rate:,.0f} events/s (seed {seed}); Ctrl-C stops everything")
        started = time.monotonic()
        while not stopping.wait(status_every):
            if proc.poll() is not None:
                raise QuickstartError(f"the web front exited; see {front.log_path}")
            for stream in streams:
                refresh(client, stream)
            p = producer.progress
            say(
                f"[{time.monotonic() - started:5.0f}s] producer {p.rate:,.0f} events/s"
                f" ({p.events:,} events) | " + " | ".join(s.describe() for s in streams)
            )
    finally:
        say("stopping: terminating the continuous runs")
        stop_runs(client, streams, say)
        if producer is not None and thread is not None:
            producer.stop()
            thread.join()
            say(f"producer stopped: {producer.progress.line()}")
        say(
            "stopped: "
            + (", ".join(f"{s.name} {s.run_status}" for s in streams) or "no runs")
            + "; stopping the web front"
        )
