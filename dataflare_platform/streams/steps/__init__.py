"""A declarative pipeline's steps: the registry (``registry``: ``@step``, ``StepSpec``,
``wire``) and the steps shipped with the platform (``builtin``, ``encryption``),
registered on import of this package. See ``registry`` for adding a step kind."""

from dataflare_platform.streams.steps import builtin, encryption
from dataflare_platform.streams.steps.builtin import (
    AggSpec,
    DedupSpec,
    EnrichSpec,
    IntervalJoinSpec,
    JoinSpec,
    PluginSpec,
    WindowJoinSpec,
    WindowSpec,
)
from dataflare_platform.streams.steps.registry import (
    STEPS,
    StepContext,
    StepKind,
    StepRegistry,
    StepSpec,
    StreamSpec,
    step,
    wire,
)

__all__ = [
    "STEPS",
    "AggSpec",
    "DedupSpec",
    "EnrichSpec",
    "IntervalJoinSpec",
    "JoinSpec",
    "PluginSpec",
    "StepContext",
    "StepKind",
    "StepRegistry",
    "StepSpec",
    "StreamSpec",
    "WindowJoinSpec",
    "WindowSpec",
    "builtin",
    "encryption",
    "step",
    "wire",
]
