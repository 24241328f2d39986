"""The desired state: connector configs and their Avro schemas, read and cross-checked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hub.connector.feed_spec import PayloadFormat
from hub.connector.loader import connector_files, key_line, load_connector
from hub.connector.model import Feed
from hub.control.plan import DesiredFeed, DesiredPartner, desired_feed
from hub.control.schema_paths import path_problem
from hub.errors import ConfigError
from hub.schema.avro import FeedSchema, KeyFieldError, KeyNames, load_feed_schema
from hub.settings import HubSettings

KEY_FIELDS = ("device_id", "time")


def default_schemas_dir(config_file: Path) -> Path:
    """`schemas/` beside the config's `connectors/` directory, else `./schemas`."""
    beside = config_file.resolve().parent.parent / "schemas"
    return beside if beside.is_dir() else Path("schemas")


class _Fail:
    """Errors about one feed of one file, with the line of the key they concern."""

    def __init__(self, file: Path, index: int) -> None:
        self.file, self.index = file, index

    def __call__(self, msg: str, *loc: str | int) -> ConfigError:
        full = ("feeds", self.index, *loc)
        name = "feeds" + f"[{self.index}]" + "".join(f".{p}" for p in loc)
        return ConfigError(msg, file=str(self.file), line=key_line(self.file, full), field=name)


def load_desired(
    path: Path | Sequence[Path], settings: HubSettings, schemas_dir: Path | None = None
) -> list[DesiredPartner]:
    """Connector configs: a file, a directory of them, or a list of files (hub/control/sources.py sorts them)."""
    partners: list[DesiredPartner] = []
    owners: dict[str, str] = {}
    cache: dict[tuple[Path, KeyNames], FeedSchema] = {}
    for file in connector_files(path) if isinstance(path, Path) else path:
        cfg = load_connector(file)
        pid = cfg.partner.id
        if pid in owners:
            raise ConfigError(
                f"partner id {pid!r} is already defined in {owners[pid]}: one file per partner",
                file=str(file),
                line=key_line(file, ("partner", "id")),
                field="partner.id",
            )
        owners[pid] = str(file)
        sdir = schemas_dir or default_schemas_dir(file)
        feeds: list[DesiredFeed] = []
        for i, feed in enumerate(cfg.feeds):
            fail = _Fail(file, i)
            spath = sdir / f"{feed.schema_}.avsc"
            if not spath.is_file():
                raise fail(f"unknown schema {feed.schema_!r}: there is no {spath}", "schema")
            keys = KeyNames(feed.device_id.schema_field, feed.time.schema_field)
            schema = cache.get((spath, keys))
            if schema is None:
                try:
                    schema = load_feed_schema(spath, keys)
                except KeyFieldError as exc:
                    raise fail(str(exc), *exc.key.split(".")) from None
                cache[(spath, keys)] = schema
            check_feed(feed, schema, fail)
            feeds.append(desired_feed(settings, pid, feed, schema, str(file), i))
        partners.append(DesiredPartner(cfg, str(file), tuple(feeds)))
    return partners


def check_feed(feed: Feed, schema: FeedSchema, fail: _Fail) -> None:
    """What the config says against what its schema and payload format allow."""
    own = {hub: partner for partner, hub in schema.renamed}
    for key in feed.fields:
        if key in KEY_FIELDS or key in own.values():
            section = next((k for k in KEY_FIELDS if key in (k, own.get(k))), key)
            raise fail(f"{key!r} is set by the `{section}:` section, not under fields", "fields", key)
        if key not in schema.fields:
            fields = ", ".join(schema.fields)
            raise fail(f"schema {schema.name} has no field {key!r}; its fields are {fields}", "fields", key)
    if feed.format == PayloadFormat.avro:
        _check_avro(feed, schema, fail)
    if feed.format == PayloadFormat.csv and feed.csv is not None:
        _check_csv(feed, schema, fail)


def _check_avro(feed: Feed, schema: FeedSchema, fail: _Fail) -> None:
    device = feed.device_id
    if device.source == "field" and device.field != device.schema_field:
        raise fail(
            f"Avro payloads carry the schema's own device id field {device.schema_field!r}: set device_id.field to "
            f"{device.schema_field!r}, or take the id from the topic (device_id.source: topic)",
            "device_id",
            "field",
        )
    t = feed.time
    if t.source == "field" and t.field and t.field != t.schema_field:
        problem = path_problem(schema.parsed, t.field, {own: hub for own, hub in schema.renamed})
        if problem:
            raise fail(f"time.field {t.field!r} cannot exist in this feed's Avro payloads: {problem}", "time", "field")


def _check_csv(feed: Feed, schema: FeedSchema, fail: _Fail) -> None:
    assert feed.csv is not None
    columns = set(feed.csv.columns)
    for section, ref in (("device_id", feed.device_id), ("time", feed.time)):
        if ref.source == "field" and ref.field and ref.field not in columns:
            raise fail(
                f"{section}.field reads column {ref.field!r}, which is not in csv.columns "
                f"({', '.join(feed.csv.columns)})",
                section,
                "field",
            )
    for col in schema.columns:
        if col.name in KEY_FIELDS or col.nullable:
            continue
        source = feed.mapping(col.name).source
        if source not in columns:
            raise fail(
                f"required schema field {col.name!r} reads CSV column {source!r}, which is not in csv.columns",
                "csv",
                "columns",
            )
