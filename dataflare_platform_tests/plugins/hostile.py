"""Hostile plugins written in WAT. One module misbehaves according to the first input
value (so the same plugin must recover), others are refused at load."""

from __future__ import annotations

from dataflare_platform.bench.plugins import many_locals_module  # noqa: F401 - re-exported
from dataflare_platform.plugins.manifest import Manifest

MANIFEST = Manifest.model_validate(
    {
        "abi_version": 1,
        "name": "hostile",
        "version": "0.0.1",
        "kind": "map",
        "input": [{"name": "x", "type": "int64"}],
        "output": [{"name": "y", "type": "int64"}],
        "license": "MIT",
    }
)

OK, LOOP, BOMB, TRAP, OOB_VALUES, BAD_STATUS, OOB_VALIDITY = range(7)
# The deadline of the sandbox tests' plugins: the endless loops reach any deadline, and
# one far above a well-behaved call's or load's microseconds keeps a loaded machine from
# turning a slow good call into a counted timeout (the tests judge limits, not speed).
DEADLINE_MS = 1000


def module(version: int = 1, imports: str = "", body: str | None = None) -> str:
    """A WAT module: bump allocator, ABI version export and a map that copies x to y unless
    x[0] selects a misbehaviour."""
    body = (
        body
        or f"""
    (local $mode i64)
    (local.set $mode (i64.load (i32.load offset=12 (local.get $in))))
    (if (i64.eq (local.get $mode) (i64.const {LOOP})) (then (loop $l (br $l))))
    (if (i64.eq (local.get $mode) (i64.const {BOMB}))
      (then
        (loop $g (br_if $g (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
        unreachable))
    (if (i64.eq (local.get $mode) (i64.const {TRAP})) (then unreachable))
    (if (i64.eq (local.get $mode) (i64.const {OOB_VALUES}))
      (then (i32.store offset=12 (local.get $out) (i32.const 0x7fff0000))
            (return (i32.const 0))))
    (if (i64.eq (local.get $mode) (i64.const {BAD_STATUS})) (then (return (i32.const -7))))
    (if (i64.eq (local.get $mode) (i64.const {OOB_VALIDITY}))
      (then (i32.store offset=8 (local.get $out) (i32.const -16))
            (return (i32.const 0))))
    (memory.copy
      (i32.load offset=12 (local.get $out))
      (i32.load offset=12 (local.get $in))
      (i32.mul (local.get $n) (i32.const 8)))
    (i32.store offset=8 (local.get $out) (i32.load offset=8 (local.get $in)))
    (i32.const 0)"""
    )
    return f"""
(module
  {imports}
  (memory (export "memory") 2)
  (global $top (mut i32) (i32.const 1024))
  (func (export "dataflare_abi_version") (result i32) (i32.const {version}))
  (func (export "dataflare_alloc") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $top))
    (if (i32.gt_u (i32.add (local.get $p) (local.get $size))
                  (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq (memory.grow (i32.add (i32.shr_u (local.get $size) (i32.const 16))
                                          (i32.const 1)))
                    (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $top (i32.add (local.get $p) (local.get $size)))
    (local.get $p))
  (func (export "dataflare_map") (param $in i32) (param $n i32) (param $out i32) (result i32)
    {body}))
"""


AGG_MANIFEST = {
    "abi_version": 1,
    "name": "poison_sum",
    "version": "0.0.1",
    "kind": "aggregate",
    "input": [{"name": "x", "type": "int64"}],
    "output": [{"name": "total", "type": "int64"}],
    "params": [{"name": "tolerant", "type": "bool"}],
    "state_bytes": 16,
    "license": "MIT",
}
POISON = 13
STATE_MAGIC = 0x5EED


def aggregate_module() -> str:
    """An aggregate summing x into a 16-byte state (magic, sum). An update that sees
    ``POISON`` makes the following finalize trap (after the update committed) unless
    the plugin was loaded with the ``tolerant`` param; finalize refuses a state whose
    magic is wrong (the way a real plugin refuses state it cannot decode)."""
    return f"""
(module
  (memory (export "memory") 2)
  (global $top (mut i32) (i32.const 1024))
  (global $poison (mut i32) (i32.const 0))
  (global $tolerant (mut i32) (i32.const 0))
  (func (export "dataflare_abi_version") (result i32) (i32.const 1))
  (func (export "dataflare_alloc") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $top))
    (if (i32.gt_u (i32.add (local.get $p) (local.get $size))
                  (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq (memory.grow (i32.add (i32.shr_u (local.get $size) (i32.const 16))
                                          (i32.const 1)))
                    (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $top (i32.add (local.get $p) (local.get $size)))
    (local.get $p))
  (func (export "dataflare_init") (param $p i32) (param $len i32) (result i32)
    (global.set $tolerant (i32.gt_s (local.get $len) (i32.const 2)))
    (i32.const 0))
  (func (export "dataflare_agg_init") (param $s i32) (param $len i32) (result i32)
    (i64.store (local.get $s) (i64.const {STATE_MAGIC}))
    (i64.store offset=8 (local.get $s) (i64.const 0))
    (i32.const 0))
  (func (export "dataflare_agg_update") (param $s i32) (param $in i32) (param $n i32)
    (result i32)
    (local $i i32) (local $v i64) (local $vals i32)
    (local.set $vals (i32.load offset=12 (local.get $in)))
    (block $done
      (loop $l
        (br_if $done (i32.ge_s (local.get $i) (local.get $n)))
        (local.set $v (i64.load (i32.add (local.get $vals)
                                         (i32.shl (local.get $i) (i32.const 3)))))
        (if (i64.eq (local.get $v) (i64.const {POISON}))
          (then (global.set $poison (i32.const 1))))
        (i64.store offset=8 (local.get $s)
          (i64.add (i64.load offset=8 (local.get $s)) (local.get $v)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (i32.const 0))
  (func (export "dataflare_agg_merge") (param $s i32) (param $o i32) (result i32)
    (i64.store offset=8 (local.get $s)
      (i64.add (i64.load offset=8 (local.get $s)) (i64.load offset=8 (local.get $o))))
    (i32.const 0))
  (func (export "dataflare_agg_finalize") (param $s i32) (param $out i32) (param $max i32)
    (result i32)
    (if (i64.ne (i64.load (local.get $s)) (i64.const {STATE_MAGIC}))
      (then (return (i32.const -3))))
    (if (i32.and (global.get $poison) (i32.eqz (global.get $tolerant))) (then unreachable))
    (i64.store (i32.load offset=12 (local.get $out)) (i64.load offset=8 (local.get $s)))
    (i32.const 1)))
"""
