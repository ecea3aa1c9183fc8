"""Resources shared by every domain."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

import duckdb

from dataflare_platform.defs.deployment_lock import DeploymentLockedResource, deployment_field
from dataflare_platform.home import HOME_ENV_VAR, ProjectHome
from dataflare_platform.warehouse.connection import connect


class ProjectHomeResource(DeploymentLockedResource):
    """The project home (warehouse, landed events) a run works against.

    Configured from ``DATAFLARE_HOME`` through ``dg.EnvVar`` so the same code location
    serves the embedded demo, tests on a temporary home and a production mount. The path
    is a deployment setting: a run config naming it is refused (``defs.deployment_lock``).
    """

    deployment_key: ClassVar[str] = "dataflare"

    path: str = deployment_field(env=HOME_ENV_VAR, description="The project home.")

    @property
    def home(self) -> ProjectHome:
        return ProjectHome.resolve(self.path)

    @contextmanager
    def warehouse(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with connect(self.home.warehouse_path) as conn:
            yield conn
