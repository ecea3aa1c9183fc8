"""The portal's model: grouping, order, latest, and the fields others add, read defensively."""

from __future__ import annotations

from dataclasses import replace

from dataflare_platform.portal.model import build_catalogue, version_key
from dataflare_platform.portal.source import VerifiedRegistry, read_registry
from dataflare_platform_tests.portal.conftest import HOSTILE, Portal


def _registry(portal: Portal, tmp_path) -> VerifiedRegistry:
    return read_registry(portal.registry.repo.path, tmp_path / "st", portal.root)


def test_versions_grouped_newest_first_and_latest_is_the_newest_offered(
    portal_registry: Portal, tmp_path
):
    cat = build_catalogue(_registry(portal_registry, tmp_path))
    assert [p.ref for p in cat.plugins] == ["acme/currency", "acme/geo", "evil/pii_mask"]
    currency = cat.plugins[0]
    assert [v.version for v in currency.versions] == ["2.0.0-rc.1", "1.1.0", "1.0.0"]
    assert currency.latest.version == "1.1.0"  # a release before a newer pre-release
    assert [v.status for v in currency.versions] == ["published", "published", "yanked"]
    assert currency.versions[2].reason == "rate rounding bug"
    assert currency.description.startswith("Convert an int64 price")
    assert currency.kind == "map" and currency.latest.license == "Apache-2.0"
    assert currency.latest.signed_by == [portal_registry.registry.publisher.public_key.keyid]
    geo = cat.plugins[1]
    assert geo.latest.status == "revoked" and geo.latest.capabilities == ["clock", "log"]
    assert cat.plugins[2].description == HOSTILE
    assert {p.namespace: p.plugins for p in cat.publishers} == {"acme": 2, "evil": 1, "quiet": 0}


def test_semver_order_puts_a_prerelease_before_its_release():
    ordered = sorted(["1.10.0", "1.2.0", "2.0.0", "2.0.0-rc.1", "1.2.0+build"], key=version_key)
    assert ordered == ["1.2.0", "1.2.0+build", "1.10.0", "2.0.0-rc.1", "2.0.0"]


def test_absent_scan_quality_and_usage_are_none(portal_registry: Portal, tmp_path):
    cat = build_catalogue(_registry(portal_registry, tmp_path))
    for plugin in cat.plugins:
        assert plugin.usage is None
        for v in plugin.versions:
            assert v.scan is None and v.quality is None and v.attestations == []


def test_scan_quality_attestations_and_usage_when_present(portal_registry: Portal, tmp_path):
    reg = _registry(portal_registry, tmp_path)
    extra = {
        "quality": {"score": 87.5, "parts": {"checks": 1}},
        "scan": {
            "admitted": True,
            "checks": [{"check": "abi", "passed": True, "detail": "abi 1"}, "junk"],
        },
        "attestations": [
            {"predicateType": "https://dataflare.dev/scan/v1", "path": "x.dsse", "keyid": "ab"},
            "attestations/acme/currency/1.1.0.dsse.json",
            42,
        ],
    }
    reg.versions = [
        replace(v, custom={**v.custom, **extra}) if v.version == "1.1.0" else v
        for v in reg.versions
    ]
    usage = {
        "acme/currency": {
            "installs": 3,
            "days": [
                {"day": "2026-12-02", "calls": 40, "rows": 4000, "errors": 1},
                {"day": "2026-12-01", "calls": 10, "rows": 1000, "errors": 0},
                {"calls": 5},  # no day: ignored
            ],
        },
        "acme/geo": {"days": "not a list"},
    }
    cat = build_catalogue(reg, usage)
    v = next(v for v in cat.plugins[0].versions if v.version == "1.1.0")
    assert v.quality == 87.5
    assert v.scan is not None and v.scan.admitted is True
    assert [(c.name, c.passed) for c in v.scan.checks] == [("abi", True)]
    assert [a.kind for a in v.attestations] == ["https://dataflare.dev/scan/v1", "link"]
    u = cat.plugins[0].usage
    assert u is not None and [d["day"] for d in u.days] == ["2026-12-01", "2026-12-02"]
    assert (u.total_calls, u.total_rows, u.total_errors, u.installs) == (50, 5000, 1, 3)
    # The busiest day's bar is the full plot height (less the axis and label bands), the
    # other a quarter.
    assert u.bars[1].height == 144 and u.bars[0].height == 36
    assert cat.plugins[1].usage is None
    # A quality given as a bare number also counts; a boolean does not.
    assert (
        build_catalogue(
            replace(reg, versions=[replace(reg.versions[0], custom={"quality_score": 60})])
        )
        .plugins[0]
        .latest.quality
        == 60
    )
    assert (
        build_catalogue(replace(reg, versions=[replace(reg.versions[0], custom={"quality": True})]))
        .plugins[0]
        .latest.quality
        is None
    )
