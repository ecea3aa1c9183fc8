"""Scanning one submitted plugin version: every admission check under its marketplace
name, the quality score, and the signed scan report (issue 20 §2). Data plane: the
``plugin_admission`` Dagster job (``defs/plugins/admission.py``) only calls
:func:`scan_submission` and turns its checks into asset check results.

A submission is a module file ``<stem>.wasm`` (path given, or the only ``.wasm`` in a
staging folder) with, beside it, its manifest ``<stem>.json``, optionally its self-test
vectors ``<stem>.tests.json``, a README (``<stem>.README.md`` or ``README.md``) and its C
source (``<stem>.src/plugin.c`` or ``src/plugin.c``, the SDK's layout).

The admission checks, in the report's order:

``limits``                the structure walk (size, pages, table, functions, bodies,
                          locals; a compile bomb stops here) and the compile
``abi``, ``capabilities``, ``licence``, ``self_tests``   as ``plugins.admission``
``newer_than_published``  the version is above every version the registry lists
``source_rebuild``        the shipped C source rebuilt with the SDK gives the same digest
                          (skipped when no source is shipped: reported as skipped, not
                          as a pass, and the score counts only checks that applied)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from securesystemslib.signer import Key, Signer

from dataflare_platform.access.principal import Principal
from dataflare_platform.errors import InvalidInputError, NotFoundError
from dataflare_platform.marketplace.attestation import (
    ScanCheck,
    quality_score,
    scan_statement,
    sign_statement,
)
from dataflare_platform.marketplace.lifecycle import LifecycleError, LifecycleStore, release_key
from dataflare_platform.marketplace.repository import Repository
from dataflare_platform.plugins.admission import (
    AdmissionPolicy,
    SelfTestVector,
    admit,
    check_newer_than_published,
    check_source_rebuild,
    load_vectors,
    vectors_path,
)
from dataflare_platform.plugins.manifest import Manifest, load_manifest

CHECK_NAMES = (
    "limits",
    "abi",
    "capabilities",
    "licence",
    "self_tests",
    "newer_than_published",
    "source_rebuild",
)


@dataclass(frozen=True)
class Submission:
    namespace: str
    wasm: Path
    manifest: Manifest
    manifest_bytes: bytes
    vectors: list[SelfTestVector]
    readme: Path | None
    source_dir: Path | None

    @property
    def key(self) -> str:
        return release_key(self.namespace, self.manifest.name, self.manifest.version)


def load_submission(path: Path | str, namespace: str) -> Submission:
    """The submission at ``path`` (a ``.wasm`` file or a staging folder holding one)."""
    path = Path(path)
    if path.is_dir():
        modules = sorted(path.glob("*.wasm"))
        if len(modules) != 1:
            raise InvalidInputError(
                f"{path}: a staging folder holds one .wasm, found {len(modules)}"
            )
        path = modules[0]
    if not path.is_file():
        raise NotFoundError(f"no submitted module at {path}")
    manifest_path = path.with_suffix(".json")
    manifest = load_manifest(manifest_path)
    tests = vectors_path(path)
    vectors = load_vectors(tests) if tests.exists() else []
    stem, folder = path.stem, path.parent
    readme = next(
        (p for p in (folder / f"{stem}.README.md", folder / "README.md") if p.is_file()), None
    )
    source = next(
        (d for d in (folder / f"{stem}.src", folder / "src") if (d / "plugin.c").is_file()), None
    )
    return Submission(
        namespace, path, manifest, manifest_path.read_bytes(), vectors, readme, source
    )


@dataclass
class ScanResult:
    key: str
    sha256: str
    checks: list[ScanCheck]
    score: int
    statement: dict[str, Any]
    envelope: dict[str, Any] | None = None  # None when no scan key was given
    admitted: bool = field(init=False)

    def __post_init__(self) -> None:
        self.admitted = all(c.passed or c.skipped for c in self.checks)

    def check(self, name: str) -> ScanCheck:
        return next(c for c in self.checks if c.name == name)


def scan_submission(
    submission: Submission,
    policy: AdmissionPolicy | None = None,
    published: list[str] | None = None,
    signer: Signer | None = None,
    now: datetime | None = None,
) -> ScanResult:
    """Run every check on ``submission`` (``published``: the versions of the plugin the
    registry already lists; None: no registry, the check is reported skipped), score it
    and, with ``signer``, sign the report."""
    binary = submission.wasm.read_bytes()
    sha256 = hashlib.sha256(binary).hexdigest()
    report = admit(binary, submission.manifest, policy, submission.vectors)
    by_name = {c.name: c for c in report.checks}
    shape = [by_name["structure"]] + ([by_name["compile"]] if "compile" in by_name else [])
    checks = [
        ScanCheck("limits", all(c.passed for c in shape), "; ".join(c.detail for c in shape)),
        *(
            ScanCheck(ours, by_name[theirs].passed, by_name[theirs].detail)
            for ours, theirs in (
                ("abi", "abi"),
                ("capabilities", "capabilities"),
                ("licence", "licence"),
                ("self_tests", "self_test"),
            )
        ),
    ]
    if published is None:
        checks.append(
            ScanCheck("newer_than_published", True, "no registry to compare with", skipped=True)
        )
    else:
        newer = check_newer_than_published(submission.manifest.version, published)
        checks.append(ScanCheck("newer_than_published", newer.passed, newer.detail))
    if submission.source_dir is None:
        checks.append(ScanCheck("source_rebuild", True, "no source shipped", skipped=True))
    elif not checks[0].passed:
        checks.append(ScanCheck("source_rebuild", False, "not run: the module was refused above"))
    else:
        rebuilt = check_source_rebuild(binary, submission.source_dir, submission.wasm.stem)
        checks.append(ScanCheck("source_rebuild", rebuilt.passed, rebuilt.detail))
    score = quality_score(
        checks,
        description=bool(submission.manifest.description.strip()),
        readme=submission.readme is not None,
        vectors=len(submission.vectors),
    )
    when = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    statement = scan_statement(
        submission.key,
        sha256,
        checks,
        score,
        when,
        extra={
            "manifestSha256": hashlib.sha256(submission.manifest_bytes).hexdigest(),
            "vectors": len(submission.vectors),
            "readme": submission.readme is not None,
            "sourceShipped": submission.source_dir is not None,
        },
    )
    envelope = sign_statement(statement, signer) if signer is not None else None
    return ScanResult(submission.key, sha256, checks, score, statement, envelope)


def report_path(submission: Submission, registry: Path | None) -> Path:
    """Where the signed scan report of ``submission`` waits until it is published: the
    registry's staging area (``<registry>/staging/<ns>/<name>/<version>.scan.dsse.json``)
    or, without a registry, beside the module (``<stem>.scan.dsse.json``)."""
    m = submission.manifest
    if registry is not None:
        return (
            Path(registry)
            / "staging"
            / submission.namespace
            / m.name
            / (f"{m.version}.scan.dsse.json")
        )
    return submission.wasm.with_name(f"{submission.wasm.stem}.scan.dsse.json")


def store_report(result: ScanResult, submission: Submission, registry: Path | None) -> Path:
    """Write the signed report (refused without a signature: an unsigned report vouches
    for nothing) and return its path."""
    from dataflare_platform.durable import write_atomic
    from dataflare_platform.marketplace.attestation import envelope_bytes

    if result.envelope is None:
        raise InvalidInputError(f"{result.key}: the scan report is not signed")
    path = report_path(submission, registry)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, envelope_bytes(result.envelope))
    return path


def publish_approved(
    repo: Repository,
    store: LifecycleStore,
    submission: Submission,
    principal: Principal,
    publisher_signer: Signer | list[Signer],
    scan_keys: list[Key],
    platform: str = ">=0.1",
) -> dict[str, Any]:
    """Publish an approved release with its signed scan report (issue 20 §2): the
    lifecycle must say ``approved`` (so the scan admitted it and a reviewer approved),
    the staged report must verify with ``scan_keys`` and be about this very module, then
    the module goes to the registry with the report linked in its target metadata and the
    release moves to ``published`` as ``principal`` (a publisher). Returns the target's
    ``custom.dataflare`` metadata."""
    from dataflare_platform.marketplace.attestation import verify_envelope

    release = store.get(submission.key)
    if release.state != "approved":
        raise LifecycleError(f"release {submission.key} is {release.state}, not approved")
    # refused (and audited) by the access model before anything is written
    store.require(submission.key, "published", principal)
    binary = submission.wasm.read_bytes()
    envelope = report_path(submission, Path(repo.path)).read_bytes()
    statement = verify_envelope(
        envelope, scan_keys, subject_sha256=hashlib.sha256(binary).hexdigest()
    )
    if not statement["predicate"]["admitted"]:
        raise LifecycleError(f"release {submission.key}: its scan report did not admit it")
    m = submission.manifest
    repo.publish(
        submission.namespace,
        m.name,
        m.version,
        binary,
        submission.manifest_bytes,
        publisher_signer,
        platform=platform,
        attestation=envelope,
        quality_score=statement["predicate"]["qualityScore"],
    )
    store.transition(submission.key, "published", principal)
    return dict(repo.target_custom(submission.namespace, m.name, m.version))
