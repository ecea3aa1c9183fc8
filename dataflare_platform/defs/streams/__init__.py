"""Streams domain: every declarative pipeline of ``dataflare_platform/pipelines`` as an
asset fed by its topics, a job and a sensor that requests offset ranges."""

from dataflare_platform.defs.streams.definitions import defs

__all__ = ["defs"]
