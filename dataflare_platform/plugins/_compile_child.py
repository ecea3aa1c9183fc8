"""The bounded compiler's child: compile one module and print its serialized code.

Run as ``python -I <this file> <settings-json>`` by ``plugins.engine.compile_module``
with the module bytes on stdin; it imports only ``wasmtime`` (not this package, whose
import costs half a second) and builds its engine from the same settings as the parent's,
so the artifact deserializes there. The parent kills it at the compile time limit; its
own CPU and address-space limits stop a compiler that runs away in memory instead."""

import json
import resource
import sys


def main() -> int:
    settings = json.loads(sys.argv[1])
    cpu_s, memory_bytes = settings.pop("_cpu_s"), settings.pop("_memory_bytes")
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
    if memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    import wasmtime

    config = wasmtime.Config()
    for key, value in settings.items():
        setattr(config, key, value)
    engine = wasmtime.Engine(config)
    data = sys.stdin.buffer.read()
    try:
        module = wasmtime.Module(engine, data)
    except wasmtime.WasmtimeError as err:
        sys.stderr.write(str(err))
        return 3
    sys.stdout.buffer.write(module.serialize())
    return 0


if __name__ == "__main__":
    sys.exit(main())
