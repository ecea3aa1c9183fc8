"""Compliance checks on an asset's rows: PII where it may not be, and the schema
contract. Both read the rows where the dataset's governance file says they are."""

import dagster as dg

from dataflare_platform.compliance.ciphertext import verify_encrypted_columns
from dataflare_platform.compliance.contracts import check_contract
from dataflare_platform.compliance.datasets import DatasetRef, NoRowsYetError, read_dataset
from dataflare_platform.compliance.pii import scan_for_policy
from dataflare_platform.compliance.spec import GovernedDataset
from dataflare_platform.defs.governance.resources import GovernanceResource
from dataflare_platform.defs.pools import dataset_tags
from dataflare_platform.defs.resources import ProjectHomeResource


def no_data_result(ref: DatasetRef, err: Exception) -> dg.AssetCheckResult:
    """Missing data fails the check; a stream output with no rows yet passes with a
    warning saying so: zero rows break no contract and hold no PII, and failing a blocking
    check there would turn the first run on a fresh topic red for doing its job."""
    if isinstance(err, NoRowsYetError):
        return dg.AssetCheckResult(
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            description=str(err),
            metadata={"dataset": ref.describe(), "rows_scanned": 0},
        )
    return dg.AssetCheckResult(
        passed=False,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"no data to check: {err}",
        metadata={"dataset": ref.describe()},
    )


def pii_check(key: dg.AssetKey, spec: GovernedDataset) -> dg.AssetChecksDefinition:
    policy, ref = spec.pii, spec.data
    assert policy is not None and ref is not None
    classified = ", ".join(f"{c}: {k.value}" for c, k in policy.columns.items()) or "none"

    @dg.asset_check(
        asset=key,
        name="pii_compliance",
        op_tags=dataset_tags(ref),
        description=(
            "No e-mail, phone, payment card (Luhn-checked) or national-id values outside "
            f"columns classified for them, and none unmasked in masked ones ({classified}); "
            "pii_encrypted columns hold ciphertext of this platform that decrypts (sample)."
        ),
    )
    def _check(
        dataflare: ProjectHomeResource, governance: GovernanceResource
    ) -> dg.AssetCheckResult:
        try:
            frame = read_dataset(ref, dataflare.home.root)
        except FileNotFoundError as err:
            return no_data_result(ref, err)
        try:
            findings, violations = scan_for_policy(frame, policy)
        except KeyError as err:  # a classified column is gone: the data broke its policy
            return dg.AssetCheckResult(
                passed=False,
                severity=dg.AssetCheckSeverity.ERROR,
                description=str(err).strip("'\""),
                metadata={"dataset": ref.describe()},
            )
        messages = [v.message for v in violations]
        encrypted: dict[str, dict[str, object]] = {}
        if any(k.value == "pii_encrypted" for k in policy.columns.values()):
            report = verify_encrypted_columns(
                frame, policy, governance.cipher() if policy.encryption else None
            )
            messages += report.problems
            encrypted = report.columns
        metadata: dict[str, object] = {
            "rows_scanned": frame.height,
            "findings": len(findings),
            "violations": len(messages),
            "encrypted_columns": dg.MetadataValue.json(encrypted),
            "findings_detail": dg.MetadataValue.json(
                [
                    {
                        "column": f.column,
                        "kind": str(f.kind),
                        "rows": f.rows,
                        "share": round(f.share, 6),
                        "samples_redacted": list(f.samples),
                        "classification": (
                            policy.columns[f.column].value if f.column in policy.columns else None
                        ),
                    }
                    for f in findings
                ]
            ),
        }
        return dg.AssetCheckResult(
            passed=not messages,
            severity=dg.AssetCheckSeverity.ERROR,
            description="; ".join(messages)[:2000]
            or f"no PII outside its classified columns in {frame.height} rows",
            metadata=metadata,
        )

    return _check


def contract_check(key: dg.AssetKey, spec: GovernedDataset) -> dg.AssetChecksDefinition:
    contract, ref = spec.contract, spec.data
    assert contract is not None and ref is not None

    @dg.asset_check(
        asset=key,
        name="schema_contract",
        op_tags=dataset_tags(ref),
        blocking=True,
        description="Declared columns, types and nullability: "
        + ", ".join(f"{c.name} {c.type}" for c in contract.columns),
    )
    def _check(dataflare: ProjectHomeResource) -> dg.AssetCheckResult:
        try:
            frame = read_dataset(ref, dataflare.home.root)
        except FileNotFoundError as err:
            return no_data_result(ref, err)
        drift = check_contract(frame, contract)
        return dg.AssetCheckResult(
            passed=not drift,
            severity=dg.AssetCheckSeverity.ERROR,
            description="; ".join(d.message for d in drift)[:2000] or "schema as declared",
            metadata={
                "drift": dg.MetadataValue.json(
                    [{"kind": d.kind, "column": d.column, "message": d.message} for d in drift]
                ),
                "columns": frame.width,
            },
        )

    return _check
