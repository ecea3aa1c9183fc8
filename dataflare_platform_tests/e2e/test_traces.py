"""Traces across process boundaries: the front (gateway, daemon, code server, run workers)
exports OTLP/HTTP to a real HTTP receiver on 127.0.0.1 that decodes each protobuf
``ExportTraceServiceRequest`` (opentelemetry-proto); a run launched (a) by the daemon's
sensor tick and (b) by the Python client from this process continues the launch's trace:
one trace id, one tree from the launch down to the engine's micro-batches.

One front and one receiver for the module (starting the front takes most of the time).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from dataflare_platform.client import DataflareClient
from dataflare_platform.events.log import EventLog
from dataflare_platform.home import ProjectHome
from dataflare_platform.observability import ObservabilitySettings
from dataflare_platform.observability.tracing import configure_tracing, flush
from dataflare_platform_tests.e2e.conftest import FIXTURE_ACCOUNT, FIXTURE_ROLES, serving_front
from dataflare_platform_tests.e2e.test_stream_sensor import _runs, _stop_sensors_except
from dataflare_platform_tests.waits import wait_until

pytestmark = pytest.mark.e2e

TIMEOUT_S = 300


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: int
    attributes: dict
    links: tuple[str, ...]
    service: str


class Receiver:
    """An OTLP/HTTP trace receiver: ``POST /v1/traces`` with a protobuf body."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.add(request)
                out = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}/v1/traces"

    def add(self, request: ExportTraceServiceRequest) -> None:
        with self.lock:
            for rs in request.resource_spans:
                resource = {a.key: _value(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self.spans.append(
                            ReceivedSpan(
                                s.trace_id.hex(),
                                s.span_id.hex(),
                                s.parent_span_id.hex(),
                                s.name,
                                s.kind,
                                {a.key: _value(a.value) for a in s.attributes},
                                tuple(link.span_id.hex() for link in s.links),
                                str(resource.get("service.name")),
                            )
                        )

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]


def _value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    thread = threading.Thread(target=r.server.serve_forever, daemon=True)
    thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture(scope="module")
def traced_front(tmp_path_factory, receiver) -> Iterator[tuple[DataflareClient, ProjectHome]]:
    """The front with its daemon, every process exporting traces to ``receiver``."""
    root = tmp_path_factory.mktemp("traced_home")
    project = ProjectHome.resolve(root / "home").ensure()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in project.environ().items():
            patch.setenv(key, value)
        patch.setenv("XDG_CONFIG_HOME", str(root / "xdg-config"))
        patch.setenv("DATAFLARE_SENSOR_INTERVAL", "1s")
        patch.setenv("OTEL_TRACES_EXPORTER", "otlp")
        patch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint)
        patch.setenv("OTEL_SERVICE_NAME", "dataflare-front")
        with serving_front(project, root / "front.log", stop_grace_s=60) as front:
            token = front.service_token(FIXTURE_ACCOUNT, FIXTURE_ROLES)
            yield DataflareClient(port=front.port, timeout_s=60, token=token), project


def _tree(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
    """The spans by id, asserting they form one tree (one root, every parent present)."""
    by_id = {s.span_id: s for s in spans}
    roots = [s for s in spans if s.parent_id == "" or s.parent_id == "0" * 16]
    assert len(roots) == 1, [(s.name, s.parent_id) for s in roots]
    for s in spans:
        if s is not roots[0]:
            assert s.parent_id in by_id, (s.name, "parent missing")
    return by_id


def _chain(by_id: dict[str, ReceivedSpan], span: ReceivedSpan) -> list[str]:
    names = [span.name]
    while span.parent_id in by_id:
        span = by_id[span.parent_id]
        names.append(span.name)
    return names


def _assert_run_tree(spans: list[ReceivedSpan], root_name: str, run_id: str) -> None:
    by_id = _tree(spans)
    batches = [s for s in spans if s.name == "process bids"]
    assert batches, sorted({s.name for s in spans})
    assert _chain(by_id, batches[0]) == [
        "process bids",
        "dataflare.pipeline hot_items",
        "dagster.step streams__hot_items",
        "dagster.run hot_items_job",
        root_name,
    ]
    (run,) = [s for s in spans if s.name == "dagster.run hot_items_job"]
    assert run.attributes["dagster.run_id"] == run_id
    assert run.service == "dataflare-front"
    assert sum(b.attributes["messaging.batch.message_count"] for b in batches) > 0
    sends = [s for s in spans if s.name.startswith("send ")]
    assert {link for s in sends for link in s.links} == {b.span_id for b in batches}


def _wait_for_spans(receiver: Receiver, trace_id: str, name: str) -> list[ReceivedSpan]:
    def ready():
        spans = receiver.trace(trace_id)
        return spans if any(s.name == name for s in spans) else None

    return wait_until(f"the spans of trace {trace_id}", ready, TIMEOUT_S, poll_s=0.5)


def test_a_sensor_launched_run_continues_the_ticks_trace(traced_front, receiver, small_nexmark):
    client, project = traced_front
    _stop_sensors_except(client, "hot_items_sensor")
    bids = small_nexmark["bids"]
    EventLog(project.event_log_dir).create_topic("nexmark.bids", bids.schema).append(bids)
    (run,) = wait_until(
        "a sensor-launched run", lambda: _runs(client, "hot_items_job"), TIMEOUT_S, poll_s=0.5
    )
    assert client.wait(run["runId"], timeout_s=TIMEOUT_S) == "SUCCESS"
    _stop_sensors_except(client)  # the next test launches its own run
    ticks = wait_until(
        "the sensor tick's span",
        lambda: [s for s in list(receiver.spans) if s.name == "dataflare.sensor hot_items_sensor"],
        TIMEOUT_S,
        poll_s=0.5,
    )
    # One tick requested the run (others skipped before the data was there: no span).
    (tick,) = ticks
    spans = _wait_for_spans(receiver, tick.trace_id, "dagster.run hot_items_job")
    # Every span of the run is exported before its step returns: wait for the tree.
    wait_until(
        "the run's batches",
        lambda: any(s.name == "process bids" for s in receiver.trace(tick.trace_id)),
        TIMEOUT_S,
        poll_s=0.5,
    )
    _assert_run_tree(receiver.trace(tick.trace_id), tick.name, run["runId"])
    assert spans and tick.attributes["dataflare.pipeline"] == "hot_items"


def test_a_client_launched_run_continues_the_launchs_trace(traced_front, receiver, small_nexmark):
    client, project = traced_front
    _stop_sensors_except(client)
    topic = EventLog(project.event_log_dir).topic("nexmark.bids")
    topic.append(small_nexmark["bids"].slice(0, 500))  # new data for the job to read
    configure_tracing(
        ObservabilitySettings(traces_exporter="otlp", otlp_traces_endpoint=receiver.endpoint)
    )
    try:
        before = {s.span_id for s in list(receiver.spans)}
        run_id = client.launch_job("hot_items_job")
        flush()
    finally:
        configure_tracing(None)
    (launch,) = [
        s
        for s in list(receiver.spans)
        if s.name == "dataflare.launch hot_items_job" and s.span_id not in before
    ]
    assert launch.attributes["dagster.run_id"] == run_id
    assert client.wait(run_id, timeout_s=TIMEOUT_S) == "SUCCESS"
    _wait_for_spans(receiver, launch.trace_id, "process bids")
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:  # the run's last spans (sink commits) follow
        if any(s.name.startswith("send ") for s in receiver.trace(launch.trace_id)):
            break
        time.sleep(0.5)
    _assert_run_tree(receiver.trace(launch.trace_id), launch.name, run_id)


def test_a_continuous_run_exports_each_checkpoint_interval_while_it_runs(
    traced_front, receiver, small_nexmark
):
    """The run, its step and its engine span end only when the run is stopped; meanwhile
    each checkpoint interval arrives as a trace of its own, linked to the engine span."""
    client, project = traced_front
    _stop_sensors_except(client)
    topic = EventLog(project.event_log_dir).topic("nexmark.bids")
    before = {s.span_id for s in list(receiver.spans)}
    fast = {"checkpoint_interval_s": 0.5, "progress_interval_s": 0.5}
    config = {"ops": {"run_hot_items_continuous": {"config": fast}}}
    configure_tracing(
        ObservabilitySettings(traces_exporter="otlp", otlp_traces_endpoint=receiver.endpoint)
    )
    try:
        run_id = client.launch_job("hot_items_continuous", run_config=config)
        flush()
    finally:
        configure_tracing(None)
    (launch,) = [
        s
        for s in list(receiver.spans)
        if s.name == "dataflare.launch hot_items_continuous" and s.span_id not in before
    ]

    def new_intervals() -> list[ReceivedSpan]:
        return [
            s
            for s in list(receiver.spans)
            if s.name == "dataflare.checkpoint_interval hot_items" and s.span_id not in before
        ]

    topic.append(small_nexmark["bids"].slice(0, 300))  # read while the run is going
    intervals = wait_until("a checkpoint interval's trace", new_intervals, TIMEOUT_S, poll_s=0.5)
    assert client.status(run_id) == "STARTED"  # exported while the run goes on
    assert not [s for s in receiver.trace(launch.trace_id) if s.name.startswith("dagster.run")]
    client.terminate(run_id)
    assert client.wait(run_id, timeout_s=TIMEOUT_S) == "SUCCESS"
    spans = _wait_for_spans(receiver, launch.trace_id, "dagster.run hot_items_continuous")
    by_id = _tree(spans)
    (engine,) = [s for s in spans if s.name == "dataflare.pipeline hot_items"]
    assert _chain(by_id, engine) == [
        "dataflare.pipeline hot_items",
        "dagster.step run_hot_items_continuous",
        "dagster.run hot_items_continuous",
        launch.name,
    ]
    assert engine.attributes["dataflare.run.mode"] == "continuous"
    # Intervals are roots of their own traces, linked to this run's engine span; each
    # holds its batches and the commit that closed it.
    intervals = new_intervals()
    assert all(s.links == (engine.span_id,) and s.parent_id == "" for s in intervals)
    batches = [
        s
        for i in intervals
        for s in receiver.trace(i.trace_id)
        if s.name == "process bids" and s.parent_id == i.span_id
    ]
    assert sum(b.attributes["messaging.batch.message_count"] for b in batches) == 300
    assert all(b.service == "dataflare-front" for b in batches)
