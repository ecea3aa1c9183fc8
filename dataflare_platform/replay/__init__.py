"""Replay: re-process part of a topic through a pipeline (``run``), planning which output
rows a replay owns (``plan``), feeding and collecting through the engine (``engine_io``)
and publishing into a target (``targets``). It sits above the event log, the engine and
the connectors, and builds Nexmark or YAML pipelines (``factories``); nothing below
imports it."""
