"""The one policy decision: may ORG read FEED at TIME, in what form, by which clause, or, rule by rule, why not.

Pure: the world (organisations, feeds, agreements) is passed in. `hub explain` and `hub access` call it
over the applied catalog, and so can every other reader that enforces agreements (live share streams,
dashboards, pages): what they allow must be what this function says. The SQL objects `hub apply` makes
enforce the same limits in the database; tests hold the two to each other.

Contract (also the JSON of `hub explain --json`): a `Decision` has `allowed`, `form` (`raw` when any
clause grants raw rows, else `aggregate`; None when refused), `object` (the SQL object of that form),
`grants` (what each granting clause allows, each naming its `object`), and `rules` (every rule checked,
in order, each with `ok` and a sentence saying why).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hub.agreement import names
from hub.agreement.grants import AgreementState, Clause, FeedInfo, Org, human, own_clause
from hub.agreement.model import Form


@dataclass(frozen=True)
class World:
    orgs: Mapping[str, Org]
    feeds: Mapping[str, FeedInfo]  # by provider.feed
    agreements: tuple[AgreementState, ...]


@dataclass(frozen=True)
class Question:
    org: str
    feed: str  # provider.feed, or a feed name only one provider uses
    at: datetime
    form: Form | None = None  # a form the asker needs (None: any)
    fields: tuple[str, ...] = ()  # fields the asker needs


@dataclass(frozen=True)
class Rule:
    rule: str
    ok: bool
    detail: str
    agreement: str | None = None
    clause: int | None = None
    object: str | None = None
    file: str | None = None
    line: int | None = None


@dataclass(frozen=True)
class Access:
    """What one clause lets one organisation read."""

    feed: str
    clause: Clause
    object: str
    agreement: AgreementState | None  # None: the organisation publishes the feed
    grantee: str | None = None  # the organisation the clause names (None: everyone, or the provider itself)

    @property
    def kafka_topic(self) -> str | None:
        """The live share stream on Kafka, where the agreement asks for one (hub/share/)."""
        a, c = self.agreement, self.clause
        if a is None or "kafka" not in a.delivery:
            return None
        return names.share_topic(self.grantee, c.provider, c.feed, c.aggregate)

    @property
    def mqtt_topic(self) -> str | None:
        """The live share stream over MQTT (a topic filter), where the agreement asks for one."""
        a, c = self.agreement, self.clause
        if a is None or "mqtt" not in a.delivery:
            return None
        prefix = names.share_mqtt_prefix(self.grantee, c.provider, c.feed, c.aggregate)
        return prefix if c.aggregate else prefix + "/+"

    def to_json(self) -> dict[str, Any]:
        c, a = self.clause, self.agreement
        return {
            "feed": self.feed,
            "form": str(c.form),
            "object": self.object,
            "agreement": a.id if a else None,
            "clause": f"grants[{c.index}]" if a else "owner",
            "fields": list(c.fields),
            "devices": list(c.devices),
            "device_patterns": list(c.patterns),
            "pseudonymised": c.pseudonymise,
            "delay": human(c.delay),
            "bucket": human(c.bucket) if c.bucket else None,
            "min_devices": c.min_devices if c.aggregate else None,
            "valid_from": _iso(a.valid_from) if a else None,
            "valid_until": _iso(a.valid_until) if a else None,
            "purpose": a.purpose if a else "the provider's own data",
            "licence": a.licence if a else None,
            "delivery": list(a.delivery) if a else ["sql"],
            "kafka_topic": self.kafka_topic,
            "mqtt_topic": self.mqtt_topic,
            "file": a.file if a else None,
            "line": c.line if a else None,
        }


@dataclass(frozen=True)
class Decision:
    question: Question
    allowed: bool
    form: Form | None
    grants: tuple[Access, ...] = ()
    rules: tuple[Rule, ...] = field(default_factory=tuple)

    @property
    def object(self) -> str | None:
        return next((g.object for g in self.grants if g.clause.form == self.form), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "org": self.question.org,
            "feed": self.question.feed,
            "at": _iso(self.question.at),
            "allowed": self.allowed,
            "form": str(self.form) if self.form else None,
            "object": self.object,
            "grants": [g.to_json() for g in self.grants],
            "rules": [{k: v for k, v in r.__dict__.items() if v is not None or k in ("ok",)} for r in self.rules],
        }


def _iso(t: datetime | None) -> str | None:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z") if t else None


def find_feed(world: World, name: str) -> FeedInfo | None:
    if name in world.feeds:
        return world.feeds[name]
    if "." not in name:
        found = [f for f in world.feeds.values() if f.name == name]
        return found[0] if len(found) == 1 else None
    return None


def describe(c: Clause) -> str:
    """A clause's limits in words: 'raw rows of pm25, pm10 from devices air-001*, 15m late, pseudonymised'."""
    what = (
        f"aggregates in {human(c.bucket or timedelta(0))} buckets of at least {c.min_devices} device"
        f"{'s' if c.min_devices != 1 else ''} ({', '.join(c.fields) or 'sample counts only'})"
        if c.aggregate
        else f"raw rows of {', '.join(c.fields) or 'device and time only'}"
    )
    if c.devices or c.patterns:
        what += f" from devices {', '.join((*c.devices, *c.patterns))}"
    if c.delay:
        what += f", {human(c.delay)} late"
    if c.pseudonymise:
        what += ", device ids pseudonymised"
    return what


def decide(q: Question, world: World) -> Decision:
    rules: list[Rule] = []
    org = world.orgs.get(q.org)
    feed = find_feed(world, q.feed)
    if org is None:
        known = ", ".join(sorted(world.orgs)) or "none applied yet"
        rules.append(Rule("organisation", False, f"unknown organisation {q.org!r} (organisations: {known})"))
    else:
        rules.append(Rule("organisation", True, f"{org.id} is {'a partner' if org.partner else 'an organisation'}"))
    if feed is None:
        known = ", ".join(sorted(world.feeds)) or "none applied yet"
        rules.append(Rule("feed", False, f"unknown feed {q.feed!r} (feeds: {known})"))
    else:
        rules.append(Rule("feed", True, f"{feed.key} is published by {feed.provider}"))
        unknown = [f for f in q.fields if f not in feed.fields]
        if unknown:
            rules.append(Rule("fields", False, f"{feed.key} has no field {', '.join(unknown)}"))
            feed = None
    if org is None or feed is None:
        return Decision(q, False, None, (), tuple(rules))

    grants: list[Access] = []
    if feed.provider == org.id:
        clause = own_clause(feed)
        access = Access(feed.key, clause, clause.object(org.id), None)
        ok, why = _fits(q, clause)
        rules.append(
            Rule("owner", ok, f"{org.id} publishes {feed.key}" + (f", {why}" if why else ""), object=access.object)
        )
        if ok:
            grants.append(access)
    mentioned = False
    for a in world.agreements:
        for c in a.clauses:
            if c.feed_key != feed.key:
                continue
            mentioned = True
            ok, detail = _clause_rule(q, a, c)
            grantee = None if a.consumers is None else (org.id if a.names_org(org.id) else None)
            obj = c.object(grantee) if a.names_org(org.id) else None
            rules.append(Rule(f"agreement {a.id}", ok, detail, a.id, c.index, obj, a.file or None, c.line))
            if ok and obj is not None:
                grants.append(Access(feed.key, c, obj, a, grantee))
    if not mentioned and feed.provider != org.id:
        rules.append(Rule("agreements", False, f"no agreement grants {feed.key} to anyone"))
    forms = {g.clause.form for g in grants}
    form = Form.raw if Form.raw in forms else (Form.aggregate if forms else None)
    grants.sort(key=lambda g: (g.clause.form != Form.raw, g.object))
    return Decision(q, bool(grants), form, tuple(grants), tuple(rules))


def _clause_rule(q: Question, a: AgreementState, c: Clause) -> tuple[bool, str]:
    where = f"grants[{c.index}] ({describe(c)})"
    if not a.names_org(q.org):
        return False, f"{where} is for {', '.join(a.consumers or ())}, not {q.org}"
    if a.revoked_at is not None:
        return False, f"revoked on {_iso(a.revoked_at)} by {a.revoked_by}: {a.revoked_reason}"
    if a.valid_from is not None and q.at < a.valid_from:
        return False, f"not yet in force: valid from {_iso(a.valid_from)}"
    if a.valid_until is not None and q.at >= a.valid_until:
        return False, f"expired on {_iso(a.valid_until)}"
    ok, why = _fits(q, c)
    if not ok:
        return False, f"{where}: {why}"
    to = "everyone (open data)" if a.consumers is None else q.org
    return True, f"grants {describe(c)} to {to}, for {a.purpose!r} under {a.licence}"


def _fits(q: Question, c: Clause) -> tuple[bool, str]:
    """Whether a clause in force gives what the question needs (a form, fields)."""
    if q.form == Form.raw and c.aggregate:
        bucket = human(c.bucket or timedelta(0))
        return False, f"aggregates only (buckets of {bucket}, at least {c.min_devices} devices)"
    if q.form == Form.aggregate and not c.aggregate:
        return False, "raw rows, not aggregates"
    missing = [f for f in q.fields if f not in c.fields]
    if missing:
        kind = "not granted" if not c.aggregate else "not granted as an aggregate (numeric fields only)"
        return False, f"field {', '.join(missing)} {kind} (granted: {', '.join(c.fields) or 'none'})"
    return True, ""


def readable(world: World, org: str, at: datetime) -> list[Access]:
    """Everything `org` can read at `at`: one entry per granting clause, raw before aggregates."""
    out: list[Access] = []
    for key in sorted(world.feeds):
        out += decide(Question(org, key, at), world).grants
    return out
