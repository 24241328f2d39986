"""Agreements as the hub applies and decides them: plain data, resolved against the feeds they grant.

A file's `Agreement` (model.py) says what its author wrote; a `Clause` is one grant with every default
filled in (the fields, the bucket) and its devices split into ids and patterns; an `AgreementState` is an
agreement with its clauses, where it came from and whether it was revoked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from hub.agreement import names
from hub.agreement.model import Agreement, Form
from hub.agreement.patterns import glob_match, is_pattern


@dataclass(frozen=True)
class FeedInfo:
    """A feed as agreements see it: who publishes it, its fields, which are numeric, its rollup bucket."""

    provider: str
    name: str
    fields: tuple[str, ...]  # the schema's fields other than device_id and time, in schema order
    numeric: frozenset[str]
    rollup: timedelta

    @property
    def key(self) -> str:
        return f"{self.provider}.{self.name}"


@dataclass(frozen=True)
class Org:
    id: str
    name: str
    kind: str
    partner: bool  # publishes feeds (a partner of connectors/) or only reads

    @property
    def role(self) -> str:
        return names.org_role(self.id)


@dataclass(frozen=True)
class Clause:
    """One grant of one feed, resolved: `agreement` None is a provider reading its own feed."""

    agreement: str | None
    index: int
    provider: str
    feed: str
    form: Form
    fields: tuple[str, ...]
    devices: tuple[str, ...] = ()  # exact ids
    patterns: tuple[str, ...] = ()  # `*` patterns; no ids and no patterns: every device
    pseudonymise: bool = False
    delay: timedelta = timedelta(0)
    bucket: timedelta | None = None  # aggregate only
    min_devices: int = 1  # aggregate only
    line: int | None = None

    @property
    def feed_key(self) -> str:
        return f"{self.provider}.{self.feed}"

    @property
    def aggregate(self) -> bool:
        return self.form == Form.aggregate

    def object(self, org: str | None) -> str:
        return names.object_name(org, self.provider, self.feed, self.aggregate)

    def device_allowed(self, device_id: str) -> bool:
        if not self.devices and not self.patterns:
            return True
        return device_id in self.devices or any(glob_match(p, device_id) for p in self.patterns)


@dataclass(frozen=True)
class AgreementState:
    id: str
    provider: str
    consumers: tuple[str, ...] | None  # None: everyone
    purpose: str
    licence: str
    valid_from: datetime | None
    valid_until: datetime | None
    delivery: tuple[str, ...]
    clauses: tuple[Clause, ...]
    file: str = ""
    line: int | None = None
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    revoked_reason: str | None = None

    def names_org(self, org: str) -> bool:
        return self.consumers is None or org in self.consumers

    def grantees(self) -> tuple[str | None, ...]:
        """The schemas' owners its objects are made for: each consumer, or None (open data) once."""
        return (None,) if self.consumers is None else self.consumers

    def in_force(self, at: datetime) -> bool:
        return (
            self.revoked_at is None
            and (self.valid_from is None or at >= self.valid_from)
            and (self.valid_until is None or at < self.valid_until)
        )

    def expired(self, at: datetime) -> bool:
        return self.valid_until is not None and at >= self.valid_until


def resolve(
    agreement: Agreement,
    feeds: Mapping[str, FeedInfo],
    *,
    file: str = "",
    line: int | None = None,
    clause_lines: tuple[int | None, ...] = (),
    revoked: tuple[datetime, str, str] | None = None,
) -> AgreementState:
    """An agreement resolved against its feeds (which must exist: the validator checked them)."""
    clauses = []
    for i, g in enumerate(agreement.grants):
        feed = feeds[f"{agreement.provider}.{g.feed}"]
        fields = tuple(g.fields) if g.fields is not None else feed.fields
        if g.form == Form.aggregate:
            fields = tuple(f for f in fields if f in feed.numeric)
        devices = tuple(g.devices or ())
        clauses.append(
            Clause(
                agreement=agreement.id,
                index=i,
                provider=agreement.provider,
                feed=g.feed,
                form=g.form,
                fields=fields,
                devices=tuple(d for d in devices if not is_pattern(d)),
                patterns=tuple(d for d in devices if is_pattern(d)),
                pseudonymise=g.pseudonymise,
                delay=g.delay,
                bucket=(g.bucket or feed.rollup) if g.form == Form.aggregate else None,
                min_devices=(g.min_devices or 1) if g.form == Form.aggregate else 1,
                line=clause_lines[i] if i < len(clause_lines) else None,
            )
        )
    return AgreementState(
        id=agreement.id,
        provider=agreement.provider,
        consumers=None if agreement.everyone else tuple(agreement.consumers),
        purpose=agreement.purpose,
        licence=agreement.licence,
        valid_from=agreement.valid_from,
        valid_until=agreement.valid_until,
        delivery=tuple(str(d) for d in agreement.delivery),
        clauses=tuple(clauses),
        file=file,
        line=line,
        revoked_at=revoked[0] if revoked else None,
        revoked_by=revoked[1] if revoked else None,
        revoked_reason=revoked[2] if revoked else None,
    )


def own_clause(feed: FeedInfo) -> Clause:
    """A provider reads its own feed: raw, every field, every device, at once."""
    return Clause(agreement=None, index=0, provider=feed.provider, feed=feed.name, form=Form.raw, fields=feed.fields)


def human(td: timedelta) -> str:
    """'15m', '1h', '2d', '90s': the way agreements write durations."""
    s = int(td.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if s and s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"
