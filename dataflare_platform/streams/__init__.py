"""A stream pipeline's declaration and its binding to connectors: ``spec`` (the
``PipelineSpec`` model, sources and sinks by ``kind:``) and ``bind`` (spec -> opened
sources and sink -> engine pipeline, in one place). No Dagster imports."""
