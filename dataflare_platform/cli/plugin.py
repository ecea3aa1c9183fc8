"""``dataflare plugin``: scaffold, build, try and inspect WASM plugins.

PLUGIN is a ``.wasm`` file (with its ``<name>.json`` or ``plugin.json`` manifest), a plugin
source directory (``plugin.c`` + ``plugin.json``, built on the fly), or the name of a plugin
in ``--dir`` (default ``<home>/plugins``; shipped samples are built there on first use).
``plugin list`` shows what names resolve to. The plugin runtime is imported by the commands,
so ``dataflare --help`` stays fast.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dataflare_platform.cli import plugin_marketplace
from dataflare_platform.cli._common import (
    HOME_ENV_VAR,
    JsonOption,
    UsageError,
    command_group,
    err_console,
    print_json,
)
from dataflare_platform.cli._common import table as show_table
from dataflare_platform.errors import ConfigError, DataflareError

if TYPE_CHECKING:
    from dataflare_platform.plugins.manifest import Manifest

plugin_app = command_group(
    help="WASM plugins: scaffold (new), compile (build), try on a file (run), inspect, list."
)

PluginArgument = Annotated[
    str, typer.Argument(help="A .wasm file, a plugin source directory, or a plugin name.")
]
DirOption = Annotated[
    Path | None,
    typer.Option("--dir", help=f"Plugin directory for names (default: ${HOME_ENV_VAR}/plugins)."),
]
KINDS = ("map", "filter")

MAP_TEMPLATE = """\
/* __NAME__: a map plugin. y = x * factor (float64); null x gives null y.
 * Build: dataflare plugin build __DIR__   (see docs/plugin-abi.md) */
#include "dataflare_plugin.h"

static double factor = 2.0;

DF_EXPORT("dataflare_init") int32_t dataflare_init(uint32_t params, int32_t len) {
    factor = df_param_double(DF_PTR(const char, params), len, "factor", 2.0);
    return DF_OK;
}

DF_EXPORT("dataflare_map") int32_t dataflare_map(uint32_t in_desc, int32_t n, uint32_t out_desc) {
    const df_column *in = DF_PTR(const df_column, in_desc);
    df_column *out = DF_PTR(df_column, out_desc);
    const double *x = DF_PTR(const double, in[0].values);
    double *y = DF_PTR(double, out[0].values);
    for (int32_t i = 0; i < n; i++) y[i] = x[i] * factor;
    out[0].validity = in[0].validity; /* nulls pass through */
    return DF_OK;
}
"""

FILTER_TEMPLATE = """\
/* __NAME__: a filter plugin. Keeps the rows whose x (float64) is above threshold;
 * rows with a null x are dropped. Build: dataflare plugin build __DIR__ */
#include "dataflare_plugin.h"

static double threshold = 0.0;

DF_EXPORT("dataflare_init") int32_t dataflare_init(uint32_t params, int32_t len) {
    threshold = df_param_double(DF_PTR(const char, params), len, "threshold", 0.0);
    return DF_OK;
}

DF_EXPORT("dataflare_filter")
int32_t dataflare_filter(uint32_t in_desc, int32_t n, uint32_t mask_ptr) {
    const df_column *in = DF_PTR(const df_column, in_desc);
    const double *x = DF_PTR(const double, in[0].values);
    uint8_t *keep = DF_PTR(uint8_t, mask_ptr);
    for (int32_t i = 0; i < n; i++) keep[i] = df_is_valid(&in[0], i) && x[i] > threshold;
    return DF_OK;
}
"""


def _manifest(name: str, kind: str) -> dict[str, Any]:
    base: dict[str, Any] = {
        "abi_version": 1,
        "name": name,
        "version": "0.1.0",
        "kind": kind,
        "input": [{"name": "x", "type": "float64"}],
    }
    if kind == "map":
        base |= {
            "description": "y = x * factor",
            "output": [{"name": "y", "type": "float64"}],
            "params": [{"name": "factor", "type": "float", "default": 2.0}],
        }
    else:
        base |= {
            "description": "keep rows with x > threshold",
            "params": [{"name": "threshold", "type": "float", "default": 0.0}],
        }
    return base | {"capabilities": [], "license": "Apache-2.0"}


def _print(data: dict[str, Any]) -> None:
    print_json(data, indent=2)


# -- new / build ----------------------------------------------------------------------------
@plugin_app.command("new")
def new(
    name: Annotated[str, typer.Argument(help="Plugin name: lowercase, digits, _ or -.")],
    kind: Annotated[str, typer.Option("--kind", help="map or filter.")] = "map",
    directory: Annotated[
        Path, typer.Option("--dir", help="Where to create the <NAME>/ folder.")
    ] = Path(),
) -> None:
    """Scaffold NAME/plugin.c + NAME/plugin.json: a plugin that builds and runs as is."""
    from dataflare_platform.plugins.manifest import Manifest

    if kind not in KINDS:
        raise ConfigError("plugin scaffold", [("--kind", f"{kind!r} is not one of {KINDS}")])
    try:
        Manifest.model_validate(_manifest(name, kind))
    except ValueError:
        problem = ("NAME", f"{name!r} must match [a-z][a-z0-9_-]*")
        raise ConfigError("plugin scaffold", [problem]) from None
    target = directory / name
    if target.exists() and any(target.iterdir()):
        raise UsageError(f"{target} already exists and is not empty")
    target.mkdir(parents=True, exist_ok=True)
    template = MAP_TEMPLATE if kind == "map" else FILTER_TEMPLATE
    (target / "plugin.c").write_text(template.replace("__NAME__", name).replace("__DIR__", name))
    (target / "plugin.json").write_text(json.dumps(_manifest(name, kind), indent=2) + "\n")
    _print({"created": str(target), "files": ["plugin.c", "plugin.json"], "kind": kind})


@plugin_app.command("build")
def build(
    path: Annotated[Path, typer.Argument(help="Plugin source directory (plugin.c, plugin.json).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Output directory (default: PATH/build).")
    ] = None,
) -> None:
    """Compile PATH/plugin.c to <out>/<name>.wasm with ziglang (from PyPI), manifest beside."""
    wasm = _build(path, out or path / "build")
    _print({"wasm": str(wasm), "manifest": str(wasm.with_suffix(".json")), **_digest(wasm)})


def _build(path: Path, out: Path) -> Path:
    from dataflare_platform.plugins.build import build_plugin
    from dataflare_platform.plugins.manifest import load_manifest

    for needed in ("plugin.c", "plugin.json"):
        if not (path / needed).is_file():
            raise UsageError(f"{path} is not a plugin source directory: no {needed}")
    load_manifest(path / "plugin.json")  # refuse a bad manifest before compiling
    return build_plugin(path, out)


def _digest(wasm: Path) -> dict[str, Any]:
    data = wasm.read_bytes()
    return {"size_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


# -- resolving a plugin -----------------------------------------------------------------------
def _resolve(plugin: str, plugin_dir: Path | None, stack: ExitStack) -> Path:
    """The ``.wasm`` of PLUGIN (a file, a source directory built into a temporary one, or a
    name in the plugin directory)."""
    from dataflare_platform.plugins.registry import PluginRegistry, RegistryConfig

    path = Path(plugin)
    if path.is_file():
        if path.suffix != ".wasm":
            raise UsageError(f"{path} is not a .wasm file")
        return path
    if path.is_dir():
        return _build(path, Path(stack.enter_context(tempfile.TemporaryDirectory())))
    if "/" in plugin or path.suffix:
        raise UsageError(f"no plugin file or directory at {path}")
    return PluginRegistry(_plugin_dir(plugin_dir), RegistryConfig(build_missing=True)).path(plugin)


def _plugin_dir(plugin_dir: Path | None) -> Path:
    from dataflare_platform.home import ProjectHome

    return plugin_dir or ProjectHome.resolve().root / "plugins"


# -- lock -------------------------------------------------------------------------------------
@plugin_app.command("lock")
def lock(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Plugin names to pin (default: every plugin of --dir)."),
    ] = None,
    pipeline: Annotated[
        Path | None,
        typer.Option(
            "--pipeline",
            help="Pin the plugins of this pipeline (YAML file or defs.yaml folder), in a "
            "plugins.lock beside it.",
        ),
    ] = None,
    lock_file: Annotated[
        Path | None,
        typer.Option("--lock", help="Lock file to write (default: $DATAFLARE_HOME/plugins.lock)."),
    ] = None,
    resign: Annotated[
        bool,
        typer.Option(
            "--resign",
            help="Sign the lock as it is (after reviewing its pins), e.g. one refused for a "
            "missing or wrong authenticator; with NAMES, also pin those.",
        ),
    ] = False,
    plugin_dir: DirOption = None,
) -> None:
    """Pin plugins by the SHA-256 of their modules in a lock file (docs/plugin-abi.md,
    "Pinning"). Review a module before pinning it: the pin says "this exact module".
    The deployment's lock (and any lock inside the home) is signed with the lock key kept
    outside the home (created on first use); an existing signed lock is merged only if
    its signature holds."""
    from dataflare_platform.plugins.lock import (
        LOCK_FILE,
        LockAuth,
        PinnedPlugin,
        digest,
        read_lock,
        write_lock,
    )
    from dataflare_platform.plugins.manifest import load_manifest
    from dataflare_platform.plugins.names import check_plugin_name
    from dataflare_platform.plugins.registry import (
        PluginRegistry,
        RegistryConfig,
        deployment_config,
    )

    registry = PluginRegistry(_plugin_dir(plugin_dir), RegistryConfig(build_missing=True))
    if pipeline is not None:
        from dataflare_platform.plugins.specs import plugin_steps
        from dataflare_platform.streams.spec import PipelineSpec

        spec_file = pipeline / "defs.yaml" if pipeline.is_dir() else pipeline
        spec = PipelineSpec.from_yaml(spec_file)
        wanted = sorted({step.name for _, step in plugin_steps(spec)} | set(names or []))
        target = lock_file or spec_file.parent / LOCK_FILE
    else:
        # Default: the modules present in the folder (samples not built yet are not pinned).
        wanted = sorted(names or ([] if resign else PluginRegistry(registry.directory).names()))
        target = lock_file or deployment_config().lock_files[0]
    home = _plugin_home()
    auth = LockAuth.for_home(home)
    signed = target.resolve() == deployment_config().lock_files[0].resolve() or auth.covers(target)
    pins = {}
    if resign:
        current = read_lock(target)
        if current is None:
            raise UsageError(f"no plugin lock at {target} to re-sign")
        pins.update(current.plugins)
    for name in wanted:
        wasm = registry.path(check_plugin_name(name, "NAMES"))
        data, sidecar = wasm.read_bytes(), wasm.with_suffix(".json").read_bytes()
        version = load_manifest(wasm.with_suffix(".json")).version
        pins[name] = PinnedPlugin(
            sha256=digest(data),
            manifest_sha256=digest(sidecar),
            version=version,
            size_bytes=len(data),
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    write_lock(target, pins, replace=resign, auth=auth if signed else None)
    _print(
        {
            "lock": str(target),
            "plugins": {k: v.sha256 for k, v in pins.items()},
            **({"signed_with": str(auth.key_file)} if signed else {}),
        }
    )


def _check_pin(wasm: Path, module: bytes, plugin_dir: Path | None) -> None:
    """Every module this command runs (by name, file or source folder) is checked against
    the deployment's pins like a pipeline's: the deployment's signed lock, unpinned
    refused unless ``DATAFLARE_PLUGIN_ALLOW_UNPINNED=true`` (development; audited), a
    refusal audited. The module's name is its file stem."""
    from dataflare_platform.plugins.manifest import manifest_path
    from dataflare_platform.plugins.names import check_plugin_name
    from dataflare_platform.plugins.registry import deployment_registry

    name = check_plugin_name(wasm.stem, "PLUGIN")
    registry = deployment_registry(wasm.parent)
    registry.verify(name, module, manifest=manifest_path(wasm).read_bytes())


def _plugin_home() -> Path:
    from dataflare_platform.home import ProjectHome

    return ProjectHome.resolve().root


# -- list -------------------------------------------------------------------------------------
@plugin_app.command("list")
def list_plugins(
    plugin_dir: DirOption = None,
    as_json: JsonOption = False,
    source: Annotated[
        str | None,
        typer.Option(
            "--from", help="List a signed registry (URL or folder) instead of the plugin folder."
        ),
    ] = None,
    root: Annotated[
        Path | None,
        typer.Option("--root", help="With --from: the registry's root.json (first use)."),
    ] = None,
) -> None:
    """Plugins by name: those built in --dir, and the shipped samples (built on first use);
    with --from, every version in the registry (namespace, name, version, status, licence,
    capabilities), verified through TUF."""
    if source is not None:
        from dataflare_platform.cli.plugin_marketplace import catalogue

        versions = catalogue(source, root)
        if as_json:
            print_json(versions)
            return
        show_table(
            f"plugins in {source}",
            ("plugin", "version", "status", "licence", "capabilities"),
            [
                (
                    f"{v['namespace']}/{v['name']}",
                    v["version"],
                    v["status"],
                    v["license"] or "",
                    ",".join(v["capabilities"]),
                )
                for v in versions
            ],
        )
        return
    from dataflare_platform.plugins.build import SAMPLES_DIR
    from dataflare_platform.plugins.manifest import load_manifest
    from dataflare_platform.plugins.registry import (
        PluginRegistry,
        RegistryConfig,
        sample_names,
    )

    directory = _plugin_dir(plugin_dir)
    samples = set(sample_names())
    listed = []
    for name in PluginRegistry(directory, RegistryConfig(build_missing=True)).names():
        wasm = directory / f"{name}.wasm"
        built = wasm.exists() and wasm.with_suffix(".json").exists()
        manifest = load_manifest(
            wasm.with_suffix(".json") if built else SAMPLES_DIR / name / "plugin.json"
        )
        listed.append(
            {
                "name": name,
                "version": manifest.version,
                "kind": manifest.kind,
                "description": manifest.description,
                "capabilities": manifest.capabilities,
                "sample": name in samples,
                "wasm": str(wasm) if built else None,
            }
        )
    if as_json:
        print_json(listed)
        return
    show_table(
        f"plugins in {directory}",
        ("name", "version", "kind", "description", "built"),
        [
            (p["name"], p["version"], p["kind"], p["description"], "yes" if p["wasm"] else "")
            for p in listed
        ],
    )


def parse_params(manifest: Manifest, pairs: list[str]) -> dict[str, Any]:
    """``k=v`` strings typed by the manifest's parameter types; errors name the parameter."""
    types = {p.name: p.type for p in manifest.params}
    params: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            problems.append(("--param", f"{pair!r} is not KEY=VALUE"))
            continue
        try:
            params[key] = _typed(text, types.get(key, "str"))
        except ValueError:
            problems.append((f"params.{key}", f"expected {types[key]}, got {text!r}"))
    if problems:
        raise ConfigError(f"parameters of plugin {manifest.name}", problems)
    return manifest.resolve_params(params)


def _typed(text: str, type_: str) -> Any:
    if type_ == "int":
        return int(text)
    if type_ == "float":
        return float(text)
    if type_ == "bool":
        if text.lower() in {"true", "1", "yes"}:
            return True
        if text.lower() in {"false", "0", "no"}:
            return False
        raise ValueError(text)
    return text


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError(what, [(what, f"{item!r} is not NAME=COLUMN")])
        out[key] = value
    return out


# -- run --------------------------------------------------------------------------------------
@plugin_app.command("run")
def run(
    plugin: PluginArgument,
    input_path: Annotated[
        Path, typer.Option("--input", help="Input file: .parquet, .arrow/.ipc/.feather or .csv.")
    ],
    output_path: Annotated[Path, typer.Option("--output", help="Output Parquet file.")],
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="A parameter, KEY=VALUE.")
    ] = None,
    column: Annotated[
        list[str] | None,
        typer.Option("--column", "-c", help="Bind a manifest column to a table column: NAME=COL."),
    ] = None,
    dead_letters: Annotated[
        Path | None, typer.Option("--dead-letters", help="Write failed batches' rows here.")
    ] = None,
    batch_rows: Annotated[int, typer.Option(min=1, help="Rows per call into the plugin.")] = 65_536,
    deadline_ms: Annotated[float, typer.Option(help="Wall-clock limit per call.")] = 1000.0,
    memory_mb: Annotated[int, typer.Option(help="Plugin memory limit.")] = 256,
    fuel: Annotated[int | None, typer.Option(help="Instruction budget per call.")] = None,
    grant: Annotated[
        list[str] | None, typer.Option("--grant", help="Grant a capability (e.g. log).")
    ] = None,
    plugin_dir: DirOption = None,
) -> None:
    """Run PLUGIN over a file and write Parquet; batches that fail are dead-lettered."""
    from dataflare_platform.plugins.apply import read_table, run_batches
    from dataflare_platform.plugins.manifest import load_manifest, manifest_path
    from dataflare_platform.plugins.registry import RegistryConfig, check_columns
    from dataflare_platform.plugins.runtime import Plugin

    with ExitStack() as stack:
        wasm = _resolve(plugin, plugin_dir, stack)
        manifest = load_manifest(manifest_path(wasm))
        params = parse_params(manifest, param or [])
        columns = _pairs(column or [], "--column")
        check_columns(manifest, columns)
        config = RegistryConfig.load(
            deadline_ms=deadline_ms, memory_mb=memory_mb, fuel=fuel, max_failures=10**9
        )
        table = read_table(input_path)
        module = wasm.read_bytes()
        _check_pin(wasm, module, plugin_dir)
        loaded = Plugin(manifest, module, params, config.limits(), grant or (), columns)
        result = run_batches(loaded, table, batch_rows)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    result.output.write_parquet(output_path)
    if dead_letters is not None and result.failed_batches:
        dead_letters.parent.mkdir(parents=True, exist_ok=True)
        result.dead_letters.write_parquet(dead_letters)
    if result.failed_batches:
        from rich.markup import escape

        err_console().print(
            f"[yellow]{result.failed_batches} of {result.batches} batches failed "
            f"({result.dead_letters.height} rows dead-lettered):[/] "
            f"{escape(result.reasons[0])}",
            highlight=False,
        )
    _print(
        {
            "plugin": manifest.name,
            "kind": manifest.kind,
            "params": params,
            "rows_in": table.height,
            "rows_out": result.output.height,
            "batches": result.batches,
            "dead_letter_batches": result.failed_batches,
            "dead_letter_rows": result.dead_letters.height,
            "dead_letter_reasons": sorted(set(result.reasons)),
            "seconds_in_plugin": round(result.seconds_in_plugin, 6),
            "output": str(output_path),
            **(
                {"dead_letters": str(dead_letters)}
                if dead_letters and result.failed_batches
                else {}
            ),
        }
    )


# -- inspect ----------------------------------------------------------------------------------
@plugin_app.command("admit")
def admit(
    plugin: PluginArgument, plugin_dir: DirOption = None, as_json: JsonOption = False
) -> None:
    """Run the admission checks on PLUGIN (plugins.admission: structure before compiling,
    ABI, capabilities, licence, self-test vectors) with the default policy; exit 1 when
    any check refuses it. Every check is reported, not only the first failure."""
    from dataflare_platform.plugins.admission import admit as run_checks
    from dataflare_platform.plugins.admission import load_vectors, vectors_path
    from dataflare_platform.plugins.manifest import load_manifest, manifest_path

    with ExitStack() as stack:
        wasm = _resolve(plugin, plugin_dir, stack)
        manifest = load_manifest(manifest_path(wasm))
        sidecar = vectors_path(wasm)
        vectors = load_vectors(sidecar) if sidecar.exists() else None
        report = run_checks(wasm.read_bytes(), manifest, vectors=vectors)
    checks = [{"check": c.name, "passed": c.passed, "detail": c.detail} for c in report.checks]
    if as_json:
        print_json(
            {
                "plugin": report.plugin,
                "version": report.version,
                "admitted": report.admitted,
                "checks": checks,
            }
        )
    else:
        verdict = "admitted" if report.admitted else "refused"
        show_table(
            f"{report.plugin} {report.version}: {verdict}",
            ("check", "passed", "detail"),
            [(c["check"], "yes" if c["passed"] else "NO", c["detail"]) for c in checks],
        )
    if not report.admitted:
        raise typer.Exit(1)


@plugin_app.command("inspect")
def inspect(plugin: PluginArgument, plugin_dir: DirOption = None) -> None:
    """Print PLUGIN's manifest, exports, imports and memory as JSON."""
    import wasmtime

    from dataflare_platform.plugins.engine import compile_module, to_binary
    from dataflare_platform.plugins.manifest import load_manifest, manifest_path
    from dataflare_platform.plugins.registry import deployment_registry, load_plugin
    from dataflare_platform.plugins.shape import ModuleRefusedError, ShapeLimits, check_module

    with ExitStack() as stack:
        wasm = _resolve(plugin, plugin_dir, stack)
        manifest = load_manifest(manifest_path(wasm))
        try:
            binary = to_binary(wasm.read_bytes())
            # every memory and table, exported or not, imported or defined: the walk with
            # no count limits, so a module the loader refuses still shows what it holds
            many = 1 << 32
            shape = check_module(binary, ShapeLimits(memories=many, tables=many))
        except (wasmtime.WasmtimeError, ModuleRefusedError) as err:
            raise UsageError(f"{wasm} is not a valid WASM module: {err}") from None
        exports: list[dict[str, Any]] | None = None
        imports: list[dict[str, Any]] | None = None
        try:
            module = compile_module(binary)
        except (wasmtime.WasmtimeError, ModuleRefusedError):
            pass  # shown below as the reason it does not load
        else:
            exports = [{"name": e.name, "type": _type_name(e.type)} for e in module.exports]
            imports = [
                {"module": i.module, "name": i.name, "type": _type_name(i.type)}
                for i in module.imports
            ]
        memories = [{"name": m["export"], **_pages(m)} for m in shape.memories]
        try:
            # Through the pin check like every load (audited when refused).
            load_plugin(wasm, registry=deployment_registry(wasm.parent))
            loads: bool | str = True
        except DataflareError as err:
            loads = str(err)
        _print(
            {
                "path": str(wasm),
                **_digest(wasm),
                "manifest": manifest.model_dump(mode="json"),
                "exports": exports,
                "imports": imports,
                "memory": memories,
                "tables": shape.tables,
                "shape": {
                    "bytes": shape.size,
                    "functions": shape.functions,
                    "globals": shape.globals,
                    "max_locals": shape.max_locals,
                    "max_body_bytes": shape.max_body_bytes,
                },
                "loads_with_defaults": loads,
            }
        )


def _type_name(t: Any) -> str:
    import wasmtime

    if isinstance(t, wasmtime.FuncType):
        params = ", ".join(str(p) for p in t.params)
        results = ", ".join(str(r) for r in t.results)
        return f"func({params}) -> ({results})"
    if isinstance(t, wasmtime.MemoryType):
        return "memory"
    if isinstance(t, wasmtime.GlobalType):
        return f"global {t.content}"
    if isinstance(t, wasmtime.TableType):
        return "table"
    return type(t).__name__


def _pages(m: dict[str, Any]) -> dict[str, Any]:
    page = 65536
    return {
        "min_pages": m["min"],
        "max_pages": m["max"],
        "min_bytes": m["min"] * page,
        "max_bytes": None if m["max"] is None else m["max"] * page,
        "imported": m["imported"],
    }


# The signed registry's commands (keygen, publish, install, verify...).
plugin_marketplace.register(plugin_app)
