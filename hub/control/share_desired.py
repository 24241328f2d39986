"""The organisations and agreements `hub apply` should leave in force, read from files and cross-checked.

Pure: the files are loaded (hub/agreement/loader.py) and the catalog read (hub/control/share_apply.py)
before this runs. Every refusal names the file, line and key; nothing is applied when one is raised.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from hub.agreement import names
from hub.agreement.grants import AgreementState, FeedInfo, human, resolve
from hub.agreement.loader import LoadedAgreement, LoadedOrganisation
from hub.agreement.model import Agreement, Form
from hub.agreement.patterns import glob_match, is_pattern
from hub.catalog.agreements import AgreementRow
from hub.control.sources import Sources
from hub.errors import ConfigError


@dataclass(frozen=True)
class OrgSpec:
    id: str
    name: str
    kind: str
    contact: str
    file: str
    partner: bool
    connection_limit: int = 10


@dataclass(frozen=True)
class DesiredAgreement:
    state: AgreementState
    spec: dict[str, Any]  # the agreement as written (Agreement, as JSON): what the catalog stores
    source: str
    line: int | None
    clause_lines: tuple[int, ...]
    read: bool  # read from a file in this run (else: as the catalog has it)

    @property
    def agreement(self) -> Agreement:
        return Agreement.model_validate(self.spec)


@dataclass
class SharingDesired:
    orgs: dict[str, OrgSpec]  # every organisation, partners included
    read_orgs: list[OrgSpec]  # organisations read from files in this run
    agreements: dict[str, DesiredAgreement]  # every agreement once this run is applied
    withdrawn: dict[str, str]  # id -> the file it is no longer in
    feeds: Mapping[str, FeedInfo]
    notes: list[str] = field(default_factory=list)


def desired_sharing(
    org_files: list[LoadedOrganisation],
    agreement_files: list[LoadedAgreement],
    sources: Sources,
    partners: Mapping[str, OrgSpec],
    feeds: Mapping[str, FeedInfo],
    catalog_orgs: Mapping[str, OrgSpec],
    catalog_agreements: Mapping[str, AgreementRow],
    devices: Mapping[str, set[str]],
    now: datetime,
) -> SharingDesired:
    orgs = dict(partners)
    read_orgs: list[OrgSpec] = []
    seen_org_files: dict[str, str] = {}
    for org_file in org_files:
        o = org_file.organisation
        if o.id in partners:
            raise org_file.where.error(
                f"{o.id} is a partner ({partners[o.id].file}): partners are organisations already",
                "organisation", "id",
            )  # fmt: skip
        if o.id in seen_org_files:
            raise org_file.where.error(
                f"organisation {o.id!r} is also defined in {seen_org_files[o.id]}", "organisation", "id"
            )
        seen_org_files[o.id] = org_file.where.file
        spec = OrgSpec(o.id, o.name, str(o.kind), o.contact, org_file.where.file, False, o.connection_limit)
        read_orgs.append(spec)
    for oid, spec in catalog_orgs.items():
        orgs.setdefault(oid, spec)
    orgs.update({o.id: o for o in read_orgs})

    out = SharingDesired(orgs, read_orgs, {}, {}, feeds)
    read_ids: dict[str, LoadedAgreement] = {}
    for loaded in agreement_files:
        a = loaded.agreement
        if a.id in read_ids:
            other = read_ids[a.id]
            raise loaded.error(f"agreement id {a.id!r} is also used in {other.file}:{other.line()}", "id")
        row = catalog_agreements.get(a.id)
        if (
            row is not None
            and not sources.covers(row.source)
            and Path(row.source).resolve() != Path(loaded.file).resolve()
        ):
            raise loaded.error(f"agreement id {a.id!r} is already applied from {row.source}: choose another id", "id")
        read_ids[a.id] = loaded
        _check_agreement(loaded, orgs, feeds, devices, out.notes)
        written = a.model_dump(mode="json")
        changed = row is None or row.spec != written
        if row is not None and row.status == "revoked":
            if changed:
                raise loaded.error(
                    f"agreement {a.id} was revoked on {row.revoked_at:%Y-%m-%d %H:%M}Z ({row.revoked_reason}): "
                    "it stays revoked; give new terms a new id",
                    "id",
                )
            out.notes.append(f"agreement {a.id} stays revoked ({row.revoked_reason}); {loaded.file} still lists it")
        if changed and a.valid_until is not None and a.valid_until <= now:
            raise loaded.error(
                f"valid_until {a.valid_until:%Y-%m-%d %H:%M}Z is in the past (now {now:%Y-%m-%d %H:%M}Z): "
                "this agreement would never be in force",
                "valid_until",
            )
        lines = tuple(loaded.line("grants", i) or 0 for i in range(len(a.grants)))
        state = resolve(
            a, feeds, file=loaded.file, line=loaded.line(), clause_lines=lines, revoked=row.revoked if row else None
        )
        source = str(Path(loaded.file).resolve())  # the catalog keeps where from, whatever the directory
        out.agreements[a.id] = DesiredAgreement(state, written, source, loaded.line(), lines, True)

    for aid, row in catalog_agreements.items():
        if aid in out.agreements:
            continue
        if sources.covers(row.source) and row.status == "active":
            out.withdrawn[aid] = row.source
        agreement = Agreement.model_validate(row.spec)
        if any(f"{agreement.provider}.{g.feed}" not in feeds for g in agreement.grants):
            continue
        state = resolve(
            agreement, feeds, file=row.source, line=row.line, clause_lines=row.clause_lines, revoked=row.revoked
        )
        out.agreements[aid] = DesiredAgreement(state, row.spec, row.source, row.line, row.clause_lines, False)
    _check_one_object_per_name(out, read_ids, now)
    return out


def _check_agreement(
    loaded: LoadedAgreement,
    orgs: Mapping[str, OrgSpec],
    feeds: Mapping[str, FeedInfo],
    devices: Mapping[str, set[str]],
    notes: list[str],
) -> None:
    a = loaded.agreement
    provider = orgs.get(a.provider)
    if provider is None or not provider.partner:
        partners = ", ".join(sorted(o for o, s in orgs.items() if s.partner)) or "none applied yet"
        what = "is an organisation that publishes no feed" if provider else "is not a partner"
        raise loaded.error(f"unknown provider {a.provider!r}: it {what} (partners: {partners})", "provider")
    if isinstance(a.consumers, list):
        for i, org in enumerate(a.consumers):
            if org not in orgs:
                known = ", ".join(sorted(orgs)) or "none"
                raise loaded.error(f"unknown organisation {org!r} (organisations: {known})", "consumers", i)
            if names.too_long(org, a.provider, "x") or any(names.too_long(org, a.provider, g.feed) for g in a.grants):
                raise loaded.error(
                    f"the names of {org}'s objects would exceed 63 bytes: use shorter ids", "consumers", i
                )
    for i, g in enumerate(a.grants):
        feed = _feed(loaded, a.provider, g.feed, feeds, ("grants", i, "feed"))
        for j, name in enumerate(g.fields or ()):
            if name not in feed.fields:
                raise loaded.error(
                    f"{feed.key} has no field {name!r}; its fields are {', '.join(feed.fields)}",
                    "grants",
                    i,
                    "fields",
                    j,
                )
            if g.form == Form.aggregate and name not in feed.numeric:
                numeric = ", ".join(f for f in feed.fields if f in feed.numeric) or "none"
                raise loaded.error(
                    f"field {name!r} is not numeric: aggregates carry numeric fields only ({numeric})",
                    "grants", i, "fields", j,
                )  # fmt: skip
        if g.form == Form.aggregate and g.bucket is not None:
            rollup = feed.rollup.total_seconds()
            if g.bucket.total_seconds() % rollup:
                raise loaded.error(
                    f"bucket {human(g.bucket)} is not a whole number of {feed.key}'s rollup buckets "
                    f"({human(feed.rollup)}): aggregates are made from them",
                    "grants", i, "bucket",
                )  # fmt: skip
        on_record = devices.get(feed.key, set())
        if g.devices and not on_record:
            notes.append(f"{loaded.file}: devices of {feed.key} not checked: no device of it is on record yet")
        for j, device in enumerate((g.devices or []) if on_record else []):
            hit = any(glob_match(device, d) for d in on_record) if is_pattern(device) else device in on_record
            if not hit:
                sample = ", ".join(sorted(on_record)[:3])
                what = "pattern matches no device" if is_pattern(device) else "unknown device"
                raise loaded.error(
                    f"{what} {device!r}: {feed.key} has {len(on_record)} devices on record (e.g. {sample})",
                    "grants", i, "devices", j,
                )  # fmt: skip
    for i, e in enumerate(a.expect):
        if e.org not in orgs:
            raise loaded.error(f"unknown organisation {e.org!r}", "expect", i, "org")
        feed = _feed(loaded, a.provider, e.feed, feeds, ("expect", i, "feed"))
        for j, name in enumerate(e.without):
            if name not in feed.fields:
                raise loaded.error(f"{feed.key} has no field {name!r}", "expect", i, "without", j)


def _feed(
    loaded: LoadedAgreement, provider: str, name: str, feeds: Mapping[str, FeedInfo], loc: tuple[str | int, ...]
) -> FeedInfo:
    feed = feeds.get(f"{provider}.{name}")
    if feed is not None:
        return feed
    owners = sorted(f.provider for f in feeds.values() if f.name == name)
    if owners:
        raise loaded.error(
            f"feed {name!r} belongs to {', '.join(owners)}, not {provider}: an agreement grants only its "
            "provider's feeds",
            *loc,
        )
    own = ", ".join(sorted(f.name for f in feeds.values() if f.provider == provider)) or "none"
    raise loaded.error(f"unknown feed {name!r}: {provider} publishes {own}", *loc)


def _check_one_object_per_name(out: SharingDesired, read: Mapping[str, LoadedAgreement], now: datetime) -> None:
    """One live agreement per (organisation, feed, form): the object's name is made of those three."""
    taken: dict[str, str] = {}
    for aid in sorted(out.agreements, key=lambda k: (k not in read, k)):
        d = out.agreements[aid]
        if aid in out.withdrawn or d.state.revoked_at is not None or d.state.expired(now):
            continue
        for c in d.state.clauses:
            for org in d.state.grantees():
                obj = c.object(org)
                if obj in taken:
                    loaded = read.get(aid)
                    message = (
                        f"{'everyone' if org is None else org} already gets {c.feed_key} in form {c.form} from "
                        f"agreement {taken[obj]}: one agreement per organisation, feed and form"
                    )
                    if loaded is None:
                        raise ConfigError(message, file=d.source, line=d.line)
                    raise loaded.error(message, "grants", c.index, "feed")
                taken[obj] = aid
