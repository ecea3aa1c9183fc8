"""Control plane: thin Dagster definitions over the data-plane library, one folder per
domain, autoloaded by ``dg.load_from_defs_folder`` (every module's definitions and every
``defs.yaml`` component instance); see ``dataflare_platform/definitions.py``."""
