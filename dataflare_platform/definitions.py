"""Root definitions of the code location: merges each domain and binds shared resources.

Cross-cutting policy belongs here, applied once, rather than repeated on every asset.
"""

import dagster as dg

from dataflare_platform.defs import governance, leaderboards, nexmark, plugins, replay, streams
from dataflare_platform.defs.governance.resources import GovernanceResource
from dataflare_platform.defs.plugins.resources import PluginRuntimeResource
from dataflare_platform.defs.pools import executor
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.home import HOME_ENV_VAR

DOMAINS = [
    nexmark.defs,
    plugins.defs,
    streams.defs,
    replay.defs,
    leaderboards.defs,
    governance.defs,
]

home = ProjectHomeResource(path=dg.EnvVar(HOME_ENV_VAR))
resources = {
    "dataflare": home,
    # Audit log, keys, alert rules and alert state under the home unless configured.
    "governance": GovernanceResource(dataflare=home),
    # Plugins under <DATAFLARE_HOME>/plugins (samples built on first use); point
    # plugin_dir elsewhere with dg.EnvVar("DATAFLARE_PLUGIN_DIR") in a deployment.
    "plugins": PluginRuntimeResource(),
}

# The default executor runs one step per DuckDB file at a time (defs/pools.py), so any
# selection materialized from the UI keeps one writer per file.
defs = dg.Definitions.merge(*DOMAINS, dg.Definitions(resources=resources, executor=executor))
