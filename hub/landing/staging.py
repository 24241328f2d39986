"""The staging path: a batch that meets rows already landed, compared with them row by row.

A batch normally goes straight into its table with COPY (writer.py). When a row of it is there
already, it is COPied into a temporary staging table instead, with its position in the batch
(`"hub#seq"`), and one statement inserts the first record of each `(device_id, time)` that the
table lacks and returns every other record with the columns in which it differs from the row that
is landed (the table's, or the batch's own first one for a key met twice in one batch). Only the
schema's columns are compared: `received_at` differs for every redelivery, `ingested_at` is the
hub's. What comes back is sorted (`classify`):

- identical, from the hub's own copy of a message it had sent before (`redelivery` header: an
  MQTT redelivery or a resend): `redelivered`;
- identical otherwise (a device sent the same reading twice, e.g. a QoS 1 retry): `duplicate`;
- different: a second reading for a time the device already has, refused as `duplicate_key`
  (dead-lettered by the writer, and reported to the partner).

A row the database refuses sends the batch through the same statement one row at a time.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg

from hub.dead_letters import REDELIVERY
from hub.identifiers import quote_ident, quote_literal
from hub.landing.rows import FeedRows, Rejected, rejected

SEQ = '"hub#seq"'  # no Avro field can have this name
IGNORED = ("received_at", "ingested_at")  # not the reading: when the hub got it

# What the database answers about one row that it will never take.
REFUSED_ROW = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, asyncpg.ProgramLimitExceededError)
# What asyncpg raises while encoding a value for COPY (before the server sees it).
REFUSED_BY_CLIENT = (ValueError, OverflowError, TypeError)


class Batch(Protocol):
    """A table batch as the staging path needs it (`writer.TableBatch`)."""

    @property
    def schema(self) -> str: ...

    @property
    def table(self) -> str: ...

    @property
    def signature(self) -> str: ...

    @property
    def rows(self) -> FeedRows: ...


@dataclass
class Staged:
    inserted: int = 0
    duplicates: int = 0
    redelivered: int = 0
    conflicts: list[Rejected] = field(default_factory=list)  # reason duplicate_key
    refused: list[Rejected] = field(default_factory=list)  # reason refused_by_database


def staging_name(b: Batch) -> str:
    """A temporary table per target table, column list and column types: a schema change gets a fresh one
    (an old one would keep, say, `real` for a column widened to `double precision`, and round every value)."""
    key = "\x00".join(["seq", b.schema, b.table, b.signature, *b.rows.columns])
    return f"_stage_{hashlib.sha256(key.encode()).hexdigest()[:20]}"


def staging_sql(target: str, cols: str, staging: str) -> str:
    """The batch's columns with the target's types and no constraints (`LIKE target` would copy NOT NULL
    without the defaults, and COPY would then refuse every batch), and each record's place in its batch."""
    return (
        f"CREATE TEMP TABLE IF NOT EXISTS {quote_ident(staging)} ON COMMIT DELETE ROWS"
        f" AS SELECT {cols}, 0::int AS {SEQ} FROM {target} WITH NO DATA"
    )


def _differs(a: str, b: str, compared: list[str]) -> str:
    terms = ", ".join(
        f"CASE WHEN {a}.{quote_ident(c)} IS DISTINCT FROM {b}.{quote_ident(c)} THEN {quote_literal(c)} END"
        for c in compared
    )
    return f"array_remove(ARRAY[{terms}]::text[], NULL)" if compared else "'{}'::text[]"


def land_from_staging_sql(target: str, columns: list[str], staging: str, *, one: bool = False) -> str:
    """Insert the staged records the table lacks (the first of each key); return the others, compared.

    Returns (seq, differs, landed_received_at) for each record not inserted: `differs` lists the columns
    in which it differs from the landed row (empty: identical), NULL when that row was committed by
    another transaction after this statement began (see `recheck_sql`). `one`: only the record `$1`.
    """
    cols = ", ".join(quote_ident(c) for c in columns)
    compared = [c for c in columns if c not in IGNORED]
    received = "received_at" in columns
    key = 'x."device_id" = s."device_id" AND x."time" = s."time"'
    return f"""
WITH s AS (SELECT {cols}, {SEQ} FROM {quote_ident(staging)}{f" WHERE {SEQ} = $1" if one else ""}),
first AS (SELECT DISTINCT ON ("device_id", "time") * FROM s ORDER BY "device_id", "time", {SEQ}),
ins AS (
    INSERT INTO {target} ({cols}) SELECT {cols} FROM first
    ON CONFLICT ("device_id", "time") DO NOTHING RETURNING "device_id", "time"
)
SELECT s.{SEQ} AS seq,
       CASE WHEN t."device_id" IS NOT NULL THEN {_differs("t", "s", compared)}
            WHEN i."device_id" IS NOT NULL THEN {_differs("f", "s", compared)} END AS differs,
       {'coalesce(t."received_at", f."received_at")' if received else "NULL::timestamptz"} AS landed_received_at
FROM s
JOIN first f ON {key.replace("x.", "f.")}
LEFT JOIN ins i ON {key.replace("x.", "i.")}
LEFT JOIN {target} t ON {key.replace("x.", "t.")}
WHERE i."device_id" IS NULL OR s.{SEQ} <> f.{SEQ}
"""


def recheck_sql(target: str, columns: list[str], staging: str) -> str:
    """The staged records `$1` (seqs) compared with the rows now committed for their keys."""
    compared = [c for c in columns if c not in IGNORED]
    received = 't."received_at"' if "received_at" in columns else "NULL::timestamptz"
    return f"""
SELECT s.{SEQ} AS seq, {_differs("t", "s", compared)} AS differs, {received} AS landed_received_at
FROM {quote_ident(staging)} s JOIN {target} t ON t."device_id" = s."device_id" AND t."time" = s."time"
WHERE s.{SEQ} = ANY($1::int[])
"""


def _copy(record: Any) -> bool:
    return any(name == REDELIVERY for name, _ in record.headers)


def _when(value: Any) -> str:
    """A row's time (microseconds since 1970 as RowBuilder makes them, or a datetime) in ISO 8601."""
    if isinstance(value, int):
        return datetime.fromtimestamp(value / 1_000_000, UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return str(value)


def classify(rows: FeedRows, found: list[asyncpg.Record], staged: Staged) -> None:
    """Sort the records the statement did not insert into `staged` (duplicates, redelivered, conflicts)."""
    device_at, time_at = rows.columns.index("device_id"), rows.columns.index("time")
    for r in found:
        seq = r["seq"]
        source, row = rows.sources[seq], rows.rows[seq]
        differs = r["differs"] if r["differs"] is not None else []
        if not differs:
            if _copy(source):
                staged.redelivered += 1
            else:
                staged.duplicates += 1
            continue
        received = r["landed_received_at"]
        staged.conflicts.append(
            rejected(
                source,
                "duplicate_key",
                f"device {row[device_at]!r} already has a reading at {_when(row[time_at])}"
                f"{f' (received at {_when(received)})' if received is not None else ''}, with other values"
                f" ({', '.join(differs)} differ): the reading landed first is kept and this one is refused",
            )
        )


async def land_staged(conn: asyncpg.Connection, b: Batch, target: str) -> Staged:
    """The batch through the staging table (see the module docstring); rows the database refuses are `refused`."""
    rows = b.rows
    staging = staging_name(b)
    cols = ", ".join(quote_ident(c) for c in rows.columns)
    await conn.execute(staging_sql(target, cols, staging))
    columns = [*rows.columns, SEQ.strip('"')]
    staged = Staged()
    try:
        async with conn.transaction():  # a savepoint: a refused row must not abort the whole batch
            records = [(*row, i) for i, row in enumerate(rows.rows)]
            await conn.copy_records_to_table(staging, records=records, columns=columns)
            found = list(await conn.fetch(land_from_staging_sql(target, rows.columns, staging)))
    except (*REFUSED_ROW, *REFUSED_BY_CLIENT):
        return await _one_by_one(conn, b, target, staging, columns)
    await _resolve(conn, b, target, staging, found, staged)
    staged.inserted = len(rows.rows) - len(found)
    return staged


async def _one_by_one(conn: asyncpg.Connection, b: Batch, target: str, staging: str, columns: list[str]) -> Staged:
    rows = b.rows
    stmt = land_from_staging_sql(target, rows.columns, staging, one=True)
    staged = Staged()
    found: list[asyncpg.Record] = []
    for i, (row, source) in enumerate(zip(rows.rows, rows.sources, strict=True)):
        try:
            async with conn.transaction():
                await conn.copy_records_to_table(staging, records=[(*row, i)], columns=columns)
                got = list(await conn.fetch(stmt, i))
        except (*REFUSED_ROW, *REFUSED_BY_CLIENT) as exc:
            staged.refused.append(rejected(source, "refused_by_database", f"{type(exc).__name__}: {exc}"))
            continue
        found += got
        staged.inserted += 1 - len(got)
    await _resolve(conn, b, target, staging, found, staged)
    return staged


async def _resolve(
    conn: asyncpg.Connection, b: Batch, target: str, staging: str, found: list[asyncpg.Record], staged: Staged
) -> None:
    """Classify what was not inserted; a key another transaction landed meanwhile is compared again, now."""
    late = [r["seq"] for r in found if r["differs"] is None]
    if late:
        again = {r["seq"]: r for r in await conn.fetch(recheck_sql(target, b.rows.columns, staging), late)}
        found = [again.get(r["seq"], r) for r in found]
    classify(b.rows, found, staged)
