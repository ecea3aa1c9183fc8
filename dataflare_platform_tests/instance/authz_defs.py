"""A small code location for the run coordinator's tests: two asset groups owned by two
teams (one classified, one a tenant's), an asset job per group, and a sensor."""

import dagster as dg


class Settings(dg.ConfigurableResource):
    """Stands for a deployment resource: any resource field is deployment-only."""

    folder: str = "/srv/deployment"


@dg.asset(group_name="nexmark", owners=["team:streaming"])
def bids(settings: Settings) -> int:
    return len(settings.folder)


@dg.asset(group_name="billing", owners=["team:finance"], tags={"classification": "pii"})
def invoices() -> int:
    return 2


@dg.asset(group_name="tenants", tags={"tenant": "acme"})
def acme_usage() -> int:
    return 3


nexmark_job = dg.define_asset_job("nexmark_job", selection=dg.AssetSelection.groups("nexmark"))
billing_job = dg.define_asset_job("billing_job", selection=dg.AssetSelection.groups("billing"))
acme_job = dg.define_asset_job("acme_job", selection=dg.AssetSelection.groups("tenants"))
# A job whose definition carries a tag in the platform's namespace (code, not a claim).
tagged_job = dg.define_asset_job(
    "tagged_job", selection=dg.AssetSelection.groups("nexmark"), tags={"dataflare/kind": "replay"}
)


@dg.sensor(job=nexmark_job, minimum_interval_seconds=1)
def nexmark_sensor():
    return dg.SkipReason("tests submit runs themselves")


defs = dg.Definitions(
    assets=[bids, invoices, acme_usage],
    jobs=[nexmark_job, billing_job, acme_job, tagged_job],
    sensors=[nexmark_sensor],
    resources={"settings": Settings()},
)
