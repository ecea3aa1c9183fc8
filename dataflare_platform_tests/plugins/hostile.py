"""Hostile plugins written in WAT. One module misbehaves according to the first input
value (so the same plugin must recover), others are refused at load."""

from __future__ import annotations

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
