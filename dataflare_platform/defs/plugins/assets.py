"""An asset that runs a sandboxed plugin: PII masking of a sample of Nexmark persons."""

import dagster as dg
import polars as pl

from dataflare_platform.datagen import NexmarkConfig, NexmarkGenerator
from dataflare_platform.defs.metadata import markdown_preview
from dataflare_platform.defs.plugins.resources import PluginRuntimeResource
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.errors import DataflareError
from dataflare_platform.plugins.apply import run_batches
from dataflare_platform.warehouse.connection import scalar

GROUP = "plugins"
PERSONS_KEY = dg.AssetKey(["nexmark", "persons"])
MASKED = {"email_address": "emails", "credit_card": "cards"}


class MaskedPersonsConfig(dg.Config):
    rows: int = 100
    min_digits: int = 13


def persons_sample(dataflare: ProjectHomeResource, rows: int) -> tuple[pl.DataFrame, str]:
    """The first ``rows`` persons of the warehouse, else freshly generated ones."""
    with dataflare.warehouse() as conn:
        exists = "SELECT count(*) FROM information_schema.tables WHERE table_name = 'persons'"
        if scalar(conn, exists):
            table = conn.sql(f"SELECT * FROM persons ORDER BY id LIMIT {int(rows)}").pl()
            if table.height:
                return table, "warehouse"
    config = NexmarkConfig(events=max(rows, 1) * 50, chunk_events=max(rows, 1) * 50)
    persons = NexmarkGenerator(config).chunk(0).tables(decode=True)["persons"]
    return pl.from_arrow(persons).head(rows), "generated"


@dg.asset(
    key=[GROUP, "masked_persons_sample"],
    deps=[PERSONS_KEY],
    group_name=GROUP,
    kinds={"parquet"},
    owners=["team:data-platform"],
    description="A sample of Nexmark persons (warehouse, else generated) with e-mails and "
    "card numbers masked by the pii_mask WASM plugin, written to "
    "<home>/plugins/masked_persons_sample.parquet.",
)
def masked_persons_sample(
    context: dg.AssetExecutionContext,
    config: MaskedPersonsConfig,
    dataflare: ProjectHomeResource,
    plugins: PluginRuntimeResource,
) -> dg.MaterializeResult:
    table, source = persons_sample(dataflare, config.rows)
    masked, meta, seconds = table, {}, 0.0
    try:
        for column, label in MASKED.items():
            plugin = plugins.load(
                "pii_mask",
                {"min_digits": config.min_digits},
                {"text": column},
                pipeline=context.asset_key.to_user_string(),
            )
            run = run_batches(plugin, masked)
            if run.failed_batches:
                raise dg.Failure(description=f"pii_mask on {column}: {run.reasons[0]}")
            changed = (run.output[column] != masked[column]).sum()
            masked, seconds = run.output, seconds + run.seconds_in_plugin
            meta[f"masked_{label}"] = int(changed)
    except DataflareError as err:
        raise dg.Failure(description=str(err)) from None
    path = dataflare.home.root / "plugins" / "masked_persons_sample.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    masked.write_parquet(path)
    context.log.info(f"masked {meta} in {masked.height} {source} persons")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": masked.height,
            **meta,
            "source": source,
            "seconds_in_plugin": round(seconds, 6),
            "path": dg.MetadataValue.path(str(path)),
            "preview": markdown_preview(
                masked.select("id", *MASKED).to_arrow(), asset=context.asset_key.to_user_string()
            ),
        }
    )
