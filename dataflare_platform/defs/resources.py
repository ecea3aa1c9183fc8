"""Resources shared by every domain."""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import duckdb

from dataflare_platform.home import ProjectHome
from dataflare_platform.warehouse.connection import connect


class ProjectHomeResource(dg.ConfigurableResource):
    """The project home (warehouse, landed events) a run works against.

    Configured from ``DATAFLARE_HOME`` through ``dg.EnvVar`` so the same code location
    serves the embedded demo, tests on a temporary home and a production mount.
    """

    path: str

    @property
    def home(self) -> ProjectHome:
        return ProjectHome.resolve(self.path)

    @contextmanager
    def warehouse(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with connect(self.home.warehouse_path) as conn:
            yield conn
