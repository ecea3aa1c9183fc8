"""Build C plugins to WASM with ``ziglang`` from PyPI, so a fresh machine needs no system
toolchain. The manifest is copied next to the module: a plugin is ``<name>.wasm`` plus
``<name>.json`` (or ``plugin.json`` in a plugin directory)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from dataflare_platform.errors import DataflareError

SDK_DIR = Path(__file__).parent / "sdk"
SAMPLES_DIR = Path(__file__).parent / "samples"

CFLAGS = [
    "--target=wasm32-freestanding",
    "-O3",
    "-msimd128",
    "-nostdlib",
    "-Wl,--no-entry",
    "-Wl,-z,stack-size=65536",
]


def reproducible_flags(source_dir: Path) -> list[str]:
    """Flags that keep the build machine's paths out of the module's debug info (it
    records the source file, the SDK header and the working directory by absolute path),
    so the same source and SDK give the same bytes wherever they are built: what the
    admission's ``source_rebuild`` check relies on (docs/marketplace.md)."""
    return [
        f"-ffile-prefix-map={Path(source_dir).resolve()}=.",
        f"-ffile-prefix-map={SDK_DIR.resolve()}=sdk",
        "-fdebug-compilation-dir=.",
    ]


class BuildError(DataflareError, RuntimeError):
    """The compiler refused the plugin; the message carries its output."""


def build_plugin(source_dir: Path | str, out_dir: Path | str) -> Path:
    """Compile ``source_dir/plugin.c`` to ``out_dir/<name>.wasm`` (name = directory name)
    and copy ``plugin.json`` to ``out_dir/<name>.json``. Returns the ``.wasm`` path."""
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = source_dir.name
    wasm = out_dir / f"{name}.wasm"
    cmd = [sys.executable, "-m", "ziglang", "cc", *CFLAGS, *reproducible_flags(source_dir)]
    cmd += [f"-I{SDK_DIR}"]
    cmd += ["-o", str(wasm), str(source_dir / "plugin.c")]
    # Zig's caches go beside the output, not into the user's home directory.
    cache = str(out_dir / ".zig-cache")
    env = {**os.environ, "ZIG_GLOBAL_CACHE_DIR": cache, "ZIG_LOCAL_CACHE_DIR": cache}
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise BuildError(f"building {source_dir} failed:\n{proc.stderr}{proc.stdout}")
    shutil.copyfile(source_dir / "plugin.json", out_dir / f"{name}.json")
    tests = source_dir / "plugin.tests.json"  # self-test vectors (plugins.admission)
    if tests.exists():
        shutil.copyfile(tests, out_dir / f"{name}.tests.json")
    return wasm


def build_samples(out_dir: Path | str) -> dict[str, Path]:
    """Build every shipped sample plugin; returns name -> ``.wasm`` path."""
    return {
        d.name: build_plugin(d, out_dir)
        for d in sorted(SAMPLES_DIR.iterdir())
        if (d / "plugin.c").exists()
    }
