"""Module shape limits checked before compiling, compilation bounded in time (a child
process), and a property test: any byte string offered as a module is loaded or refused
with a ``PluginError`` naming the kind, never another exception, a crash or a hang."""

from __future__ import annotations

import pytest
import wasmtime
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataflare_platform.plugins import Limits, Plugin, PluginError, engine
from dataflare_platform.plugins.engine import compile_module
from dataflare_platform.plugins.shape import ModuleRefusedError, ShapeLimits, check_module
from dataflare_platform_tests.plugins.hostile import MANIFEST, many_locals_module, module

LIMITS = Limits(deadline_ms=200, memory_bytes=8 * 1024 * 1024, max_failures=10_000)
VALID = wasmtime.wat2wasm(module())


def test_the_compiler_bomb_from_the_issue_is_refused_before_compiling(cache_dir):
    bomb = many_locals_module()
    assert 600_000 < len(bomb) < 700_000
    with pytest.raises(PluginError) as err:
        Plugin(MANIFEST, bomb, limits=LIMITS, cache_dir=cache_dir)
    assert err.value.kind == "too_complex" and "function 0's" in err.value.detail


def test_too_many_locals_in_a_small_function_is_refused(cache_dir):
    module_bytes = many_locals_module(6_000)  # 90 KB: under the body limit
    with pytest.raises(PluginError) as err:
        Plugin(MANIFEST, module_bytes, limits=LIMITS, cache_dir=cache_dir)
    assert err.value.kind == "too_complex"
    assert "function 0's locals is 6000, the limit is 5000" in err.value.detail


@pytest.mark.parametrize(
    ("limits", "what"),
    [
        (ShapeLimits(module_bytes=100), "module size"),
        (ShapeLimits(functions=2), "number of functions"),
        (ShapeLimits(body_bytes=10), "body (bytes)"),
        (ShapeLimits(locals_per_function=0), "locals"),
        (ShapeLimits(globals=0), "number of globals"),
    ],
)
def test_each_shape_limit_names_itself(limits, what):
    with pytest.raises(ModuleRefusedError) as err:
        check_module(VALID, limits)
    assert err.value.kind == "too_complex" and what in err.value.detail


def test_a_module_with_a_huge_number_of_globals_is_refused_before_compiling(cache_dir):
    """900 000 globals (wasmtime's validator allows a million) loaded in 9 s and took
    about 640 MB of the host's memory under an 8 MiB plugin memory limit: globals live in
    the instance's host-side context, which no memory limit covers."""
    many = " ".join(f"(global $g{i} (mut i64) (i64.const {i}))" for i in range(50_000))
    with pytest.raises(PluginError) as err:
        Plugin(MANIFEST, module(imports=many), limits=LIMITS, cache_dir=cache_dir)
    assert err.value.kind == "too_complex"
    assert "number of globals is 50001, the limit is 10000" in err.value.detail


def test_the_shape_of_a_valid_module(cache_dir):
    shape = check_module(VALID)
    memory = {"imported": False, "min": 2, "max": None, "export": "memory"}
    assert shape.functions == 3 and shape.memories == [memory]
    assert shape.tables == [] and shape.max_locals >= 1


def test_compilation_is_bounded_in_time(tmp_path, monkeypatch):
    """The compiler runs in a child process killed at the bound: a compile that never
    finishes (a child that sleeps instead of compiling) is refused as too complex, and
    the caller gets control back; the real child then compiles the same module."""
    stuck = tmp_path / "stuck_child.py"
    stuck.write_text("import time\ntime.sleep(3600)\n")
    with monkeypatch.context() as patched:
        patched.setattr(engine, "CHILD", stuck)
        with pytest.raises(ModuleRefusedError) as err:
            compile_module(module(), cache_dir=tmp_path / "cache", timeout_s=0.5)
    assert err.value.kind == "too_complex" and "took longer than 0.5 s" in str(err.value)
    assert compile_module(module(), cache_dir=tmp_path / "cache") is not None


def test_an_invalid_module_is_refused_by_the_child_with_a_one_line_reason(cache_dir):
    typed = wasmtime.wat2wasm("(module (func (result i32) i32.const 7))")
    broken = typed.replace(b"\x41\x07\x0b", b"\x01\x01\x0b")  # returns nothing: invalid
    assert check_module(broken).functions == 1  # passes the shape walk; wasmtime refuses it
    with pytest.raises(PluginError) as err:
        Plugin(MANIFEST, broken, limits=LIMITS, cache_dir=cache_dir)
    assert err.value.kind == "abi" and "\n" not in str(err.value)


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    out = bytearray(data)
    for pos, value in edits:
        out[pos % len(out)] = value
    return bytes(out[:cut] if cut else out)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    edits=st.lists(st.tuples(st.integers(8, 10_000), st.integers(0, 255)), max_size=6),
    cut=st.none() | st.integers(0, len(VALID)),
)
def test_any_mutated_module_loads_or_is_refused_cleanly(cache_dir, edits, cut):
    data = _mutate(VALID, edits, cut)
    try:
        plugin = Plugin(MANIFEST, data, limits=LIMITS, cache_dir=cache_dir)
    except PluginError as err:
        assert err.kind in {
            "abi",
            "abi_version",
            "too_complex",
            "trap",
            "timeout",
            "out_of_memory",
            "import",
        }
        assert "\n" not in str(err)
        return
    try:  # whatever loaded must also run or fail contained
        plugin.map(__import__("polars").DataFrame({"x": [1, 2, 3]}))
    except PluginError as err:
        assert "\n" not in str(err)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200).map(lambda b: b"\0asm\1\0\0\0" + b))
def test_the_shape_walker_never_fails_other_than_refusing(data):
    try:
        check_module(data)
    except ModuleRefusedError as err:
        assert err.kind in {"abi", "too_complex"}


def test_a_compiler_running_away_in_memory_is_stopped_by_the_childs_budget(monkeypatch):
    """The child limits its own address space: with a 64 MiB budget a small module still
    compiles (measured: it needs under 48 MiB) while the compiler bomb, compiled without
    its shape check, runs out and is refused as too complex (it needs over 96 MiB)."""
    from dataflare_platform.plugins import engine

    monkeypatch.setattr(engine, "COMPILE_MEMORY_BYTES", 64 * 1024 * 1024)
    assert engine.compile_isolated(VALID, False)
    with pytest.raises(ModuleRefusedError) as err:
        engine.compile_isolated(many_locals_module(), False)
    assert err.value.kind == "too_complex" and "memory budget" in str(err.value)
