"""What `hub apply` would change: the desired state from connector configs, diffed against the catalog.

Pure logic: reading files happens in `desired.py`, reading the catalog and changing
servers in `apply.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from hub.catalog.store import FeedRow, TableColumn
from hub.connector.feed_spec import parse_duration
from hub.connector.loader import key_line
from hub.connector.model import ConnectorConfig, Feed
from hub.control.tables import (
    HUB_COLUMN_NAMES,
    WIDENINGS,
    FeedTable,
    alter_table_sql,
    create_table_sql,
    pg_type,
    policies_sql,
)
from hub.errors import ConfigError, SchemaError
from hub.schema.avro import DEVICE_ID, TIME, Column, FeedSchema, parse_feed_schema
from hub.schema.compatibility import check_compatibility
from hub.settings import HubSettings


@dataclass(frozen=True)
class DesiredFeed:
    partner_id: str
    feed: Feed
    schema: FeedSchema
    file: str
    subject: str
    kafka_topic: str
    mqtt_filter: str
    partitions: int
    table: FeedTable
    index: int = 0  # position under `feeds:` in its file, for error messages


@dataclass(frozen=True)
class DesiredPartner:
    config: ConnectorConfig
    file: str
    feeds: tuple[DesiredFeed, ...]

    @property
    def id(self) -> str:
        return self.config.partner.id


def desired_feed(
    settings: HubSettings, partner_id: str, feed: Feed, schema: FeedSchema, file: str, index: int = 0
) -> DesiredFeed:
    topic = f"{settings.kafka_topic_prefix}{partner_id}.{feed.name}"
    return DesiredFeed(
        partner_id=partner_id,
        feed=feed,
        schema=schema,
        file=file,
        subject=f"{topic}-value",  # Confluent's TopicNameStrategy
        kafka_topic=topic,
        mqtt_filter=feed.subscription(f"{settings.mqtt_namespace_root}/{partner_id}"),
        partitions=feed.partitions or settings.kafka_partitions,
        table=FeedTable(
            schema=partner_id,
            table=feed.name,
            columns=schema.columns,
            retention=feed.retention,
            compress_after=feed.compress_after,
            chunk_interval=feed.chunk_interval,
            rollup=feed.rollup,
        ),
        index=index,
    )


@dataclass
class CurrentState:
    partners: dict[str, dict[str, str]] = field(default_factory=dict)
    feeds: dict[tuple[str, str], FeedRow] = field(default_factory=dict)
    history: dict[str, list[str]] = field(default_factory=dict)  # subject -> schema texts, oldest first
    tables: dict[tuple[str, str], dict[str, TableColumn]] = field(default_factory=dict)  # existing tables only
    topics: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Change:
    # partner | feed | schema | topic | table | column; the broker's accounts (hub/control/broker_sync.py):
    # mqtt-login | mqtt-role | mqtt-group | mqtt-access; sharing (hub/control/share_plan.py):
    # sharing | organisation | db-role | db-schema | agreement | view
    kind: str
    action: str  # create | update | drop (shared objects) | delete (broker accounts)
    target: str
    detail: str = ""
    sql: tuple[str, ...] = ()

    def render(self) -> str:
        sign = {"create": "+", "drop": "-", "delete": "-"}.get(self.action, "~")
        return f"{sign} {self.kind:11} {self.target}" + (f"  ({self.detail})" if self.detail else "")


@dataclass
class Plan:
    partners: list[DesiredPartner]
    timescale: bool
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.changes

    def of_kind(self, kind: str) -> list[Change]:
        return [c for c in self.changes if c.kind == kind]

    def render(self) -> list[str]:
        if self.empty:
            return ["no changes: the catalog and the database already match these files"]
        return [c.render() for c in self.changes] + [f"note: {n}" for n in self.notes]


def make_plan(desired: list[DesiredPartner], current: CurrentState, timescale: bool) -> Plan:
    plan = Plan(partners=desired, timescale=timescale)
    problems: list[str] = []
    for partner in desired:
        p = partner.config.partner
        row = current.partners.get(p.id)
        if row is None:
            # Its MQTT login, role and group follow from the broker's comparison (hub/control/broker_sync.py).
            plan.changes.append(Change("partner", "create", p.id, f"{p.kind}, {p.name}"))
        elif (row["name"], row["kind"], row["contact"]) != (p.name, str(p.kind), p.contact):
            plan.changes.append(Change("partner", "update", p.id, "name, kind or contact"))
        for f in partner.feeds:
            problems += _plan_feed(plan, f, current)
        configured = {f.feed.name for f in partner.feeds}
        dropped = sorted(name for (pid, name) in current.feeds if pid == p.id and name not in configured)
        if dropped:
            plan.notes.append(
                f"{p.id}: feeds {', '.join(dropped)} are no longer in {partner.file}; they are kept "
                "(removing a feed and its data is not done by apply)"
            )
    if problems:
        raise SchemaError("incompatible schema change, nothing was applied:\n  " + "\n  ".join(problems))
    return plan


def _plan_feed(plan: Plan, f: DesiredFeed, current: CurrentState) -> list[str]:
    key = (f.partner_id, f.feed.name)
    row = current.feeds.get(key)
    target = f"{f.partner_id}.{f.feed.name}"
    new_config = f.feed.model_dump(mode="json", by_alias=True)
    if row is None:
        plan.changes.append(Change("feed", "create", target, f"mqtt {f.mqtt_filter}, format {f.feed.format}"))
    else:
        _check_partitions(f, row)
        old_config = _as_current_model(row.config)
        changed = sorted(k for k in new_config.keys() | old_config.keys() if new_config.get(k) != old_config.get(k))
        if row.mqtt_filter != f.mqtt_filter and "topic" not in changed:
            changed.append("topic")
        if changed:
            plan.changes.append(Change("feed", "update", target, "changed: " + ", ".join(changed)))

    history = current.history.get(f.subject, [])
    problems: list[str] = []
    if not history or history[-1] != f.schema.canonical:
        if history:
            previous = [parse_feed_schema(text, f"{f.subject} v{i + 1}") for i, text in enumerate(history)]
            found = check_compatibility(f.schema, previous, str(f.feed.compatibility))
            problems += [f"{f.file}: feed {f.feed.name}, schema {f.schema.name}: {p}" for p in found]
        plan.changes.append(
            Change("schema", "create", f.subject, f"version {len(history) + 1} from schemas/{f.schema.name}.avsc")
        )

    if f.kafka_topic not in current.topics:
        plan.changes.append(Change("topic", "create", f.kafka_topic, f"{f.partitions} partitions"))

    existing = current.tables.get((f.table.schema, f.table.table))
    if existing is None:
        mode = "hypertable, compression, retention, continuous aggregate" if plan.timescale else "table + rollup view"
        plan.changes.append(
            Change(
                "table",
                "create",
                f"{f.table.schema}.{f.table.table}",
                mode,
                tuple(create_table_sql(f.table, plan.timescale)),
            )
        )
    else:
        table_problems = _plan_table(plan, f.table, existing, row.config if row else {})
        if not problems:  # a refused schema change is reported once, by its compatibility rule
            problems += [f"{f.file}: feed {f.feed.name}, schema {f.schema.name}: {p}" for p in table_problems]
    return problems


def _as_current_model(config: dict[str, Any]) -> dict[str, Any]:
    """An applied config as this version of the model writes it: keys added since get their defaults,
    so an upgrade of the hub alone is no change to a feed."""
    try:
        return Feed.model_validate(config).model_dump(mode="json", by_alias=True)
    except ValueError:
        return config


def _check_partitions(f: DesiredFeed, row: FeedRow) -> None:
    if f.feed.partitions is None or f.feed.partitions == row.partitions:
        return
    raise ConfigError(
        f"partitions cannot change after a feed is created (topic {f.kafka_topic} has {row.partitions}, "
        f"the config asks for {f.feed.partitions}): Kafka would send devices to other partitions and break "
        f"their order; set partitions: {row.partitions} (or remove the key), or create a new feed",
        file=f.file,
        line=key_line(Path(f.file), ("feeds", f.index, "partitions")),
        field=f"feeds[{f.index}].partitions",
    )


def _plan_table(plan: Plan, t: FeedTable, existing: dict[str, TableColumn], old_config: dict[str, Any]) -> list[str]:
    """Changes to an existing feed table that follow the schema and the feed's settings; problems if it cannot."""
    target = f"{t.schema}.{t.table}"
    problems: list[str] = []
    add: list[Column] = []
    retype: list[Column] = []
    relax: list[str] = []
    for col in t.columns:
        old = existing.get(col.name)
        if old is None:
            add.append(col)
            plan.changes.append(Change("column", "create", f"{target}.{col.name}", col.sql_type))
            continue
        new_type = pg_type(col.sql_type)
        if old.sql_type != new_type:
            if (old.sql_type, new_type) in WIDENINGS and not plan.timescale:
                retype.append(col)
                plan.changes.append(
                    Change("column", "update", f"{target}.{col.name}", f"type {old.sql_type} -> {new_type}")
                )
            else:
                why = (
                    "TimescaleDB cannot change a column's type in a compressed hypertable"
                    if (old.sql_type, new_type) in WIDENINGS
                    else "the existing rows cannot be converted"
                )
                problems.append(
                    f"field '{col.name}' would change column {target}.{col.name} from {old.sql_type} to {new_type}, "
                    f"and {why}; keep the field's type, or add a new field (or a new feed) instead"
                )
            continue
        if col.nullable and not old.nullable and col.name not in (DEVICE_ID, TIME):
            relax.append(col.name)
            plan.changes.append(Change("column", "update", f"{target}.{col.name}", "may be null"))
    in_schema = {c.name for c in t.columns}
    for name, old in existing.items():
        if name not in in_schema and name not in HUB_COLUMN_NAMES and not old.nullable:
            relax.append(name)  # the schema dropped the field: rows written from now on lack it
            plan.changes.append(Change("column", "update", f"{target}.{name}", "no longer in the schema: may be null"))
    if problems:
        return problems
    rollup_changed = _changed(old_config, "rollup", t.rollup)
    rebuild = rollup_changed or any(c.numeric for c in (*add, *retype))
    sql = alter_table_sql(
        t, add=add, retype=retype, drop_not_null=relax, rebuild_rollup=rebuild, timescale=plan.timescale
    )
    policies = (
        policies_sql(
            t,
            retention=_changed(old_config, "retention", t.retention),
            compression=_changed(old_config, "compress_after", t.compress_after),
            chunk_interval=_changed(old_config, "chunk_interval", t.chunk_interval),
        )
        if plan.timescale
        else []
    )
    what = [w for w, on in (("new columns", add), ("column types", retype), ("nullable columns", relax)) if on]
    what += ["rollup rebuilt"] if rebuild and not add and not retype else []
    what += ["retention/compression/chunk policies"] if policies else []
    if sql or policies:
        plan.changes.append(Change("table", "update", target, ", ".join(what), (*sql, *policies)))
    return problems


def _changed(old_config: dict[str, Any], key: str, new: timedelta) -> bool:
    """Whether a duration setting differs from the applied one (False when the catalog has none)."""
    value = old_config.get(key)
    try:
        return isinstance(value, str | int) and parse_duration(value) != new
    except ValueError:
        return False
