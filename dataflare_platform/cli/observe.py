"""``dataflare observe`` (``make observe``): Prometheus, Alertmanager, the metrics endpoint
and the platform's alert receiver on loopback, with the configuration shipped in
deployments/observe/ and their data under ``<home>/observe``.

Optional by design: the platform runs without any of it (the embedded default: alerts
from the Dagster sensors, metrics in run metadata); this only adds the Prometheus side.
When Debian's packages are missing it says how to install them and exits non-zero.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from dataflare_platform.cli._common import HomeOption, print_json
from dataflare_platform.errors import ConfigError

PROMETHEUS = "prometheus"
ALERTMANAGER = "prometheus-alertmanager"
INSTALL_HINT = "apt-get install prometheus prometheus-alertmanager"
LOOPBACK = "127.0.0.1"
# As in deployments/observe/prometheus.yml and alertmanager.yml.
PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
METRICS_PORT = 9464
RECEIVER_PORT = 9465


def find_binaries() -> tuple[str | None, str | None]:
    """Debian's binaries (``/usr/bin/prometheus``, ``/usr/bin/prometheus-alertmanager``)
    or whatever of the same name is on PATH (upstream tarballs name the second
    ``alertmanager``)."""
    prom = shutil.which(PROMETHEUS)
    am = shutil.which(ALERTMANAGER) or shutil.which("alertmanager")
    return prom, am


def observe_dir() -> Path:
    """deployments/observe of this checkout (the shipped configuration)."""
    return Path(__file__).resolve().parents[2] / "deployments" / "observe"


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 1):
        return True
    return False


def ensure_token(path: Path) -> Path:
    """The receiver's bearer token, generated once (0600) where Alertmanager and the
    receiver both read it; never printed."""
    from dataflare_platform.home import write_private

    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(path, secrets.token_urlsafe(32) + "\n")
    return path


def observe(
    home: HomeOption = None,
    check: Annotated[
        bool, typer.Option("--check", help="Only check binaries and configuration, then exit.")
    ] = False,
) -> None:
    """Start Prometheus, Alertmanager, `dataflare metrics serve` (unless port 9464
    already answers) and `dataflare alerts receive` on 127.0.0.1; Ctrl-C stops them.

    The ports are those the shipped files name (Prometheus 9090, Alertmanager 9093,
    endpoint 9464, receiver 9465): edit deployments/observe to move them.
    Prometheus serves the console templates of deployments/observe/consoles at
    http://127.0.0.1:9090/consoles/index.html ; alerts reach `dataflare alerts list`."""
    from dataflare_platform.home import HOME_ENV_VAR, ProjectHome

    prom, am = find_binaries()
    if prom is None or am is None:
        missing = ", ".join(n for n, b in ((PROMETHEUS, prom), (ALERTMANAGER, am)) if b is None)
        typer.echo(
            f"dataflare observe: {missing} not installed; install Debian's packages with: "
            f"sudo {INSTALL_HINT}",
            err=True,
        )
        raise typer.Exit(2)
    shipped = observe_dir()
    root = ProjectHome.resolve(home).root
    work = root / "observe"
    work.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = ensure_token(work / "alert-receiver.token")
    am_config = work / "alertmanager.yml"
    shutil.copyfile(shipped / "alertmanager.yml", am_config)
    checks = [
        ["promtool", "check", "config", str(shipped / "prometheus.yml")],
        ["amtool", "check-config", str(am_config)],
    ]
    for cmd in checks:
        if shutil.which(cmd[0]) is None:
            continue  # the checkers ship with the same packages; without them, start anyway
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise ConfigError(cmd[-1], [(cmd[-1], (done.stdout + done.stderr).strip()[-500:])])
    if check:
        print_json({"prometheus": prom, "alertmanager": am, "config": str(shipped)})
        return
    if not (root / "alerts.yaml").exists() and not os.environ.get("DATAFLARE_ALERT_RULES"):
        raise ConfigError(
            "alert rules",
            [
                (
                    str(root / "alerts.yaml"),
                    "missing: the receiver routes Prometheus alerts by a rule of kind "
                    "prometheus_alert (docs/observability.md, 'Alerts')",
                )
            ],
        )
    env = {**os.environ, HOME_ENV_VAR: str(root)}
    consoles = shipped / "consoles"
    libraries = shipped / "console_libraries"
    commands: list[tuple[str, list[str]]] = []
    if not _answers(METRICS_PORT):
        commands.append(
            (
                "metrics",
                [
                    sys.executable,
                    "-m",
                    "dataflare_platform.cli",
                    "metrics",
                    "serve",
                    "--port",
                    str(METRICS_PORT),
                ],
            )
        )
    commands += [
        (
            "receiver",
            [
                sys.executable,
                "-m",
                "dataflare_platform.cli",
                "alerts",
                "receive",
                "--port",
                str(RECEIVER_PORT),
                "--token-file",
                str(token),
            ],
        ),
        (
            "alertmanager",
            [
                am,
                f"--config.file={am_config}",
                f"--storage.path={work / 'alertmanager'}",
                f"--web.listen-address={LOOPBACK}:{ALERTMANAGER_PORT}",
                "--cluster.listen-address=",  # no gossip port on 0.0.0.0:9094
            ],
        ),
        (
            "prometheus",
            [
                prom,
                f"--config.file={shipped / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'prometheus'}",
                f"--web.listen-address={LOOPBACK}:{PROMETHEUS_PORT}",
                f"--web.console.templates={consoles}",
                f"--web.console.libraries={libraries}",
            ],
        ),
    ]
    children: list[tuple[str, subprocess.Popen]] = []
    try:
        for name, cmd in commands:
            log = (work / f"{name}.log").open("ab")
            children.append((name, subprocess.Popen(cmd, env=env, stdout=log, stderr=log)))
        print_json(
            {
                "prometheus": f"http://{LOOPBACK}:{PROMETHEUS_PORT}",
                "alertmanager": f"http://{LOOPBACK}:{ALERTMANAGER_PORT}",
                "consoles": f"http://{LOOPBACK}:{PROMETHEUS_PORT}/consoles/index.html",
                "logs": str(work),
            }
        )
        while True:
            for name, child in children:
                if child.poll() is not None:
                    typer.echo(
                        f"dataflare observe: {name} exited {child.returncode} "
                        f"(log: {work / (name + '.log')})",
                        err=True,
                    )
                    raise typer.Exit(1)
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        for _, child in reversed(children):
            child.terminate()
        for _, child in reversed(children):
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
