"""Partition-parallel workers over Kafka in the production topology (deployments/
production: PostgreSQL instance, daemon, code server, front), on librdkafka's mock
cluster (``kafka_cluster``): ``scale`` starts two worker runs over a 4-partition topic;
one run's process is SIGKILLed; run monitoring marks it FAILED, Dagster's run retry
launches it again, and the retry resumes its partitions from their checkpoints: the
PostgreSQL table equals the ground truth, every window exactly once."""

import os
import signal
import time
import uuid

import pytest

from dataflare_platform.client import DataflareClient
from dataflare_platform.connectors import kafka
from dataflare_platform.gateway.topology import PostgresTarget, running_topology
from dataflare_platform.streams.workers import unit_key
from dataflare_platform_tests.e2e.test_continuous_restart import PID, RUNS_QUERY
from dataflare_platform_tests.kafka_cluster import create_topic, kafka_bootstrap, unique_topic
from dataflare_platform_tests.streams.test_workers import (
    PARTITIONS,
    committed,
    events,
    table,
    truth,
)
from dataflare_platform_tests.streams.test_workers_kafka import (
    MEMBERSHIP,
    close_windows,
    ends,
    send,
    spec_text,
)
from dataflare_platform_tests.waits import wait_until

pytestmark = pytest.mark.e2e

__all__ = ["kafka_bootstrap"]

CEILING_S = 600.0  # queued launches, run monitoring every 15 s, a 5 s retry delay
PIPELINE = "kbids"
JOB = f"{PIPELINE}_workers"
SPEC_ENV = "DFTEST_PIPELINE_SPEC"  # spec_location reads the spec it names


def _spec(bootstrap: str, topic: str, dsn: str, schema: str, membership: dict | None) -> str:
    text = spec_text(bootstrap, topic, dsn, schema, membership=membership)
    return text.replace("name: bid_counts", f"name: {PIPELINE}")


@pytest.mark.parametrize("membership", [None, MEMBERSHIP], ids=["leases", "consumer-group"])
def test_a_killed_kafka_worker_run_is_retried_and_the_table_is_exactly_once(
    kafka_bootstrap, tmp_path, dsn, pg_schema, membership
):
    """With leases (each run owns its share) and with the consumer group owning the
    partitions (each run is given all of them; the group moves the killed run's
    partitions to the survivor, then shares them again with the retry)."""
    topic = unique_topic("bids")
    assert create_topic(kafka_bootstrap, topic) == PARTITIONS
    settings = kafka.KafkaSettings(bootstrap_servers=kafka_bootstrap, topic=topic)
    spec_path = tmp_path / f"{PIPELINE}.yaml"
    spec_path.write_text(_spec(kafka_bootstrap, topic, dsn, pg_schema, membership))
    appended = [events(0, 6_000, 1)]
    send(settings, appended[0])
    target = PostgresTarget(db_name=f"dataflare_e2e_{uuid.uuid4().hex[:12]}")
    try:
        with running_topology(
            tmp_path / "topology",
            target,
            code_module="dataflare_platform_tests.e2e.spec_location",
            extra_env={SPEC_ENV: str(spec_path)},
        ) as topology:
            assert topology.front is not None
            token = topology.front.service_token("e2e-kafka", ("editor",))
            client = DataflareClient(port=topology.front.port, timeout_s=60, token=token)
            first, second = client.scale(PIPELINE, 2).launched
            keys = {unit_key(PIPELINE, p) for p in range(PARTITIONS)}
            wait_until(
                "a checkpoint of every partition",
                lambda: keys <= set(committed(dsn, pg_schema)),
                CEILING_S,
                poll_s=0.5,
            )
            pid = next(
                int(m.group(1))
                for e in client.logs(first)
                if (m := PID.search(e.get("message") or ""))
            )
            appended.append(events(18_000, 6_000, 2))
            send(settings, appended[-1])
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            wait_until(
                "the killed worker run to be FAILED",
                lambda: client.status(first) == "FAILURE",
                CEILING_S,
                poll_s=0.5,
            )
            detected = time.monotonic() - killed
            appended.append(events(36_000, 6_000, 3))
            send(settings, appended[-1])

            def retry() -> str | None:
                runs = client.query(RUNS_QUERY, {"job": JOB})["runsOrError"]["results"]
                return next((r["runId"] for r in runs if r["parentRunId"] == first), None)

            retried = wait_until("the automatic retry", retry, CEILING_S, poll_s=0.5)
            close_windows(settings, 3_600_000)
            end = ends(settings)

            def caught_up() -> bool:
                offsets = committed(dsn, pg_schema)
                return all(
                    offsets.get(unit_key(PIPELINE, p), {}).get(f"bids/{p}") == end[p]
                    for p in range(PARTITIONS)
                )

            wait_until("every partition committed to the end", caught_up, CEILING_S, poll_s=0.5)
            resumed = time.monotonic() - killed
            stopped = client.scale(PIPELINE, 0)
            assert set(stopped.stopped) == {second, retried}
            for run_id in (second, retried):
                assert client.wait(run_id, timeout_s=CEILING_S) == "SUCCESS"
    finally:
        target.drop()
    got = table(dsn, pg_schema)
    want = truth(appended, 3_600_000)
    assert got.height == want.height > 0
    assert got.to_dicts() == want.to_dicts()
    mode = "consumer group" if membership else "leases"
    print(f"\nKafka worker ({mode}) SIGKILL -> FAILED {detected:.2f} s, caught up {resumed:.2f} s")
