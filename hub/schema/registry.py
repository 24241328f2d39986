"""The schema registry's read side: subjects, versions, ids, lookups and compatibility checks.

Schemas are registered only by `hub apply` (connector configs are the source of truth); this
module answers what the Confluent Schema Registry REST API asks, from `hub.schemas`,
`hub.subject_versions` and the feeds' compatibility modes. Every function takes a connection
(or a pool) and returns None or [] when nothing matches; the HTTP layer chooses the error.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, TypeAlias

import asyncpg
import fastavro
from fastavro.schema import to_parsing_canonical_form

from hub.errors import SchemaError, shortened
from hub.schema.avro import canonical_json, parse_feed_schema
from hub.schema.compatibility import Compatibility, check_compatibility

# The mode of a subject no feed names (and of GET /config): the connector config's default.
DEFAULT_COMPATIBILITY = str(Compatibility.BACKWARD)

# A connection or a pool: both answer fetch/fetchval.
Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool


@dataclass(frozen=True)
class RegisteredVersion:
    subject: str
    version: int
    schema_id: int
    schema: str

    def as_json(self) -> dict[str, Any]:
        return {"subject": self.subject, "version": self.version, "id": self.schema_id, "schema": self.schema}


async def subjects(conn: Conn) -> list[str]:
    return [r["subject"] for r in await conn.fetch("SELECT DISTINCT subject FROM hub.subject_versions ORDER BY 1")]


async def versions(conn: Conn, subject: str) -> list[int]:
    rows = await conn.fetch("SELECT version FROM hub.subject_versions WHERE subject = $1 ORDER BY version", subject)
    return [r["version"] for r in rows]


async def schema_by_id(conn: Conn, schema_id: int) -> str | None:
    text: str | None = await conn.fetchval("SELECT schema FROM hub.schemas WHERE id = $1", schema_id)
    return text


async def uses_of_schema(conn: Conn, schema_id: int) -> list[tuple[str, int]]:
    """(subject, version) pairs registered with this schema id."""
    rows = await conn.fetch(
        "SELECT subject, version FROM hub.subject_versions WHERE schema_id = $1 ORDER BY subject, version", schema_id
    )
    return [(r["subject"], r["version"]) for r in rows]


async def history(conn: Conn, subject: str) -> list[RegisteredVersion]:
    """Every version of a subject, oldest first ([] for an unknown subject)."""
    rows = await conn.fetch(
        """SELECT v.version, v.schema_id, s.schema FROM hub.subject_versions v
           JOIN hub.schemas s ON s.id = v.schema_id WHERE v.subject = $1 ORDER BY v.version""",
        subject,
    )
    return [RegisteredVersion(subject, r["version"], r["schema_id"], r["schema"]) for r in rows]


async def compatibility(conn: Conn, subject: str) -> str | None:
    """The compatibility mode of the feed whose subject this is; None if no feed has it."""
    mode: str | None = await conn.fetchval("SELECT compatibility FROM hub.feeds WHERE subject = $1", subject)
    return mode


def parse_submitted(text: str) -> Any:
    """The JSON of a schema sent to the API; SchemaError if it is not JSON or not Avro."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError, ValueError) as exc:
        raise SchemaError(f"the schema is not valid JSON: {shortened(str(exc), 300)}") from None
    try:
        fastavro.parse_schema(copy.deepcopy(data))
    except Exception as exc:  # fastavro raises many types on malformed schemas
        # fastavro quotes the input in its messages, sometimes all of it (a 25 KB schema came back whole).
        raise SchemaError(f"the schema is not valid Avro: {shortened(str(exc), 300)}") from None
    return data


def find_registered(data: Any, registered: list[RegisteredVersion], normalize: bool) -> RegisteredVersion | None:
    """The latest version whose schema equals `data`: the same canonical JSON, or with `normalize` the same
    Avro Parsing Canonical Form (which ignores docs, defaults, aliases and logical types)."""
    wanted = canonical_json(data)
    for r in reversed(registered):
        if r.schema == wanted:
            return r
    if normalize:
        pcf = _pcf(data)
        for r in reversed(registered):
            if _pcf(json.loads(r.schema)) == pcf:
                return r
    return None


def _pcf(data: Any) -> str:
    return str(to_parsing_canonical_form(fastavro.parse_schema(copy.deepcopy(data))))


def compatibility_problems(text: str, against: list[RegisteredVersion], mode: str) -> list[str]:
    """Why `text` could not follow `against` (oldest first, ending with the version it is checked against)
    under `mode`; [] if it could. A schema the hub would refuse outright raises SchemaError."""
    new = parse_feed_schema(text, "the submitted schema")
    previous = [parse_feed_schema(r.schema, f"{r.subject} v{r.version}") for r in against]
    return check_compatibility(new, previous, mode)
