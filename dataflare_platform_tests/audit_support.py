"""One entry key for tests that open an audit log directly (not through a home's
provisioned settings): appends, checkpoints and ``verify`` all need the deployment's
entry key, and a log written with one key verifies only with the same key. It is fixed
(derived from a label), so worker processes that import this module get the same key."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from dataflare_platform.compliance.audit_signing import EntryAuthenticator

ENTRY_KEY = EntryAuthenticator(hashlib.sha256(b"dataflare tests: audit entry key").digest())


def write_entry_key(path: Path, key: EntryAuthenticator = ENTRY_KEY) -> Path:
    """``key`` as a deployment's entry key file (one line of hex, 0600) at ``path``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key.encoded() + "\n")
    return path
