"""Two sensors for the run coordinator's end-to-end test: ``nexmark_sensor`` requests a
run of a job in the group its principal may launch, ``rogue_sensor`` one it may not (the
test's policy says so). Each asks once (a fixed run key)."""

import dagster as dg


@dg.asset(group_name="nexmark")
def bids() -> int:
    return 1


@dg.asset(group_name="billing")
def invoices() -> int:
    return 2


nexmark_job = dg.define_asset_job("nexmark_job", selection=dg.AssetSelection.groups("nexmark"))
billing_job = dg.define_asset_job("billing_job", selection=dg.AssetSelection.groups("billing"))


@dg.sensor(
    job=nexmark_job, minimum_interval_seconds=1, default_status=dg.DefaultSensorStatus.RUNNING
)
def nexmark_sensor():
    return dg.RunRequest(run_key="once")


@dg.sensor(
    job=billing_job, minimum_interval_seconds=1, default_status=dg.DefaultSensorStatus.RUNNING
)
def rogue_sensor():
    return dg.RunRequest(run_key="once")


defs = dg.Definitions(
    assets=[bids, invoices], jobs=[nexmark_job, billing_job], sensors=[nexmark_sensor, rogue_sensor]
)
