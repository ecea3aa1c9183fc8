"""Module shape limits, checked on the raw bytes BEFORE anything is compiled.

Compiling is the one step of loading a plugin that no deadline covers: Cranelift's time
grows with the size of a function and the number of its live locals, so a 640 KB module
with one function of tens of thousands of locals kept the loader busy for minutes. This
walker reads only section headers, the import/table/memory entries, the count of globals
and each function body's local declarations (LEB128 counts): it never decodes an
instruction, so it runs in time linear in the number of sections and functions, not in
the code.

Why not a library: the pure-Python parsers on PyPI (``pywasm``, ``wasm``, ``wasm-tools``)
decode every instruction, which is slower on exactly the inputs this must refuse fast, and
a larger parser of untrusted bytes; the ~100 lines below need only the binary format's
section framing. wasmtime validates the module fully afterwards (in a child process with a
time limit, ``plugins.engine``).

A refusal is a :class:`ModuleRefusedError` with ``kind`` ``too_complex`` (a limit) or
``abi`` (malformed, or a feature the ABI does not allow), naming the limit and the value."""

from __future__ import annotations

from dataclasses import dataclass, field

from dataflare_platform.errors import DataflareError

MAGIC = b"\0asm"
VERSION_CORE = b"\1\0\0\0"

SEC_TYPE, SEC_IMPORT, SEC_FUNCTION, SEC_TABLE, SEC_MEMORY = 1, 2, 3, 4, 5
SEC_GLOBAL, SEC_EXPORT, SEC_CODE = 6, 7, 10


class ModuleRefusedError(DataflareError, ValueError):
    """A module refused before compilation or by the bounded compiler; ``kind`` is
    ``too_complex`` or ``abi`` (the runtime turns it into a ``PluginError`` of that kind)."""

    def __init__(self, kind: str, detail: str) -> None:
        self.kind, self.detail = kind, detail
        super().__init__(f"{kind}: {detail}")


@dataclass(frozen=True)
class ShapeLimits:
    """What a plugin module may look like. The shipped samples are 2-40 KB with under 100
    functions and under 100 locals per function; these are generous beyond that."""

    module_bytes: int = 16 * 1024 * 1024
    functions: int = 20_000  # imported + defined
    locals_per_function: int = 5_000  # declared locals (params not counted)
    body_bytes: int = 512 * 1024  # one function's code
    imports: int = 1_000
    memories: int = 1  # imported + defined: the memory limit is then per instance
    tables: int = 1  # imported + defined
    table_elements: int = 100_000  # a table's initial size (growth is capped per store)
    # Imported + defined. Globals live in the instance's host-side context, outside the
    # memory limit: 900 000 of them took ~640 MB of the host under an 8 MiB limit.
    globals: int = 10_000


@dataclass
class ModuleShape:
    """What the walk found (``plugin inspect`` shows it)."""

    size: int = 0
    functions: int = 0
    imported_functions: int = 0
    max_locals: int = 0
    max_body_bytes: int = 0
    code_bytes: int = 0  # the code section's size (all function bodies)
    imports: int = 0
    globals: int = 0
    memories: list[dict[str, object]] = field(default_factory=list)
    tables: list[dict[str, object]] = field(default_factory=list)


class _Reader:
    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data, self.pos = data, pos
        self.end = len(data) if end is None else end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise ModuleRefusedError("abi", f"not a valid WASM module: truncated at {self.pos}")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def u32(self) -> int:
        result = shift = 0
        for _ in range(5):
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                if result > 0xFFFFFFFF:
                    break
                return result
            shift += 7
        raise ModuleRefusedError("abi", f"not a valid WASM module: bad LEB128 at {self.pos}")

    def u64(self) -> int:
        result = shift = 0
        for _ in range(10):
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
        raise ModuleRefusedError("abi", f"not a valid WASM module: bad LEB128 at {self.pos}")

    def skip(self, n: int) -> None:
        if n > self.end - self.pos:
            raise ModuleRefusedError("abi", f"not a valid WASM module: truncated at {self.pos}")
        self.pos += n

    def name(self) -> None:
        self.skip(self.u32())

    def text(self) -> str:
        n = self.u32()
        start = self.pos
        self.skip(n)
        return self.data[start : self.pos].decode("utf-8", "replace")

    def limits(self, what: str) -> dict[str, object]:
        flags = self.byte()
        if flags & 0x02:
            raise ModuleRefusedError("abi", f"{what} is shared (threads are not allowed)")
        if flags & 0x04:
            raise ModuleRefusedError("abi", f"{what} is 64-bit (memory64 is not allowed)")
        if flags & ~0x01:
            raise ModuleRefusedError("abi", f"{what} has unknown limit flags {flags:#x}")
        low = self.u32()
        high = self.u32() if flags & 0x01 else None
        return {"min": low, "max": high}


def _check(limit: int, value: int, what: str) -> None:
    if value > limit:
        raise ModuleRefusedError("too_complex", f"{what} is {value}, the limit is {limit}")


def _count(limit: int, value: int, what: str) -> None:
    """Memories and tables: more than the ABI's one is a module the ABI does not allow."""
    if value > limit:
        raise ModuleRefusedError(
            "abi",
            f"the module has {value} {what}; a plugin may have at most {limit} (the memory"
            " and table limits hold per instance only so)",
        )


def check_module(data: bytes, limits: ShapeLimits | None = None) -> ModuleShape:
    """The shape of the binary module ``data``, or :class:`ModuleRefusedError` naming the
    first limit it exceeds. Reads headers only (see the module docstring)."""
    lim = limits or ShapeLimits()
    shape = ModuleShape(size=len(data))
    _check(lim.module_bytes, len(data), "module size (bytes)")
    if data[:4] != MAGIC:
        raise ModuleRefusedError("abi", "not a WASM module (no \\0asm header)")
    if data[4:8] != VERSION_CORE:
        raise ModuleRefusedError(
            "abi",
            f"WASM version {data[4:8].hex()} is not a core module (components are not plugins)",
        )
    r = _Reader(data, 8)
    exported: dict[int, str] = {}
    while r.pos < r.end:
        sec = r.byte()
        size = r.u32()
        start = r.pos
        r.skip(size)
        body = _Reader(data, start, start + size)
        if sec == SEC_IMPORT:
            _imports(body, shape, lim)
        elif sec == SEC_FUNCTION:
            shape.functions += body.u32()
        elif sec == SEC_GLOBAL:
            shape.globals += body.u32()
            _check(lim.globals, shape.globals, "number of globals")
        elif sec == SEC_TABLE:
            for _ in range(body.u32()):
                ref = body.byte()
                if ref == 0x40:  # table with an initialiser: function-references proposal
                    raise ModuleRefusedError("abi", "table initialisers are not allowed")
                shape.tables.append({"imported": False, "elem": _ref(ref), **body.limits("table")})
                _count(lim.tables, len(shape.tables), "tables")
        elif sec == SEC_MEMORY:
            for _ in range(body.u32()):
                shape.memories.append({"imported": False, **body.limits("memory")})
                _count(lim.memories, len(shape.memories), "memories")
        elif sec == SEC_EXPORT:
            for _ in range(body.u32()):
                name, kind, index = body.text(), body.byte(), body.u32()
                if kind == 2:
                    exported.setdefault(index, name)
        elif sec == SEC_CODE:
            shape.code_bytes += size
            _code(body, shape, lim)
    shape.functions += shape.imported_functions
    for index, memory in enumerate(shape.memories):
        memory["export"] = exported.get(index)
    _check(lim.functions, shape.functions, "number of functions")
    for table in shape.tables:
        _check(lim.table_elements, int(table["min"]), "a table's initial elements")  # type: ignore[call-overload]
    return shape


def _ref(code: int) -> str:
    return {0x70: "funcref", 0x6F: "externref"}.get(code, f"{code:#x}")


def _imports(r: _Reader, shape: ModuleShape, lim: ShapeLimits) -> None:
    count = r.u32()
    _check(lim.imports, count, "number of imports")
    shape.imports = count
    for _ in range(count):
        r.name()
        r.name()
        kind = r.byte()
        if kind == 0:  # function
            r.u32()
            shape.imported_functions += 1
        elif kind == 1:  # table
            ref = r.byte()
            shape.tables.append({"imported": True, "elem": _ref(ref), **r.limits("table")})
            _count(lim.tables, len(shape.tables), "tables")
        elif kind == 2:  # memory
            shape.memories.append({"imported": True, **r.limits("memory")})
            _count(lim.memories, len(shape.memories), "memories")
        elif kind == 3:  # global: valtype + mutability
            r.byte()
            r.byte()
            shape.globals += 1
        else:
            raise ModuleRefusedError("abi", f"import of kind {kind} is not allowed")


def _code(r: _Reader, shape: ModuleShape, lim: ShapeLimits) -> None:
    count = r.u32()
    _check(lim.functions, count, "number of functions")
    for index in range(count):
        size = r.u32()
        _check(lim.body_bytes, size, f"function {index}'s body (bytes)")
        shape.max_body_bytes = max(shape.max_body_bytes, size)
        body = _Reader(r.data, r.pos, r.pos + size)
        r.skip(size)
        n_locals = 0
        for _ in range(body.u32()):
            n_locals += body.u32()
            body.byte()  # value type
            _check(lim.locals_per_function, n_locals, f"function {index}'s locals")
        shape.max_locals = max(shape.max_locals, n_locals)
