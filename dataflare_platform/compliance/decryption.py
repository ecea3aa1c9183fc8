"""Decryption for people: only where the policy allows ``decrypt`` on the column's
classification, and every decryption audited.

Before a column is decrypted the authorizer is asked for ``decrypt`` on the resource
``column:<dataset>.<column>`` carrying the column's classification (``pii_encrypted``
...); the decision, allowed or denied, is written to the audit log like every other
access decision (``access_allowed`` / ``access_denied``), and a denial raises
:class:`AccessDeniedError` before any key is touched. An allowed decryption then writes a
``decrypted`` entry naming the principal, dataset, column, row count and the key
versions used: never a value.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from dataflare_platform.access.decisions import Authorizer, Resource
from dataflare_platform.access.principal import Principal
from dataflare_platform.compliance.access_log import AuditDecisionRecorder
from dataflare_platform.compliance.audit import AuditLog
from dataflare_platform.crypto.columns import Binding, ColumnCipher, key_versions
from dataflare_platform.errors import AccessDeniedError

DECRYPTED = "decrypted"


class GuardedDecryptor:
    """Policy-checked, audited decryption of columns."""

    def __init__(self, cipher: ColumnCipher, authorizer: Authorizer, log: AuditLog) -> None:
        self.cipher = cipher
        self.authorizer = authorizer
        self.log = log
        self._decisions = AuditDecisionRecorder(log)

    def decrypt(
        self,
        principal: Principal,
        values: pa.Array | pa.ChunkedArray | pl.Series,
        binding: Binding,
        classification: str,
    ) -> pa.Array:
        resource = Resource(
            kind="column",
            name=f"{binding.dataset}.{binding.column}",
            classification=classification,
        )
        decision = self.authorizer.decide(principal, "decrypt", resource)
        self._decisions.record(decision)
        if not decision.allowed:
            raise AccessDeniedError(
                f"{principal.id} may not decrypt {resource.name} ({classification}): "
                f"{decision.reason}"
            )
        plain = self.cipher.decrypt(values, binding)
        versions = key_versions(values)
        self.log.append(
            principal.id,
            DECRYPTED,
            f"column:{resource.name}",
            {
                "dataset": binding.dataset,
                "column": binding.column,
                "classification": classification,
                "rows": len(plain) - plain.null_count,
                "key_versions": sorted({int(v) for v in versions if v >= 0}),
                "policy_version": decision.policy_version,
            },
        )
        return plain
