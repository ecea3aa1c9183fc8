"""The attacker module's second code location (``attack_location``), served by the same
``dataflare ui`` as the platform's own: what the daemon-side attacks need.

- ``rogue_sensor`` asks once for ``billing_job``, in group ``billing``, which the module's
  policy keeps out of automation's reach (the sensor launches outside its rights).
- ``ledger`` (group ``books``) and ``invoices`` (group ``billing``, downstream) are
  partitioned for backfills; the module's policy keeps ``service:scoped-bot`` out of
  ``billing``, so its backfill of both reaches outside the requester's rights.
- ``noop_job`` is what most attacks launch: its runs cost seconds.
- ``gated_ledger`` waits for the file ``open`` in ``$DATAFLARE_TEST_GATE`` before it
  finishes, and ``gated_report`` (downstream, another backfill policy, so a run of its
  own) is submitted only after it: the test revokes the requester in between.
"""

import os
import time
from pathlib import Path

import dagster as dg

PARTS = dg.StaticPartitionsDefinition(["p1", "p2"])
GATE_CEILING_S = 600


@dg.asset(group_name="books", partitions_def=PARTS)
def ledger() -> int:
    return 1


@dg.asset(group_name="billing", partitions_def=PARTS, deps=[ledger])
def invoices() -> int:
    return 2


@dg.asset(group_name="books", partitions_def=PARTS, backfill_policy=dg.BackfillPolicy.multi_run(1))
def gated_ledger() -> int:
    gate = Path(os.environ["DATAFLARE_TEST_GATE"]) / "open"
    deadline = time.monotonic() + GATE_CEILING_S
    while not gate.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{gate} never appeared")
        time.sleep(0.5)
    return 3


@dg.asset(
    group_name="books",
    partitions_def=PARTS,
    deps=[gated_ledger],
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def gated_report() -> int:
    return 4


@dg.asset(group_name="billing")
def billing_summary() -> int:
    return 5


billing_job = dg.define_asset_job("billing_job", selection=[billing_summary])


@dg.sensor(
    job=billing_job, minimum_interval_seconds=1, default_status=dg.DefaultSensorStatus.RUNNING
)
def rogue_sensor():
    return dg.RunRequest(run_key="once")


@dg.op
def noop() -> None:
    pass


@dg.job
def noop_job() -> None:
    noop()


defs = dg.Definitions(
    assets=[ledger, invoices, gated_ledger, gated_report, billing_summary],
    jobs=[billing_job, noop_job],
    sensors=[rogue_sensor],
)
