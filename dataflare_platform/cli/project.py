"""``dataflare generate``, ``demo`` and ``ui``: data, the end-to-end demo and the web UI
on a project home. Dagster and the generator are imported by the commands."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dataflare_platform.cli._common import (
    FAILED_EXIT,
    HomeOption,
    UsageError,
    err_console,
    out_console,
)

if TYPE_CHECKING:
    from rich.progress import Progress

    from dataflare_platform.datagen import NexmarkConfig

EventsOption = Annotated[int | None, typer.Option(help="Total events to generate.")]
SeedOption = Annotated[int | None, typer.Option(help="Random seed (same seed, same data).")]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="Generator settings as YAML (fields of NexmarkConfig)."),
]


def _generator_config(
    config: Path | None, base: dict[str, Any] | None = None, **overrides: Any
) -> NexmarkConfig:
    from dataflare_platform.datagen import NexmarkConfig

    if config is not None:
        return NexmarkConfig.from_yaml(config, **overrides)
    return NexmarkConfig.load(base, **overrides)


def _progress() -> Progress:
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    console = err_console()
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.completed:,}/{task.total:,} events"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )


def generate(
    out: Annotated[
        Path | None, typer.Option(help="Output directory (default: <home>/events/nexmark).")
    ] = None,
    home: HomeOption = None,
    events: EventsOption = None,
    seed: SeedOption = None,
    chunk_events: Annotated[int | None, typer.Option(help="Events per file chunk.")] = None,
    events_per_second: Annotated[
        float | None, typer.Option(help="Event-time rate (spreads events over time).")
    ] = None,
    max_out_of_order_ms: Annotated[
        int | None, typer.Option(help="Maximum event-time jitter, in ms.")
    ] = None,
    late_fraction: Annotated[
        float | None,
        typer.Option(help="Share of events pulled back by up to --max-out-of-order-ms."),
    ] = None,
    shape: Annotated[
        str | None,
        typer.Option(
            help="nexmark (the reference rules) or skewed (Zipf picks, sparse ids, mixed"
            " channel spellings and url shapes: a stream unlike the reference's)."
        ),
    ] = None,
    file_format: Annotated[
        str | None, typer.Option("--format", help="parquet or ipc (Arrow IPC).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Generate Nexmark events (persons, auctions, bids) to Parquet or Arrow IPC files."""
    from dataflare_platform.datagen import write_nexmark
    from dataflare_platform.home import ProjectHome

    cfg = _generator_config(
        config,
        events=events,
        seed=seed,
        chunk_events=chunk_events,
        events_per_second=events_per_second,
        max_out_of_order_ms=max_out_of_order_ms,
        late_fraction=late_fraction,
        shape=shape,
        format=file_format,
    )
    target = out if out is not None else ProjectHome.resolve(home).ensure().nexmark_dir
    target = ProjectHome.resolve(target).root  # refuses an unwritable directory
    with _progress() as bar:
        task = bar.add_task("generating", total=cfg.events)
        summary = write_nexmark(
            cfg, target, progress=lambda done, _total: bar.update(task, completed=done)
        )
    rate = summary.events / summary.seconds if summary.seconds else 0.0
    err_console().print(
        f"wrote {summary.events:,} events ({summary.rows}) in {summary.files} files to "
        f"{summary.out_dir} in {summary.seconds:.2f}s ({rate:,.0f} events/s)"
    )


def demo(
    home: HomeOption = None,
    events: EventsOption = None,
    seed: SeedOption = None,
    config: ConfigOption = None,
) -> None:
    """Generate data and run the shipped pipelines end to end in a real Dagster instance."""
    from dataflare_platform.demo import DEMO_CONFIG, ending_now, landed_config, run_demo
    from dataflare_platform.home import ProjectHome

    project = ProjectHome.resolve(home)
    cfg = _generator_config(config, DEMO_CONFIG.model_dump(), events=events, seed=seed)
    if config is None or "first_event_time" not in cfg.model_fields_set:
        # Event times end now unless a --config file pins them.
        cfg = ending_now(cfg, landed=landed_config(project.nexmark_dir))
    console = err_console()
    console.print(f"project home: {project.root}")
    with _progress() as bar:
        task = bar.add_task("generating", total=cfg.events)
        report = run_demo(
            project,
            cfg,
            progress=lambda done, _t: bar.update(task, completed=done),
            log=lambda msg: console.print(f"[dim]{msg}[/]"),
        )
    _print_demo(report)
    if not report.ok:
        raise typer.Exit(code=FAILED_EXIT)


def _print_demo(report) -> None:
    from rich.table import Table

    out = out_console()
    assets = Table(title="Assets", show_lines=False)
    assets.add_column("asset")
    assets.add_column("rows", justify="right")
    assets.add_column("added by this run", justify="right")
    for key, added in sorted(report.rows.items()):
        total = report.totals.get(key)
        assets.add_row(key, "-" if total is None else f"{total:,}", f"{added:,}")
    out.print(assets)
    checks = Table(title="Asset checks")
    for col in ("asset", "check", "partition", "result", "details"):
        checks.add_column(col)
    for c in report.checks:
        verdict = "[green]passed[/]" if c.passed else "[red]FAILED[/]"
        checks.add_row(c.asset, c.check, c.partition or "-", verdict, c.description)
    out.print(checks)
    runs = Table(title="Runs")
    for col in ("job", "partition", "status", "seconds", "run id"):
        runs.add_column(col)
    for r in report.runs:
        status = "[green]success[/]" if r.success else "[red]FAILURE[/]"
        runs.add_row(r.job, r.partition or "-", status, f"{r.seconds:.1f}", r.run_id[:8])
    out.print(runs)
    verdict = "[bold green]demo OK[/]" if report.ok else "[bold red]demo FAILED[/]"
    out.print(f"{verdict} in {report.seconds:.1f}s; see it in the UI with `make ui`")


# After SIGTERM/SIGINT, the front's process group gets this long to exit on its own
# before it is killed: its code server and daemon threads can otherwise hold it for a
# minute or more.
UI_STOP_GRACE_S = 5.0


def ui(
    home: HomeOption = None,
    host: Annotated[
        str, typer.Option(help="Address to bind (loopback unless you mean to expose it).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the web UI.")] = 3000,
    workspace: Annotated[
        Path | None,
        typer.Option(
            help="Workspace file (default: ./workspace.yaml if present, else an identical "
            "one written to the project home)."
        ),
    ] = None,
    public_host: Annotated[
        list[str] | None,
        typer.Option(
            "--public-host",
            help="A further name (host or host:port) browsers use to reach the UI; the "
            "Host header must be one of the loopback names, the bind address or these.",
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="Serve HTTPS with this PEM certificate (chain).")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The certificate's PEM key.")] = None,
    login_config: Annotated[
        Path | None,
        typer.Option(
            help="YAML with `ldap:` and/or `oidc:` sign-in settings (docs/security.md); "
            "local users are always offered."
        ),
    ] = None,
    daemon: Annotated[
        bool,
        typer.Option(
            help="Also run the Dagster daemon (--no-daemon: the production topology runs "
            "it as a process of its own, docs/deploy.md)."
        ),
    ] = True,
) -> None:
    """Start the web UI behind the authenticating front, and the Dagster daemon.

    The front runs dagster-webserver's app in its own process (the webserver has no port
    of its own): sign-in (local users with TOTP for admins, service tokens), Host and
    Origin checks, CSRF tokens, mutations only by POST and each mutation authorized and
    audited. The first start on a home creates an admin account and a service token and
    prints them once (the token is kept 0600 under the home for the client).

    SIGTERM or SIGINT (Ctrl-C) stop it within a few seconds: the front runs in its own
    process group (with the daemon and code servers), which gets the signal and, after a
    short grace, SIGKILL.
    """
    from dataflare_platform.home import ProjectHome
    from dataflare_platform.identity.bootstrap import bootstrap

    project = ProjectHome.resolve(home).ensure()
    if workspace is None:
        local = Path("workspace.yaml")
        workspace = local if local.is_file() else project.write_workspace()
    elif not workspace.is_file():
        raise UsageError(f"--workspace {workspace}: no such file")
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    for path in (tls_cert, tls_key, login_config):
        if path is not None and not path.is_file():
            raise UsageError(f"{path}: no such file")
    if host not in ("127.0.0.1", "localhost", "::1") and tls_cert is None:
        err_console().print(
            f"[yellow]warning:[/] binding {host} without TLS: passwords, session cookies and "
            "tokens cross the network in clear (use --tls-cert/--tls-key)"
        )
    from dataflare_platform.compliance.audit_keys import provision_embedded

    provision_embedded(project.root)  # every audit entry is tagged with its entry key
    first = bootstrap(project.root)
    if first is not None:
        print_first_credentials(first)
    command = [
        sys.executable, "-m", "dataflare_platform.gateway",
        "--home", str(project.root), "--workspace", str(workspace.absolute()),
        "--host", host, "--port", str(port),
    ]  # fmt: skip
    for name in public_host or ():
        command += ["--public-host", name]
    if login_config is not None:
        command += ["--login-config", str(login_config.absolute())]
    if not daemon:
        command.append("--no-daemon")
    if tls_cert is not None and tls_key is not None:
        command += ["--tls-cert", str(tls_cert.absolute()), "--tls-key", str(tls_key.absolute())]
    env = {**os.environ, **project.environ()}
    child = subprocess.Popen(command, env=env, start_new_session=True)
    scheme = "https" if tls_cert else "http"
    err_console().print(
        f"DataFlare UI on {scheme}://{host}:{port} (home {project.root}, workspace "
        f"{workspace}, front pid {child.pid}); Ctrl-C stops it"
    )
    raise typer.Exit(code=_supervise(child))


def print_first_credentials(first) -> None:
    """Shown once, on the first start of a home: nothing keeps the password or the TOTP
    secret in clear (the token is kept 0600 for the home's own tools)."""
    console = err_console()
    console.print(
        "[bold]First start on this home: an admin account and a service token were "
        "created. They are shown only now.[/]\n"
        f"  admin user:      {first.admin_name}\n"
        f"  admin password:  {first.admin_password}\n"
        f"  TOTP secret:     {first.admin_totp_secret}  (add it to an authenticator app)\n"
        f"  TOTP URI:        {first.admin_totp_uri}\n"
        f"  service token:   {first.token}  (role launcher; id {first.token_id})\n"
        f"  token file:      {first.token_file}  (0600; the client and `dataflare launch` "
        "use it when DATAFLARE_TOKEN is unset)",
        highlight=False,
        soft_wrap=True,
    )


def _supervise(child: subprocess.Popen) -> int:
    """Wait for ``child`` (a process-group leader); on SIGTERM/SIGINT stop its whole group:
    SIGTERM, then SIGKILL after ``UI_STOP_GRACE_S``. Returns the exit code to use."""
    stopping: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        stopping.append(signum)
        _signal_group(child.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        deadline: float | None = None
        while child.poll() is None:
            if stopping and deadline is None:
                deadline = time.monotonic() + UI_STOP_GRACE_S
            if deadline is not None and time.monotonic() > deadline:
                _signal_group(child.pid, signal.SIGKILL)
            time.sleep(0.1)
        code = child.returncode
        # The leader may be gone while its webserver/daemon children linger.
        if stopping:
            deadline = time.monotonic() + UI_STOP_GRACE_S
            while _group_alive(child.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            _signal_group(child.pid, signal.SIGKILL)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if stopping else (code if code >= 0 else 1)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
