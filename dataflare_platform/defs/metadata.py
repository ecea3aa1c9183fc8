"""Turning Arrow tables into the metadata Dagster shows on an asset.

Every sample of rows that goes into metadata passes ``safe_sample`` first: columns the
dataset's governance file classifies as PII are redacted, detected PII in the others
too, and a dataset without a classification has all its string columns redacted
(failing closed). Metadata is readable by every viewer of the UI.
"""

from functools import cache

import dagster as dg
import polars as pl
import pyarrow as pa

from dataflare_platform.compliance.pii import PiiPolicy, detect, mask_sample, redact
from dataflare_platform.compliance.spec import load_dataset_specs

PREVIEW_ROWS = 5
# Metadata key of a stream run: plugin step -> sha256 of the module it ran (the audit
# trail turns it into plugin_loaded entries).
PLUGINS = "plugins"
_PREVIEW_CELL_CHARS = 40


def column_schema(schema: pa.Schema) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name=f.name, type=str(f.type)) for f in schema])


@cache
def _policies() -> dict[str, PiiPolicy | None]:
    """Asset path ("a/b") -> its PII classification, from the governance files."""
    return {spec.asset: spec.pii for spec in load_dataset_specs()}


def classification(asset: str | None) -> PiiPolicy | None:
    """The PII policy of asset ``asset`` ("/"-separated key); None when unknown."""
    return _policies().get(asset) if asset else None


def safe_sample(table: pa.Table, asset: str | None) -> pa.Table:
    """``table`` with PII masked as the asset's classification says (module docstring)."""
    return mask_sample(table, classification(asset)).to_arrow()


def safe_rows(rows: list[dict], asset: str | None) -> list[dict]:
    """Sample rows (dicts) masked like ``safe_sample``."""
    if not rows:
        return rows
    frame = pl.DataFrame([{k: None if v is None else str(v) for k, v in r.items()} for r in rows])
    return mask_sample(frame, classification(asset)).to_dicts()


def safe_values(values: list, asset: str | None, column: str | None) -> list:
    """Sample values of one ``column`` (failing values of an expectation) masked like
    ``safe_sample``: every value of a classified column; a string holding detected PII in
    an unclassified one; every string when the classification is unknown (or the values
    belong to no column). Numbers of an unclassified column stay as they are."""
    if not values:
        return values
    policy = classification(asset) if column else None
    classified = policy is not None and column in policy.columns
    texts = pl.Series("v", [None if v is None else str(v) for v in values], dtype=pl.String)
    redacted = redact(texts).to_list()
    if classified:
        return redacted
    hits = [False] * len(values)
    if policy is not None:
        for found, _ in detect(texts).values():
            hits = [a or bool(b) for a, b in zip(hits, found.fill_null(False), strict=True)]
    return [
        red if isinstance(v, str) and (policy is None or hit) else v
        for v, red, hit in zip(values, redacted, hits, strict=True)
    ]


def markdown_preview(
    table: pa.Table, rows: int = PREVIEW_ROWS, *, asset: str | None
) -> dg.MarkdownMetadataValue:
    """First rows as a Markdown table, PII masked for ``asset`` (``safe_sample``); long
    cells are cut so the UI stays readable."""
    table = safe_sample(table.slice(0, rows), asset)

    def cell(value: object) -> str:
        text = "" if value is None else str(value)
        text = text.replace("|", "\\|").replace("\n", " ")
        return text if len(text) <= _PREVIEW_CELL_CHARS else text[: _PREVIEW_CELL_CHARS - 1] + "…"

    names = table.column_names
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for record in table.slice(0, rows).to_pylist():
        lines.append("| " + " | ".join(cell(record[n]) for n in names) + " |")
    return dg.MetadataValue.md("\n".join(lines))


def table_metadata(
    name: str, table_preview: pa.Table, rows: int, *, asset: str | None
) -> dict[str, object]:
    return {
        "dagster/row_count": rows,
        "dagster/table_name": name,
        "dagster/column_schema": column_schema(table_preview.schema),
        "preview": markdown_preview(table_preview, asset=asset),
    }
