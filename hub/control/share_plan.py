"""What `hub apply` changes for organisations and agreements: the desired sharing diffed against the database.

Pure: hub/control/share_apply.py reads the current state and carries the plan out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from hub.agreement import names, streams
from hub.agreement.grants import Org, own_clause
from hub.agreement.model import Expectation
from hub.agreement.policy import World
from hub.catalog.agreements import AgreementRow
from hub.control.plan import Change
from hub.control.share_desired import DesiredAgreement, OrgSpec, SharingDesired
from hub.control.share_sql import SHARING_VERSION, Validity, ViewSpec, view_spec


@dataclass
class SharingCurrent:
    version: str | None = None  # what the sharing bootstrap recorded (None: never run)
    roles: set[str] = field(default_factory=set)  # org_* roles
    schemas: set[str] = field(default_factory=set)  # org_* schemas and open_data
    connection_limits: dict[str, int] = field(default_factory=dict)  # role -> limit
    orgs: dict[str, OrgSpec] = field(default_factory=dict)  # hub.organisations
    agreements: dict[str, AgreementRow] = field(default_factory=dict)
    objects: dict[tuple[str, str], str | None] = field(default_factory=dict)  # shared relation -> fingerprint
    keys: set[str] = field(default_factory=set)  # agreements with a pseudonym key
    rollup_columns: dict[str, set[str]] = field(default_factory=dict)  # feed -> its rollup's columns (if it has one)


@dataclass(frozen=True)
class Expected:
    agreement: str
    file: str
    line: int | None
    expectation: Expectation
    provider: str


@dataclass
class SharingPlan:
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    bootstrap: bool = False
    orgs_upsert: list[OrgSpec] = field(default_factory=list)
    roles_create: list[OrgSpec] = field(default_factory=list)
    schemas_create: list[str] = field(default_factory=list)  # organisations whose schema is missing
    limits_change: list[OrgSpec] = field(default_factory=list)
    agreements_write: list[tuple[DesiredAgreement, str, AgreementRow | None]] = field(default_factory=list)
    withdraw: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)
    expire: list[str] = field(default_factory=list)
    views_drop: list[tuple[str, str]] = field(default_factory=list)
    views_create: list[ViewSpec] = field(default_factory=list)
    keys_delete: list[str] = field(default_factory=list)
    terminate: set[str] = field(default_factory=set)  # roles whose sessions end
    expectations: list[Expected] = field(default_factory=list)
    desired_views: dict[tuple[str, str], ViewSpec] = field(default_factory=dict)
    mqtt_consumers: list[str] = field(default_factory=list)  # organisations reading a share stream over MQTT


def desired_views(desired: SharingDesired, current: SharingCurrent, now: datetime) -> dict[tuple[str, str], ViewSpec]:
    """Every shared object that should exist: providers' views of their own feeds, and one per live clause."""
    out: dict[tuple[str, str], ViewSpec] = {}
    for feed in desired.feeds.values():
        if feed.provider in desired.orgs:
            v = view_spec(own_clause(feed), feed.provider, feed, Validity(), rollup_counts=True)
            out[(v.schema, v.name)] = v
    for aid, d in sorted(desired.agreements.items()):
        s = d.state
        if aid in desired.withdrawn or s.revoked_at is not None or s.expired(now):
            continue
        for c in s.clauses:
            feed = desired.feeds[c.feed_key]
            # weights by each field's own count where the rollup has it (a rollup made by this version does)
            columns = current.rollup_columns.get(c.feed_key)
            counts = columns is None or all(f"n_{f}" in columns for f in c.fields)
            for org in s.grantees():
                v = view_spec(c, org, feed, Validity(s.valid_from, s.valid_until), rollup_counts=counts)
                out[(v.schema, v.name)] = v
    return out


def make_sharing_plan(desired: SharingDesired, current: SharingCurrent, now: datetime) -> SharingPlan:
    plan = SharingPlan(notes=list(desired.notes))
    if current.version != SHARING_VERSION:
        plan.bootstrap = True
        plan.changes.append(
            Change(
                "sharing", "create", "database", "owner role hub_share_owner, hub_private (pseudonym keys), open_data"
            )
        )
    for org in desired.read_orgs:
        old = current.orgs.get(org.id)
        if old != org:
            plan.orgs_upsert.append(org)
            detail = f"{org.kind}, {org.name}" if old is None else "name, kind, contact or connection limit"
            plan.changes.append(Change("organisation", "create" if old is None else "update", org.id, detail))
    all_roles = set(current.roles)
    for org in sorted(desired.orgs.values(), key=lambda o: o.id):
        role = names.org_role(org.id)
        if role not in current.roles:
            plan.roles_create.append(org)
            all_roles.add(role)
            plan.changes.append(Change("db-role", "create", role, "login; password generated, shown once"))
            continue
        if names.org_schema(org.id) not in current.schemas:
            plan.schemas_create.append(org.id)
            plan.changes.append(Change("db-schema", "create", names.org_schema(org.id), "was missing"))
        if not org.partner and current.connection_limits.get(role) not in (None, org.connection_limit):
            plan.limits_change.append(org)
            plan.changes.append(Change("db-role", "update", role, f"connection limit {org.connection_limit}"))

    for aid, d in sorted(desired.agreements.items()):
        row = current.agreements.get(aid)
        if aid in desired.withdrawn:
            reason = f"no longer in {desired.withdrawn[aid]}"
            plan.withdraw.append((aid, reason))
            plan.changes.append(Change("agreement", "drop", aid, f"withdrawn: {reason}"))
            continue
        if d.read and (row is None or row.spec != d.spec or row.source != d.source or row.line != d.line):
            action = "created" if row is None else "changed"
            plan.agreements_write.append((d, action, row))
            if row is None or row.spec != d.spec:
                plan.changes.append(Change("agreement", "create" if row is None else "update", aid, _summary(d)))
        if row is not None and row.status == "active" and d.state.expired(now) and not row.expiry_recorded:
            plan.expire.append(aid)
            plan.changes.append(Change("agreement", "drop", aid, f"expired on {d.state.valid_until:%Y-%m-%d %H:%M}Z"))
        if d.state.in_force(now):
            for e in d.agreement.expect:
                plan.expectations.append(Expected(aid, d.source, d.line, e, d.state.provider))

    wanted = desired_views(desired, current, now)
    plan.desired_views = wanted
    for key, fingerprint in sorted(current.objects.items()):
        if key not in wanted:
            plan.views_drop.append(key)
            plan.changes.append(Change("view", "drop", f"{key[0]}.{key[1]}", "no agreement grants it any more"))
        elif wanted[key].fingerprint != fingerprint:
            plan.views_drop.append(key)
            plan.views_create.append(wanted[key])
            plan.changes.append(Change("view", "update", wanted[key].object, _view_detail(wanted[key])))
    for key, v in sorted(wanted.items()):
        if key not in current.objects:
            plan.views_create.append(v)
            plan.changes.append(Change("view", "create", v.object, _view_detail(v)))
    for schema, _name in plan.views_drop:
        if schema == names.OPEN_SCHEMA:
            plan.terminate |= {r for r in all_roles}
        else:
            plan.terminate.add(schema)  # an organisation's schema is named like its role
    live_keys = {v.pseudonym_key for v in wanted.values() if v.pseudonym_key}
    plan.keys_delete = sorted(current.keys - live_keys)
    plan.mqtt_consumers = streams.mqtt_consumers(streams.active(stream_world(desired), now))
    return plan


def stream_world(desired: SharingDesired) -> World:
    """The world once this run is applied, for the policy's answer on which share streams run."""
    orgs = {o.id: Org(o.id, o.name, o.kind, o.partner) for o in desired.orgs.values()}
    agreements = tuple(d.state for aid, d in desired.agreements.items() if aid not in desired.withdrawn)
    return World(orgs, desired.feeds, agreements)


def _summary(d: DesiredAgreement) -> str:
    s = d.state
    to = "everyone" if s.consumers is None else ", ".join(s.consumers)
    grants = ", ".join(f"{c.feed} {c.form}" for c in s.clauses)
    return f"{s.provider} -> {to}: {grants}"


def _view_detail(v: ViewSpec) -> str:
    return f"agreement {v.agreement}" if v.agreement else "the provider's own feed"
