"""The plugins domain's definitions, merged by the root definitions."""

import dagster as dg

from dataflare_platform.defs.plugins import assets

defs = dg.Definitions(assets=[assets.masked_persons_sample])
