"""Shipped Python pipelines: ``builders/`` holds functions decorated with
``@stream_pipeline`` (see ``dataflare_platform.streams.python_specs``). Everything
about a pipeline's life (spec, binding, offset ranges, continuous runs) lives in
``dataflare_platform.streams``; the shipped YAML pipelines are component instances
under ``dataflare_platform/defs/streams/``."""
