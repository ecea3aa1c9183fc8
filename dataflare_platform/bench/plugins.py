"""Plugin benchmarks (issue 5 targets), each side by side with its baseline in the same
process, on the same data:

* ``map_int64_float64``: the currency plugin (price x 0.908, int64 -> float64) against the
  Polars expression ``df.with_columns(pl.col("price") * 0.908)`` on 64k-row frames
  (target ratio >= 0.5);
* ``utf8_mask``: the pii_mask plugin, strings/s (target >= 10 M/s), with the Polars
  ``str.replace_all`` regex pair as a reference point;
* ``nexmark_q1``: Nexmark q1 through the engine (``Runner`` + ``NullSink``, 64k batches)
  with the currency conversion as a plugin step instead of the expression (target ratio
  >= 0.5).

``bench_plugins()`` returns one JSON-able dict per measurement."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import wasmtime

from dataflare_platform.engine import NullSink, Pipeline, Runner, RunnerConfig, TableSource
from dataflare_platform.plugins.build import SAMPLES_DIR, build_plugin
from dataflare_platform.plugins.engine import COMPILE_TIMEOUT_S, compile_isolated, shared_engine
from dataflare_platform.plugins.manifest import Manifest
from dataflare_platform.plugins.registry import PluginRegistry, RegistryConfig, load_plugin
from dataflare_platform.plugins.runtime import Plugin, PluginError
from dataflare_platform.queries.nexmark import WATERMARK_DELAY_MS

BATCH = 65_536


def _best(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _pair(name: str, unit: str, items: int, t_plugin: float, t_base: float, **extra) -> dict:
    return {
        "name": name,
        "unit": unit,
        "items": items,
        f"plugin_{unit}_per_s": items / t_plugin,
        f"baseline_{unit}_per_s": items / t_base,
        "ratio": t_base / t_plugin,
        **extra,
    }


def bench_map(plugin: Plugin, rows: int = BATCH, batches: int = 16, repeat: int = 7) -> dict:
    rng = np.random.default_rng(0)
    frames = [pl.DataFrame({"price": rng.integers(0, 10**9, rows)}) for _ in range(batches)]
    expr = (pl.col("price") * 0.908).alias("price_eur")
    plugin.map(frames[0])  # warm the arena
    frames[0].with_columns(expr)
    t_plugin = _best(lambda: [plugin.map(f) for f in frames], repeat)
    t_polars = _best(lambda: [f.with_columns(expr) for f in frames], repeat)
    return _pair(
        "map_int64_float64",
        "rows",
        rows * batches,
        t_plugin,
        t_polars,
        baseline="df.with_columns((pl.col('price') * 0.908).alias('price_eur'))",
        rows_per_batch=rows,
        target_ratio=0.5,
    )


def _texts(n: int, seed: int = 7) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    parts = np.array(
        ["contact", "alice@example.com", "card", "4111 1111 1111 1111", "id42", "ok", "x.y@b.org"]
    )
    words = parts[rng.integers(0, len(parts), (n, 3))]
    return pl.DataFrame({"text": [" ".join(w) for w in words.tolist()]})


def bench_mask(plugin: Plugin, rows: int = BATCH, batches: int = 8, repeat: int = 5) -> dict:
    frames = [_texts(rows, seed) for seed in range(batches)]
    plugin.map(frames[0])
    email = r"[A-Za-z0-9._%+-]+@([A-Za-z0-9.-]+)"
    card = r"\d{4}[ -]?\d{4}[ -]?\d{4}[ -]?(\d{4})"
    expr = (
        pl.col("text").str.replace_all(email, "***@$1").str.replace_all(card, "**** **** **** $1")
    )
    t_plugin = _best(lambda: [plugin.map(f) for f in frames], repeat)
    t_polars = _best(lambda: [f.with_columns(expr) for f in frames], repeat)
    return _pair(
        "utf8_mask",
        "strings",
        rows * batches,
        t_plugin,
        t_polars,
        baseline="two Polars str.replace_all regexes (not the exact same rules)",
        target_strings_per_s=10_000_000,
    )


def _bids(events: int) -> pa.Table:
    from dataflare_platform.events.producer import nexmark_tables

    cols = ["auction", "bidder", "price", "date_time"]
    return pa.concat_tables(t.select(cols) for t in nexmark_tables(events)).combine_chunks()


def q1_expression(bids: pa.Table, sink: NullSink) -> Pipeline:
    """Nexmark q1 as in ``queries.nexmark.q1``: price in euros as an expression."""
    return (
        Pipeline("nexmark-q1", out_of_orderness_ms=WATERMARK_DELAY_MS)
        .source(TableSource.single("bids", bids))
        .select("auction", "bidder", (pl.col("price") * 0.908).alias("price"), "date_time")
        .sink(sink)
    )


def q1_plugin(bids: pa.Table, sink: NullSink, plugin: Plugin) -> Pipeline:
    """Nexmark q1 with the conversion as the currency plugin (output bound to ``price``)."""
    return (
        Pipeline("nexmark-q1-plugin", out_of_orderness_ms=WATERMARK_DELAY_MS)
        .source(TableSource.single("bids", bids))
        .plugin(plugin)
        .select("auction", "bidder", "price", "date_time")
        .sink(sink)
    )


def bench_q1(wasm: Path, cache: Path, events: int = 2_000_000, repeat: int = 3) -> dict:
    bids = _bids(events)
    config = RunnerConfig(batch_rows=BATCH)

    def run_plugin() -> None:
        plugin = load_plugin(
            wasm, columns={"price_eur": "price"}, cache_dir=cache, registry=_samples(wasm.parent)
        )
        Runner(q1_plugin(bids, NullSink(), plugin), config).run()

    def run_expr() -> None:
        Runner(q1_expression(bids, NullSink()), config).run()

    run_plugin()  # warm-up: module cache, imports
    run_expr()
    t_plugin = _best(run_plugin, repeat)
    t_expr = _best(run_expr, repeat)
    return _pair(
        "nexmark_q1",
        "events",
        bids.num_rows,
        t_plugin,
        t_expr,
        baseline="q1 with the expression (pl.col('price') * 0.908)",
        batch_rows=BATCH,
        target_ratio=0.5,
    )


def _leb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _section(sid: int, payload: bytes) -> bytes:
    return bytes([sid]) + _leb(len(payload)) + payload


def many_locals_module(n_locals: int = 43_000) -> bytes:
    """The issue's compiler bomb: one function whose ``n_locals`` i64 locals are all live
    at once (each defined from the previous, then all summed), ~640 KB with the default.
    Cranelift's register allocation on it runs for minutes."""
    body = bytearray(_leb(1) + _leb(n_locals) + b"\x7e")  # one local decl: n x i64
    for i in range(1, n_locals):
        body += b"\x20" + _leb(i - 1) + b"\x42\x01\x7c\x21" + _leb(i)  # l[i] = l[i-1] + 1
    body += b"\x20" + _leb(0)
    for i in range(1, n_locals):
        body += b"\x20" + _leb(i) + b"\x7c"  # acc += l[i]
    body += b"\x1a\x0b"  # drop, end
    code = _leb(1) + _leb(len(body)) + bytes(body)
    return (
        b"\0asm\1\0\0\0"
        + _section(1, _leb(1) + b"\x60\x00\x00")  # type 0: () -> ()
        + _section(3, _leb(1) + _leb(0))  # one function of type 0
        + _section(5, _leb(1) + b"\x00\x02")  # memory, min 2 pages
        + _section(7, _leb(1) + _leb(6) + b"memory" + b"\x02" + _leb(0))
        + _section(10, code)
    )


def bench_sandbox(repeat: int = 3) -> dict:
    """What the compile bounds cost and save: refusing the many-locals compiler bomb at
    load (shape check, no compilation) against compiling it in the child anyway, and the
    child's compile of a real sample against an in-process compile (paid once per module
    per compile cache)."""
    bomb = many_locals_module()
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Manifest.model_validate(
            {
                "abi_version": 1,
                "name": "bomb",
                "version": "0.0.1",
                "kind": "map",
                "input": [{"name": "x", "type": "int64"}],
                "output": [{"name": "y", "type": "int64"}],
                "license": "MIT",
            }
        )

        def refuse() -> None:
            try:
                Plugin(manifest, bomb, cache_dir=Path(tmp) / "cache")
            except PluginError:
                return
            raise AssertionError("the compiler bomb was not refused")

        t_refuse = _best(refuse, repeat)
        t_bomb = _best(lambda: compile_isolated(bomb, False, COMPILE_TIMEOUT_S), 1)
        sample = build_plugin(SAMPLES_DIR / "currency", Path(tmp)).read_bytes()
        t_child = _best(lambda: compile_isolated(sample, False), repeat)
        t_inproc = _best(lambda: wasmtime.Module(shared_engine(), sample), repeat)
    return {
        "name": "sandbox_compile_bounds",
        "unit": "seconds",
        "bomb_bytes": len(bomb),
        "refuse_bomb_s": t_refuse,
        "compile_bomb_in_child_s": t_bomb,
        "refusal_speedup": t_bomb / t_refuse,
        "sample_bytes": len(sample),
        "sample_compile_child_s": t_child,
        "sample_compile_in_process_s": t_inproc,
        "child_overhead_ratio": t_child / t_inproc,
    }


def _samples(folder: Path) -> PluginRegistry:
    """The shipped samples the bench builds, checked like any load: each pins itself to
    what its shipped source compiles to, in a lock of the bench's scratch folder."""
    config = RegistryConfig(
        lock_files=(folder / "bench-plugins.lock",), allow_unpinned=False, build_missing=True
    )
    return PluginRegistry(folder, config)


def bench_plugins(events: int = 2_000_000, repeat: int = 5) -> list[dict]:
    """All plugin measurements; see the module docstring."""
    with tempfile.TemporaryDirectory() as tmp:
        out, cache = Path(tmp), Path(tmp) / "cache"
        currency = build_plugin(SAMPLES_DIR / "currency", out)
        pii = build_plugin(SAMPLES_DIR / "pii_mask", out)
        return [
            bench_map(
                load_plugin(currency, cache_dir=cache, registry=_samples(out)), repeat=repeat
            ),
            bench_mask(load_plugin(pii, cache_dir=cache, registry=_samples(out)), repeat=repeat),
            bench_q1(currency, cache, events=events, repeat=max(1, repeat // 2)),
            bench_sandbox(),
        ]


if __name__ == "__main__":
    import json

    print(json.dumps(bench_plugins(), indent=2))
