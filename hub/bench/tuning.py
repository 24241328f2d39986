"""Which of the caller's settings `hub bench` hands to the workers of its private stack."""

from __future__ import annotations

from collections.abc import Mapping

# The data path's tuning settings the caller's environment may set for the benchmark's workers (`cli_env` gives
# them only the private stack's endpoints): `HUB_LAND_FETCH_WAIT_MS=500 hub bench` measures that setting.
TUNING_PREFIXES = ("HUB_INGEST_", "HUB_LAND_", "HUB_SHARE_", "HUB_KAFKA_LINGER_")


def tuning_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The caller's tuning variables (`TUNING_PREFIXES`); `HUB_INGEST_ACK` is the benchmark's `--ack`."""
    return {k: v for k, v in environ.items() if k.startswith(TUNING_PREFIXES) and k != "HUB_INGEST_ACK"}
