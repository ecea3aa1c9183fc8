"""Plugins domain: the sandboxed WASM plugin runtime as a resource, and an asset using it."""
