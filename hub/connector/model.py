"""The connector config: the file a partner writes, reviews and applies.

One YAML file per partner under `connectors/`. Its reference, with an example for
every key, is docs/connector-config.md. The models forbid unknown keys, so a typo
is an error naming the key and its line, never silently ignored.
"""

from __future__ import annotations

import re
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

from hub.connector.feed_spec import (
    DEFAULT_MAX_AGE,
    DEFAULT_MAX_FUTURE,
    DEFAULT_TIME_FIELD,
    FeedSpec,
    PayloadFormat,
    TimeFormat,
    parse_duration,
)
from hub.connector.paths import is_flat, parse_path
from hub.errors import IdentifierError
from hub.identifiers import check_identifier
from hub.schema.avro import COLUMN_NAME, DEVICE_ID, TIME, Compatibility

_TOPIC_LEVEL = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
DEVICE_PLACEHOLDER = "{device_id}"


# Stored in the catalog as whole seconds ("86400s"), which `parse_duration` reads back.
Duration = Annotated[
    timedelta,
    Field(description="e.g. 30d, 12h, 15m"),
    PlainSerializer(lambda td: f"{int(td.total_seconds())}s", return_type=str, when_used="json"),
]


class LocatedError(ValueError):
    """A validation error that knows which key it concerns (pydantic places model-level errors at the root).

    `loc` is relative to the model whose validator raises it; the loader adds the model's own place.
    """

    def __init__(self, message: str, loc: tuple[str | int, ...]) -> None:
        super().__init__(message)
        self.loc = loc


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PartnerKind(StrEnum):
    city = "city"
    university = "university"
    private = "private"


class Theme(StrEnum):
    """The EU data themes (publications.europa.eu/resource/authority/data-theme), as DCAT-AP catalogs use them."""

    AGRI = "AGRI"
    ECON = "ECON"
    EDUC = "EDUC"
    ENER = "ENER"
    ENVI = "ENVI"
    GOVE = "GOVE"
    HEAL = "HEAL"
    INTR = "INTR"
    JUST = "JUST"
    REGI = "REGI"
    SOCI = "SOCI"
    TECH = "TECH"
    TRAN = "TRAN"


THEME_LABELS = {
    "AGRI": "Agriculture, fisheries, forestry and food",
    "ECON": "Economy and finance",
    "EDUC": "Education, culture and sport",
    "ENER": "Energy",
    "ENVI": "Environment",
    "GOVE": "Government and public sector",
    "HEAL": "Health",
    "INTR": "International issues",
    "JUST": "Justice, legal system and public safety",
    "REGI": "Regions and cities",
    "SOCI": "Population and society",
    "TECH": "Science and technology",
    "TRAN": "Transport",
}
_KEYWORD = re.compile(r"^[^\x00-\x1f\x7f]{1,50}$")


class Partner(Strict):
    id: str = Field(description="Short name used in topics, credentials and SQL, e.g. city_transport.")
    name: str = Field(min_length=1, max_length=200)
    kind: PartnerKind
    contact: str = Field(min_length=3, max_length=200)

    @field_validator("id")
    @classmethod
    def _safe_id(cls, v: str) -> str:
        return _identifier(v, "partner id")


def _schema_field(value: str, key: str) -> str:
    if not COLUMN_NAME.fullmatch(value):
        raise ValueError(
            f"{key} {value!r} is not a field name of an Avro feed schema: use 1-63 lower-case letters, digits "
            "and underscores, starting with a letter"
        )
    return value


class DeviceIdSource(Strict):
    """Where the device id comes from: the `{device_id}` level of the topic, or a payload field (a path).

    `schema_field` is what the partner's schema calls its device id field; the hub's records and
    tables call it `device_id` whatever the partner's name for it.
    """

    source: Literal["topic", "field"] = "topic"
    field: str | None = None
    schema_field: str = Field(default=DEVICE_ID, description="The schema's name for the device id field.")

    @model_validator(mode="before")
    @classmethod
    def _field_means_source_field(cls, data: object) -> object:
        # `device_id: {field: station.id}` says where the id is: `source: field` goes without saying.
        if isinstance(data, dict) and data.get("field") and "source" not in data:
            return {**data, "source": "field"}
        return data

    @field_validator("schema_field")
    @classmethod
    def _schema_name(cls, v: str) -> str:
        return _schema_field(v, "device_id.schema_field")

    @model_validator(mode="after")
    def _field_when_needed(self) -> DeviceIdSource:
        if self.source == "field" and not self.field:
            raise ValueError("device_id.source is 'field': name the payload field in device_id.field")
        if self.source == "topic" and self.field:
            raise ValueError("device_id.field is only used with source: field")
        return self


class EventTime(Strict):
    """Where the event time comes from, and which times are plausible."""

    source: Literal["field", "received"] = "field"
    field: str | None = DEFAULT_TIME_FIELD
    schema_field: str = Field(default=TIME, description="The schema's name for the event time field.")
    format: TimeFormat | str = Field(
        default=TimeFormat.iso8601,
        description="iso8601, epoch_s, epoch_ms, epoch_us, or a strftime pattern such as '%d/%m/%Y %H:%M:%S'",
    )
    timezone: str = Field(default="UTC", description="Zone of times that carry none (IANA name).")
    max_future: Duration = DEFAULT_MAX_FUTURE
    max_age: Duration = DEFAULT_MAX_AGE

    @model_validator(mode="before")
    @classmethod
    def _field_defaults_to_schema_field(cls, data: object) -> object:
        # A partner that names its time field `observed_at` in the schema usually sends it so named too.
        if isinstance(data, dict) and data.get("schema_field") and "field" not in data:
            return {**data, "field": data["schema_field"]}
        return data

    @field_validator("schema_field")
    @classmethod
    def _schema_name(cls, v: str) -> str:
        return _schema_field(v, "time.schema_field")

    @field_validator("max_future", "max_age", mode="before")
    @classmethod
    def _duration(cls, v: object) -> object:
        return parse_duration(v) if isinstance(v, str | int) else v

    @field_validator("format", mode="before")
    @classmethod
    def _format_is_text(cls, v: object) -> object:
        if not isinstance(v, str):
            raise ValueError(
                f"{v!r} is not a time format: use iso8601, epoch_s, epoch_ms, epoch_us or a strftime pattern"
            )
        return v

    @field_validator("format")
    @classmethod
    def _known_format(cls, v: str) -> str:
        if v in TimeFormat.__members__.values():
            return TimeFormat(v)
        if "%" not in v:
            raise ValueError(
                f"{v!r} is not a time format: use iso8601, epoch_s, epoch_ms, epoch_us or a strftime pattern"
            )
        return v

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}: use an IANA name such as Europe/Paris or UTC") from exc
        return v

    @model_validator(mode="after")
    def _field_when_needed(self) -> EventTime:
        if self.source == "field" and not self.field:
            raise ValueError("time.source is 'field': name the payload field in time.field")
        return self


class FieldMapping(Strict):
    """How one schema field is filled from the payload: its source name and a linear unit conversion."""

    source: str = Field(min_length=1, description="Path of the payload field (or the CSV column's name).")
    scale: float = 1.0
    offset: float = 0.0


def _mapping_from_text(value: object) -> object:
    """`fields:` entries may be just the payload field's name."""
    if isinstance(value, str):
        return {"source": value}
    if isinstance(value, dict | FieldMapping):
        return value
    raise ValueError(f"{value!r} is not a field mapping: write the payload field's name, or {{source, scale, offset}}")


# A schema field's source: the payload field's name, or {source, scale, offset}.
FieldMappingIn = Annotated[FieldMapping, BeforeValidator(_mapping_from_text)]


class CsvOptions(Strict):
    columns: list[str] = Field(min_length=1)
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    header: bool = Field(default=True, description="Skip a line equal to the column names (a header line).")


class Feed(Strict):
    name: str
    description: str = Field(min_length=1, max_length=2000)
    licence: str = Field(min_length=1, max_length=100, description="SPDX id or licence name, e.g. CC-BY-4.0")
    schema_: str = Field(alias="schema", description="Avro schema file name under schemas/, without .avsc")
    compatibility: Compatibility = Compatibility.BACKWARD
    topic: str = Field(description="MQTT topic inside the partner's namespace, e.g. traffic/{device_id}")
    format: PayloadFormat = PayloadFormat.json
    csv: CsvOptions | None = None
    device_id: DeviceIdSource = DeviceIdSource()
    time: EventTime = EventTime()
    fields: dict[str, FieldMappingIn] = Field(
        default_factory=dict,
        description="schema field -> payload field name, or {source, scale, offset} for unit conversions",
    )
    retention: Duration = timedelta(days=365)
    compress_after: Duration = timedelta(days=7)
    chunk_interval: Duration = timedelta(days=1)
    rollup: Duration = Field(default=timedelta(minutes=15), description="Bucket of the continuous aggregate.")
    partitions: int | None = Field(default=None, ge=1, le=256)
    themes: list[Theme] = Field(default_factory=list, max_length=5, description="EU data themes, for the catalog.")
    keywords: list[str] = Field(default_factory=list, max_length=20, description="Words to find it by in the catalog.")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, v: list[str]) -> list[str]:
        for i, word in enumerate(v):
            if not _KEYWORD.fullmatch(word):
                raise LocatedError(f"keyword {word!r} must be 1-50 printable characters", (i,))
        return v

    @field_validator("retention", "compress_after", "chunk_interval", "rollup", mode="before")
    @classmethod
    def _duration(cls, v: object) -> object:
        return parse_duration(v) if isinstance(v, str | int) else v

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        return _identifier(v, "feed name")

    @field_validator("schema_")
    @classmethod
    def _safe_schema(cls, v: str) -> str:
        return _identifier(v, "schema name")

    @field_validator("topic")
    @classmethod
    def _topic_inside_namespace(cls, v: str) -> str:
        if v.startswith("/") or v.endswith("/"):
            raise ValueError(f"topic {v!r} must be relative to the partner's namespace: no leading or trailing '/'")
        levels = v.split("/")
        if levels.count(DEVICE_PLACEHOLDER) > 1:
            raise ValueError(f"topic {v!r} may contain {DEVICE_PLACEHOLDER} once")
        for level in levels:
            if level == DEVICE_PLACEHOLDER:
                continue
            if level in ("+", "#") or "$" in level or not _TOPIC_LEVEL.fullmatch(level) or level in (".", ".."):
                raise ValueError(
                    f"topic level {level!r} in {v!r} is not allowed: use letters, digits, '_', '-', '.' "
                    f"or {DEVICE_PLACEHOLDER}; wildcards and '$' would reach outside the partner's namespace"
                )
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Feed:
        if self.format == PayloadFormat.csv and self.csv is None:
            raise ValueError("format is csv: list the columns under csv.columns")
        if self.format != PayloadFormat.csv and self.csv is not None:
            raise ValueError(f"csv options are only used with format: csv (this feed's format is {self.format})")
        if self.device_id.source == "topic" and DEVICE_PLACEHOLDER not in self.topic:
            raise ValueError(
                f"device_id comes from the topic, but topic {self.topic!r} has no {DEVICE_PLACEHOLDER} level"
            )
        if self.compress_after >= self.retention:
            raise ValueError("compress_after must be shorter than retention")
        if self.device_id.schema_field == self.time.schema_field:
            raise LocatedError(
                f"device_id.schema_field and time.schema_field both name {self.time.schema_field!r}: the device id "
                "and the event time are two fields of the schema",
                ("time", "schema_field"),
            )
        for loc, reference in self.references():
            self._check_reference(loc, reference)
        return self

    def references(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Every payload reference of the feed with its key path: device id, time, each mapped field."""
        found: list[tuple[tuple[str | int, ...], str]] = []
        if self.device_id.source == "field" and self.device_id.field:
            found.append((("device_id", "field"), self.device_id.field))
        if self.time.source == "field" and self.time.field:
            found.append((("time", "field"), self.time.field))
        for name, mapping in self.fields.items():
            found.append((("fields", name, "source"), mapping.source))
        return found

    def _check_reference(self, loc: tuple[str | int, ...], reference: str) -> None:
        if self.format == PayloadFormat.csv:
            columns = self.csv.columns if self.csv is not None else []
            if reference not in columns and not is_flat(reference):
                raise LocatedError(
                    f"{reference!r} is a path into a nested payload, but CSV payloads are flat: name one of the "
                    f"columns of csv.columns ({', '.join(columns[:12])})",
                    loc,
                )
            return
        try:
            parse_path(reference)
        except ValueError as exc:
            raise LocatedError(str(exc), loc) from None

    def mapping(self, schema_field: str) -> FieldMapping:
        found = self.fields.get(schema_field)
        return found if found is not None else FieldMapping(source=schema_field)

    def spec(self) -> FeedSpec:
        """This feed as a worker reads it once applied: its stored config (this dump) as plain dataclasses."""
        return FeedSpec.from_config(self.model_dump(mode="json", by_alias=True))

    def subscription(self, namespace: str) -> str:
        """The MQTT subscription filter of this feed."""
        return f"{namespace}/" + "/".join("+" if lvl == DEVICE_PLACEHOLDER else lvl for lvl in self.topic.split("/"))


class ConnectorConfig(Strict):
    partner: Partner
    feeds: list[Feed] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_feeds(self) -> ConnectorConfig:
        names: dict[str, int] = {}
        topics = _FilterIndex()
        for i, feed in enumerate(self.feeds):
            if feed.name in names:
                raise LocatedError(
                    f"feed name {feed.name!r} is used twice (also by feeds[{names[feed.name]}]): "
                    "each feed of a partner needs its own name",
                    ("feeds", i, "name"),
                )
            names[feed.name] = i
            # Placeholders match any level: 'a/{device_id}' and 'a/x' would receive each other's messages.
            filt = feed.subscription("")
            clash = topics.overlapping(filt)
            if clash is not None:
                raise LocatedError(
                    f"topic {feed.topic!r} overlaps the topic of feed {self.feeds[clash].name!r} "
                    f"({self.feeds[clash].topic!r}): a message must belong to exactly one feed",
                    ("feeds", i, "topic"),
                )
            topics.add(filt, i)
        return self


class _FilterIndex:
    """Subscription filters (only '+' wildcards) as a tree of levels, to find one that overlaps a new filter.

    Comparing each new filter with every earlier one took a minute for 5,000 feeds; the tree follows only
    the branches a topic could take (the same level, or '+'), so a lookup costs about the filter's depth.
    """

    def __init__(self) -> None:
        self.root: dict[str | None, Any] = {}  # level -> subtree; None -> index of a filter ending here

    def add(self, filt: str, index: int) -> None:
        node = self.root
        for level in filt.split("/"):
            node = node.setdefault(level, {})
        node[None] = index

    def overlapping(self, filt: str) -> int | None:
        """The index of an added filter that can match a topic `filt` matches too, if any."""
        nodes = [self.root]
        for level in filt.split("/"):
            if level == "+":
                nodes = [child for node in nodes for key, child in node.items() if key is not None]
            else:
                nodes = [node[key] for node in nodes for key in (level, "+") if key in node]
            if not nodes:
                return None
        ends = [node[None] for node in nodes if None in node]
        return min(ends) if ends else None


def _identifier(value: str, what: str) -> str:
    try:
        return check_identifier(value, what)
    except IdentifierError as exc:
        raise ValueError(str(exc)) from None
