"""Where each top-level field of an Avro record body lies, found without decoding the values.

In Avro's binary encoding a record is its fields' encodings one after another, and a field of the
same type encodes the same value to the same bytes wherever it stands. So a record of some of the
fields of another, with the same types, is those fields' bytes put together: the share worker
(hub/share/projection.py `Projector.splice`) makes its streams' records so, without decoding and
encoding again what it only passes on.

`Scanner` walks a body field by field: a long or int is a varint, a string or bytes a varint
length and the bytes, float/double/boolean/fixed their fixed sizes, an enum a varint, a union a
varint branch index and the branch. Records, arrays, maps and named-type references are not
walked (`scanner` returns None: such a schema's records are decoded as before). A body that ends
too soon or has a bad length or branch raises `ValueError`; nothing here checks that a string
is UTF-8, since the bytes are passed on as they came (as the hub's ingest encoded them).
"""

from __future__ import annotations

from typing import Any

VARINT = -1
LENGTH_PREFIXED = -2
_FIXED_SIZES = {"null": 0, "boolean": 1, "float": 4, "double": 8}
_VARINTS = {"int", "long", "enum"}

# A field's kind: a size in bytes (>= 0), VARINT, LENGTH_PREFIXED, or a union's branches' kinds.
Kind = int | tuple[int, ...]


def _kind(schema: Any) -> int | None:
    if isinstance(schema, dict):
        kind = schema.get("type")
        if kind == "fixed":
            size = schema.get("size")
            return size if isinstance(size, int) and size >= 0 else None
        if kind == "enum":
            return VARINT
        return _kind(kind) if isinstance(kind, str) and kind not in ("record", "error", "array", "map") else None
    if schema in _FIXED_SIZES:
        return _FIXED_SIZES[schema]
    if schema in _VARINTS:
        return VARINT
    if schema in ("string", "bytes"):
        return LENGTH_PREFIXED
    return None  # a record, an array, a map, or a named type referred to by name


def field_kind(schema: Any) -> Kind | None:
    """How a field of this (parsed or canonical) type is laid out; None when `Scanner` does not walk it."""
    if isinstance(schema, list):
        kinds = [_kind(branch) for branch in schema]
        return None if not kinds or None in kinds else tuple(k for k in kinds if k is not None)
    return _kind(schema)


def scanner(record_schema: dict[str, Any]) -> Scanner | None:
    """A scanner of this record schema's bodies, or None when one of its fields is not walked."""
    if record_schema.get("type") != "record":
        return None
    names, kinds = [], []
    for field in record_schema.get("fields", ()):
        kind = field_kind(field.get("type"))
        if kind is None:
            return None
        names.append(field["name"])
        kinds.append(kind)
    return Scanner(tuple(names), tuple(kinds))


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """(the zig-zag decoded long at `pos`, the position after it)."""
    byte = buf[pos]
    if byte < 0x80:
        return (byte >> 1) ^ -(byte & 1), pos + 1
    n = byte & 0x7F
    shift = 7
    while True:  # a run of continuation bytes ends with the body (IndexError)
        pos += 1
        byte = buf[pos]
        n |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (n >> 1) ^ -(n & 1), pos + 1
        shift += 7


def avro_string(text: str) -> bytes:
    """A string as Avro encodes it: its UTF-8 length as a zig-zag varint, then the bytes."""
    data = text.encode()
    n = len(data) << 1
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + data


class Scanner:
    """The field boundaries of one record schema's bodies."""

    __slots__ = ("index", "kinds", "names")

    def __init__(self, names: tuple[str, ...], kinds: tuple[Kind, ...]) -> None:
        self.names = names
        self.kinds = kinds
        self.index = {name: i for i, name in enumerate(names)}

    def bounds(self, buf: bytes, pos: int, count: int | None = None) -> list[int]:
        """Where the body starting at `buf[pos]` has its fields: field i is `buf[b[i]:b[i + 1]]`.

        With `count`, only the first `count` fields are walked. Raises ValueError (or IndexError)
        for a body that does not hold them.
        """
        out = [pos]
        add = out.append
        for kind in self.kinds if count is None else self.kinds[:count]:
            if kind.__class__ is tuple:
                byte = buf[pos]
                if byte < 0x80:  # the usual one-byte varint, read here
                    pos += 1
                    branch = (byte >> 1) ^ -(byte & 1)
                else:
                    branch, pos = read_varint(buf, pos)
                if branch < 0:
                    raise ValueError(f"union branch {branch}")
                kind = kind[branch]
            if kind >= 0:  # type: ignore[operator]
                pos += kind  # type: ignore[operator]
            elif kind == VARINT:
                while buf[pos] & 0x80:
                    pos += 1
                pos += 1
            else:
                byte = buf[pos]
                if byte < 0x80:
                    pos += 1
                    length = (byte >> 1) ^ -(byte & 1)
                else:
                    length, pos = read_varint(buf, pos)
                if length < 0:
                    raise ValueError(f"negative length {length}")
                pos += length
            add(pos)
        if pos > len(buf):
            raise ValueError(f"body of {len(buf)} bytes is too short: its fields end at {pos}")
        return out
