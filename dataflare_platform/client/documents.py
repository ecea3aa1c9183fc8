"""The GraphQL documents the client sends that ``DagsterGraphQLClient`` does not cover:
discovery (jobs, assets), logs, asset metadata, runs and backfills. Kept apart so a
schema change of Dagster's API shows in one file."""

# One GraphQL fragment for the metadata entries a materialization carries: the typed
# value of each kind (``results.metadata_value`` reads them back).
_METADATA_ENTRY_FRAGMENT = """
fragment MetadataEntryFields on MetadataEntry {
  __typename label description
  ... on IntMetadataEntry { intValue intRepr }
  ... on FloatMetadataEntry { floatValue }
  ... on BoolMetadataEntry { boolValue }
  ... on TextMetadataEntry { text }
  ... on UrlMetadataEntry { url }
  ... on PathMetadataEntry { path }
  ... on NotebookMetadataEntry { path }
  ... on MarkdownMetadataEntry { mdStr }
  ... on JsonMetadataEntry { jsonString }
  ... on TimestampMetadataEntry { timestamp }
  ... on PipelineRunMetadataEntry { runId }
  ... on AssetMetadataEntry { assetKey { path } }
  ... on JobMetadataEntry { jobName }
  ... on TableSchemaMetadataEntry { schema { columns { name type } } }
}
"""

JOBS_QUERY = """
query DataflareJobs {
  repositoriesOrError {
    __typename
    ... on RepositoryConnection { nodes { name location { name } jobs { name } } }
    ... on Error { message }
  }
}
"""

ASSETS_QUERY = """
query DataflareAssets {
  assetNodes { assetKey { path } repository { name location { name } } }
}
"""

# The partition keys of the assets a materialization targets (checked before launching).
ASSET_PARTITIONS_QUERY = """
query DataflareAssetPartitions($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) { assetKey { path } isPartitioned partitionKeys }
}
"""

LOGS_QUERY = """
query DataflareLogs($runId: ID!, $afterCursor: String, $limit: Int) {
  logsForRun(runId: $runId, afterCursor: $afterCursor, limit: $limit) {
    __typename
    ... on EventConnection {
      cursor hasMore
      events {
        __typename
        ... on MessageEvent { message timestamp level stepKey eventType }
      }
    }
    ... on Error { message }
  }
}
"""

ASSET_METADATA_QUERY = (
    """
query DataflareAssetMetadata($key: AssetKeyInput!, $partitions: [String!]) {
  assetOrError(assetKey: $key) {
    __typename
    ... on Asset {
      assetMaterializations(limit: 1, partitions: $partitions) {
        runId partition timestamp
        metadataEntries { ...MetadataEntryFields }
      }
    }
    ... on Error { message }
  }
}
"""
    + _METADATA_ENTRY_FRAGMENT
)


LATEST_MATERIALIZATION_QUERY = (
    """
query DataflareLatestMaterialization($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) {
    __typename
    ... on Asset {
      assetMaterializations(limit: 1) {
        runId timestamp
        metadataEntries { ...MetadataEntryFields }
      }
    }
    ... on Error { message }
  }
}
"""
    + _METADATA_ENTRY_FRAGMENT
)


PARTITION_SETS_QUERY = """
query DataflarePartitionSets($repositorySelector: RepositorySelector!, $job: String!) {
  partitionSetsOrError(repositorySelector: $repositorySelector, pipelineName: $job) {
    __typename
    ... on PartitionSets {
      results {
        name
        partitionsOrError {
          __typename
          ... on Partitions { results { name } }
          ... on Error { message }
        }
      }
    }
    ... on Error { message }
  }
}
"""

LAUNCH_BACKFILL_MUTATION = """
mutation DataflareLaunchBackfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PartitionKeysNotFoundError { partitionKeys }
    ... on Error { message }
  }
}
"""


def _backfill_query(name: str, selection: str) -> str:
    """A backfill by id, selecting ``selection`` of it (the poll asks for less)."""
    return f"""
query {name}($id: String!) {{
  partitionBackfillOrError(backfillId: $id) {{
    __typename
    ... on PartitionBackfill {{ {selection} }}
    ... on Error {{ message }}
  }}
}}
"""


# What ``wait_for_backfill`` polls: the status alone.
BACKFILL_STATE_QUERY = _backfill_query("DataflareBackfillState", "status")

# What ``backfill status`` shows: every partition's run.
BACKFILL_STATUS_QUERY = _backfill_query(
    "DataflareBackfill",
    """
      id status partitionNames
      error { message }
      partitionStatuses { results { partitionName runId runStatus } }
      runs { runId status tags { key value } }
    """,
)

RUNS_QUERY = """
query DataflareRuns($filter: RunsFilter, $limit: Int) {
  runsOrError(filter: $filter, limit: $limit) {
    __typename
    ... on Runs {
      results { runId jobName status creationTime startTime endTime tags { key value } }
    }
    ... on Error { message }
  }
}
"""
