"""How partner-facing error messages name Avro types and payload values.

The decoder's messages go to device owners (dead-letter headers, error reports), so they say what
was expected in Avro terms ("an integer (Avro int)") and what was found in payload terms ("the
string 'high'"), clipped to a readable length. These helpers are shared by the decoder
(`hub.ingest.decode`), the per-field converters (`hub.ingest.field_converters`) and the event-time
parsers (`hub.ingest.event_time`); they import nothing from them, so any of them can use these
without an import cycle. `avro_kind` lives here too: it names a resolved Avro type, which both the
messages and the schema checks need.
"""

from __future__ import annotations

from typing import Any


def avro_kind(avro_type: Any) -> str:
    """The Avro type name of a resolved type: 'int', 'string', 'enum', 'array', 'union', ..."""
    if isinstance(avro_type, str):
        return avro_type
    if isinstance(avro_type, list):
        return "union"
    inner = avro_type.get("type")
    return inner if isinstance(inner, str) else avro_kind(inner)


def expectation(avro_type: Any) -> str:
    kind = avro_kind(avro_type)
    if kind in ("int", "long"):
        return f"an integer (Avro {kind})"
    if kind in ("float", "double"):
        return f"a number (Avro {kind})"
    if kind == "boolean":
        return "true or false (Avro boolean)"
    if kind == "string":
        return "a string (Avro string)"
    if kind == "bytes":
        return "a string (Avro bytes)"
    if kind == "enum":
        symbols = ", ".join(repr(s) for s in avro_type["symbols"][:12])
        return f"one of {symbols}{', ...' if len(avro_type['symbols']) > 12 else ''} (Avro enum)"
    if kind == "fixed":
        return f"a string of {avro_type['size']} bytes (Avro fixed)"
    if kind == "array":
        return "an array (Avro array)"
    if kind == "map":
        return "an object (Avro map)"
    if kind in ("record", "error"):
        return "an object (Avro record)"
    return f"Avro {kind}"


def found(value: Any) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return f"the boolean {'true' if value else 'false'}"
    if isinstance(value, int | float):
        text = repr(value)
        return f"the number {text if len(text) <= 40 else text[:40] + '...'}"
    if isinstance(value, str):
        return "an empty string" if not value else f"the string {clip(value)}"
    if isinstance(value, bytes | bytearray):
        return f"{len(value)} bytes"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"


def clip(value: str, limit: int = 40) -> str:
    return repr(value) if len(value) <= limit else repr(value[:limit]) + "..."
