"""Rendering: every page written, registry text escaped, absent fields said plainly."""

from __future__ import annotations

import html.parser
import re
from dataclasses import replace

from dataflare_platform.portal.model import build_catalogue
from dataflare_platform.portal.render import build_site, environment
from dataflare_platform.portal.source import read_registry
from dataflare_platform_tests.portal.conftest import HOSTILE, Portal


class _Scripts(html.parser.HTMLParser):
    """The elements and attributes a browser would act on."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.handlers: list[tuple[str, str]] = []
        self.script_bodies: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        for name, _ in attrs:
            if name.startswith("on"):
                self.handlers.append((tag, name))
        if tag == "script":
            self.scripts.append(dict(attrs))
            self._in_script = True

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.script_bodies.append(data)


def _site(portal: Portal, tmp_path):
    reg = read_registry(portal.registry.repo.path, tmp_path / "st", portal.root)
    cat = build_catalogue(reg)
    return cat, build_site(cat, tmp_path / "site")


def test_autoescape_is_on_for_every_template():
    env = environment()
    assert env.autoescape is True  # not a per-extension choice: any template escapes
    assert env.from_string("{{ x }}").render(x="<i>") == "&lt;i&gt;"
    assert {"base.html", "catalogue.html", "plugin.html"} <= set(env.list_templates())


def test_site_has_a_catalogue_a_page_per_plugin_and_assets(portal_registry: Portal, tmp_path):
    _, pages = _site(portal_registry, tmp_path)
    site = tmp_path / "site"
    assert sorted(p.relative_to(site).as_posix() for p in pages) == [
        "index.html",
        "plugins/acme/currency.html",
        "plugins/acme/geo.html",
        "plugins/evil/pii_mask.html",
    ]
    assert (site / "assets" / "catalogue.js").is_file() and (
        site / "assets" / "portal.css"
    ).is_file()
    index = (site / "index.html").read_text()
    for ref in ("acme/currency", "acme/geo", "evil/pii_mask"):
        assert f'data-ref="{ref}"' in index
    page = (site / "plugins/acme/currency.html").read_text()
    assert 'data-version="1.0.0" class="status-yanked"' in page
    assert "rate rounding bug" in page
    assert "Convert an int64 price" in page and "price_eur" in page and "0.908" in page
    assert portal_registry.registry.publisher.public_key.keyid in page
    assert (
        "Not yet scanned." in page and "No usage data." in page and "No attestations yet." in page
    )
    # The quick start names commands that exist (test_portal's CLI test checks them).
    assert "dataflare plugin new myplugin" in page and "dataflare plugin publish" in page


def test_hostile_manifest_text_is_inert(portal_registry: Portal, tmp_path):
    _site(portal_registry, tmp_path)
    site = tmp_path / "site"
    for page in ("index.html", "plugins/evil/pii_mask.html"):
        text = (site / page).read_text()
        parsed = _Scripts()
        parsed.feed(text)
        # The only script is the site's own asset; no inline script, no event handler.
        assert all(s.get("src", "").endswith("assets/catalogue.js") for s in parsed.scripts)
        assert parsed.script_bodies == [] and parsed.handlers == []
        assert "<script>window.__pwned" not in text
        assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in text
        assert 'onmouseover="window' not in text
    page = (site / "plugins/evil/pii_mask.html").read_text()
    assert "&lt;b&gt;salt&lt;/b&gt;" in page
    # The signed manifest shown verbatim is JSON escaped for HTML, not raw.
    assert re.search(r"\\u003cscript\\u003e|&lt;script&gt;", page)
    assert HOSTILE not in page


def test_usage_chart_and_scan_results_render(portal_registry: Portal, tmp_path):
    reg = read_registry(portal_registry.registry.repo.path, tmp_path / "st", portal_registry.root)
    scan = {"admitted": False, "checks": [{"name": "licence", "passed": False, "detail": "<x>"}]}
    reg.versions = [
        replace(v, custom={**v.custom, "scan": scan, "quality": 42}) for v in reg.versions
    ]
    usage = {"acme/currency": {"days": [{"day": "2026-12-01", "calls": 7, "errors": 1}]}}
    build_site(build_catalogue(reg, usage), tmp_path / "site")
    page = (tmp_path / "site/plugins/acme/currency.html").read_text()
    assert '<svg class="chart"' in page and 'class="bar series-0"' in page
    assert "2026-12-01: 7 calls, 1 errors" in page
    assert "Verdict: <strong>refused</strong>" in page and "&lt;x&gt;" in page
    assert 'data-quality="42.0"' in (tmp_path / "site/index.html").read_text()


def test_a_deprecated_version_is_shown_as_deprecated(portal_registry: Portal, tmp_path):
    """``dataflare plugin deprecate``'s signed status reaches the portal: the version row
    and the plugin's header say deprecated (still offered when nothing newer is)."""
    reg = portal_registry.registry
    reg.repo.set_status("acme", "currency", "1.1.0", "deprecated", "use 2.x", reg.publisher)
    cat, _ = _site(portal_registry, tmp_path)
    currency = next(p for p in cat.plugins if p.ref == "acme/currency")
    assert [v.status for v in currency.versions] == ["published", "deprecated", "yanked"]
    assert currency.latest.version == "2.0.0-rc.1"  # the only published one left
    page = (tmp_path / "site" / currency.page).read_text()
    row = re.search(r'<tr data-version="1\.1\.0" class="status-deprecated">.*?</tr>', page, re.S)
    assert row is not None and "deprecated: use 2.x" in row.group(0)
