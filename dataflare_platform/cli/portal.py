"""``dataflare portal build | serve``: the developer portal (docs/portal.md), static pages
generated from the registry's verified metadata and a loopback preview server. jinja2
and TUF are imported by the commands, so ``dataflare --help`` stays fast."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated

import typer

from dataflare_platform.cli._common import UsageError, command_group, err_console, print_json
from dataflare_platform.cli.plugin_lifecycle import ScannerKeyOption

portal_app = command_group(help="The developer portal: build static pages, serve them.")


@portal_app.command("build")
def build(
    source: Annotated[
        str, typer.Option("--from", help="Registry: an http(s):// URL or a repository folder.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the site into.")],
    root: Annotated[
        Path | None,
        typer.Option("--root", help="The registry's root.json, trusted out of band (first use)."),
    ] = None,
    usage: Annotated[
        Path | None,
        typer.Option("--usage", help='Usage roll-ups: JSON {"<ns>/<name>": {"days": [...]}}.'),
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option("--state", help="The portal's TUF cache (default: <home>/platform/portal)."),
    ] = None,
    usage_from_home: Annotated[
        bool | None,
        typer.Option(
            "--usage-from-home/--no-usage-from-home",
            help="Usage from the home's usage events and roll-ups (default: when the home "
            "has usage and no --usage file is given).",
        ),
    ] = None,
    usage_days: Annotated[
        int, typer.Option("--usage-days", min=1, max=366, help="Days of usage to chart.")
    ] = 30,
    usage_until: Annotated[
        str | None,
        typer.Option("--usage-until", help="Last day charted, YYYY-MM-DD (default: today, UTC)."),
    ] = None,
    scanner_key: ScannerKeyOption = None,
) -> None:
    """Verify the registry's metadata through TUF and write the catalogue and one page per
    plugin into OUT."""
    from dataflare_platform.home import ProjectHome
    from dataflare_platform.portal.model import build_catalogue
    from dataflare_platform.portal.render import build_site
    from dataflare_platform.portal.source import read_registry

    home = ProjectHome.resolve()
    if state is None:
        from dataflare_platform.plugins.registry import PLATFORM_DIR

        state = home.root / PLATFORM_DIR / "portal"
    if usage is not None and usage_from_home:
        raise UsageError("--usage FILE and --usage-from-home are exclusive")
    usage_data = None
    usage_source = "none"
    if usage is None and usage_from_home is not False:
        from dataflare_platform.portal.usage import home_has_usage, usage_from_home_data

        if usage_from_home or home_has_usage(home):
            try:
                until = date.fromisoformat(usage_until) if usage_until else _today()
            except ValueError:
                raise UsageError(f"--usage-until {usage_until!r}: expected YYYY-MM-DD") from None
            usage_data = usage_from_home_data(home, until, usage_days)
            usage_source = "home"
    if usage is not None:
        usage_source = "file"
        try:
            usage_data = json.loads(usage.read_text())
        except (OSError, ValueError) as err:
            raise UsageError(f"--usage {usage}: {err}") from None
        if not isinstance(usage_data, dict):
            raise UsageError(f"--usage {usage}: expected a JSON object")
    from dataflare_platform.cli.plugin_lifecycle import scanner_keys

    registry = read_registry(
        source, state, root.read_bytes() if root else None, scan_keys=scanner_keys(scanner_key)
    )
    catalogue = build_catalogue(registry, usage_data)
    pages = build_site(catalogue, out)
    if registry.skipped:
        err_console().print(f"skipped {len(registry.skipped)} targets with unexpected paths")
    print_json(
        {
            "out": str(out),
            "pages": len(pages),
            "plugins": len(catalogue.plugins),
            "publishers": len(catalogue.publishers),
            "skipped": registry.skipped,
            "usage": usage_source,
        }
    )


def _today() -> date:
    return datetime.now(UTC).date()


@portal_app.command("serve")
def serve(
    directory: Annotated[
        Path, typer.Argument(help="A folder written by `dataflare portal build`.")
    ],
    port: Annotated[int, typer.Option("--port", help="Port (0: a free one, printed).")] = 8711,
    host: Annotated[
        str, typer.Option("--host", help="Bind address; loopback unless --allow-remote.")
    ] = "127.0.0.1",
    allow_remote: Annotated[
        bool,
        typer.Option("--allow-remote", help="Allow a non-loopback --host (publishes the site)."),
    ] = False,
) -> None:
    """Serve the built portal over HTTP (127.0.0.1 by default) until interrupted."""
    from dataflare_platform.portal.serve import make_server

    server = make_server(directory, host, port, allow_remote)
    bound_host, bound_port = server.server_address[:2]
    shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
    print_json({"url": f"http://{shown}:{bound_port}/", "directory": str(directory)})
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
