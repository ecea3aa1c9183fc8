"""The replay domain's definitions."""

import dagster as dg

from dataflare_platform.defs.replay import jobs

defs = dg.Definitions(jobs=[jobs.replay_job])
