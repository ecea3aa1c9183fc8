"""Plug-ins of the Dagster instance (configured in dagster.yaml), such as the run
coordinator that authorizes every submitted run, whoever submits it."""
