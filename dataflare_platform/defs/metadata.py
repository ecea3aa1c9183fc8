"""Turning Arrow tables into the metadata Dagster shows on an asset."""

import dagster as dg
import pyarrow as pa

PREVIEW_ROWS = 5
# Metadata key of a stream run: plugin step -> sha256 of the module it ran (the audit
# trail turns it into plugin_loaded entries).
PLUGINS = "plugins"
_PREVIEW_CELL_CHARS = 40


def column_schema(schema: pa.Schema) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name=f.name, type=str(f.type)) for f in schema])


def markdown_preview(table: pa.Table, rows: int = PREVIEW_ROWS) -> dg.MarkdownMetadataValue:
    """First rows as a Markdown table; long cells are cut so the UI stays readable."""

    def cell(value: object) -> str:
        text = "" if value is None else str(value)
        text = text.replace("|", "\\|").replace("\n", " ")
        return text if len(text) <= _PREVIEW_CELL_CHARS else text[: _PREVIEW_CELL_CHARS - 1] + "…"

    names = table.column_names
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for record in table.slice(0, rows).to_pylist():
        lines.append("| " + " | ".join(cell(record[n]) for n in names) + " |")
    return dg.MetadataValue.md("\n".join(lines))


def table_metadata(name: str, table_preview: pa.Table, rows: int) -> dict[str, object]:
    return {
        "dagster/row_count": rows,
        "dagster/table_name": name,
        "dagster/column_schema": column_schema(table_preview.schema),
        "preview": markdown_preview(table_preview),
    }
