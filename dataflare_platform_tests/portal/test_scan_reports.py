"""The plugin page's scan results come from the signed scan report the target links
(admission's in-toto statement in a DSSE envelope), fetched through TUF like an install
fetches it, and its signature checked with the scanner key the portal is given."""

from __future__ import annotations

import hashlib
from html.parser import HTMLParser
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner

from dataflare_platform.marketplace.attestation import (
    ScanCheck,
    envelope_bytes,
    scan_statement,
    sign_statement,
)
from dataflare_platform.marketplace.repository import generate_key_file, load_signer
from dataflare_platform.portal.model import build_catalogue
from dataflare_platform.portal.render import build_site
from dataflare_platform.portal.source import read_registry
from dataflare_platform_tests.marketplace.conftest import MANIFEST, WASM, Registry
from dataflare_platform_tests.marketplace.conftest import http_url as http_url
from dataflare_platform_tests.marketplace.conftest import registry as registry

CHECKS = [
    ScanCheck("abi", True, "dataflare ABI 1"),
    ScanCheck("licence", True, "MIT is allowed"),
    ScanCheck("source_rebuild", False, "no source shipped", skipped=True),
]


def _signer(tmp_path: Path, name: str) -> CryptoSigner:
    generate_key_file(tmp_path / "scan-keys" / f"{name}.pem")
    return load_signer(tmp_path / "scan-keys" / f"{name}.pem")


def _publish(registry: Registry, signer: CryptoSigner, about: bytes = WASM) -> None:
    sha = hashlib.sha256(about).hexdigest()
    statement = scan_statement("acme/currency@1.0.0", sha, CHECKS, 80, "2026-12-05T10:00:00Z")
    registry.repo.publish(
        "acme",
        "currency",
        "1.0.0",
        WASM,
        MANIFEST,
        registry.publisher,
        attestation=envelope_bytes(sign_statement(statement, signer)),
        quality_score=80,
    )


class _Scan(HTMLParser):
    """The scan section of a plugin page: its signature line and its check rows."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = self.row = False
        self.rows: list[list[str]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "section" and ("id", "scan") in attrs:
            self.inside = True
        elif self.inside and tag == "tr":
            self.rows.append([])
            self.row = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self.inside = False
        elif tag == "tr":
            self.row = False

    def handle_data(self, data: str) -> None:
        if self.inside and data.strip():
            self.text.append(data.strip())
            if self.row:
                self.rows[-1].append(data.strip())


def _page(registry: Registry, source: str, tmp_path: Path, keys: list) -> _Scan:
    root = (registry.repo.metadata_dir / "1.root.json").read_bytes()
    verified = read_registry(source, tmp_path / "state", root, scan_keys=keys)
    out = tmp_path / "site"
    build_site(build_catalogue(verified, None), out)
    page = next(p for p in out.rglob("*.html") if "currency" in p.name)
    parser = _Scan()
    parser.feed(page.read_text())
    return parser


def test_the_page_shows_the_verified_checks_of_the_signed_report(
    registry: Registry, http_url: str, tmp_path: Path
) -> None:
    scanner = _signer(tmp_path, "scan")
    _publish(registry, scanner)
    scan = _page(registry, http_url, tmp_path, [scanner.public_key])
    assert "verified" in scan.text and "admitted" in scan.text
    assert scan.rows[1:] == [
        ["abi", "yes", "dataflare ABI 1"],
        ["licence", "yes", "MIT is allowed"],
        ["source_rebuild", "–", "skipped: no source shipped"],
    ]


@pytest.mark.parametrize("case", ["no key", "another key", "another module"])
def test_a_report_not_checked_or_refused_says_so(
    registry: Registry, tmp_path: Path, case: str
) -> None:
    scanner = _signer(tmp_path, "scan")
    _publish(registry, scanner, about=b"another module" if case == "another module" else WASM)
    keys = {
        "no key": [],
        "another key": [_signer(tmp_path, "other").public_key],
        "another module": [scanner.public_key],
    }[case]
    scan = _page(registry, str(registry.repo.path), tmp_path, keys)
    text = " ".join(scan.text)
    if case == "no key":  # shown, and marked as what the publisher attached
        assert "not checked (no scanner key given)" in text
        assert ["abi", "yes", "dataflare ABI 1"] in scan.rows
    else:  # refused: no check of that report is shown
        assert "refused:" in text
        assert scan.rows[1:] == []
        reason = "signature refused" if case == "another key" else "its subject is another module"
        assert reason in text


def test_a_report_changed_on_the_server_is_refused(registry: Registry, tmp_path: Path) -> None:
    scanner = _signer(tmp_path, "scan")
    _publish(registry, scanner)
    stored = next(registry.repo.targets_dir.rglob("*.dsse.json"))
    data = bytearray(stored.read_bytes())
    at = data.index(b'"payload": "') + len(b'"payload": "')
    data[at] = ord("A") if data[at] != ord("A") else ord("B")  # same length, other bytes
    stored.write_bytes(bytes(data))
    scan = _page(registry, str(registry.repo.path), tmp_path, [scanner.public_key])
    assert "refused: LengthOrHashMismatchError" in " ".join(scan.text)
    assert scan.rows[1:] == []
