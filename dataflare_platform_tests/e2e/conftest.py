"""The platform's front (``dataflare ui``: the authenticating gateway with
dagster-webserver's app in process, the daemon, the code server) on a free loopback port,
reached with the home's service token, as every real user and tool reaches it.

The start/wait/stop logic is the library's (``dataflare_platform.gateway.process``, also
used by the quickstart and the pipeline benchmark); these are thin pytest wrappers that
turn a failed start into a test failure with the server's log."""

import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from dataflare_platform.gateway import process
from dataflare_platform.gateway.process import (
    FrontStartError,
    RunningFront,
    free_port,
    running_front,
)
from dataflare_platform.home import ProjectHome
from dataflare_platform_tests.conftest import REPO_ROOT

# The shipped workspace: its location name is the one the UI, the demo and `dg` show.
WORKSPACE = ("-w", str(REPO_ROOT / "workspace.yaml"))
# Editor: the fixtures' tests also stop sensors (toggle_automation), beyond a launcher.
FIXTURE_ACCOUNT, FIXTURE_ROLES = "e2e-fixture", ("editor",)


def stop_group(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM a server's process group (it was started with ``start_new_session``), and
    SIGKILL it if it has not exited within ``grace_s``."""
    process.stop_group(proc, grace_s)


def wait_until_serving(
    proc: subprocess.Popen,
    port: int,
    log_path: Path,
    what: str,
    ceiling_s: float = 300,
    path: str = "/healthz",
    scheme: str = "http",
    context=None,
) -> None:
    """Poll ``path`` (the front's ``/healthz``; ``/server_info`` for a bare webserver)
    until the server answers, following its progress; fail with its log if it exits or
    does not answer within ``ceiling_s``."""
    try:
        process.wait_until_serving(proc, port, log_path, what, ceiling_s, path, scheme, context)
    except FrontStartError as err:
        pytest.fail(str(err))


@contextmanager
def serving_front(project: ProjectHome, log_path: Path, **options) -> Iterator[RunningFront]:
    """:func:`running_front` (options as there) for a test: a front that does not come up
    fails the test with its log; the front's group is stopped at the end."""
    with ExitStack() as stack:
        try:
            front = stack.enter_context(running_front(project, log_path, **options))
        except FrontStartError as err:
            pytest.fail(str(err))
        yield front


@pytest.fixture
def webserver(landed_home, tmp_path) -> Iterator[int]:
    """The front (no daemon: see ``daemon``) on the test's home; the home's token file lets
    the client and the CLI in.  Yields the port."""
    with serving_front(landed_home, tmp_path / "front.log", daemon=False) as front:
        yield front.port


@pytest.fixture
def ungated_webserver(landed_home, tmp_path) -> Iterator[int]:
    """A bare ``dagster-webserver`` (no front): only for tests that look at pages in a
    browser without signing in and launch nothing through it (the default policy refuses
    launches from a webserver without the front, so none could)."""
    with serving_webserver(tmp_path / "webserver.log") as port:
        yield port


@pytest.fixture(scope="module")
def module_webserver(tmp_path_factory) -> Iterator[tuple[int, ProjectHome]]:
    """One front (no daemon) for a whole test module, on its own project home: for tests
    that only talk to the server (discovery, launch checks, queued runs)."""
    root = tmp_path_factory.mktemp("module_home")
    project = ProjectHome.resolve(root / "home").ensure()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in project.environ().items():
            patch.setenv(key, value)
        # The audit keys the front's first start provisions go to a config dir of its own.
        patch.setenv("XDG_CONFIG_HOME", str(root / "xdg-config"))
        with serving_front(project, root / "front.log", daemon=False) as front:
            yield front.port, project


@contextmanager
def serving_webserver(log_path: Path) -> Iterator[int]:
    """A bare ``dagster-webserver`` on the code location at a free loopback port, until
    exit (see ``ungated_webserver`` for what it may be used for)."""
    port = free_port()
    webserver_bin = Path(sys.executable).with_name("dagster-webserver")
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [str(webserver_bin), *WORKSPACE, *("-h", "127.0.0.1", "-p", str(port))],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_serving(proc, port, log_path, "webserver", path="/server_info")
        yield port
    finally:
        stop_group(proc, 30)


@pytest.fixture
def dagster_yaml_overrides() -> dict:
    """Settings merged over the home's shipped ``dagster.yaml`` before ``dagster dev``
    starts; a test module overrides this fixture to shorten intervals."""
    return {}


@pytest.fixture
def dagster_dev(home, tmp_path, monkeypatch, dagster_yaml_overrides):
    """The front with its daemon and code server (what ``dataflare ui`` starts; the name is
    from when this was a plain ``dagster dev``) in its own process group, on the test's
    DAGSTER_HOME with the shipped instance settings (plus any overrides); yields a client
    holding an editor's service token."""
    import yaml

    from dataflare_platform.client import DataflareClient

    if dagster_yaml_overrides:
        instance_yaml = home.dagster_home / "dagster.yaml"
        settings = yaml.safe_load(instance_yaml.read_text())
        for section, values in dagster_yaml_overrides.items():
            settings[section] = {**settings.get(section, {}), **values}
        instance_yaml.write_text(yaml.safe_dump(settings))
    monkeypatch.setenv("DATAFLARE_SENSOR_INTERVAL", "1s")
    with serving_front(home, tmp_path / "front.log", stop_grace_s=60) as front:
        token = front.service_token(FIXTURE_ACCOUNT, FIXTURE_ROLES)
        yield DataflareClient(port=front.port, timeout_s=60, token=token)


@pytest.fixture
def daemon(landed_home, tmp_path):
    """``dagster-daemon run`` on the same code location and DAGSTER_HOME as the server."""
    daemon_bin = Path(sys.executable).with_name("dagster-daemon")
    log = (tmp_path / "daemon.log").open("w")
    proc = subprocess.Popen(
        [str(daemon_bin), "run", *WORKSPACE],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its code server dies with it (one process group)
    )
    try:
        yield proc
    finally:
        stop_group(proc, 30)
        log.close()
