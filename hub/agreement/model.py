"""The files an organisation or a provider writes: `organisations/<id>.yaml` and `agreements/*.yaml`.

Their reference, with an example of every limit, is docs/agreements.md. Unknown keys are errors, so
a typo names its key and line instead of silently widening or narrowing a grant.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, PlainSerializer, field_validator, model_validator

from hub.connector.feed_spec import parse_duration
from hub.connector.model import Duration, LocatedError, PartnerKind, Strict
from hub.errors import IdentifierError
from hub.identifiers import check_identifier

EVERYONE = "everyone"
KEY_FIELDS = ("device_id", "time")
# A device id as devices send it (any printable text); `*` in an agreement means "any run of characters".
_DEVICE = re.compile(r"^[^\x00-\x1f\x7f]{1,200}$")


def _identifier(value: str, what: str) -> str:
    try:
        return check_identifier(value, what)
    except IdentifierError as exc:
        raise ValueError(str(exc)) from None


def _instant(value: object) -> object:
    """A date means midnight UTC; a date-time must say its zone (an agreement ends at one instant everywhere)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{value.isoformat()} has no time zone: add one, e.g. {value.isoformat()}Z")
        return value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"{value!r} is not a date or date-time: write e.g. 2027-01-31 or 2027-01-31T12:00Z"
            ) from None
        return _instant(parsed if "T" in value or " " in value else parsed.date())
    raise ValueError(f"{value!r} is not a date or date-time: write e.g. 2027-01-31 or 2027-01-31T12:00Z")


Instant = Annotated[
    datetime,
    BeforeValidator(_instant),
    PlainSerializer(lambda t: t.isoformat().replace("+00:00", "Z"), return_type=str, when_used="json"),
]


def _duration(value: object) -> object:
    return parse_duration(value) if isinstance(value, str | int) else value


DurationIn = Annotated[Duration, BeforeValidator(_duration)]


class Organisation(Strict):
    """An organisation that reads data without publishing any (partners are organisations too)."""

    id: str = Field(description="Short name: its database role is org_<id>.")
    name: str = Field(min_length=1, max_length=200)
    kind: PartnerKind
    contact: str = Field(min_length=3, max_length=200)
    connection_limit: int = Field(default=10, ge=1, le=200, description="Database sessions it may hold at once.")

    @field_validator("id")
    @classmethod
    def _safe_id(cls, v: str) -> str:
        return _identifier(v, "organisation id")


class OrganisationFile(Strict):
    organisation: Organisation


class Form(StrEnum):
    raw = "raw"  # rows as landed (with the grant's fields, devices, delay)
    aggregate = "aggregate"  # only averages, minima, maxima per time bucket over several devices


class Delivery(StrEnum):
    sql = "sql"  # a view in the organisation's schema: always
    kafka = "kafka"  # a projected Kafka topic (built by the share streams, a later issue)
    mqtt = "mqtt"  # a projected MQTT topic (likewise)


class Grant(Strict):
    """One feed of the provider, granted with limits."""

    feed: str = Field(description="A feed of the provider, by name.")
    form: Form = Form.raw
    fields: list[str] | None = Field(default=None, description="Only these fields (default: every field).")
    devices: list[str] | None = Field(default=None, description="Only these device ids or `*` patterns.")
    pseudonymise: bool = Field(default=False, description="Device ids replaced by a keyed hash per agreement.")
    delay: DurationIn = timedelta(0)
    bucket: DurationIn | None = Field(default=None, description="aggregate: bucket length (default: the rollup's).")
    min_devices: int | None = Field(default=None, ge=1, le=10_000, description="aggregate: k, fewer is suppressed.")

    @field_validator("feed")
    @classmethod
    def _safe_feed(cls, v: str) -> str:
        return _identifier(v, "feed name")

    @field_validator("fields")
    @classmethod
    def _fields(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("fields is empty: list at least one field, or leave the key out to grant every field")
        for i, name in enumerate(v):
            if name in KEY_FIELDS:
                raise LocatedError(
                    f"{name!r} is always included (pseudonymised when pseudonymise is on): list only the other fields",
                    (i,),
                )
            if v.index(name) != i:
                raise LocatedError(f"field {name!r} is listed twice", (i,))
        return v

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("devices is empty: that would grant no device; leave the key out to grant every device")
        for i, device in enumerate(v):
            if not isinstance(device, str) or not _DEVICE.fullmatch(device):
                raise LocatedError(f"{device!r} is not a device id or pattern (1-200 printable characters)", (i,))
            if v.index(device) != i:
                raise LocatedError(f"device {device!r} is listed twice", (i,))
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Grant:
        if self.form == Form.aggregate:
            if self.pseudonymise:
                raise LocatedError(
                    "pseudonymise applies to raw rows: aggregates carry no device ids at all", ("pseudonymise",)
                )
        else:
            for key in ("bucket", "min_devices"):
                if getattr(self, key) is not None:
                    raise LocatedError(f"{key} is for form: aggregate (this grant's form is raw)", (key,))
        if self.bucket is not None and self.bucket <= timedelta(0):
            raise LocatedError("bucket must be longer than zero", ("bucket",))
        if self.delay < timedelta(0):
            raise LocatedError("delay cannot be negative", ("delay",))
        return self


class Expectation(Strict):
    """A provider's statement about what an organisation can read, checked against the database by `hub apply`."""

    org: str
    feed: str = Field(description="A feed of this agreement's provider.")
    sees: Form | None = Field(default=None, description="The organisation can read this form.")
    never: Literal["raw", "aggregate", "anything"] | None = Field(default=None, description="...and never this.")
    within: DurationIn | None = Field(default=None, description="sees: rows at most this late.")
    without: list[str] = Field(default_factory=list, description="Fields it can never read.")
    pseudonymised: bool | None = Field(default=None, description="sees raw: device ids are pseudonyms (or not).")
    says: str | None = Field(default=None, max_length=300, description="The expectation in words, for messages.")

    @field_validator("org")
    @classmethod
    def _safe_org(cls, v: str) -> str:
        return _identifier(v, "organisation id")

    @field_validator("feed")
    @classmethod
    def _safe_feed(cls, v: str) -> str:
        return _identifier(v, "feed name")

    @model_validator(mode="after")
    def _one_claim(self) -> Expectation:
        if (self.sees is None) == (self.never is None):
            raise ValueError("an expectation says either `sees: raw|aggregate` or `never: raw|aggregate|anything`")
        if self.sees is None:
            for key in ("within", "pseudonymised"):
                if getattr(self, key) is not None:
                    raise LocatedError(f"{key} goes with `sees:`, not with `never:`", (key,))
        return self


class Agreement(Strict):
    """A provider grants some of its feeds to some organisations, or to everyone, with limits."""

    id: str = Field(description="Unique across the hub; names its SQL objects' comments and its audit trail.")
    provider: str = Field(description="The partner that publishes the feeds and grants them.")
    consumers: list[str] | Literal["everyone"] = Field(description="Organisation ids, or `everyone` (open data).")
    purpose: str = Field(min_length=1, max_length=500)
    licence: str = Field(min_length=1, max_length=100)
    valid_from: Instant | None = None
    valid_until: Instant | None = None
    delivery: list[Delivery] = Field(default_factory=lambda: [Delivery.sql])
    grants: list[Grant] = Field(min_length=1)
    expect: list[Expectation] = Field(default_factory=list)

    @field_validator("id")
    @classmethod
    def _safe_id(cls, v: str) -> str:
        return _identifier(v, "agreement id")

    @field_validator("provider")
    @classmethod
    def _safe_provider(cls, v: str) -> str:
        return _identifier(v, "provider (partner id)")

    @field_validator("consumers")
    @classmethod
    def _consumers(cls, v: list[str] | str) -> list[str] | str:
        if isinstance(v, str):
            return v
        if not v:
            raise ValueError("consumers is empty: name at least one organisation, or write `everyone` for open data")
        for i, org in enumerate(v):
            if org == EVERYONE:
                raise LocatedError("`everyone` stands alone: write `consumers: everyone`", (i,))
            try:
                check_identifier(org, "organisation id")
            except IdentifierError as exc:
                raise LocatedError(str(exc), (i,)) from None
            if v.index(org) != i:
                raise LocatedError(f"organisation {org!r} is listed twice", (i,))
        return v

    @field_validator("delivery")
    @classmethod
    def _sql_always(cls, v: list[Delivery]) -> list[Delivery]:
        if Delivery.sql not in v:
            raise ValueError("sql is always delivered: list it, with kafka or mqtt in addition if wanted")
        if len(set(v)) != len(v):
            raise ValueError("a delivery is listed twice")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Agreement:
        if self.valid_from and self.valid_until and self.valid_until <= self.valid_from:
            raise LocatedError(
                f"valid_until ({self.valid_until:%Y-%m-%d %H:%M}Z) is not after valid_from "
                f"({self.valid_from:%Y-%m-%d %H:%M}Z): the agreement would never be in force",
                ("valid_until",),
            )
        if isinstance(self.consumers, list) and self.provider in self.consumers:
            raise LocatedError(
                f"{self.provider} is the provider: it reads its own feeds already",
                ("consumers", self.consumers.index(self.provider)),
            )
        seen: dict[tuple[str, Form], int] = {}
        for i, g in enumerate(self.grants):
            if (g.feed, g.form) in seen:
                raise LocatedError(
                    f"feed {g.feed!r} is granted in form {g.form} twice (also grants[{seen[g.feed, g.form]}]): "
                    "merge the two grants",
                    ("grants", i, "feed"),
                )
            seen[g.feed, g.form] = i
        for i, e in enumerate(self.expect):
            if e.feed not in {g.feed for g in self.grants} and e.sees is not None:
                raise LocatedError(
                    f"this agreement grants no feed {e.feed!r}: an expectation that it is seen belongs next to the "
                    "agreement that grants it",
                    ("expect", i, "feed"),
                )
        return self

    @property
    def everyone(self) -> bool:
        return self.consumers == EVERYONE


class AgreementsFile(Strict):
    agreements: list[Agreement] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> AgreementsFile:
        ids: dict[str, int] = {}
        for i, a in enumerate(self.agreements):
            if a.id in ids:
                raise LocatedError(
                    f"agreement id {a.id!r} is used twice (also agreements[{ids[a.id]}])", ("agreements", i, "id")
                )
            ids[a.id] = i
        return self
