"""Fuzz every YAML spec model (issue 17): random documents are accepted or refused with a
``ConfigError`` naming a field — never a traceback, a ``RecursionError``, a crash or a
hang.

Documents come from three sources, mixed by Hypothesis: the models' own JSON schemas
(each field given a value of its declared shape, or junk in its place), shipped and test
examples with one value swapped for junk (which reaches the deep validators: steps,
expressions, durations, cross references), and plain junk (huge numbers, NaN, unicode,
deep nesting, YAML tags and aliases). Each is written as a YAML file and read by the
loader users run; loaders that take a mapping (Dagster components hand the attributes
over parsed) also get the document as is. Every example runs in-process under a
generous per-example ceiling (a hang fails the test naming the document instead of
stalling CI).
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataflare_platform.errors import ConfigError

pytestmark = pytest.mark.fuzz

# A hang, not a slow example: generous, since the machine may be loaded.
CEILING_S = 60
EXAMPLES = 40


# -- the loaders users run ---------------------------------------------------------------
def _pipeline_file(path: Path) -> None:
    from dataflare_platform.streams.spec import PipelineSpec

    PipelineSpec.from_yaml(path)


def _pipeline_mapping(data: Any) -> None:
    from dataflare_platform.streams.spec import PipelineSpec

    PipelineSpec.load(data)


def _governance_file(path: Path) -> None:
    from dataflare_platform.compliance.spec import load_dataset_spec

    load_dataset_spec(path)


def _governance_mapping(data: Any) -> None:
    from dataflare_platform.compliance.spec import GovernedDataset
    from dataflare_platform.models import validated

    validated(GovernedDataset, "governance spec", data)


def _alert_rules_file(path: Path) -> None:
    from dataflare_platform.alerting.rules import RuleSet

    RuleSet.from_yaml(path)


def _route_rules_file(path: Path) -> None:
    from dataflare_platform.events.router import load_routes

    load_routes(path)


def _generator_file(path: Path) -> None:
    from dataflare_platform.datagen.config import NexmarkConfig

    NexmarkConfig.from_yaml(path)


def _login_file(path: Path) -> None:
    """The login settings file's sections, validated as ``gateway.serve`` does (without
    opening a directory connection)."""
    from dataflare_platform.identity.ldap import LdapSettings
    from dataflare_platform.identity.oidc import OidcSettings
    from dataflare_platform.yaml_files import load_yaml_mapping

    config = load_yaml_mapping(path, "login settings")
    if "ldap" in config:
        LdapSettings.validated(config["ldap"], "LDAP settings")
    if "oidc" in config:
        OidcSettings.validated(config["oidc"], "OIDC settings")


def _plugin_limits_mapping(data: Any) -> None:
    from dataflare_platform.plugins.registry import RegistryConfig

    RegistryConfig.validated(data, "plugin limits")


def _topic_config_mapping(data: Any) -> None:
    from dataflare_platform.events.log.config import TopicConfig

    TopicConfig.validated(data, "topic config")


def _model(name: str) -> Any:
    """The pydantic model a target is generated from (imported late: cheap collection)."""
    from dataflare_platform.alerting.rules import RuleSet
    from dataflare_platform.compliance.spec import GovernedDataset
    from dataflare_platform.datagen.config import NexmarkConfig
    from dataflare_platform.events.log.config import TopicConfig
    from dataflare_platform.events.router import RouteRules
    from dataflare_platform.identity.ldap import LdapSettings
    from dataflare_platform.identity.oidc import OidcSettings
    from dataflare_platform.plugins.registry import RegistryConfig
    from dataflare_platform.streams.spec import PipelineSpec

    return {
        "pipeline": PipelineSpec,
        "governance": GovernedDataset,
        "alert_rules": RuleSet,
        "route_rules": RouteRules,
        "generator": NexmarkConfig,
        "ldap": LdapSettings,
        "oidc": OidcSettings,
        "plugin_limits": RegistryConfig,
        "topic_config": TopicConfig,
    }[name]


def _examples(name: str) -> list[dict[str, Any]]:
    """Valid documents of a target: shipped instances and the tests' own examples."""
    from dataflare_platform.component_files import (
        GOVERNED_DATASET,
        STREAM_PIPELINE,
        find_instances,
    )

    if name == "pipeline":
        from dataflare_platform_tests.streams.test_spec import Q1_YAML, Q3_YAML, Q5_YAML

        shipped = [a for _, a in find_instances(STREAM_PIPELINE)]
        return shipped + [yaml.safe_load(t) for t in (Q1_YAML, Q3_YAML, Q5_YAML)]
    if name == "governance":
        return [a for _, a in find_instances(GOVERNED_DATASET)]
    if name == "alert_rules":
        from dataflare_platform_tests.alerting.test_rules import GOOD

        return [yaml.safe_load(GOOD)]
    if name == "route_rules":
        from dataflare_platform_tests.events.test_router import RULES

        return [RULES]
    if name == "generator":
        return [{"events": 1000, "events_per_second": 100.0, "seed": 3}]
    if name == "login":
        return [
            {
                "ldap": {"url": "ldap://127.0.0.1:389", "base_dn": "dc=example,dc=org"},
                "oidc": {"issuer": "https://idp.example", "client_id": "x"},
            }
        ]
    return [{}]


# target -> (loader of a file, loader of a mapping or None, the models it covers)
TARGETS: dict[str, tuple[Callable[[Path], None] | None, Callable[[Any], None] | None, tuple]] = {
    "pipeline": (_pipeline_file, _pipeline_mapping, ("pipeline",)),
    "governance": (_governance_file, _governance_mapping, ("governance",)),
    "alert_rules": (_alert_rules_file, None, ("alert_rules",)),
    "route_rules": (_route_rules_file, None, ("route_rules",)),
    "generator": (_generator_file, None, ("generator",)),
    "login": (_login_file, None, ("ldap", "oidc")),
    "plugin_limits": (None, _plugin_limits_mapping, ("plugin_limits",)),
    "topic_config": (None, _topic_config_mapping, ("topic_config",)),
}


# -- documents ---------------------------------------------------------------------------
_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
_NAMES = st.sampled_from(
    ["name", "kind", "path", "topic", "from", "steps", "filter", "window", "columns", "x"]
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 1, 2**31, 2**63 - 1, 2**63, -(2**63), 2**64, 10**30, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    _TEXT,
    st.sampled_from(
        [
            "",
            " ",
            "0s",
            "-1s",
            "1d",
            "99999999999999999999d",
            "10s",
            "a" * 5000,
            "price > 1",
            "(" * 100 + "a" + ")" * 100,
            " OR ".join(f"a = {i}" for i in range(2000)),
            "CAST(a AS INT) > 0",
            "os:system",
            "../../etc/passwd",
            "\x00",
            "é漢字🙂",
            "${HOME}",
            "{message}",
            "int64",
            "timestamp[ms]",
        ]
    ),
)
JUNK = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(_NAMES, _TEXT), inner, max_size=4),
    ),
    max_leaves=12,
)


def _nested(depth: int, leaf: Any = 1) -> Any:
    value: Any = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"x": value}
    return value


# Deep documents as objects stay under Python's own repr limit (Hypothesis prints a
# failing example); deeper ones, past PyYAML's recursion, come as text (DEEP_TEXT).
DEEP = st.integers(20, 150).map(_nested)
DEEP_TEXT = st.integers(900, 2500).map(
    lambda n: "name: p\nsources: " + "{x: [" * (n // 2) + "1" + "]}" * (n // 2)
)


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return defs[ref.removeprefix("#/$defs/")]
    return schema


def from_schema(schema: dict[str, Any], defs: dict[str, Any], depth: int = 0) -> st.SearchStrategy:
    """Values of ``schema``'s shape (pydantic's JSON schema), junk mixed in at any node."""
    if depth > 8:
        return _SCALARS
    schema = _resolve(schema, defs)
    title = schema.get("title")
    if title == "StepSpec":
        return _steps(depth)
    options: list[st.SearchStrategy] = []
    if "const" in schema:
        options.append(st.just(schema["const"]))
    if "enum" in schema:
        options.append(st.sampled_from(schema["enum"]))
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options.extend(from_schema(s, defs, depth + 1) for s in schema[key])
    kind = schema.get("type")
    if kind == "object":
        options.append(_object(schema, defs, depth))
    elif kind == "array":
        items = schema.get("items", {})
        options.append(st.lists(from_schema(items, defs, depth + 1), max_size=3))
    elif kind == "string":
        options.append(_string(schema))
    elif kind == "integer":
        low, high = schema.get("minimum"), schema.get("maximum")
        options.append(st.integers(min_value=low, max_value=high))
    elif kind == "number":
        options.append(st.floats(schema.get("minimum"), schema.get("maximum")))
    elif kind == "boolean":
        options.append(st.booleans())
    elif kind == "null":
        options.append(st.none())
    if not options:  # Any
        options.append(JUNK)
    return st.one_of(*options, JUNK) if depth else st.one_of(*options)


def _string(schema: dict[str, Any]) -> st.SearchStrategy:
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        try:
            re.compile(pattern)
            return st.from_regex(pattern, fullmatch=True)
        except re.error:
            pass
    return st.one_of(_TEXT, st.sampled_from(["10s", "1h", "price > 1", "date_time", "x"]))


def _object(schema: dict[str, Any], defs: dict[str, Any], depth: int) -> st.SearchStrategy:
    properties = schema.get("properties", {})
    required = set(schema.get("required", []))
    fields = {
        name: from_schema(sub, defs, depth + 1)
        for name, sub in properties.items()
        if name in required
    }
    optional = {
        name: from_schema(sub, defs, depth + 1)
        for name, sub in properties.items()
        if name not in required
    }
    extra = schema.get("additionalProperties")
    base = st.fixed_dictionaries(fields, optional=optional)
    if isinstance(extra, dict):
        more = st.dictionaries(_TEXT, from_schema(extra, defs, depth + 1), max_size=3)
        return st.builds(lambda a, b: {**b, **a}, base, more)
    return base


def _steps(depth: int) -> st.SearchStrategy:
    """A pipeline step in its YAML shape (``{<name>: <argument>}``): the argument from
    the registered step's own schema, or junk."""
    from dataflare_platform.streams.steps import STEPS

    def one(name: str) -> st.SearchStrategy:
        schema = STEPS[name].adapter.json_schema()
        arg = from_schema(schema, schema.get("$defs", {}), depth + 1)
        return arg.map(lambda a: {name: a})

    return st.one_of(*(one(n) for n in STEPS.names()), JUNK)


@st.composite
def mutated(draw: st.DrawFn, examples: list[dict[str, Any]]) -> Any:
    """A valid example with one value (at any depth) replaced, or a key dropped."""
    doc = _copy(draw(st.sampled_from(examples)))
    paths = list(_paths(doc))
    if not paths:
        return doc
    parent, key = draw(st.sampled_from(paths))
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[key]
    else:
        parent[key] = draw(st.one_of(JUNK, DEEP))
    return doc


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _paths(value: Any) -> Iterator[tuple[Any, Any]]:
    if isinstance(value, dict):
        for key, child in value.items():
            yield value, key
            yield from _paths(child)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield value, index
            yield from _paths(child)


def documents(target: str) -> st.SearchStrategy:
    models = TARGETS[target][2]
    generated = []
    for name in models:
        schema = _model(name).model_json_schema()
        strategy = from_schema(schema, schema.get("$defs", {}))
        if target == "login":  # the file holds each model under its section
            strategy = strategy.map(lambda d, n=name: {n: d})
        generated.append(strategy)
    examples = _examples(target)
    return st.one_of(*generated, mutated(examples), JUNK, DEEP)


# -- running one example -----------------------------------------------------------------
class HangError(Exception):
    pass


@contextmanager
def ceiling(seconds: float) -> Iterator[None]:
    """Interrupt the example if it runs past ``seconds`` (SIGALRM, main thread)."""

    def alarm(signum: int, frame: Any) -> None:
        raise HangError(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _dump(document: Any) -> str:
    try:
        return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)
    except (yaml.YAMLError, RecursionError, ValueError, TypeError):
        return repr(document)  # not YAML-representable: still a file a user could write


def check(load: Callable[[Any], None], given_input: Any, shown: str) -> None:
    """``load`` accepts ``given_input`` or refuses it with a ConfigError naming fields."""
    try:
        with ceiling(CEILING_S):
            load(given_input)
    except ConfigError as err:
        assert err.problems, f"a ConfigError with no field for {shown}"
        for field, message in err.problems:
            assert isinstance(field, str) and field, f"no field named: {err} for {shown}"
            assert isinstance(message, str) and message
        assert len(str(err)) < 20_000, f"an unreadable error ({len(str(err))} chars)"
    except HangError as err:
        pytest.fail(f"{err}: {shown}")
    except BaseException as err:
        if isinstance(err, KeyboardInterrupt):
            raise
        pytest.fail(f"{type(err).__name__} (not a ConfigError): {str(err)[:500]} for {shown}")


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # the ceiling above catches hangs; speed is not judged here
    database=None,  # nothing written into the checkout
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_random_documents_are_accepted_or_refused_naming_a_field(target, tmp_path):
    file_loader, mapping_loader, _ = TARGETS[target]

    @FUZZ
    @given(document=documents(target))
    def run(document: Any) -> None:
        text = _dump(document)
        shown = text if len(text) < 600 else text[:600] + "..."
        if file_loader is not None:
            path = tmp_path / "spec.yaml"
            path.write_text(text)
            check(file_loader, path, shown)
        if mapping_loader is not None:
            check(mapping_loader, document, shown)

    run()


@pytest.mark.parametrize("target", sorted(t for t, v in TARGETS.items() if v[0] is not None))
@settings(max_examples=EXAMPLES // 2, deadline=None, database=None)
@given(
    text=st.one_of(
        _TEXT,
        DEEP_TEXT,
        st.sampled_from(
            [
                "!!python/object/apply:os.system ['true']",
                "a: !!binary aGVsbG8=",
                "a: !!set {x, y}",
                "a: 2026-01-01 00:00:00",
                "[" * 300 + "]" * 300,
                "a: &x [*x]",
                "? [a, b]\n: c",
                "a: .nan\nb: -.inf",
                "\ufeffname: p",
                "--- a\n--- b",
            ]
        ),
    )
)
def test_random_text_is_refused_naming_the_file_or_a_field(target, text, tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "spec.yaml"
    path.write_text(text)
    file_loader = TARGETS[target][0]
    assert file_loader is not None
    check(file_loader, path, repr(text[:300]))


def test_every_yaml_loader_is_fuzzed():
    """A new YAML spec loader is noticed: each module that reads YAML users write is
    one this file covers (add its model to ``TARGETS`` when this fails)."""
    package = Path(__file__).parents[1] / "dataflare_platform"
    readers = sorted(
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if re.search(
            r"load_yaml_mapping|load_spec_mapping|parse_yaml_mapping|yaml\.safe_load", p.read_text()
        )
    )
    covered = {
        "alerting/rules.py",
        "cli/launch.py",  # a run config: Dagster's own schema judges it, not a spec model
        "compliance/spec.py",
        "demo.py",  # the demo's own constant workspace.yaml
        "component_files.py",
        "datagen/config.py",
        "events/router.py",
        "gateway/serve.py",
        "streams/spec.py",
        "yaml_files.py",
    }
    assert set(readers) <= covered, sorted(set(readers) - covered)


def test_an_error_echoing_a_huge_value_stays_readable():
    """Found by the fuzz test above: a sink ``kind`` of 23 k characters came back inside
    pydantic's message ("Input tag '...' found using 'kind' ..."). Each message and field
    is cut to a readable length, the field still named."""
    from dataflare_platform.errors import ConfigError
    from dataflare_platform.streams.spec import PipelineSpec

    huge = " OR ".join(f"a = {i}" for i in range(2_000))
    doc = {
        "name": "p",
        "sources": {"bids": {"topic": "nexmark.bids"}},
        "streams": {"out": {"from": "bids"}},
        "output": "out",
        "sink": {"kind": huge},
    }
    with pytest.raises(ConfigError) as caught:
        PipelineSpec.load(doc)
    assert caught.value.fields and caught.value.fields[0].startswith("sink")
    assert len(str(caught.value)) < 2_000
    assert "characters left out" in str(caught.value)
