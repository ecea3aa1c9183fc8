"""Admission scanning (issue 20 §2/§3) on real modules: a built sample is admitted, hostile
variants (WAT, or raw bytes for the compile bombs) are refused naming what and why, and
every check is reported, not only the first failure."""

from __future__ import annotations

from pathlib import Path

import pytest
import wasmtime

from dataflare_platform.bench.plugins import many_locals_module
from dataflare_platform.errors import ConfigError
from dataflare_platform.plugins import engine
from dataflare_platform.plugins.admission import (
    AdmissionPolicy,
    SelfTestVector,
    admit,
    check_licence,
    load_vectors,
    vectors_path,
)
from dataflare_platform.plugins.manifest import load_manifest
from dataflare_platform_tests.plugins.hostile import MANIFEST, module

CHECKS = ["structure", "abi", "capabilities", "licence", "self_test"]
# the hostile module copies x to y when x[0] is 0 (OK); other first values misbehave
COPY = [SelfTestVector(name="copy", input={"x": [0, 6, 7]}, expected={"y": [0, 6, 7]})]


@pytest.fixture
def policy(cache_dir: Path) -> AdmissionPolicy:
    return AdmissionPolicy(cache_dir=cache_dir)


@pytest.fixture
def no_compile(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records (and refuses) any attempt to compile or load a module with wasmtime."""
    calls: list[str] = []

    def refuse(name: str):
        def spy(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} called for a module admission should refuse")

        return spy

    monkeypatch.setattr(engine, "compile_isolated", refuse("compile_isolated"))
    monkeypatch.setattr(wasmtime.Module, "__init__", refuse("Module"))
    monkeypatch.setattr(wasmtime.Module, "deserialize", refuse("Module.deserialize"))
    return calls


def names(report) -> list[str]:
    return [c.name for c in report.checks]


def test_clean_sample_with_its_shipped_vectors_is_admitted(built, policy):
    wasm = built["currency"]
    vectors = load_vectors(vectors_path(wasm))
    assert len(vectors) == 2
    report = admit(wasm.read_bytes(), load_manifest(wasm.with_suffix(".json")), policy, vectors)
    assert names(report) == CHECKS
    assert report.admitted, report.failures
    assert "2 vector(s) passed" in report.check("self_test").detail
    assert "functions" in report.check("structure").detail


def test_hostile_copy_module_is_admitted_with_a_passing_vector(policy):
    report = admit(module(), MANIFEST, policy, COPY)
    assert report.admitted, report.failures


def test_ungranted_import_is_refused_naming_it(policy):
    wasi = (
        '(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))'
    )
    report = admit(module(imports=wasi), MANIFEST, policy, COPY)
    assert not report.admitted
    cap = report.check("capabilities")
    assert not cap.passed
    assert "wasi_snapshot_preview1.fd_write" in cap.detail
    assert names(report) == CHECKS  # every check still reported


def test_import_implying_an_undeclared_capability_is_refused(policy):
    log = '(import "dataflare" "log" (func (param i32 i32)))'
    report = admit(module(imports=log), MANIFEST, policy, COPY)
    assert "imply ['log'] not declared" in report.check("capabilities").detail
    declared = MANIFEST.model_copy(update={"capabilities": ["log"]})
    assert admit(module(imports=log), declared, policy, COPY).admitted
    strict = AdmissionPolicy(cache_dir=policy.cache_dir, allowed_capabilities=frozenset())
    detail = admit(module(imports=log), declared, strict, COPY).check("capabilities").detail
    assert "declares ['log'] not allowed by the policy" in detail


def test_oversize_module_is_refused_before_compilation(cache_dir, no_compile):
    small = AdmissionPolicy(cache_dir=cache_dir, module_bytes=100)
    report = admit(module(), MANIFEST, small, COPY)
    structure = report.check("structure")
    assert not structure.passed
    assert "module size (bytes) is" in structure.detail
    assert "the limit is 100" in structure.detail
    assert no_compile == []
    assert report.check("abi").detail.startswith("not run")


def test_compile_bomb_of_many_functions_is_refused_without_compiling(policy, no_compile):
    funcs = "\n".join("(func)" for _ in range(25_000))
    bomb = wasmtime.wat2wasm(f"(module {funcs})")
    report = admit(bomb, MANIFEST, policy, COPY)
    assert not report.admitted
    assert "functions is 25000, the limit is 20000" in report.check("structure").detail
    assert no_compile == []
    # every check is reported: the licence check ran, the module-bound ones did not
    assert names(report) == ["structure", "abi", "capabilities", "self_test", "licence"]
    assert report.check("licence").passed


def test_compile_bomb_of_a_giant_body_is_refused_without_compiling(policy, no_compile):
    report = admit(many_locals_module(), MANIFEST, policy, COPY)
    detail = report.check("structure").detail
    assert "largest function body (bytes) is" in detail
    assert "the limit is 524288" in detail
    assert "most locals in one function is 43000, the limit is 5000" in detail
    assert no_compile == []


def test_too_many_memory_pages_are_refused(policy, no_compile):
    big = module().replace('(memory (export "memory") 2)', '(memory (export "memory") 5000 9000)')
    detail = admit(big, MANIFEST, policy, COPY).check("structure").detail
    assert "memory initial pages is 5000, the limit is 4096" in detail
    assert "memory maximum pages is 9000, the limit is 4096" in detail
    assert no_compile == []


def test_large_table_is_refused(policy):
    tabled = module().replace("(memory", "(table 200000 funcref) (memory", 1)
    detail = admit(tabled, MANIFEST, policy, COPY).check("structure").detail
    assert "table initial elements is 200000, the limit is 100000" in detail


def test_missing_abi_export_is_refused(policy):
    filt = MANIFEST.model_copy(update={"kind": "filter", "output": []})
    detail = admit(module(), filt, policy, COPY).check("abi").detail
    assert "missing export 'dataflare_filter'" in detail


def test_failing_self_test_names_the_vector_and_the_difference(policy):
    wrong = SelfTestVector(name="off by one", input={"x": [0, 2]}, expected={"y": [1, 3]})
    report = admit(module(), MANIFEST, policy, [*COPY, wrong])
    st = report.check("self_test")
    assert not st.passed
    assert "vector 'off by one'" in st.detail
    assert "expected [{'y': 1}, {'y': 3}], got [{'y': 0}, {'y': 2}]" in st.detail
    assert "'copy'" not in st.detail


def test_self_test_runs_with_fuel_limits(cache_dir):
    # mode 1 of the hostile module loops forever: fuel stops it, reported as the failure
    looping = SelfTestVector(name="loops", input={"x": [1]}, expected={"y": [1]})
    tight = AdmissionPolicy(cache_dir=cache_dir, fuel=100_000)
    detail = admit(module(), MANIFEST, tight, [looping]).check("self_test").detail
    assert "vector 'loops': the plugin failed" in detail
    assert "fuel" in detail


def test_no_vectors_is_refused_unless_the_policy_allows_it(cache_dir, policy):
    assert admit(module(), MANIFEST, policy).check("self_test").detail == (
        "the plugin ships no self-test vectors"
    )
    lax = AdmissionPolicy(cache_dir=cache_dir, require_self_tests=False)
    assert admit(module(), MANIFEST, lax).admitted


def test_unknown_licence_is_refused_naming_it(policy):
    bad = MANIFEST.model_copy(update={"license": "MIT OR Frobnicate-1.0"})
    report = admit(module(), bad, policy, COPY)
    lic = report.check("licence")
    assert not lic.passed
    assert "unknown licence id(s): ['Frobnicate-1.0']" in lic.detail
    assert [c.name for c in report.failures] == ["licence"]


def test_disallowed_licence_is_refused(policy):
    gpl = MANIFEST.model_copy(update={"license": "GPL-3.0-only"})
    lic = admit(module(), gpl, policy, COPY).check("licence")
    assert not lic.passed
    assert "cannot be satisfied" in lic.detail


@pytest.mark.parametrize(
    ("expression", "allowed"),
    [
        ("MIT OR GPL-3.0", True),
        ("MIT AND GPL-3.0", False),
        ("MIT AND Apache-2.0", True),
        ("(GPL-3.0-only OR MIT) AND (Apache-2.0 OR AGPL-3.0-only)", True),
        ("Apache-2.0 WITH LLVM-exception", True),
        ("GPL-2.0-only WITH Classpath-exception-2.0", False),
        ("mit", True),
    ],
)
def test_licence_expression_satisfiability(expression, allowed):
    assert check_licence(expression, {"MIT", "Apache-2.0"}).passed is allowed


def test_malformed_licence_expression_is_refused():
    outcome = check_licence("MIT OR (", {"MIT"})
    assert not outcome.passed
    assert "not an SPDX expression" in outcome.detail


def test_not_wasm_is_refused(policy, no_compile):
    report = admit(b"\0asm\2\0\0\0", MANIFEST, policy, COPY)
    assert "not a core module" in report.check("structure").detail
    assert no_compile == []


def test_vectors_file_errors_name_the_file(tmp_path):
    path = tmp_path / "p.tests.json"
    with pytest.raises(ConfigError, match="not found"):
        load_vectors(path)
    path.write_text('{"vectors": []}')
    with pytest.raises(ConfigError):
        load_vectors(path)


def test_the_compile_spy_sees_a_compilation(policy, no_compile):
    """The ``no_compile`` observation is real: an admissible module does reach it."""
    with pytest.raises(AssertionError, match="called for a module"):
        admit(module(), MANIFEST, policy, COPY)
    assert no_compile


@pytest.mark.parametrize(
    ("version", "published", "passes"),
    [
        ("1.0.0", [], True),
        ("1.0.1", ["1.0.0", "0.9.9"], True),
        ("1.0.0", ["1.0.0"], False),  # republishing a version is not newer
        ("1.0.0", ["1.0.0-rc.1"], True),  # a release is above its pre-releases
        ("1.0.0-rc.2", ["1.0.0-rc.10"], False),  # numeric identifiers compare numerically
        ("1.0.0-rc.1", ["1.0.0-1"], True),  # alphanumeric above numeric
        ("1.10.0", ["1.9.0"], True),  # not a string comparison
        ("1.0.0+build.2", ["1.0.0+build.1"], False),  # build metadata has no precedence
        ("one", [], False),
    ],
)
def test_newer_than_published_follows_semver_precedence(version, published, passes):
    from dataflare_platform.plugins.admission import check_newer_than_published

    assert check_newer_than_published(version, published).passed is passes
