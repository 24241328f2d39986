"""The desired state: connector configs and their Avro schemas, read and cross-checked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hub.connector.loader import connector_files, key_line, load_connector
from hub.connector.model import PayloadFormat
from hub.control.plan import DesiredFeed, DesiredPartner, desired_feed
from hub.errors import ConfigError
from hub.schema.avro import FeedSchema, load_feed_schema
from hub.settings import HubSettings

KEY_FIELDS = ("device_id", "time")


def default_schemas_dir(config_file: Path) -> Path:
    """`schemas/` beside the config's `connectors/` directory, else `./schemas`."""
    beside = config_file.resolve().parent.parent / "schemas"
    return beside if beside.is_dir() else Path("schemas")


def load_desired(
    path: Path | Sequence[Path], settings: HubSettings, schemas_dir: Path | None = None
) -> list[DesiredPartner]:
    """Connector configs: a file, a directory of them, or a list of files (hub/control/sources.py sorts them)."""
    partners: list[DesiredPartner] = []
    owners: dict[str, str] = {}
    cache: dict[Path, FeedSchema] = {}
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

            def fail(msg: str, *loc: str | int, i: int = i, file: Path = file) -> ConfigError:
                full = ("feeds", i, *loc)
                name = "feeds" + f"[{i}]" + "".join(f".{p}" for p in loc)
                return ConfigError(msg, file=str(file), line=key_line(file, full), field=name)

            spath = sdir / f"{feed.schema_}.avsc"
            if not spath.is_file():
                raise fail(f"unknown schema {feed.schema_!r}: there is no {spath}", "schema")
            schema = cache.get(spath) or load_feed_schema(spath)
            cache[spath] = schema
            for key in feed.fields:
                if key in KEY_FIELDS:
                    raise fail(f"{key!r} is set by the `{key}:` section, not under fields", "fields", key)
                if key not in schema.fields:
                    raise fail(
                        f"schema {schema.name} has no field {key!r}; its fields are {', '.join(schema.fields)}",
                        "fields",
                        key,
                    )
            if feed.device_id.source == "field" and feed.format == PayloadFormat.avro:
                if feed.device_id.field != "device_id":
                    raise fail("Avro payloads carry the schema's own device_id field", "device_id")
            if feed.format == PayloadFormat.csv and feed.csv is not None:
                columns = set(feed.csv.columns)
                for col in schema.columns:
                    if col.name in KEY_FIELDS or col.nullable:
                        continue
                    source = feed.mapping(col.name).source
                    if source not in columns:
                        raise fail(
                            f"required schema field {col.name!r} reads CSV column {source!r}, "
                            f"which is not in csv.columns",
                            "csv",
                            "columns",
                        )
            feeds.append(desired_feed(settings, pid, feed, schema, str(file), i))
        partners.append(DesiredPartner(cfg, str(file), tuple(feeds)))
    return partners
