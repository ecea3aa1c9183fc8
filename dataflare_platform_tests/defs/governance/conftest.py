"""Governance tests: a real local Dagster instance per test, and real alert receivers."""

import dagster as dg
import pytest

from dataflare_platform.compliance.audit_keys import provision
from dataflare_platform.defs.governance.resources import GovernanceResource
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform_tests.receivers import (  # noqa: F401
    Clock,
    clock,
    http_receiver,
    smtp_receiver,
)


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def resources(home):
    """The governance resources of ``home``, whose audit key was provisioned the way
    `dataflare audit init` does it (outside the home)."""
    provision(home.root)
    dataflare = ProjectHomeResource(path=str(home.root))
    return {"dataflare": dataflare, "governance": GovernanceResource(dataflare=dataflare)}
