"""Every external system behind one source contract and one sink contract
(``engine.io``): one package per system (``files``, ``duckdb``, ``topic``, ``nats``,
``redis``, ``landing``, ``postgres``, ``parquet_dataset``), each exporting its settings
model(s) and ``open_source`` / ``open_sink``; ``registry`` maps a pipeline's ``kind:``
to them. Shared pieces: ``broker`` (producers/consumer groups), ``offset_source``
(dense row offsets over broker messages), ``settings`` (strict base, column types, the
open context). No Dagster imports. This module imports nothing, so that importing one
connector does not import every client library."""
