"""Plain data shared by the tests: the key fields every feed schema has, and the Riverton water utility,
the partner the onboarding tests invent (its configs differ per test on purpose; its header and schema do not)."""

from __future__ import annotations

from typing import Any

DEVICE_ID: dict[str, Any] = {"name": "device_id", "type": "string"}
TIME_MS: dict[str, Any] = {"name": "time", "type": {"type": "long", "logicalType": "timestamp-millis"}}
KEY_FIELDS: list[dict[str, Any]] = [DEVICE_ID, TIME_MS]


def record(name: str, *fields: dict[str, Any], **attributes: Any) -> dict[str, Any]:
    """An Avro record schema with the key fields first."""
    return {"type": "record", "name": name, **attributes, "fields": [*KEY_FIELDS, *fields]}


# --- Riverton Water Utility ----------------------------------------------------------------

RIVERTON_PARTNER = """\
partner:
  id: {partner}
  name: Riverton Water Utility
  kind: city
  contact: telemetry@riverton-water.example
"""

LEVEL_M: dict[str, Any] = {"name": "level_m", "type": "double"}
FLOW_M3S: dict[str, Any] = {"name": "flow_m3s", "type": ["null", "double"], "default": None}


def river_level(*fields: dict[str, Any], **attributes: Any) -> dict[str, Any]:
    """The river gauges' schema (schemas/river_level.avsc): level, and `fields` after it."""
    return record("RiverLevel", *fields, **attributes)
