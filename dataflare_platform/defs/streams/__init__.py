"""Streams domain: every declarative pipeline as an asset fed by its topics, a job and a
sensor that requests offset ranges (``<pipeline>/defs.yaml``: StreamPipelineComponent
instances), plus the topics and the Python-builder pipelines (``definitions.py``)."""
