"""What `hub apply` would change: the desired state from connector configs, diffed against the catalog.

Pure logic: reading files happens in `desired.py`, reading the catalog and changing
servers in `apply.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hub.control.avro_schema import FeedSchema, check_compatibility, parse_feed_schema
from hub.control.catalog import FeedRow
from hub.control.connector import ConnectorConfig, Feed
from hub.control.tables import FeedTable, add_columns_sql, create_table_sql
from hub.errors import SchemaError
from hub.kafka import TopicSpec
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


@dataclass(frozen=True)
class DesiredPartner:
    config: ConnectorConfig
    file: str
    feeds: tuple[DesiredFeed, ...]

    @property
    def id(self) -> str:
        return self.config.partner.id


def desired_feed(settings: HubSettings, partner_id: str, feed: Feed, schema: FeedSchema, file: str) -> DesiredFeed:
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
    )


def topic_spec(settings: HubSettings, f: DesiredFeed | FeedRow) -> TopicSpec:
    name = f.kafka_topic
    return TopicSpec(
        name, f.partitions, settings.kafka_replication_factor, {"retention.ms": str(settings.kafka_retention_ms)}
    )


@dataclass
class CurrentState:
    partners: dict[str, dict[str, str]] = field(default_factory=dict)
    feeds: dict[tuple[str, str], FeedRow] = field(default_factory=dict)
    history: dict[str, list[str]] = field(default_factory=dict)  # subject -> schema texts, oldest first
    tables: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    topics: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Change:
    kind: str  # partner | credentials | feed | schema | topic | table | column | acl
    action: str  # create | update
    target: str
    detail: str = ""
    sql: tuple[str, ...] = ()

    def render(self) -> str:
        sign = "+" if self.action == "create" else "~"
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
            return ["no changes: the catalog already matches these connector configs"]
        return [c.render() for c in self.changes] + [f"note: {n}" for n in self.notes]


def make_plan(desired: list[DesiredPartner], current: CurrentState, timescale: bool) -> Plan:
    plan = Plan(partners=desired, timescale=timescale)
    problems: list[str] = []
    acl_changed = False
    for partner in desired:
        p = partner.config.partner
        row = current.partners.get(p.id)
        if row is None:
            plan.changes.append(Change("partner", "create", p.id, f"{p.kind}, {p.name}"))
            plan.changes.append(Change("credentials", "create", p.id, "MQTT username and a generated password"))
            acl_changed = True
        elif (row["name"], row["kind"], row["contact"]) != (p.name, str(p.kind), p.contact):
            plan.changes.append(Change("partner", "update", p.id, "name, kind or contact"))
        for f in partner.feeds:
            problems += _plan_feed(plan, f, current)
            if (f.partner_id, f.feed.name) not in current.feeds or (
                current.feeds[(f.partner_id, f.feed.name)].mqtt_filter != f.mqtt_filter
            ):
                acl_changed = True
        configured = {f.feed.name for f in partner.feeds}
        dropped = sorted(name for (pid, name) in current.feeds if pid == p.id and name not in configured)
        if dropped:
            plan.notes.append(
                f"{p.id}: feeds {', '.join(dropped)} are no longer in {partner.file}; they are kept "
                "(removing a feed and its data is not done by apply)"
            )
    if acl_changed:
        plan.changes.append(Change("acl", "update", "mqtt", "password and ACL files rewritten, broker reloaded"))
    if problems:
        raise SchemaError("incompatible schema change, nothing was applied:\n  " + "\n  ".join(problems))
    return plan


def _plan_feed(plan: Plan, f: DesiredFeed, current: CurrentState) -> list[str]:
    key = (f.partner_id, f.feed.name)
    row = current.feeds.get(key)
    target = f"{f.partner_id}.{f.feed.name}"
    if row is None:
        plan.changes.append(Change("feed", "create", target, f"mqtt {f.mqtt_filter}, format {f.feed.format}"))
    elif row.config != f.feed.model_dump(mode="json", by_alias=True) or row.mqtt_filter != f.mqtt_filter:
        plan.changes.append(Change("feed", "update", target, "connector settings changed"))

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
        for col in f.table.columns:
            if col.name not in existing:
                plan.changes.append(
                    Change("column", "create", f"{f.table.schema}.{f.table.table}.{col.name}", col.sql_type)
                )
        sql = add_columns_sql(f.table, list(existing), plan.timescale)
        if sql:
            plan.changes.append(
                Change("table", "update", f"{f.table.schema}.{f.table.table}", "new columns", tuple(sql))
            )
    return problems
