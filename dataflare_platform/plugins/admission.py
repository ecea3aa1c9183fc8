"""Admission scanning of a submitted plugin version (issue 20 §2/§3), as a data-plane
library: :func:`admit` runs every check and returns each outcome, so a Dagster job can
turn them into asset checks, and a reviewer sees every problem at once, not the first.

The checks trust what the module *is*, not what the manifest claims:

``structure``
    The binary's section headers walked by ``plugins.shape`` (no instruction decoded,
    nothing compiled) against the deployment's limits: total size, declared memory pages
    (initial and maximum), table size, function count, code section size, largest body, most locals.
    A compile-time bomb (huge function count or body) is refused here, before wasmtime
    compiles anything; the checks needing a compiled module then report "not run".
``abi``
    The required exports of ABI v1 (``plugins.abi``) for the manifest's kind.
``capabilities``
    Imports read from wasmtime's type information map to the capabilities that provide
    them (``abi.CAPABILITY_IMPORTS``); implied ⊆ declared in the manifest ⊆ allowed by the
    policy. An import no capability provides is refused naming it.
``licence``
    The manifest's SPDX expression parsed with ``license-expression``; unknown ids refused
    naming them; allowed if the expression can be satisfied with allow-listed licences
    (``MIT OR GPL-3.0-only`` needs one of them, ``MIT AND GPL-3.0-only`` both).
``self_test``
    The plugin's shipped vectors (input rows, expected output rows) run in the sandbox
    with the policy's fuel and memory limits; a failing vector is named with the
    difference."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import polars as pl
import wasmtime
from license_expression import (
    AND,
    OR,
    ExpressionError,
    LicenseSymbol,
    LicenseWithExceptionSymbol,
    get_spdx_licensing,
)
from polars.testing import assert_frame_equal
from pydantic import Field

from dataflare_platform.errors import ConfigError, DataflareError, InvalidInputError
from dataflare_platform.models import StrictModel
from dataflare_platform.plugins import abi
from dataflare_platform.plugins.engine import compile_module, one_line, to_binary
from dataflare_platform.plugins.manifest import Manifest
from dataflare_platform.plugins.runtime import Limits, Plugin
from dataflare_platform.plugins.shape import (
    ModuleRefusedError,
    ModuleShape,
    ShapeLimits,
    check_module,
)

_UNBOUNDED = 1 << 40
DEFAULT_LICENCES = ("MIT", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "ISC", "Zlib")


@dataclass(frozen=True)
class AdmissionPolicy:
    """A deployment's admission policy. The defaults fit the shipped samples (2-40 KB,
    under 100 functions, 2-17 pages of memory) with a wide margin."""

    module_bytes: int = 16 * 1024 * 1024
    memory_pages: int = 4096  # 256 MiB: the runtime's default per-instance memory limit
    table_elements: int = 100_000
    functions: int = 20_000  # imported + defined
    code_bytes: int = 8 * 1024 * 1024  # the whole code section
    body_bytes: int = 512 * 1024  # one function's body
    locals_per_function: int = 5_000  # Cranelift's time grows with live locals
    allowed_capabilities: frozenset[str] = frozenset({"log"})
    allowed_licences: frozenset[str] = frozenset(DEFAULT_LICENCES)
    require_self_tests: bool = True  # a plugin shipping no vectors is not admitted
    fuel: int = 50_000_000  # per self-test call
    memory_bytes: int = 64 * 1024 * 1024  # per self-test instance
    deadline_ms: int = 10_000
    cache_dir: Path | None = None  # the compiled-module cache (None: the default one)


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    passed: bool
    detail: str


@dataclass
class AdmissionReport:
    plugin: str
    version: str
    checks: list[CheckOutcome] = field(default_factory=list)

    @property
    def admitted(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[CheckOutcome]:
        return [c for c in self.checks if not c.passed]

    def check(self, name: str) -> CheckOutcome:
        return next(c for c in self.checks if c.name == name)


class SelfTestVector(StrictModel):
    """One shipped self-test: ``input`` and ``expected`` are column -> values (rows in
    column form); ``expected`` names only the columns compared. For a filter plugin the
    expected rows are the input rows it keeps; for an aggregate, its result rows."""

    name: str = Field(min_length=1, max_length=200)
    params: dict[str, Any] = Field(default_factory=dict)
    input: dict[str, list[Any]]
    expected: dict[str, list[Any]]


class SelfTests(StrictModel):
    vectors: list[SelfTestVector] = Field(min_length=1, max_length=1000)


def vectors_path(wasm_path: Path) -> Path:
    """The sidecar holding a plugin's self-test vectors: ``foo.wasm`` -> ``foo.tests.json``."""
    return wasm_path.with_suffix(".tests.json")


def load_vectors(path: Path | str) -> list[SelfTestVector]:
    """The vectors in the sidecar ``path`` (``{"vectors": [...]}``), or ConfigError."""
    path = Path(path)
    what = f"self-test vectors {path}"
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(what, [("<file>", "not found")]) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(what, [("<file>", f"not JSON: {err}")]) from None
    return SelfTests.validated(raw, what).vectors


# -- 1. structure ---------------------------------------------------------------------------
def _structure(binary: bytes, policy: AdmissionPolicy) -> tuple[CheckOutcome, ModuleShape | None]:
    """Walk the headers with no count limit (every value is then compared below, so each
    limit exceeded is reported, not only the first); malformed bytes refuse here."""
    try:
        shape = check_module(
            binary,
            ShapeLimits(
                module_bytes=_UNBOUNDED,
                functions=_UNBOUNDED,
                locals_per_function=_UNBOUNDED,
                body_bytes=_UNBOUNDED,
                imports=_UNBOUNDED,
                table_elements=_UNBOUNDED,
                globals=_UNBOUNDED,
            ),
        )
    except ModuleRefusedError as err:
        return CheckOutcome("structure", False, err.detail), None
    values: list[tuple[str, int, int]] = [
        ("module size (bytes)", shape.size, policy.module_bytes),
        ("functions", shape.functions, policy.functions),
        ("code section (bytes)", shape.code_bytes, policy.code_bytes),
        ("largest function body (bytes)", shape.max_body_bytes, policy.body_bytes),
        ("most locals in one function", shape.max_locals, policy.locals_per_function),
    ]
    for memory in shape.memories:
        values.append(("memory initial pages", _int(memory["min"]), policy.memory_pages))
        if memory["max"] is not None:
            values.append(("memory maximum pages", _int(memory["max"]), policy.memory_pages))
    for table in shape.tables:
        values.append(("table initial elements", _int(table["min"]), policy.table_elements))
        if table["max"] is not None:
            values.append(("table maximum elements", _int(table["max"]), policy.table_elements))
    over = [
        f"{what} is {value}, the limit is {limit}" for what, value, limit in values if value > limit
    ]
    if over:
        return CheckOutcome("structure", False, "; ".join(over)), None
    shown = ", ".join(f"{what} {value}/{limit}" for what, value, limit in values)
    return CheckOutcome("structure", True, shown), shape


def _int(value: object) -> int:
    return cast(int, value)  # the walker stores LEB128 counts as int


# -- 2. ABI and capabilities ----------------------------------------------------------------
def required_exports(kind: str) -> dict[str, type]:
    """The exports ABI v1 requires of a plugin of ``kind`` (``dataflare_init`` is optional)."""
    need: dict[str, type] = {
        "memory": wasmtime.MemoryType,
        abi.EXPORT_VERSION: wasmtime.FuncType,
        abi.EXPORT_ALLOC: wasmtime.FuncType,
    }
    if kind == "aggregate":
        for name in (
            abi.EXPORT_AGG_INIT,
            abi.EXPORT_AGG_UPDATE,
            abi.EXPORT_AGG_MERGE,
            abi.EXPORT_AGG_FINALIZE,
        ):
            need[name] = wasmtime.FuncType
    else:
        need[abi.ENTRY_POINTS[kind]] = wasmtime.FuncType
    return need


def _abi(module: wasmtime.Module, manifest: Manifest) -> CheckOutcome:
    exports = {e.name: e.type for e in module.exports}
    problems = []
    for name, kind in required_exports(manifest.kind).items():
        if name not in exports:
            problems.append(f"missing export {name!r}")
        elif not isinstance(exports[name], kind):
            problems.append(f"export {name!r} is not a {kind.__name__.removesuffix('Type')}")
    if problems:
        return CheckOutcome(
            "abi", False, f"ABI v{abi.ABI_VERSION} ({manifest.kind}): " + "; ".join(problems)
        )
    return CheckOutcome("abi", True, f"ABI v{abi.ABI_VERSION} {manifest.kind} exports present")


def implied_capabilities(imports: list[tuple[str, str]]) -> tuple[set[str], list[str]]:
    """The capabilities ``imports`` imply, and the imports no capability provides."""
    implied: set[str] = set()
    unknown: list[str] = []
    for imp in imports:
        caps = {cap for cap, provided in abi.CAPABILITY_IMPORTS.items() if imp in provided}
        if caps:
            implied |= caps
        else:
            unknown.append(f"{imp[0]}.{imp[1]}")
    return implied, unknown


def _capabilities(
    module: wasmtime.Module, manifest: Manifest, policy: AdmissionPolicy
) -> CheckOutcome:
    implied, unknown = implied_capabilities([(i.module, i.name) for i in module.imports])
    declared = set(manifest.capabilities)
    problems = []
    if unknown:
        problems.append(f"imports {sorted(unknown)} which no capability provides")
    if implied - declared:
        problems.append(f"imports imply {sorted(implied - declared)} not declared in the manifest")
    if declared - policy.allowed_capabilities:
        problems.append(
            f"declares {sorted(declared - policy.allowed_capabilities)} not allowed by the"
            f" policy (allowed: {sorted(policy.allowed_capabilities)})"
        )
    if problems:
        return CheckOutcome("capabilities", False, "; ".join(problems))
    return CheckOutcome(
        "capabilities", True, f"implied {sorted(implied)} ⊆ declared {sorted(declared)} ⊆ allowed"
    )


# -- 3. licence -----------------------------------------------------------------------------
def check_licence(expression: str, allowed: frozenset[str] | set[str]) -> CheckOutcome:
    """Whether the SPDX ``expression`` can be satisfied with ``allowed`` licences. A
    licence with an exception (``Apache-2.0 WITH LLVM-exception``) is allowed when the
    whole ``WITH`` term or its base licence is on the list (an exception only adds
    permissions)."""
    licensing = get_spdx_licensing()
    try:
        parsed = licensing.parse(expression, validate=True, strict=True)
    except ExpressionError as err:
        unknown = licensing.unknown_license_keys(expression) if "nknown" in str(err) else []
        if unknown:
            return CheckOutcome(
                "licence", False, f"unknown licence id(s): {unknown} in {expression!r}"
            )
        return CheckOutcome("licence", False, f"not an SPDX expression {expression!r}: {err}")
    if parsed is None:
        return CheckOutcome("licence", False, "empty licence expression")
    keys = {str(licensing.parse(a)) for a in allowed}

    def ok(node: Any) -> bool:
        if isinstance(node, LicenseWithExceptionSymbol):
            return str(node) in keys or node.license_symbol.key in keys
        if isinstance(node, LicenseSymbol):
            return node.key in keys
        if isinstance(node, AND):
            return all(ok(a) for a in node.args)
        if isinstance(node, OR):
            return any(ok(a) for a in node.args)
        return False  # pragma: no cover - the parser yields only the nodes above

    if ok(parsed):
        return CheckOutcome("licence", True, f"{parsed} satisfiable with {sorted(keys)}")
    return CheckOutcome(
        "licence", False, f"{parsed} cannot be satisfied with the allowed licences {sorted(keys)}"
    )


# -- 4. self-tests --------------------------------------------------------------------------
def _frame(columns: dict[str, list[Any]], types: dict[str, str]) -> pl.DataFrame:
    schema = {c: abi.POLARS_TYPES[types[c]] for c in columns if c in types}
    return pl.DataFrame(columns, schema=schema or None)


def run_vector(plugin_for: Any, manifest: Manifest, vector: SelfTestVector) -> str | None:
    """None if ``vector`` passes, else what differs (or how the plugin failed)."""
    in_types = {c.name: c.type for c in manifest.input}
    out_types = {c.name: c.type for c in manifest.output} | in_types
    try:
        plugin = plugin_for(vector.params)
        table = _frame(vector.input, in_types)
        if manifest.kind == "map":
            got = plugin.map(table)
        elif manifest.kind == "filter":
            got = table.filter(plugin.filter(table))
        else:
            plugin.update(table)
            got = plugin.result()
    except DataflareError as err:
        return f"the plugin failed: {one_line(err)}"
    expected = _frame(vector.expected, out_types)
    missing = [c for c in expected.columns if c not in got.columns]
    if missing:
        return f"output lacks column(s) {missing}"
    try:
        assert_frame_equal(got.select(expected.columns), expected, check_dtypes=False)
    except AssertionError as err:
        shown = got.select(expected.columns).to_dicts()
        return f"expected {expected.to_dicts()}, got {shown} ({one_line(err)})"
    return None


def _self_test(
    binary: bytes, manifest: Manifest, policy: AdmissionPolicy, vectors: list[SelfTestVector]
) -> CheckOutcome:
    if not vectors:
        if policy.require_self_tests:
            return CheckOutcome("self_test", False, "the plugin ships no self-test vectors")
        return CheckOutcome("self_test", True, "no vectors shipped (not required by the policy)")
    limits = Limits(
        deadline_ms=policy.deadline_ms,
        memory_bytes=policy.memory_bytes,
        fuel=policy.fuel,
        max_failures=len(vectors) + 1,
    )
    granted = set(manifest.capabilities) & policy.allowed_capabilities

    def plugin_for(params: dict[str, Any]) -> Plugin:
        return Plugin(
            manifest, binary, params=params, limits=limits, granted=granted,
            cache_dir=policy.cache_dir, pool_size=1,
        )  # fmt: skip

    failed = []
    for vector in vectors:
        diff = run_vector(plugin_for, manifest, vector)
        if diff is not None:
            failed.append(f"vector {vector.name!r}: {diff}")
    if failed:
        return CheckOutcome("self_test", False, "; ".join(failed))
    return CheckOutcome(
        "self_test",
        True,
        f"{len(vectors)} vector(s) passed (fuel {policy.fuel}, memory {policy.memory_bytes} bytes)",
    )


# -- 5. everything --------------------------------------------------------------------------
def admit(
    module_bytes: bytes | str,
    manifest: Manifest,
    policy: AdmissionPolicy | None = None,
    vectors: list[SelfTestVector] | None = None,
) -> AdmissionReport:
    """Run every admission check on a submitted module; each is reported (checks that
    need a compiled module report "not run" when the structure check refused it, so a
    compile bomb is never handed to the compiler)."""
    policy = policy or AdmissionPolicy()
    report = AdmissionReport(manifest.name, manifest.version)
    module: wasmtime.Module | None = None
    try:
        binary = to_binary(module_bytes)
    except wasmtime.WasmtimeError as err:
        binary = b""
        report.checks.append(CheckOutcome("structure", False, f"not WASM: {one_line(err)}"))
    else:
        outcome, shape = _structure(binary, policy)
        report.checks.append(outcome)
        if shape is not None:
            try:
                module = compile_module(binary, True, policy.cache_dir)
            except (ModuleRefusedError, wasmtime.WasmtimeError) as err:
                report.checks.append(CheckOutcome("compile", False, one_line(err)))
    if module is None:
        for name in ("abi", "capabilities", "self_test"):
            report.checks.append(CheckOutcome(name, False, "not run: the module was refused above"))
        report.checks.append(check_licence(manifest.license, policy.allowed_licences))
        return report
    report.checks.append(_abi(module, manifest))
    report.checks.append(_capabilities(module, manifest, policy))
    report.checks.append(check_licence(manifest.license, policy.allowed_licences))
    report.checks.append(_self_test(binary, manifest, policy, vectors or []))
    return report


# -- 6. checks the registry and the source add ------------------------------------------------
_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


def semver_key(version: str) -> tuple[Any, ...]:
    """A sort key following semver 2.0 precedence: a pre-release sorts below its release,
    numeric identifiers numerically and below alphanumeric ones, build metadata ignored."""
    match = _SEMVER.match(version)
    if match is None:
        raise InvalidInputError(f"{version!r} is not a semantic version")
    major, minor, patch, pre = match.groups()
    ids: tuple[tuple[int, int, str], ...] = tuple(
        (0, int(i), "") if i.isdigit() else (1, 0, i) for i in (pre or "").split(".") if i
    )
    return (int(major), int(minor), int(patch), pre is None, ids)


def check_newer_than_published(version: str, published: list[str]) -> CheckOutcome:
    """Whether ``version`` is newer than every published version of the plugin (a
    submission may not slip in below a release users already pin past)."""
    try:
        mine = semver_key(version)
        newer = [p for p in published if semver_key(p) >= mine]
    except InvalidInputError as err:
        return CheckOutcome("newer_than_published", False, str(err))
    if newer:
        return CheckOutcome(
            "newer_than_published", False, f"{version} is not newer than published {newer}"
        )
    top = max(published, key=semver_key) if published else None
    shown = f"newer than {top}" if top else "the first version"
    return CheckOutcome("newer_than_published", True, f"{version} is {shown}")


def check_source_rebuild(binary: bytes, source_dir: Path, name: str) -> CheckOutcome:
    """Rebuild ``source_dir/plugin.c`` with the SDK (``plugins.build``: zig cc from
    PyPI, fixed flags) and compare the SHA-256 of the result with the submitted module's.
    The toolchain is deterministic here (the same sources build byte-identical modules in
    different folders with ``build.reproducible_flags``, docs/marketplace.md), so any
    difference means the module is not what the source says. ``name`` is the module's
    file stem: the build names the module's name section after it (part of the bytes)."""
    import hashlib
    import shutil
    import tempfile

    from dataflare_platform.plugins.build import BuildError, build_plugin

    submitted = hashlib.sha256(binary).hexdigest()
    with tempfile.TemporaryDirectory(prefix="dataflare-rebuild-") as tmp:
        src = Path(tmp) / name
        shutil.copytree(source_dir, src)
        try:
            rebuilt = build_plugin(src, Path(tmp) / "out").read_bytes()
        except (BuildError, OSError) as err:
            return CheckOutcome("source_rebuild", False, f"the source does not build: {err}")
    digest = hashlib.sha256(rebuilt).hexdigest()
    if digest != submitted:
        return CheckOutcome(
            "source_rebuild",
            False,
            f"rebuilt module sha256 {digest} differs from the submitted {submitted}",
        )
    return CheckOutcome("source_rebuild", True, f"rebuilt module matches sha256 {digest}")
