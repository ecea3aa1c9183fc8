"""What a GraphQL request asks for, in the vocabulary of the policy.

The front parses each document with graphql-core (the parser dagster-graphql itself uses,
so both read the same operations), collects the top-level fields of every operation
(through fragments, whatever the alias), and maps each mutation field to an ``Action`` and
the ``Resource``\\s it touches. The table below holds every mutation of the dagster-graphql
1.13 schema (a test holds it to the schema); a field it does not name maps to ``admin``,
so a mutation added by a Dagster upgrade is denied to everyone but admins until mapped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from graphql import GraphQLError, parse
from graphql.language import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)
from graphql.utilities import value_from_ast_untyped

from dataflare_platform.access.decisions import Action, Resource
from dataflare_platform.errors import InvalidInputError

OperationKind = Literal["query", "mutation", "subscription"]

MUTATION_ACTIONS: dict[str, Action] = {
    # Runs and backfills.
    "launchRun": "launch",
    "launchPipelineExecution": "launch",
    "launchMultipleRuns": "launch",
    "launchRunReexecution": "launch",
    "launchPipelineReexecution": "launch",
    "launchPartitionBackfill": "launch",
    "reexecutePartitionBackfill": "launch",
    "resumePartitionBackfill": "launch",
    "addDynamicPartition": "launch",
    "terminateRun": "terminate",
    "terminateRuns": "terminate",
    "terminatePipelineExecution": "terminate",
    "cancelPartitionBackfill": "terminate",
    "deleteRun": "delete_run",
    "deletePipelineRun": "delete_run",
    # Assets: wiping and reporting events by hand rewrite what the catalog says.
    "wipeAssets": "wipe_assets",
    "reportRunlessAssetEvents": "wipe_assets",
    "reportAssetCheckEvaluations": "wipe_assets",
    # Automation.
    "startSensor": "toggle_automation",
    "stopSensor": "toggle_automation",
    "resetSensor": "toggle_automation",
    "startSchedule": "toggle_automation",
    "stopRunningSchedule": "toggle_automation",
    "resetSchedule": "toggle_automation",
    "setAutoMaterializePaused": "toggle_automation",
    # Dry runs evaluate user code of a sensor/schedule without changing state.
    "sensorDryRun": "toggle_automation",
    "scheduleDryRun": "toggle_automation",
    "setSensorCursor": "set_cursor",
    "reloadRepositoryLocation": "reload_location",
    "reloadWorkspace": "reload_location",
    # UI bookkeeping with no effect on runs or data.
    "logTelemetry": "view",
    "setNuxSeen": "view",
    # Everything else (shutdownRepositoryLocation, concurrency limits and slots,
    # deleteDynamicPartitions, app-managed components, ...) is admin.
}
UNKNOWN_MUTATION_ACTION: Action = "admin"
DEPLOYMENT = Resource(kind="deployment", name="dagster")


@dataclass(frozen=True)
class RequestedField:
    """One top-level field of one operation of a document."""

    operation: OperationKind
    name: str
    args: Mapping[str, Any] = field(default_factory=dict)

    @property
    def action(self) -> Action:
        if self.operation != "mutation":
            return "view"
        return MUTATION_ACTIONS.get(self.name, UNKNOWN_MUTATION_ACTION)


def parse_document(query: str) -> DocumentNode:
    """The parsed document, or ``InvalidInputError`` with the parser's message."""
    try:
        return parse(query)
    except GraphQLError as err:
        raise InvalidInputError(f"GraphQL syntax error: {err.message}") from None


def requested_fields(
    document: DocumentNode, variables: Mapping[str, Any] | None = None
) -> list[RequestedField]:
    """The top-level fields of every operation in ``document`` (not only the one an
    ``operationName`` picks: a document is judged by everything it could run)."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    found: list[RequestedField] = []
    for definition in document.definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        kind: OperationKind = definition.operation.value  # type: ignore[assignment]
        for node in _top_fields(definition.selection_set, fragments, set()):
            args = {
                a.name.value: value_from_ast_untyped(a.value, dict(variables or {}))
                for a in node.arguments or ()
            }
            found.append(RequestedField(kind, node.name.value, args))
    return found


def _top_fields(
    selection_set: SelectionSetNode,
    fragments: Mapping[str, FragmentDefinitionNode],
    seen: set[str],
) -> Iterable[FieldNode]:
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            yield selection
        elif isinstance(selection, InlineFragmentNode):
            yield from _top_fields(selection.selection_set, fragments, seen)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            if name in fragments and name not in seen:
                seen.add(name)
                yield from _top_fields(fragments[name].selection_set, fragments, seen)


# A run id -> its code location (from the instance's run storage), so that a policy can
# scope terminate/delete by location.
RunLookup = Callable[[str], str | None]


def resources_of(item: RequestedField, run_lookup: RunLookup | None = None) -> list[Resource]:
    """The resources a mutation field acts on, read from its arguments; the deployment as
    a whole when nothing more specific is named."""
    if item.operation != "mutation":
        return [DEPLOYMENT]
    flat = _flatten(item.args)
    location = _first_str(flat.get("repositoryLocationName"))
    run_ids = [v for key in ("runId", "runIds") for v in flat.get(key, []) if isinstance(v, str)]
    if run_ids:
        out = []
        for run_id in run_ids:
            run_location = run_lookup(run_id) if run_lookup else None
            out.append(Resource(kind="run", name=run_id, location=run_location or location))
        return out
    for key, kind in (
        ("backfillId", "backfill"),
        ("jobName", "job"),
        ("pipelineName", "job"),
        ("sensorName", "sensor"),
        ("scheduleName", "schedule"),
    ):
        name = _first_str(flat.get(key))
        if name:
            return [Resource(kind=kind, name=name, location=location)]  # type: ignore[arg-type]
    assets = ["/".join(map(str, p)) for p in flat.get("path", []) if isinstance(p, list)]
    if assets:
        return [Resource(kind="asset", name=a, location=location) for a in assets]
    if location:
        return [Resource(kind="location", name=location, location=location)]
    return [DEPLOYMENT]


def _flatten(value: Any, out: dict[str, list[Any]] | None = None) -> dict[str, list[Any]]:
    """Every value under each key name, at any depth (lists of ids kept as items)."""
    out = {} if out is None else out
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(item, list) and key != "path":
                out.setdefault(key, []).extend(i for i in item if not isinstance(i, Mapping))
                for i in item:
                    if isinstance(i, Mapping):
                        _flatten(i, out)
            elif isinstance(item, Mapping):
                _flatten(item, out)
            else:
                out.setdefault(key, []).append(item)
    return out


def _first_str(values: list[Any] | None) -> str | None:
    for value in values or ():
        if isinstance(value, str) and value:
            return value
    return None
