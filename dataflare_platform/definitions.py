"""Root definitions of the code location: merges each domain and binds shared resources.

Cross-cutting policy belongs here, applied once, rather than repeated on every asset.
"""

import dagster as dg

from dataflare_platform.defs import nexmark
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.home import HOME_ENV_VAR

DOMAINS = [nexmark.defs]

resources = {"dataflare": ProjectHomeResource(path=dg.EnvVar(HOME_ENV_VAR))}

defs = dg.Definitions.merge(*DOMAINS, dg.Definitions(resources=resources))
