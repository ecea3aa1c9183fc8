"""The plugin marketplace's signed registry: a TUF repository (``repository``) and the
client that installs and re-verifies plugins through it (``client``). Data plane: no
Dagster imports (docs/marketplace.md)."""
