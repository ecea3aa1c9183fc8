"""Render the portal's model to static files with jinja2 (package templates, autoescape on).

Every value from the registry (names, descriptions, manifests, attestation fields) reaches
HTML only through the templates' autoescaping; this module builds no markup itself. The
JavaScript is a static asset reading the cards' escaped ``data-*`` attributes, and every
page carries a Content-Security-Policy that allows only the site's own script, so even a
markup bug could not run an inline script from a manifest.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import jinja2

from dataflare_platform.durable import write_atomic
from dataflare_platform.portal.model import CHART_HEIGHT, CHART_WIDTH, Catalogue, Plugin


def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("dataflare_platform.portal", "templates"),
        autoescape=True,  # every template, whatever its extension
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_catalogue(catalogue: Catalogue, env: jinja2.Environment | None = None) -> str:
    env = env or environment()
    return env.get_template("catalogue.html").render(catalogue=catalogue, root="")


def render_plugin(
    catalogue: Catalogue, plugin: Plugin, env: jinja2.Environment | None = None
) -> str:
    env = env or environment()
    return env.get_template("plugin.html").render(
        catalogue=catalogue,
        plugin=plugin,
        root="../../",  # pages live at plugins/<namespace>/<name>.html
        chart_width=CHART_WIDTH,
        chart_height=CHART_HEIGHT,
    )


def build_site(catalogue: Catalogue, out: Path) -> list[Path]:
    """Write ``index.html``, one page per plugin and the assets into ``out``; returns the
    pages written. Files are replaced atomically, so a server reading ``out`` while it is
    rebuilt never serves half a page."""
    out = Path(out)
    env = environment()
    written = [out / "index.html"]
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(written[0], render_catalogue(catalogue, env).encode())
    for plugin in catalogue.plugins:
        page = out / plugin.page
        page.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(page, render_plugin(catalogue, plugin, env).encode())
        written.append(page)
    assets = resources.files("dataflare_platform.portal") / "templates" / "assets"
    (out / "assets").mkdir(exist_ok=True)
    for item in assets.iterdir():
        if item.is_file():
            with resources.as_file(item) as src:
                shutil.copyfile(src, out / "assets" / item.name)
    return written
