"""Control plane: thin Dagster definitions over the data-plane library, one folder per domain."""
