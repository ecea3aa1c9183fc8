"""Shipped pipelines written with the Python builder API (see ``python_specs``)."""
