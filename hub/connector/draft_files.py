"""A draft (draft.py, draft_avro.py) as the files a partner reviews: the connector config, the schema, the report.

Pure: returns text; `hub connector init` writes it (never over an existing file).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from hub.connector.draft import Draft, _camel
from hub.connector.samples import Samples

_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./{}-]*")


@dataclass(frozen=True)
class Names:
    partner: str
    feed: str
    schema: str
    name: str  # the partner's display name
    kind: str
    contact: str
    licence: str
    topic: str | None = None  # default: <feed>, or <feed>/{device_id} when the id comes from the topic


def topic_of(d: Draft, names: Names) -> str:
    return names.topic or (names.feed if d.device is not None else f"{names.feed}/{{device_id}}")


def schema_of(d: Draft, names: Names) -> dict[str, Any]:
    """The Avro schema: the key fields (by the partner's names) first, then every other field."""
    if d.avro_schema is not None:
        return d.avro_schema
    fields: list[dict[str, Any]] = []
    if d.device is not None:
        fields.append({"name": d.device[1], "type": "string", "doc": f"the device id (payload {d.device[0]})"})
    else:
        fields.append({"name": "device_id", "type": "string", "doc": "the device id (from the topic)"})
    time_name = d.time[1] if d.time is not None else "time"
    doc = f"the event time (payload {d.time[0]})" if d.time is not None else "when the hub received the message"
    fields.append({"name": time_name, "type": {"type": "long", "logicalType": "timestamp-millis"}, "doc": doc})
    for f in d.fields:
        entry: dict[str, Any] = {"name": f.name, "type": f.avro_type}
        if f.optional:
            entry["default"] = None
        entry["doc"] = f"from {f.source}" + (
            f" (x {f.scale:.6g} + {f.offset:.6g})" if f.scale != 1.0 or f.offset else ""
        )
        fields.append(entry)
    return {
        "type": "record",
        "name": _camel(names.feed),
        "namespace": f"hub.{names.partner}",
        "doc": f"Drafted by `hub connector init` for {names.partner}.{names.feed}: review every field.",
        "fields": fields,
    }


def schema_text(d: Draft, names: Names) -> str:
    """The schema as JSON with one line per field, as the examples under schemas/ are written."""
    schema = schema_of(d, names)
    head = json.dumps({k: v for k, v in schema.items() if k != "fields"}, ensure_ascii=False, indent=2)
    rows = [f"    {json.dumps(f, ensure_ascii=False)}" for f in schema["fields"]]
    return head[:-2] + ',\n  "fields": [\n' + ",\n".join(rows) + "\n  ]\n}\n"


def _q(text: str) -> str:
    return text if _PLAIN.fullmatch(text) and not text.isdigit() else json.dumps(text, ensure_ascii=False)


def config_text(d: Draft, names: Names, samples: Samples) -> str:
    files = ", ".join(samples.files)
    out = [
        f"# Drafted by `hub connector init` from {len(samples.records)} sample payloads ({files}).",
        "# Review every guess (the report printed with it), then run `hub plan` and `hub apply` on this file.",
        "partner:",
        f"  id: {names.partner}",
        f"  name: {_q(names.name)}",
        f"  kind: {names.kind}  # city | university | private",
        f"  contact: {_q(names.contact)}",
        "",
        "feeds:",
        f"  - name: {names.feed}",
        f"    description: {_q(f'Drafted from samples of {files}: say what the feed is.')}",
        f"    licence: {_q(names.licence)}",
        f"    schema: {names.schema}  # schemas/{names.schema}.avsc",
        f"    topic: {_q(topic_of(d, names))}",
        f"    format: {d.format}",
    ]
    if d.format == "csv":
        columns = ", ".join(_q(c) for c in samples.columns)
        delimiter = f", delimiter: {json.dumps(samples.delimiter)}" if samples.delimiter != "," else ""
        out.append(f"    csv: {{columns: [{columns}]{delimiter}, header: true}}")
    if d.device is not None:
        path, name = d.device
        out += ["    device_id:", f"      field: {_q(path)}"]
        if name != "device_id":
            out.append(f"      schema_field: {name}  # the schema's name for the device id")
    if d.time is not None:
        path, name, fmt, _zone = d.time
        out += ["    time:", f"      field: {_q(path)}"]
        if d.format != "avro" or path != name:
            out.append(f"      format: {fmt}")
        if name != "time":
            out.append(f"      schema_field: {name}  # the schema's name for the event time")
    else:
        out += ["    time:", "      source: received  # no event time in the payloads"]
    mapped = [f for f in d.fields if d.format != "avro" and (f.source != f.name or f.scale != 1.0 or f.offset)]
    if mapped:
        out.append("    fields:  # schema field: where it is in the payload")
        for f in mapped:
            if f.scale != 1.0 or f.offset:
                out.append(f"      {f.name}: {{source: {_q(f.source)}, scale: {f.scale!r}, offset: {f.offset!r}}}")
            else:
                out.append(f"      {f.name}: {_q(f.source)}")
    return "\n".join(out) + "\n"


def report_lines(d: Draft, samples: Samples, written: list[str]) -> list[str]:
    lines = [f"Drafted from {len(samples.records)} samples ({', '.join(samples.files)}), format {d.format}:"]
    width = min(max((len(g.subject) for g in d.guesses), default=10), 40)
    for g in d.guesses:
        lines.append(f"  {g.subject:<{width}}  {g.verdict}: {g.evidence}")
        if g.note:
            lines.append(f"  {'':<{width}}    note: {g.note}")
    lines += ["", "Written (review them; nothing is applied yet):", *(f"  {w}" for w in written)]
    return lines
