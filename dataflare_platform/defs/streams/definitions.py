"""The streams domain's definitions: one set per shipped pipeline file."""

from dataflare_platform.defs.streams.factory import stream_definitions
from dataflare_platform.pipelines import load_specs

defs = stream_definitions(load_specs())
