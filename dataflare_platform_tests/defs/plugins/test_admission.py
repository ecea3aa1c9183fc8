"""The ``plugin_admission`` job run in process on real submissions: a built sample with
its source is admitted (every blocking check passes, a signed report is stored and the
release's lifecycle moves to scanned); hostile modules fail the run on the check that
refuses them, with the other checks still reported."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest
import wasmtime

from dataflare_platform.defs.governance.resources import GovernanceResource
from dataflare_platform.defs.plugins.admission import (
    SUBMISSIONS,
    PluginAdmissionResource,
    plugin_admission_job,
    plugin_submissions,
)
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.marketplace.attestation import verify_envelope
from dataflare_platform.marketplace.lifecycle import LifecycleStore
from dataflare_platform.marketplace.repository import (
    TOP_ROLES,
    Repository,
    generate_key_file,
    load_signer,
)
from dataflare_platform.marketplace.scan import CHECK_NAMES
from dataflare_platform.plugins.build import SAMPLES_DIR, build_plugin
from dataflare_platform_tests.plugins.hostile import MANIFEST, module

OP = "plugins__plugin_submissions"
COPY = {"vectors": [{"name": "copy", "input": {"x": [0, 6]}, "expected": {"y": [0, 6]}}]}


@pytest.fixture(scope="module")
def currency(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The currency sample built by the SDK, as submitted: module, manifest, vectors,
    README and its C source in ``currency.src/``."""
    out = tmp_path_factory.mktemp("currency")
    wasm = build_plugin(SAMPLES_DIR / "currency", out)
    shutil.copytree(SAMPLES_DIR / "currency", out / "currency.src")
    (out / "README.md").write_text("# currency\n\nConverts prices to EUR.\n")
    return wasm


@pytest.fixture
def registry(tmp_path: Path) -> Repository:
    keys = tmp_path / "keys"
    for role in [*TOP_ROLES, "acme"]:
        generate_key_file(keys / f"{role}.pem")
    signers = {role: [load_signer(keys / f"{role}.pem")] for role in TOP_ROLES}
    repo = Repository(tmp_path / "repo", signers=signers)
    repo.init()
    repo.add_publisher("acme", load_signer(keys / "acme.pem").public_key)
    return repo


@pytest.fixture
def scan_key(tmp_path: Path) -> Path:
    path = tmp_path / "scan-keys" / "scan.pem"
    generate_key_file(path)
    return path


def definitions(home, registry: Repository, scan_key: Path, **policy) -> dg.Definitions:
    return dg.Definitions(
        assets=[plugin_submissions],
        jobs=[plugin_admission_job],
        resources={
            "plugin_admission": PluginAdmissionResource(
                registry_dir=str(registry.path), scan_key_file=str(scan_key), **policy
            ),
            "dataflare": ProjectHomeResource(path=str(home.root)),
            "governance": GovernanceResource(dataflare=ProjectHomeResource(path=str(home.root))),
        },
    )


def run(defs: dg.Definitions, key: str, submission: Path):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(SUBMISSIONS.name, [key])
        result = defs.resolve_job_def("plugin_admission").execute_in_process(
            instance=instance,
            partition_key=key,
            run_config={"ops": {OP: {"config": {"submission": str(submission)}}}},
            raise_on_error=False,
        )
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    return result, checks


def detail(evaluation) -> str:
    return evaluation.metadata["detail"].value


def hostile(tmp_path: Path, wasm: bytes | str, manifest=MANIFEST, vectors=COPY) -> Path:
    folder = tmp_path / "staging"
    folder.mkdir(exist_ok=True)
    binary = wasmtime.wat2wasm(wasm) if isinstance(wasm, str) else wasm
    (folder / "hostile.wasm").write_bytes(binary)
    (folder / "hostile.json").write_text(manifest.model_dump_json())
    (folder / "hostile.tests.json").write_text(json.dumps(vectors))
    return folder


def failed(checks) -> list[str]:
    return sorted(name for name, e in checks.items() if not e.passed)


def test_a_built_sample_with_its_source_is_admitted_signed_and_scanned(
    audited_home, registry, scan_key, currency
):
    store = LifecycleStore.for_registry(registry.path, _audit(audited_home))
    from dataflare_platform_tests.marketplace.test_lifecycle import PUBLISHER

    store.create("acme/currency@1.0.0", PUBLISHER)
    store.transition("acme/currency@1.0.0", "submitted", PUBLISHER)
    result, checks = run(
        definitions(audited_home, registry, scan_key), "acme/currency@1.0.0", currency
    )
    assert result.success
    assert list(checks) == list(CHECK_NAMES)
    assert failed(checks) == []
    assert "rebuilt module matches sha256" in detail(checks["source_rebuild"])
    (mat,) = result.asset_materializations_for_node(OP)
    assert mat.metadata["admitted"].value is True
    # 60 (7/7 checks) + 10 (description) + 10 (README) + 8 (2 of 5 vectors)
    assert mat.metadata["quality_score"].value == 88
    envelope = Path(mat.metadata["attestation"].value).read_bytes()
    statement = verify_envelope(envelope, [load_signer(scan_key).public_key])
    assert statement["subject"][0]["name"] == "acme/currency@1.0.0"
    assert statement["predicate"]["admitted"] is True
    release = store.get("acme/currency@1.0.0")
    assert (release.state, release.admitted) == ("scanned", True)
    assert release.history[-1]["principal"] == "service:plugin-admission"
    assert any((audited_home.root / "platform" / "admission-cache").iterdir())


def _audit(home):
    from dataflare_platform.compliance.override_refusals import deployment_audit_log

    return deployment_audit_log(home.root)


def test_a_module_that_does_not_match_its_source_is_refused(
    audited_home, registry, scan_key, currency, tmp_path
):
    folder = tmp_path / "sub"
    shutil.copytree(currency.parent, folder, ignore=shutil.ignore_patterns(".zig-cache"))
    source = folder / "currency.src" / "plugin.c"
    source.write_text(source.read_text() + "\nint dataflare_extra_symbol(void) { return 7; }\n")
    result, checks = run(
        definitions(audited_home, registry, scan_key),
        "acme/currency@1.0.0",
        folder / "currency.wasm",
    )
    assert not result.success
    assert failed(checks) == ["source_rebuild"]
    assert "differs from the submitted" in detail(checks["source_rebuild"])


def test_a_version_not_newer_than_a_published_one_is_refused(
    audited_home, registry, scan_key, currency, tmp_path
):
    publisher = load_signer(tmp_path / "keys" / "acme.pem")
    manifest = currency.with_suffix(".json").read_bytes()
    registry.publish("acme", "currency", "1.0.0", currency.read_bytes(), manifest, publisher)
    result, checks = run(
        definitions(audited_home, registry, scan_key), "acme/currency@1.0.0", currency
    )
    assert not result.success
    assert failed(checks) == ["newer_than_published"]
    assert "1.0.0 is not newer than published ['1.0.0']" in detail(checks["newer_than_published"])


def test_ungranted_import_fails_the_capabilities_check(audited_home, registry, scan_key, tmp_path):
    wasi = (
        '(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))'
    )
    sub = hostile(tmp_path, module(imports=wasi))
    result, checks = run(definitions(audited_home, registry, scan_key), "acme/hostile@0.0.1", sub)
    assert not result.success
    # the self-tests fail too: the sandbox cannot link an import nobody grants
    assert failed(checks) == ["capabilities", "self_tests"]
    assert "wasi_snapshot_preview1.fd_write" in detail(checks["capabilities"])
    assert checks["source_rebuild"].metadata["skipped"].value is True


def test_oversize_module_fails_the_limits_check(audited_home, registry, scan_key, tmp_path):
    sub = hostile(tmp_path, module())
    defs = definitions(audited_home, registry, scan_key, max_module_bytes=100)
    result, checks = run(defs, "acme/hostile@0.0.1", sub)
    assert not result.success
    assert "limits" in failed(checks)
    assert "the limit is 100" in detail(checks["limits"])
    assert detail(checks["abi"]).startswith("not run")


def test_compile_bomb_fails_the_limits_check(audited_home, registry, scan_key, tmp_path):
    bomb = wasmtime.wat2wasm("(module " + "(func)" * 25_000 + ")")
    sub = hostile(tmp_path, bomb)
    result, checks = run(definitions(audited_home, registry, scan_key), "acme/hostile@0.0.1", sub)
    assert not result.success
    assert "functions is 25000, the limit is 20000" in detail(checks["limits"])
    assert checks["licence"].passed  # the checks that need no compiled module still ran


def test_failing_self_test_fails_the_self_tests_check(audited_home, registry, scan_key, tmp_path):
    wrong = {"vectors": [{"name": "off by one", "input": {"x": [0, 2]}, "expected": {"y": [1, 3]}}]}
    sub = hostile(tmp_path, module(), vectors=wrong)
    result, checks = run(definitions(audited_home, registry, scan_key), "acme/hostile@0.0.1", sub)
    assert not result.success
    assert failed(checks) == ["self_tests"]
    assert "vector 'off by one'" in detail(checks["self_tests"])


def test_unknown_licence_fails_the_licence_check(audited_home, registry, scan_key, tmp_path):
    bad = MANIFEST.model_copy(update={"license": "Frobnicate-1.0"})
    sub = hostile(tmp_path, module(), manifest=bad)
    result, checks = run(definitions(audited_home, registry, scan_key), "acme/hostile@0.0.1", sub)
    assert not result.success
    assert failed(checks) == ["licence"]
    assert "unknown licence id(s): ['Frobnicate-1.0']" in detail(checks["licence"])
    # the refused scan is still signed and stored: the publisher sees what to fix
    (mat,) = result.asset_materializations_for_node(OP)
    statement = verify_envelope(
        Path(mat.metadata["attestation"].value).read_bytes(), [load_signer(scan_key).public_key]
    )
    assert statement["predicate"]["admitted"] is False


def test_a_module_whose_name_is_not_the_partition_is_refused(
    audited_home, registry, scan_key, tmp_path
):
    sub = hostile(tmp_path, module())
    result, checks = run(definitions(audited_home, registry, scan_key), "acme/other@0.0.1", sub)
    assert not result.success
    assert checks == {}


def test_the_admitted_release_is_approved_and_published_with_its_report(
    audited_home, registry, scan_key, currency, tmp_path
):
    """The walk after the job: a reviewer approves the admitted scan, the publisher
    publishes it; the target links the signed report by digest and carries the score."""
    from dataflare_platform.marketplace.lifecycle import LifecycleError
    from dataflare_platform.marketplace.scan import load_submission, publish_approved
    from dataflare_platform_tests.marketplace.test_lifecycle import PUBLISHER, REVIEWER

    key = "acme/currency@1.0.0"
    store = LifecycleStore.for_registry(registry.path, _audit(audited_home))
    store.create(key, PUBLISHER)
    store.transition(key, "submitted", PUBLISHER)
    result, _ = run(definitions(audited_home, registry, scan_key), key, currency)
    assert result.success
    submission = load_submission(currency, "acme")
    publisher = load_signer(tmp_path / "keys" / "acme.pem")
    trusted = [load_signer(scan_key).public_key]
    with pytest.raises(LifecycleError, match="is scanned, not approved"):
        publish_approved(registry, store, submission, PUBLISHER, publisher, trusted)
    store.transition(key, "approved", REVIEWER)
    custom = publish_approved(registry, store, submission, PUBLISHER, publisher, trusted)
    assert store.get(key).state == "published"
    assert custom["quality_score"] == 88
    (link,) = custom["attestations"]
    stored = (registry.targets_dir / link["path"]).read_bytes()
    assert verify_envelope(stored, trusted)["subject"][0]["name"] == key


def test_the_shipped_definitions_carry_the_job_and_its_blocking_checks(home):
    from dataflare_platform.definitions import defs as shipped

    job = shipped.resolve_job_def("plugin_admission")
    assert job.partitions_def == SUBMISSIONS
    checks = shipped.resolve_asset_graph().asset_check_keys
    ours = {c for c in checks if c.asset_key == plugin_submissions.key}
    assert {c.name for c in ours} == set(CHECK_NAMES)
    specs = {s.name: s for s in plugin_submissions.check_specs}
    assert all(s.blocking for s in specs.values())


def test_without_a_registry_the_version_check_says_it_was_skipped(home, tmp_path, scan_key):
    sub = hostile(tmp_path, module())
    defs = dg.Definitions(
        assets=[plugin_submissions],
        jobs=[plugin_admission_job],
        resources={
            "plugin_admission": PluginAdmissionResource(scan_key_file=str(scan_key)),
            "dataflare": ProjectHomeResource(path=str(home.root)),
            "governance": GovernanceResource(dataflare=ProjectHomeResource(path=str(home.root))),
        },
    )
    result, checks = run(defs, "acme/hostile@0.0.1", sub)
    assert result.success
    assert detail(checks["newer_than_published"]) == "no registry to compare with"
    assert checks["newer_than_published"].metadata["skipped"].value is True
    # the report goes beside the module
    assert (sub / "hostile.scan.dsse.json").is_file()
