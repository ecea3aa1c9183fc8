"""The ``encrypt`` step: columns encrypted batch by batch with the deployment's keyring.

    steps:
      - encrypt:
          dataset: customers
          columns: [email, phone, customer_id]
          deterministic: [customer_id]

The argument is validated at load (``encrypt.deterministic: ['x'] not in columns``); the
keyring comes from the deployment's configuration (``DATAFLARE_KEYRING_DIR``, see
``crypto.settings``), never from the spec or a run's config. There is no ``decrypt``
step: a pipeline has no person whose ``decrypt`` permission could be checked per batch;
decryption for people goes through ``compliance.decryption`` (policy + audit).
"""

from __future__ import annotations

import polars as pl

from dataflare_platform.crypto.frames import EncryptionSpec, encrypt_frame
from dataflare_platform.crypto.settings import CryptoSettings
from dataflare_platform.engine.pipeline import Stream
from dataflare_platform.streams.steps.registry import StepContext, step


@step("encrypt", EncryptionSpec)
def encrypt(stream: Stream, spec: EncryptionSpec, context: StepContext) -> Stream:
    cipher = CryptoSettings.resolve().cipher()
    cipher.envelope.ensure(spec.key_name)  # a missing or unusable keyring fails at build

    def apply(frame: pl.DataFrame) -> pl.DataFrame:
        return encrypt_frame(cipher, frame, spec)

    return stream.map_batches(apply, name=f"encrypt:{spec.dataset}")
