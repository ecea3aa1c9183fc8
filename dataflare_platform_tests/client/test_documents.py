"""Every GraphQL document the client sends is valid against the installed Dagster's own
schema (``dagster_graphql``), so an API change shows here and not in a user's terminal."""

from __future__ import annotations

import pytest
from graphql import parse, validate

from dataflare_platform.client import documents

DOCUMENTS = sorted(
    name
    for name in dir(documents)
    if name.endswith(("_QUERY", "_MUTATION")) and isinstance(getattr(documents, name), str)
)


@pytest.fixture(scope="module")
def dagster_schema():
    from dagster_graphql.schema import create_schema

    return create_schema().graphql_schema


def test_the_documents_are_found():
    assert {"ASSET_METADATA_QUERY", "BACKFILL_STATE_QUERY", "BACKFILL_STATUS_QUERY"} <= set(
        DOCUMENTS
    )
    assert len(DOCUMENTS) >= 9


@pytest.mark.parametrize("name", DOCUMENTS)
def test_document_is_valid_against_dagsters_schema(name, dagster_schema):
    errors = validate(dagster_schema, parse(getattr(documents, name)))
    assert errors == []


def test_the_backfill_poll_asks_for_the_status_alone(dagster_schema):
    poll = parse(documents.BACKFILL_STATE_QUERY)
    shown = parse(documents.BACKFILL_STATUS_QUERY)
    assert "partitionStatuses" not in documents.BACKFILL_STATE_QUERY
    assert "partitionStatuses" in documents.BACKFILL_STATUS_QUERY
    assert poll.definitions[0].name.value != shown.definitions[0].name.value
