"""Key rotation's second half as an asset: ``governance/encryption_rewrap`` re-encrypts
every governed dataset's ``pii_encrypted`` columns to the newest key version (DuckDB
tables, Parquet folders file by file; topics are left to retention, said in the
metadata; progress in the run's log, totals in the materialization's metadata), and the check
``no_ciphertext_below_min_version`` fails while any stored value is below its key's
minimum decryption version (and warns while some are below the newest). The work is the
data plane's (``compliance.rewrap``); this module only wires it. Built only when some
governed dataset declares ``pii_encrypted`` columns with an ``encryption`` binding."""

import dagster as dg

from dataflare_platform.compliance.rewrap import below_minimum, encrypted_columns, rewrap_dataset
from dataflare_platform.compliance.spec import GovernedDataset
from dataflare_platform.crypto.columns import key_versions
from dataflare_platform.defs.governance.resources import GovernanceResource

REWRAP_KEY = dg.AssetKey(["governance", "encryption_rewrap"])


def _encrypted(specs: list[GovernedDataset]) -> list[GovernedDataset]:
    return [
        s
        for s in specs
        if s.pii is not None
        and s.pii.encryption is not None
        and s.data is not None
        and encrypted_columns(s.pii)
    ]


def encryption_definitions(specs: list[GovernedDataset]) -> dg.Definitions:
    datasets = _encrypted(specs)
    if not datasets:
        return dg.Definitions()

    @dg.asset(
        key=REWRAP_KEY,
        group_name="governance",
        description="Re-encrypt pii_encrypted columns to the newest key version: "
        + ", ".join(s.asset for s in datasets),
    )
    def encryption_rewrap(
        context: dg.AssetExecutionContext, governance: GovernanceResource
    ) -> dg.MaterializeResult:
        cipher = governance.cipher()
        detail, total_rows, total_changed = {}, 0, 0
        for spec in datasets:
            assert spec.pii is not None and spec.data is not None

            def progress(column: str, done: int, rows: int, asset: str = spec.asset) -> None:
                context.log.info(f"rewrap {asset}.{column}: {done}/{rows} rows")

            result = rewrap_dataset(spec.data, governance.root, spec.pii, cipher, progress=progress)
            total_rows += result.rows
            total_changed += sum(result.rewrapped.values())
            detail[spec.asset] = {
                "rows": result.rows,
                "rewrapped": result.rewrapped,
                "versions_after": result.versions_after,
                "latest_version": result.latest,
                "min_decryption_version": result.min_decryption_version,
                **(
                    {"files": result.files, "files_rewritten": result.files_rewritten}
                    if spec.data.parquet is not None
                    else {}
                ),
                **({"not_rewrapped": result.not_rewrapped} if result.not_rewrapped else {}),
            }
        return dg.MaterializeResult(
            metadata={
                "datasets": len(datasets),
                "rows_scanned": total_rows,
                "values_rewrapped": total_changed,
                "detail": dg.MetadataValue.json(detail),
            }
        )

    @dg.asset_check(
        asset=REWRAP_KEY,
        name="no_ciphertext_below_min_version",
        description="No stored pii_encrypted value is below its key's minimum decryption "
        "version (warns while some are below the newest version).",
    )
    def no_ciphertext_below_min_version(governance: GovernanceResource) -> dg.AssetCheckResult:
        cipher = governance.cipher()
        below, stale, problems = {}, {}, []
        for spec in datasets:
            assert spec.pii is not None and spec.data is not None
            try:
                below[spec.asset] = below_minimum(spec.data, governance.root, spec.pii, cipher)
                stale[spec.asset] = _below_latest(spec, governance, cipher)
            except Exception as err:  # a missing table or key is a failure, named
                problems.append(f"{spec.asset}: {type(err).__name__}: {err}")
        n_below = sum(sum(c.values()) for c in below.values())
        n_stale = sum(sum(c.values()) for c in stale.values())
        failed = bool(problems or n_below)
        return dg.AssetCheckResult(
            passed=not failed and not n_stale,
            severity=dg.AssetCheckSeverity.ERROR if failed else dg.AssetCheckSeverity.WARN,
            description="; ".join(problems)[:2000]
            or (
                f"{n_below} value(s) below the minimum decryption version"
                if n_below
                else f"{n_stale} value(s) not yet on the newest version"
                if n_stale
                else "every value on the newest key version"
            ),
            metadata={
                "below_min_version": dg.MetadataValue.json(below),
                "below_latest_version": dg.MetadataValue.json(stale),
            },
        )

    return dg.Definitions(
        assets=[encryption_rewrap], asset_checks=[no_ciphertext_below_min_version]
    )


def _below_latest(spec: GovernedDataset, governance: GovernanceResource, cipher) -> dict[str, int]:
    from dataflare_platform.compliance.datasets import read_dataset

    assert spec.pii is not None and spec.pii.encryption is not None and spec.data is not None
    frame = read_dataset(spec.data, governance.root)
    latest = cipher.envelope.state(spec.pii.encryption.key or spec.pii.encryption.dataset).latest
    out = {}
    for column in encrypted_columns(spec.pii):
        versions = key_versions(frame[column])
        out[column] = int(((versions >= 0) & (versions < latest)).sum())
    return out
