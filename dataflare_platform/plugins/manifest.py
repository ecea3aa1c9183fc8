"""The plugin manifest (sidecar JSON next to the ``.wasm``), validated before any module is
compiled: a plugin that misdescribes itself is refused at load, naming the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from dataflare_platform.errors import ConfigError, InvalidInputError
from dataflare_platform.models import StrictModel

ABI_VERSION = 1
MAX_STATE_BYTES = 64 * 1024 * 1024
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_MANIFEST_DEPTH = 32
"""A manifest is a flat document: objects within lists within an object, 4 deep. Deeper
nesting is refused before parsing (Python's json recursion would raise RecursionError)."""

ColumnType = Literal["int64", "int32", "float64", "float32", "utf8"]
ParamType = Literal["int", "float", "str", "bool"]

_PY_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
}


def _printable(value: str) -> str:
    """No control, format or separator characters (NUL, newlines, terminal escapes,
    bidi overrides): manifest text reaches logs, ``plugin inspect``, DataFrames and SQL
    sinks, where such characters hide or forge what is shown. Spaces are fine."""
    bad = next((c for c in value if not c.isprintable()), None)
    if bad is not None:
        raise InvalidInputError(f"holds the non-printable character {bad!r}")
    return value


def _printable_text(value: str) -> str:
    """As :func:`_printable`, but a description may span lines."""
    _printable(value.replace("\n", " ").replace("\t", " "))
    return value


# A column name: printable, at most 128 characters (SQL sinks' limit; longer names
# are truncated silently by some engines).
ColumnName = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_printable)]
ShortText = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_printable)]


def _unique_columns(columns: list[ColumnSpec]) -> list[ColumnSpec]:
    names = [c.name for c in columns]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidInputError(f"column(s) {twice} declared more than once")
    return columns


class ColumnSpec(StrictModel):
    name: ColumnName
    type: ColumnType


class ParamSpec(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    type: ParamType
    default: Any = None
    required: bool = False

    @model_validator(mode="after")
    def _default_matches(self) -> ParamSpec:
        if self.default is not None and not _is_type(self.default, self.type):
            raise ValueError(f"default {self.default!r} is not of type {self.type}")
        return self


class Manifest(StrictModel):
    abi_version: int
    name: str = Field(pattern=r"^[a-z][a-z0-9_\-]*$", max_length=64)
    version: str = Field(pattern=r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.\-]+)?$", max_length=64)
    kind: Literal["map", "filter", "aggregate"]
    description: Annotated[str, Field(max_length=4096), AfterValidator(_printable_text)] = ""
    input: Annotated[list[ColumnSpec], Field(min_length=1), AfterValidator(_unique_columns)]
    output: Annotated[list[ColumnSpec], AfterValidator(_unique_columns)] = Field(
        default_factory=list
    )
    params: list[ParamSpec] = Field(default_factory=list)
    capabilities: list[ShortText] = Field(default_factory=list)
    license: ShortText
    state_bytes: int = Field(default=0, ge=0, le=MAX_STATE_BYTES)  # aggregate only
    max_output_rows: int = Field(default=1, ge=1, le=1_000_000)  # aggregate only

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if self.abi_version != ABI_VERSION:
            raise ValueError(f"abi_version {self.abi_version} unsupported (host speaks 1)")
        if self.kind == "map" and not self.output:
            raise ValueError("a map plugin must declare at least one output column")
        if self.kind == "filter" and self.output:
            raise ValueError("a filter plugin has no output columns")
        if self.kind == "aggregate":
            if not self.output:
                raise ValueError("an aggregate plugin must declare its result columns")
            if any(c.type == "utf8" for c in self.output):
                raise ValueError("aggregate result columns must be fixed width in ABI v1")
            if self.state_bytes <= 0:
                raise ValueError("an aggregate plugin must declare state_bytes > 0")
        elif self.state_bytes:
            raise ValueError("state_bytes is for aggregate plugins only")
        return self

    def resolve_params(self, given: dict[str, Any] | None) -> dict[str, Any]:
        """Defaults merged with ``given``; unknown, missing or mistyped params are refused."""
        given = dict(given or {})
        specs = {p.name: p for p in self.params}
        problems = [(f"params.{k}", "unknown parameter") for k in given if k not in specs]
        out: dict[str, Any] = {}
        for name, spec in specs.items():
            value = given.get(name, spec.default)
            if value is None:
                if spec.required:
                    problems.append((f"params.{name}", "required parameter missing"))
                continue
            if not _is_type(value, spec.type):
                problems.append((f"params.{name}", f"expected {spec.type}, got {value!r}"))
                continue
            out[name] = float(value) if spec.type == "float" else value
        if problems:
            raise ConfigError(f"parameters of plugin {self.name}", problems)
        return out


def _is_type(value: Any, type_: str) -> bool:
    if type_ != "bool" and isinstance(value, bool):
        return False
    return isinstance(value, _PY_TYPES[type_])


def manifest_path(wasm_path: Path) -> Path:
    """``foo.wasm`` -> ``foo.json``, else ``plugin.json`` in the same directory."""
    sidecar = wasm_path.with_suffix(".json")
    return sidecar if sidecar.exists() else wasm_path.parent / "plugin.json"


def load_manifest(path: Path | str) -> Manifest:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"plugin manifest {path}", [("<file>", "not found")]) from None
    return parse_manifest(data, path)


def parse_manifest(data: bytes, path: Path | str) -> Manifest:
    """The manifest in ``data`` (read from ``path``, named in errors): parsing the bytes
    that were checked against a pin, not the file again."""
    what = f"plugin manifest {path}"
    if len(data) > MAX_MANIFEST_BYTES:
        raise ConfigError(
            what, [("<file>", f"{len(data)} bytes, a manifest is at most {MAX_MANIFEST_BYTES}")]
        )
    depth = _nesting(data)
    if depth > MAX_MANIFEST_DEPTH:
        raise ConfigError(
            what,
            [("<file>", f"nested {depth} levels deep, a manifest is at most {MAX_MANIFEST_DEPTH}")],
        )
    try:
        raw = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(what, [("<file>", f"not JSON: {err}")]) from None
    except RecursionError:  # pragma: no cover - the depth check above comes first
        raise ConfigError(what, [("<file>", "nested too deeply")]) from None
    return Manifest.validated(raw, what)


def _nesting(data: bytes) -> int:
    """The deepest ``[``/``{`` nesting in JSON ``data``, brackets inside strings ignored
    (a linear scan: cheap for the size a manifest may have)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest
