"""Reading many Avro bodies of one schema with fastavro, its set-up done once (landing's rows, share's streams).

fastavro's schemaless_reader sets up per call (parse_schema, a named-schemas dict, an options dict,
`writer == reader`: a deep comparison when there is a reader schema) what `fast_reader` sets up once,
then calls the Cython reader's `_read_data`, which for a record calls `read_record`. Calling those
directly saved about a seventh of landing's RowBuilder.build. Where one fails, callers let
schemaless_reader itself decide: a different fastavro can cost speed, never a record.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from fastavro import parse_schema, schemaless_reader

Read = Callable[..., Any]
ReadArgs = tuple[Any, dict[str, Any], Any, dict[str, Any]]

READ_OPTIONS: dict[str, Any] = {
    "return_record_name": False,
    "return_record_name_override": False,
    "handle_unicode_errors": "strict",
    "return_named_type": False,
    "return_named_type_override": False,
}
try:
    _cython_read: Any = importlib.import_module("fastavro._read")  # absent without the Cython extension
    _read_data: Read | None = _cython_read._read_data
    _read_record: Read = _cython_read.read_record
    _named_schemas: Callable[[], dict[str, Any]] = _cython_read._default_named_schemas
except (ImportError, AttributeError):  # pragma: no cover - depends on the fastavro build
    _read_data = None


def fast_reader(writer: dict[str, Any], reader: dict[str, Any] | None) -> tuple[Read, ReadArgs]:
    """(read, args): `read(fo, *args)` reads what `schemaless_reader(fo, writer, reader)` reads.

    The arguments are prepared as schemaless_reader prepares its own (fastavro/_read.pyx). For a
    record schema without a logicalType and no reader schema, `_read_data` only calls `read_record`
    (and turns a ReadError into an EOFError, which callers report as schemaless_reader does).
    """
    if _read_data is None:  # fastavro without its Cython reader
        return _schemaless, (writer, {}, reader, READ_OPTIONS)
    if writer == reader:
        reader = None
    named = _named_schemas()
    parsed_writer = parse_schema(writer, named["writer"])
    parsed_reader = parse_schema(reader, named["reader"]) if reader else None
    direct = (
        parsed_reader is None
        and isinstance(parsed_writer, dict)
        and parsed_writer.get("type") == "record"
        and "logicalType" not in parsed_writer
    )
    return (_read_record if direct else _read_data), (parsed_writer, named, parsed_reader, READ_OPTIONS)


def _schemaless(fo: Any, writer: Any, named: Any, reader: Any, options: Any) -> Any:
    return schemaless_reader(fo, writer, reader)
