"""``DATAFLARE_SENSOR_INTERVAL`` (a duration such as ``2s``), read when the code location
loads, overrides the sensors' ``catalog.sensor_interval`` of every pipeline, and the
governance sensors' interval, without editing the files (tests and demos tick faster)."""

import os

from dataflare_platform.engine.durations import to_ms
from dataflare_platform.errors import InvalidInputError

SENSOR_INTERVAL_ENV_VAR = "DATAFLARE_SENSOR_INTERVAL"


def sensor_interval_override() -> int | None:
    """Seconds from ``DATAFLARE_SENSOR_INTERVAL``, or None when unset or empty."""
    value = os.environ.get(SENSOR_INTERVAL_ENV_VAR, "").strip()
    if not value:
        return None
    try:
        return max(1, to_ms(value) // 1000)
    except ValueError as err:
        raise InvalidInputError(f"{SENSOR_INTERVAL_ENV_VAR}={value!r}: {err}") from None
