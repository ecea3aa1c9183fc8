"""Connectors to systems outside the embedded log: brokers, landing directories and
databases. Each source follows the engine's ``Source`` protocol and each sink the
engine's ``Sink`` class, so a pipeline can swap one for another (no Dagster imports)."""
