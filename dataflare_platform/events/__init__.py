"""The event layer: an embedded, durable, partitioned event log with consumer groups,
wire formats and dead-letter topics, routing and replay (no Dagster imports)."""
