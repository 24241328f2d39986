"""Sample payloads a partner drafts its connector config from (`hub connector init --sample`).

`read_samples(files, fmt)` reads one or more files of one format into records:
- json: one JSON object, a JSON array of objects, or JSON Lines (one object per line);
- csv: a header line naming the columns, then one message per line (values stay text);
- avro: an Avro object container file (it carries its writer schema); a bare Avro body cannot be
  read without the schema it was written with.
Each record keeps the bytes a device would send for it (`messages`), so the draft can be checked
by decoding them. Bad samples get a `SampleError` saying what was found.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro
import orjson

from hub.errors import HubError

FORMATS = ("json", "csv", "avro")


class SampleError(HubError):
    """A sample file cannot be drafted from: empty, not the stated format, or too inconsistent."""


@dataclass
class Samples:
    format: str
    records: list[dict[str, Any]] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)  # what a device sends for each record
    columns: list[str] = field(default_factory=list)  # csv: the header's column names
    delimiter: str = ","  # csv
    avro_schema: dict[str, Any] | None = None  # avro: the container's writer schema
    files: list[str] = field(default_factory=list)


def guess_format(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    return {"jsonl": "json", "ndjson": "json", "txt": "csv"}.get(suffix, suffix if suffix in FORMATS else "json")


def read_samples(paths: list[Path], fmt: str | None = None) -> Samples:
    chosen = fmt or guess_format(paths[0])
    if chosen not in FORMATS:
        raise SampleError(f"unknown sample format {chosen!r}: use json, csv or avro")
    out = Samples(chosen)
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SampleError(f"{path}: cannot read the sample: {exc.strerror or exc}") from None
        if not data.strip():
            raise SampleError(f"{path}: the sample file is empty; give at least one payload a device sends")
        reader = {"json": _json, "csv": _csv, "avro": _avro}[chosen]
        reader(data, str(path), out)
        out.files.append(str(path))
    if not out.records:
        raise SampleError(f"{', '.join(map(str, paths))}: no sample payloads found")
    return out


def _json(data: bytes, name: str, out: Samples) -> None:
    try:
        whole: Any = orjson.loads(data)
    except orjson.JSONDecodeError:
        whole = None
        lines = [line for line in data.splitlines() if line.strip()]
        for i, line in enumerate(lines, start=1):
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                hint = " (is it CSV? then pass --format csv)" if b"{" not in data else ""
                where = f"line {i}" if len(lines) > 1 else "it"
                raise SampleError(f"{name}: not JSON (format json): {where}: {exc}{hint}") from None
            _json_record(item, f"{name}: line {i}", out)
        return
    items = whole if isinstance(whole, list) else [whole]
    for i, item in enumerate(items):
        _json_record(item, f"{name}: item {i}" if isinstance(whole, list) else name, out)


def _json_record(item: Any, where: str, out: Samples) -> None:
    if not isinstance(item, dict):
        kind = "an array" if isinstance(item, list) else type(item).__name__ if item is not None else "null"
        raise SampleError(f"{where} is {kind}, not a JSON object {{...}}: a device message is one object")
    if not item:
        raise SampleError(f"{where} is an empty object: nothing to draft a feed from")
    out.records.append(item)
    out.messages.append(orjson.dumps(item))


def _csv(data: bytes, name: str, out: Samples) -> None:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SampleError(f"{name}: not UTF-8 text (format csv): {exc}") from None
    lines = [line for line in text.splitlines() if line.strip()]
    try:
        delimiter = csv.Sniffer().sniff(lines[0], delimiters=",;\t|").delimiter
    except csv.Error:
        delimiter = ","
    rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter))
    header = [c.strip() for c in rows[0]]
    if any(not c or _numeric(c) for c in header):
        raise SampleError(
            f"{name}: the first line {lines[0][:80]!r} does not name the columns: a CSV sample starts with its "
            "header line (the column names), then one line per message"
        )
    if len(set(header)) != len(header):
        raise SampleError(f"{name}: the header names a column twice: {', '.join(header)}")
    if out.columns and header != out.columns:
        raise SampleError(f"{name}: its columns ({', '.join(header)}) differ from the first sample's")
    out.columns = header
    if len(rows) < 2:
        raise SampleError(f"{name}: only a header line; add at least one line a device sends")
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise SampleError(f"{name}: line {i} has {len(row)} values, the header names {len(header)} columns")
        out.records.append(dict(zip(header, row, strict=True)))
        out.messages.append(lines[i - 1].encode())
    out.delimiter = delimiter


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _avro(data: bytes, name: str, out: Samples) -> None:
    try:
        reader = fastavro.reader(io.BytesIO(data))
        records = list(reader)
        schema: Any = reader.writer_schema
    except Exception as exc:
        raise SampleError(
            f"{name}: not an Avro object container file ({type(exc).__name__}: {exc}); give a .avro file that "
            "carries its schema (a bare Avro body cannot be read without the schema it was written with)"
        ) from None
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise SampleError(f"{name}: the file's Avro schema is not a record, so it cannot be a feed's schema")
    if out.avro_schema is not None and out.avro_schema != schema:
        raise SampleError(f"{name}: written with another Avro schema than the first sample")
    out.avro_schema = schema
    parsed = fastavro.parse_schema(schema)
    for record in records:
        if not isinstance(record, dict):
            raise SampleError(f"{name}: holds a value that is not a record")
        body = io.BytesIO()
        fastavro.schemaless_writer(body, parsed, record)
        out.records.append(record)
        out.messages.append(body.getvalue())
