"""Asset checks on the Nexmark warehouse tables."""

import dagster as dg

from dataflare_platform.defs.nexmark.assets import WAREHOUSE_TAGS, auctions, bids
from dataflare_platform.defs.quality import check_result
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.warehouse.quality import check_auctions, check_bids


@dg.asset_check(
    asset=bids,
    blocking=True,
    op_tags=WAREHOUSE_TAGS,
    description="Bids have positive prices, an event time and both ids; table not empty.",
)
def bids_valid(dataflare: ProjectHomeResource) -> dg.AssetCheckResult:
    with dataflare.warehouse() as conn:
        return check_result(check_bids(conn))


@dg.asset_check(
    asset=auctions,
    blocking=True,
    op_tags=WAREHOUSE_TAGS,
    description="Auctions expire after they open, reserve ≥ initial bid, seller present.",
)
def auctions_valid(dataflare: ProjectHomeResource) -> dg.AssetCheckResult:
    with dataflare.warehouse() as conn:
        return check_result(check_auctions(conn))
