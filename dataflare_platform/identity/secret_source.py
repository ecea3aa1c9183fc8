"""Where a secret of the identity settings comes from: the platform's one secret
reference (``dataflare_platform.secrets``), re-exported here for the identity settings.
The settings never hold the value itself, so a settings file can be committed, printed
and logged without leaking it."""

from __future__ import annotations

from dataflare_platform.secrets import SecretRef

__all__ = ["SecretRef"]
