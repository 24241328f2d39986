"""Generated hostile input against the public doors: FeedDecoder.decode (JSON, CSV, Avro) and the connector
config loader. Whatever comes in, the answer is a value the hub can use, or the hub's own error with a reason:
never another exception, never an empty message.

Black-box: only `FeedDecoder(feed.spec(), schema).decode(...)` and `parse_connector(text, file)` are used, so these
keep holding as the decoders and the config model grow. Examples are bounded to keep the suite fast.
"""

from __future__ import annotations

import io
import json
import string
from typing import Any

import fastavro
import orjson
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.connector.loader import parse_connector
from hub.connector.model import ConnectorConfig, Feed
from hub.errors import ConfigError, PayloadError
from hub.ingest.decode import FeedDecoder
from hub.schema.wire import WireEncoder

SCHEMA_JSON: dict[str, Any] = {
    "type": "record",
    "name": "Gauge",
    "namespace": "hub.hostile",
    "fields": [
        {"name": "device_id", "type": "string"},
        {"name": "time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "level", "type": "double"},
        {"name": "count", "type": ["null", "long"], "default": None},
        {"name": "ok", "type": "boolean", "default": True},
        {"name": "note", "type": ["null", "string"], "default": None},
        {
            "name": "state",
            "type": ["null", {"type": "enum", "name": "State", "symbols": ["on", "off"]}],
            "default": None,
        },
    ],
}
SCHEMA: Any = fastavro.parse_schema(SCHEMA_JSON)
ENCODER = WireEncoder(1, SCHEMA)
RECEIVED_MS = 1_795_000_000_000


def feed(**overrides: Any) -> Feed:
    base: dict[str, Any] = {
        "name": "gauges",
        "description": "d",
        "licence": "CC-BY-4.0",
        "schema": "gauge",
        "topic": "g/{device_id}",
    }
    return Feed.model_validate({**base, **overrides})


DECODERS = {
    "json": FeedDecoder(feed(time={"field": "time", "format": "epoch_ms"}).spec(), SCHEMA),
    "csv": FeedDecoder(
        feed(
            format="csv", csv={"columns": ["time", "level", "count", "ok", "note", "state"]}, time={"field": "time"}
        ).spec(),
        SCHEMA,
    ),
    "avro": FeedDecoder(feed(format="avro", time={"field": "time", "format": "epoch_ms"}).spec(), SCHEMA),
}


def refused_or_usable(fmt: str, payload: bytes) -> None:
    """The decoder's contract: a record the encoder takes, or a PayloadError with a code and a reason."""
    try:
        record = DECODERS[fmt].decode(payload, "gauge-1", RECEIVED_MS)
    except PayloadError as exc:
        assert exc.code and str(exc).strip(), (exc.code, str(exc))
        return
    ENCODER.encode(record)


# --- JSON --------------------------------------------------------------------------------------------

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),  # what orjson writes; larger ones are in the texts below
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(["NaN", "Infinity", "1e999", "-0", "", "\x00", "\ud7ff", "on", "off", "2026-11-23T10:00:00Z"]),
)
NESTED = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=8,
)
FIELDS = ["device_id", "time", "level", "count", "ok", "note", "state"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), NESTED, max_size=8))
def test_json_objects_of_any_shape_are_records_or_refused_with_a_reason(body: dict[str, Any]) -> None:
    refused_or_usable("json", orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS))


@settings(max_examples=100, deadline=None)
@given(
    depth=st.integers(1, 5_000),
    opener=st.sampled_from(["[", '{"a":']),
    tail=st.binary(max_size=20),
)
def test_deeply_nested_or_cut_json_is_refused_with_a_reason(depth: int, opener: str, tail: bytes) -> None:
    closer = "]" if opener == "[" else "}"
    refused_or_usable("json", (opener * depth + "1" + closer * depth).encode() + tail)
    refused_or_usable("json", (opener * depth).encode())


@settings(max_examples=100, deadline=None)
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=200), raw=st.binary(max_size=50))
def test_json_texts_and_raw_bytes_are_refused_with_a_reason(text: str, raw: bytes) -> None:
    refused_or_usable("json", text.encode("utf-8", errors="surrogatepass"))
    refused_or_usable("json", b'{"time": 1, "level": 2, "note": "' + raw + b'"}')
    refused_or_usable("json", b'{"time": 1, "level": 1' + b"0" * 5000 + b', "count": -1' + b"9" * 30 + b"}")


# --- CSV ---------------------------------------------------------------------------------------------

CELLS = st.one_of(
    st.text(alphabet=string.printable, max_size=12),
    st.sampled_from(['"', '""', '"a,b"', "on", "1e400", "-", "1" * 500, "\ufeff", "true", "FALSE"]),
    st.integers().map(str),
    st.floats().map(repr),
)


@settings(max_examples=100, deadline=None)
@given(
    cells=st.lists(CELLS, max_size=10),
    separator=st.sampled_from([",", ";", "\t", ",,"]),
    end=st.sampled_from(["", "\n", "\r\n", "\n\n"]),
)
def test_csv_lines_of_any_shape_are_records_or_refused_with_a_reason(
    cells: list[str], separator: str, end: str
) -> None:
    refused_or_usable("csv", (separator.join(cells) + end).encode("utf-8", errors="surrogatepass"))


# --- Avro --------------------------------------------------------------------------------------------

AVRO_VALUES = {
    "time": st.integers(-(2**63), 2**63 - 1),
    "level": st.floats(),  # NaN and infinities are valid Avro doubles
    "count": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
    "ok": st.booleans(),
    "note": st.one_of(st.none(), st.text(max_size=40)),
    "state": st.one_of(st.none(), st.sampled_from(["on", "off"])),
}


def avro_body(record: dict[str, Any], schema: Any = SCHEMA) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, record)
    return out.getvalue()


@settings(max_examples=100, deadline=None)
@given(
    record=st.fixed_dictionaries({"device_id": st.text(max_size=40), **AVRO_VALUES}),
    cut=st.integers(0, 200),
    flips=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4),
)
def test_avro_bodies_valid_cut_or_corrupted_are_records_or_refused_with_a_reason(
    record: dict[str, Any], cut: int, flips: list[tuple[int, int]]
) -> None:
    body = avro_body(record)
    refused_or_usable("avro", body)
    refused_or_usable("avro", body[:cut])
    corrupted = bytearray(body)
    for at, value in flips:
        if corrupted:
            corrupted[at % len(corrupted)] = value
    refused_or_usable("avro", bytes(corrupted))


OTHER_WRITER: Any = fastavro.parse_schema(
    {
        "type": "record",
        "name": "Other",
        "fields": [
            {"name": "a", "type": {"type": "array", "items": "long"}},
            {"name": "m", "type": {"type": "map", "values": "string"}},
            {"name": "b", "type": "bytes"},
        ],
    }
)


@settings(max_examples=100, deadline=None)
@given(
    a=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=20),
    m=st.dictionaries(st.text(max_size=5), st.text(max_size=20), max_size=5),
    b=st.binary(max_size=100),
)
def test_avro_written_with_another_schema_is_refused_with_a_reason(a: list[int], m: dict[str, str], b: bytes) -> None:
    refused_or_usable("avro", avro_body({"a": a, "m": m, "b": b}, OTHER_WRITER))


# --- connector configs -------------------------------------------------------------------------------

VALID = {
    "partner": {"id": "river_co", "name": "River Co", "kind": "city", "contact": "ops@river.example"},
    "feeds": [
        {
            "name": "levels",
            "description": "Levels.",
            "licence": "CC-BY-4.0",
            "schema": "river_level",
            "topic": "rivers/{device_id}/level",
            "format": "json",
            "time": {"field": "ts", "format": "epoch_s"},
            "fields": {"level_m": "lvl"},
        }
    ],
}
VALID_TEXT = yaml.safe_dump(VALID, sort_keys=False)
YAML_SCALARS = st.one_of(
    SCALARS,
    st.sampled_from(["../../etc/passwd", "a/#", "+", "x'; DROP TABLE hub.partners; --", "$share/g/x", "ü" * 50]),
)
YAML_VALUES = st.recursive(
    YAML_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=10), inner, max_size=3)),
    max_leaves=12,
)


def loaded_or_refused(text: str) -> None:
    """The loader's contract: a ConnectorConfig, or a ConfigError naming the file with a reason."""
    try:
        config = parse_connector(text, "connectors/hostile.yaml")
    except ConfigError as exc:
        assert exc.file == "connectors/hostile.yaml" and exc.reason.strip(), str(exc)
        return
    assert isinstance(config, ConnectorConfig)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.lists(
        st.one_of(st.sampled_from(["partner", "feeds", 0, "time", "fields", "csv", "device_id"]), st.text(max_size=6)),
        min_size=1,
        max_size=4,
    ),
    value=YAML_VALUES,
)
def test_a_valid_config_with_any_value_put_anywhere_loads_or_is_refused_with_file_and_reason(
    path: list[Any], value: Any
) -> None:
    data: Any = json.loads(json.dumps(VALID))
    node = data
    for key in path[:-1]:
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
    if isinstance(node, dict):
        node[path[-1]] = value
    elif isinstance(node, list):
        node.append(value)
    loaded_or_refused(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


@settings(max_examples=100, deadline=None)
@given(
    edits=st.lists(
        st.tuples(
            st.integers(0, len(VALID_TEXT)),
            st.integers(0, 5),
            st.one_of(
                st.text(max_size=6),
                st.sampled_from(
                    [
                        "&a ",
                        "*a",
                        "<<: *a\n",
                        "!!python/object:os.system ",
                        "\t",
                        "---\n",
                        "{",
                        "[",
                        ": ",
                        "\x00",
                        "%YAML 1.1\n",
                    ]
                ),
            ),
        ),
        max_size=4,
    )
)
def test_a_valid_config_with_any_edit_loads_or_is_refused_with_file_and_reason(
    edits: list[tuple[int, int, str]],
) -> None:
    text = VALID_TEXT
    for at, removed, inserted in edits:
        text = text[:at] + inserted + text[at + removed :]
    loaded_or_refused(text)
