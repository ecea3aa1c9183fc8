"""Plugins domain: the sandboxed WASM plugin runtime as a resource, and an asset using it."""

from dataflare_platform.defs.plugins.definitions import defs

__all__ = ["defs"]
