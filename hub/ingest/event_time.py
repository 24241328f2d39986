"""Event times: reading a payload's time into an int in the schema's unit, and the range errors.

`time_parser` turns a payload value in the feed's `time.format` (iso8601, epoch_s / epoch_ms /
epoch_us, or a strftime pattern; naive times in `time.timezone`) into microseconds or milliseconds
since 1970, or raises `bad_time`; `plain_time` takes the int an Avro payload already holds.
`out_of_range` words the `time_out_of_range` error (how old or how far ahead, and by how much more
than the feed accepts). The decoder (`hub.ingest.decode`) builds one parser per feed and calls it,
with its own range check, per message; these are kept apart because time formats and their
messages are a concern of their own, apart from the payload formats and the other fields.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Final

from hub.connector.feed_spec import TimeFormat
from hub.errors import PayloadError
from hub.ingest.describe import found
from hub.ingest.field_converters import Converter

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_UNITS: Final = {TimeFormat.epoch_s: 1, TimeFormat.epoch_ms: 1_000, TimeFormat.epoch_us: 1_000_000}


def time_parser(fmt: TimeFormat | str, zone: tzinfo, unit: int, label: str) -> Converter:
    if fmt in _EPOCH_UNITS:
        return _epoch_parser(_EPOCH_UNITS[TimeFormat(fmt)], unit, label, fmt)
    step = timedelta(microseconds=1_000_000 // unit)
    if fmt == TimeFormat.iso8601:
        expected = "an ISO 8601 time such as '2026-11-23T10:15:30Z' (time.format iso8601)"
        fromisoformat = datetime.fromisoformat

        def iso(value: Any) -> int:
            if type(value) is str:
                try:
                    dt = fromisoformat(value)
                except ValueError:
                    pass
                else:
                    if dt.tzinfo is None:
                        dt = dt.replace(tzinfo=zone)
                    return (dt - _EPOCH) // step
            raise PayloadError("bad_time", f"{label}: expected {expected}, got {found(value)}")

        return iso

    pattern = str(fmt)
    expected = f"a time in the format {pattern!r} (time.format)"
    strptime = datetime.strptime

    def strftime(value: Any) -> int:
        if type(value) is str:
            try:
                dt = strptime(value, pattern)
            except ValueError:
                pass
            else:
                if dt.tzinfo is None:
                    dt = dt.replace(tzinfo=zone)
                return (dt - _EPOCH) // step
        raise PayloadError("bad_time", f"{label}: expected {expected}, got {found(value)}")

    return strftime


def _epoch_parser(per_second: int, unit: int, label: str, fmt: str) -> Converter:
    names = {1: "seconds", 1_000: "milliseconds", 1_000_000: "microseconds"}
    expected = f"{names[per_second]} since 1970-01-01 UTC as a number (time.format {fmt})"
    multiply = unit // per_second if unit >= per_second else 1
    divide = per_second // unit if per_second > unit else 1

    def bad(value: Any) -> PayloadError:
        return PayloadError("bad_time", f"{label}: expected {expected}, got {found(value)}")

    def epoch(value: Any) -> int:
        kind = type(value)
        if kind is str:
            try:
                value = int(value)
            except ValueError:
                try:
                    value = float(value)
                except ValueError:
                    raise bad(value) from None
            kind = type(value)
        result: int
        if kind is int:
            result = value * multiply // divide
            return result
        if kind is float:
            try:
                result = round(value * multiply / divide)
                return result
            except (OverflowError, ValueError):  # infinities and NaN
                raise bad(value) from None
        raise bad(value)

    return epoch


def plain_time(label: str, unit: int) -> Converter:
    def plain(value: Any) -> int:
        if type(value) is int:
            return value
        raise PayloadError(
            "bad_time",
            f"{label}: expected {'milli' if unit == 1000 else 'micro'}seconds since 1970, got {found(value)}",
        )

    return plain


def out_of_range(label: str, t: int, current: int, unit: int, max_age: int, max_future: int) -> PayloadError:
    when = _iso(t, unit)
    if t < current:
        age = current - t
        return PayloadError(
            "time_out_of_range",
            f"{label}: {when} is {_duration(age, unit)} old, {_duration(age - max_age, unit)} more than this feed "
            f"accepts (time.max_age {_duration(max_age, unit)})",
        )
    ahead = t - current
    return PayloadError(
        "time_out_of_range",
        f"{label}: {when} is {_duration(ahead, unit)} in the future, {_duration(ahead - max_future, unit)} more than "
        f"this feed accepts (time.max_future {_duration(max_future, unit)}); check the device clock",
    )


def _iso(t: int, unit: int) -> str:
    try:
        return (_EPOCH + timedelta(microseconds=t * (1_000_000 // unit))).isoformat().replace("+00:00", "Z")
    except OverflowError:
        return f"{t} {'ms' if unit == 1000 else 'us'} since 1970"


def _duration(amount: int, unit: int) -> str:
    """'2 days 3 hours', '5 minutes 2 seconds', '250 ms': the two largest parts."""
    if amount < unit:
        ms = amount * 1000 // unit
        return f"{ms} ms"
    seconds = amount // unit
    parts = []
    for name, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {name}{'' if count == 1 else 's'}")
    return " ".join(parts[:2])
