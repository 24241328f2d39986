"""The per-field converters of `hub.ingest.decode.FeedDecoder`: one closure per schema field.

`Builder` walks a field's Avro type once, when a decoder is built, and returns a converter for it:
integers and floats within the Avro ranges (with the config's `value * scale + offset` applied
first), strings without NUL, booleans, enum symbols, bytes and fixed, arrays, maps, records and
unions. Each converter checks the exact type on its fast path and returns; everything else (a
field absent from the payload, null, an empty CSV value, a wrong type) goes to the field's
fallback, which returns the default or null or raises `missing_field` / `wrong_type`. `MISSING` is
the value the decoder passes for a field absent from the payload. These are kept apart from the
decoder because they are the bulk of the per-type rules, and they are read by type, not by format.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from hub.errors import PayloadError, SchemaError
from hub.ingest.describe import avro_kind, clip, expectation, found

Converter = Callable[[Any], Any]

INT_MIN: Final = -(2**31)
INT_MAX: Final = 2**31 - 1
LONG_MIN: Final = -(2**63)
LONG_MAX: Final = 2**63 - 1
FLOAT32_MAX: Final = 3.4028234663852886e38
FLOAT64_MAX: Final = 1.7976931348623157e308

_FIELD_LABEL = re.compile(r"^field '([^']*)'")
_BOOLEANS: Final = {"true": True, "1": True, "false": False, "0": False}
_NUMERIC: Final = frozenset({"int", "long", "float", "double"})


class _Missing:
    """The sentinel for a field absent from the payload."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Final = _Missing()


# Converters: one closure per field, built once. The fast path checks the exact type and returns;
# everything else (missing, null, empty CSV value, wrong type) goes to the field's `fallback`.


class Builder:
    def __init__(self, named: Mapping[str, Any], *, text: bool) -> None:
        self.named = named
        self.text = text
        self._records: tuple[str, ...] = ()

    def resolve(self, avro_type: Any) -> Any:
        if isinstance(avro_type, str) and avro_type in self.named:
            return self.named[avro_type]
        return avro_type

    def field(
        self,
        avro_type: Any,
        label: str,
        missing: str,
        *,
        has_default: bool,
        default: Any,
        scale: float = 1.0,
        offset: float = 0.0,
    ) -> Converter:
        avro_type = self.resolve(avro_type)
        branches = [self.resolve(b) for b in avro_type] if isinstance(avro_type, list) else [avro_type]
        nullable = any(avro_kind(b) == "null" for b in branches)
        branches = [b for b in branches if avro_kind(b) != "null"]
        if has_default and isinstance(default, str) and branches and avro_kind(branches[0]) in ("bytes", "fixed"):
            default = default.encode("latin-1")  # Avro JSON defaults for bytes are code points 0-255
        expected = " or ".join(expectation(b) for b in branches) if branches else "null"
        if nullable and branches:
            expected += " or null"
        fallback = _fallback(label, expected, missing, nullable, has_default, default, self.text)
        if not branches:
            return fallback
        if len(branches) == 1:
            return self.single(branches[0], label, fallback, nullable, scale, offset)
        strict = _fallback(label, expected, missing, False, False, None, self.text)
        convs = tuple(self.single(b, label, strict, False, scale, offset) for b in branches)
        text = self.text

        def union(value: Any) -> Any:
            if value is MISSING or (value is None and nullable) or (text and nullable and value == ""):
                return fallback(value)
            for conv in convs:
                try:
                    return conv(value)
                except PayloadError:
                    continue
            return fallback(value)

        return union

    def single(
        self, avro_type: Any, label: str, fallback: Converter, nullable: bool, scale: float, offset: float
    ) -> Converter:
        kind = avro_kind(avro_type)
        scaled = scale != 1.0 or offset != 0.0
        if scaled and kind not in _NUMERIC:
            return _conversion_on_non_number(label, kind, scale, offset, fallback)
        text = self.text
        if kind in ("int", "long"):
            lo, hi = (INT_MIN, INT_MAX) if kind == "int" else (LONG_MIN, LONG_MAX)
            return _integer(kind, lo, hi, label, fallback, text, scale, offset)
        if kind in ("float", "double"):
            return _floating(kind, label, fallback, text, scale, offset)
        if kind == "string":
            return _string(label, fallback, text, nullable)
        if kind == "boolean":
            return _boolean(fallback, text)
        if kind == "enum":
            return _enum(frozenset(avro_type["symbols"]), fallback)
        if kind == "bytes":
            return _bytes(fallback, None, text)
        if kind == "fixed":
            return _bytes(fallback, int(avro_type["size"]), text)
        if text:  # arrays, maps and records have no CSV text form
            return fallback
        if kind == "array":
            return self._array(avro_type, label, fallback)
        if kind == "map":
            return self._map(avro_type, label, fallback)
        if kind in ("record", "error"):
            return self._record(avro_type, label, fallback)
        raise SchemaError(f"{label}: Avro type {kind!r} is not supported by the ingest decoder")

    def _array(self, avro_type: Mapping[str, Any], label: str, fallback: Converter) -> Converter:
        item = self.field(avro_type["items"], f"{label}, an item", "", has_default=False, default=None)

        def array(value: Any) -> Any:
            if type(value) is list:
                return [item(v) for v in value]
            return fallback(value)

        return array

    def _map(self, avro_type: Mapping[str, Any], label: str, fallback: Converter) -> Converter:
        item = self.field(avro_type["values"], f"{label}, a value", "", has_default=False, default=None)

        def avro_map(value: Any) -> Any:
            if type(value) is dict:
                return {k: item(v) for k, v in value.items()}
            return fallback(value)

        return avro_map

    def _record(self, avro_type: Mapping[str, Any], label: str, fallback: Converter) -> Converter:
        name = avro_type["name"]
        if name in self._records:
            raise SchemaError(f"{label}: recursive record {name} is not supported by the ingest decoder")
        self._records = (*self._records, name)
        try:
            subs = []
            for f in avro_type["fields"]:
                # "field 'pos' (from 'position')" -> "field 'pos.lat' (from 'position')"
                match = _FIELD_LABEL.match(label)
                sub = f"field '{match.group(1)}.{f['name']}'{label[match.end() :]}" if match else label
                conv = self.field(
                    f["type"], sub, f"{sub} is missing", has_default="default" in f, default=f.get("default")
                )
                subs.append((f["name"], conv))
        finally:
            self._records = self._records[:-1]

        def record(value: Any) -> Any:
            if type(value) is dict:
                return {n: conv(value.get(n, MISSING)) for n, conv in subs}
            return fallback(value)

        return record


def _fallback(
    label: str, expected: str, missing: str, nullable: bool, has_default: bool, default: Any, text: bool
) -> Converter:
    fresh = isinstance(default, list | dict)

    def fallback(value: Any) -> Any:
        if value is MISSING:
            if has_default:
                return copy.deepcopy(default) if fresh else default
            raise PayloadError("missing_field", missing)
        if value is None and nullable:
            return None
        if text and value == "":
            if nullable:
                return None
            if has_default:
                return copy.deepcopy(default) if fresh else default
            raise PayloadError("missing_field", missing)
        raise PayloadError("wrong_type", f"{label}: expected {expected}, got {found(value)}")

    return fallback


def _integer(
    kind: str, lo: int, hi: int, label: str, fallback: Converter, text: bool, scale: float, offset: float
) -> Converter:
    def out_of_range(value: Any) -> PayloadError:
        return PayloadError(
            "wrong_type", f"{label}: expected an integer from {lo} to {hi} (Avro {kind}), got {found(value)}"
        )

    if scale != 1.0 or offset != 0.0:

        def to_integer(result: float) -> int:
            if result - result != 0.0:  # NaN or infinite
                raise out_of_range(result)
            i = round(result)
            if lo <= i <= hi:
                return i
            raise out_of_range(i)

        return _scaled(text, scale, offset, fallback, out_of_range, to_integer)

    if text:

        def from_text(value: Any) -> Any:
            try:
                i = int(value)
            except (TypeError, ValueError):
                try:
                    f = float(value)
                except (TypeError, ValueError):
                    return fallback(value)
                if not f.is_integer():
                    return fallback(value)
                i = int(f)
            if lo <= i <= hi:
                return i
            raise out_of_range(i)

        return from_text

    def native(value: Any) -> Any:
        if type(value) is int:
            if lo <= value <= hi:
                return value
            raise out_of_range(value)
        if type(value) is float and value.is_integer():
            i = int(value)
            if lo <= i <= hi:
                return i
            raise out_of_range(value)
        return fallback(value)

    return native


def _floating(kind: str, label: str, fallback: Converter, text: bool, scale: float, offset: float) -> Converter:
    limit = FLOAT32_MAX if kind == "float" else FLOAT64_MAX

    def out_of_range(value: Any) -> PayloadError:
        return PayloadError(
            "wrong_type", f"{label}: expected a finite number within +/-{limit:.7g} (Avro {kind}), got {found(value)}"
        )

    if scale != 1.0 or offset != 0.0:

        def to_float(result: float) -> float:
            if -limit <= result <= limit:
                return float(result)
            raise out_of_range(result)

        return _scaled(text, scale, offset, fallback, out_of_range, to_float)

    if text:

        def from_text(value: Any) -> Any:
            try:
                f = float(value)
            except (TypeError, ValueError):
                return fallback(value)
            if -limit <= f <= limit:
                return f
            raise out_of_range(f)

        return from_text

    def native(value: Any) -> Any:
        if type(value) is float:
            if -limit <= value <= limit:  # false for NaN and infinities
                return value
            raise out_of_range(value)
        if type(value) is int:
            if -limit <= value <= limit:
                return float(value)
            raise out_of_range(value)
        return fallback(value)

    return native


def _scaled(
    text: bool,
    scale: float,
    offset: float,
    fallback: Converter,
    out_of_range: Callable[[Any], PayloadError],
    finish: Callable[[float], Any],
) -> Converter:
    """A numeric converter with the config's unit conversion (`value * scale + offset`) applied first."""
    number = _text_number if text else _native_number

    def scaled(value: Any) -> Any:
        n = number(value)
        if n is None:
            return fallback(value)
        try:
            result = n * scale + offset
        except OverflowError:  # a huge int times a float
            raise out_of_range(n) from None
        return finish(result)

    return scaled


def _native_number(value: Any) -> int | float | None:
    return value if type(value) is int or type(value) is float else None


def _text_number(value: Any) -> int | float | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        pass
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _string(label: str, fallback: Converter, text: bool, nullable: bool) -> Converter:
    def nul(value: str) -> PayloadError:
        return PayloadError(
            "wrong_type", f"{label}: the string {clip(value)} contains a NUL character, which cannot be stored"
        )

    if text and nullable:

        def text_or_null(value: Any) -> Any:
            if type(value) is str and value:
                if "\x00" in value:
                    raise nul(value)
                return value
            return fallback(value)

        return text_or_null

    def string(value: Any) -> Any:
        if type(value) is str:
            if "\x00" in value:
                raise nul(value)
            return value
        return fallback(value)

    return string


def _boolean(fallback: Converter, text: bool) -> Converter:
    if text:

        def from_text(value: Any) -> Any:
            found = _BOOLEANS.get(value.strip().lower()) if type(value) is str else None
            return found if found is not None else fallback(value)

        return from_text

    def native(value: Any) -> Any:
        if value is True or value is False:
            return value
        return fallback(value)

    return native


def _enum(symbols: frozenset[str], fallback: Converter) -> Converter:
    def enum(value: Any) -> Any:
        if type(value) is str and value in symbols:
            return value
        return fallback(value)

    return enum


def _bytes(fallback: Converter, size: int | None, text: bool) -> Converter:
    """bytes as they are; a string is taken as its UTF-8 encoding."""

    def to_bytes(value: Any) -> Any:
        if type(value) is bytes:
            data = value
        elif type(value) is str and (value or not text):
            try:
                data = value.encode("utf-8")
            except UnicodeEncodeError:
                return fallback(value)
        else:
            return fallback(value)
        if size is None or len(data) == size:
            return data
        return fallback(value)

    return to_bytes


def _conversion_on_non_number(label: str, kind: str, scale: float, offset: float, fallback: Converter) -> Converter:
    def refuse(value: Any) -> Any:
        if value is MISSING or value is None:
            return fallback(value)
        raise PayloadError(
            "wrong_type",
            f"{label}: the connector config converts units (scale {scale:g}, offset {offset:g}), but the field's "
            f"Avro type is {kind}, not a number: remove scale/offset for this field",
        )

    return refuse
