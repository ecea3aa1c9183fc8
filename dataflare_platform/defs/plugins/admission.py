"""The ``plugin_admission`` job (issue 20 §2): one run per submitted plugin version, whose
blocking asset checks decide admission. Thin on purpose: the checks, the score and the
signed report are ``marketplace.scan`` (data plane); this module names them as Dagster
asset checks and records the scan in the release's lifecycle.

The asset ``plugins/plugin_submissions`` is partitioned dynamically by release
(``<namespace>/<name>@<version>``): a submission adds its partition and launches the job
for it with the module's path (a ``.wasm`` file or a staging folder) as config. Each
admission check is an asset check on it, blocking and of ERROR severity, so a refused
module fails the run (never a green run with a red check) and nothing downstream of the
asset runs; admitted = every check passed (``source_rebuild`` passes as "skipped" when no
source is shipped, and says so)."""

from pathlib import Path
from typing import Any, ClassVar

import dagster as dg
from pydantic import Field

from dataflare_platform.access.principal import Principal
from dataflare_platform.defs.deployment_lock import DeploymentLockedResource, deployment_field
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.errors import DataflareError, NotFoundError
from dataflare_platform.marketplace.lifecycle import LifecycleStore
from dataflare_platform.marketplace.repository import Repository, load_signer
from dataflare_platform.marketplace.scan import (
    CHECK_NAMES,
    ScanResult,
    load_submission,
    scan_submission,
    store_report,
)
from dataflare_platform.plugins.admission import DEFAULT_LICENCES, AdmissionPolicy
from dataflare_platform.plugins.registry import PLATFORM_DIR

GROUP = "plugins"
SUBMISSIONS = dg.DynamicPartitionsDefinition(name="plugin_submissions")
SUBMISSIONS_KEY = dg.AssetKey([GROUP, "plugin_submissions"])
# The job's own principal when it records a scan in a release's lifecycle.
SCANNER = Principal(name="plugin-admission", kind="service", via="host", roles={"scanner"})
DESCRIPTIONS = {
    "limits": "Size, memory pages, table size, function count, code and body sizes within "
    "the policy, walked from the section headers before anything is compiled.",
    "abi": "The module exports what ABI v1 requires for its kind.",
    "capabilities": "Capabilities implied by the module's imports ⊆ declared ⊆ allowed.",
    "licence": "The SPDX expression parses and is satisfiable with the allow-list.",
    "self_tests": "The shipped self-test vectors pass in the sandbox (fuel, memory limits).",
    "newer_than_published": "The version is newer than every one the registry lists.",
    "source_rebuild": "The shipped C source rebuilt with the SDK has the module's digest.",
}


class PluginAdmissionResource(DeploymentLockedResource):
    """Where submissions are checked against and reported to: the registry (published
    versions, staging area, lifecycle store) and the scan report's signing key. Every
    field is a deployment setting: a submitter must not pick the key or the registry."""

    deployment_key: ClassVar[str] = "plugin_admission"

    registry_dir: str = deployment_field(
        "",
        env="DATAFLARE_REGISTRY_DIR",
        description="The TUF registry folder ('' = none: no published versions, the report "
        "is written beside the module).",
    )
    scan_key_file: str = deployment_field(
        "",
        env="DATAFLARE_PLUGIN_SCAN_KEY_FILE",
        description="Ed25519 PEM key (mode 0600) signing scan reports ('' = unsigned: the "
        "run reports the scan but stores no attestation).",
    )
    allowed_capabilities: list[str] = deployment_field(
        env=None, default_factory=lambda: ["log"], description="Capabilities plugins may declare."
    )
    allowed_licences: list[str] = deployment_field(
        env=None,
        default_factory=lambda: list(DEFAULT_LICENCES),
        description="SPDX licence ids on the allow-list.",
    )

    max_module_bytes: int = deployment_field(
        AdmissionPolicy.module_bytes, env=None, description="Largest module admitted (bytes)."
    )

    def policy(self, cache_dir: Path | None = None) -> AdmissionPolicy:
        return AdmissionPolicy(
            cache_dir=cache_dir,
            module_bytes=self.max_module_bytes,
            allowed_capabilities=frozenset(self.allowed_capabilities),
            allowed_licences=frozenset(self.allowed_licences),
        )

    def registry(self) -> Repository | None:
        return Repository(Path(self.registry_dir)) if self.registry_dir else None


class PluginSubmissionConfig(dg.Config):
    submission: str = Field(
        description="The submitted module: a .wasm file (manifest, vectors, README and "
        "source beside it) or a staging folder holding one."
    )


@dg.asset(
    key=SUBMISSIONS_KEY,
    partitions_def=SUBMISSIONS,
    group_name=GROUP,
    kinds={"wasm"},
    owners=["team:data-platform"],
    description="One submitted plugin version per partition (<ns>/<name>@<version>), "
    "scanned for admission; its blocking checks decide admission and the signed scan "
    "report (in-toto statement in a DSSE envelope) is stored for the release.",
    check_specs=[
        dg.AssetCheckSpec(name, asset=SUBMISSIONS_KEY, blocking=True, description=text)
        for name, text in DESCRIPTIONS.items()
    ],
)
def plugin_submissions(
    context: dg.AssetExecutionContext,
    config: PluginSubmissionConfig,
    plugin_admission: PluginAdmissionResource,
    dataflare: ProjectHomeResource,
    # GovernanceResource (not imported: defs.governance -> streams -> plugins)
    governance: dg.ResourceParam[Any],
) -> dg.MaterializeResult:
    namespace = context.partition_key.split("/", 1)[0]
    try:
        submission = load_submission(config.submission, namespace)
    except DataflareError as err:
        raise dg.Failure(description=f"submission {config.submission}: {err}") from err
    if submission.key != context.partition_key:
        raise dg.Failure(
            description=f"the module is {submission.key}, the partition {context.partition_key}"
        )
    repo = plugin_admission.registry()
    published = repo.published_versions(namespace, submission.manifest.name) if repo else None
    signer = (
        load_signer(Path(plugin_admission.scan_key_file))
        if plugin_admission.scan_key_file
        else None
    )
    # Submitted modules are compiled into a cache of their own, never the runtime's.
    cache = dataflare.home.root / PLATFORM_DIR / "admission-cache"
    result = scan_submission(submission, plugin_admission.policy(cache), published, signer)
    metadata: dict[str, object] = {
        "admitted": result.admitted,
        "quality_score": result.score,
        "sha256": result.sha256,
        "checks_failed": [c.name for c in result.checks if not c.passed],
    }
    if result.envelope is not None:
        registry = Path(plugin_admission.registry_dir) if repo else None
        metadata["attestation"] = str(store_report(result, submission, registry))
    if repo is not None:
        metadata["lifecycle"] = record_scan(repo.path, governance, submission.key, result)
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            dg.AssetCheckResult(
                check_name=check.name,
                passed=check.passed,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={"detail": check.detail, "skipped": check.skipped},
            )
            for check in result.checks
        ],
    )


def record_scan(registry: Path, governance: Any, key: str, result: ScanResult) -> str:
    """Move a release the lifecycle tracks from ``submitted`` to ``scanned`` (as the job's
    service principal, audited); returns its state (``untracked`` when the store has no
    such release, e.g. a scan run by hand)."""
    with governance.audit_log() as audit:
        store = LifecycleStore.for_registry(registry, audit)
        try:
            state = store.get(key).state
        except NotFoundError:
            return "untracked"
        if state == "submitted":
            store.transition(key, "scanned", SCANNER, admitted=result.admitted, score=result.score)
            state = "scanned"
        return state


assert tuple(DESCRIPTIONS) == CHECK_NAMES  # one asset check per admission check

plugin_admission_job = dg.define_asset_job(
    "plugin_admission",
    selection=dg.AssetSelection.assets(SUBMISSIONS_KEY),
    description="Admission of one submitted plugin version (partition <ns>/<name>@<version>,"
    " config: the module's path): admitted when every blocking check passes.",
)
