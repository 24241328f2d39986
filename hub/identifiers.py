"""Names that reach SQL, Kafka topics, MQTT topics and ACLs: validated once, quoted by one function."""

from __future__ import annotations

import re

from hub.errors import IdentifierError

# Lower-case, starts with a letter, underscores only: safe unquoted in SQL, in a Kafka
# topic, in an MQTT topic level and in a Mosquitto ACL line.
IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
RESERVED = frozenset(
    {"hub", "public", "pg_catalog", "information_schema", "sys", "admin", "postgres", "open_data", "everyone"}
)
# Names the hub composes for itself: `org_<id>` (an organisation's database role and schema), `hub_*` (its own
# roles and schemas), `pg_*` (PostgreSQL's). An id with such a prefix could collide with one of them.
RESERVED_PREFIXES = ("pg_", "org_", "hub_")
# PostgreSQL truncates longer names with only a NOTICE, so two composed names could silently become one.
MAX_SQL_NAME_BYTES = 63


def check_identifier(value: str, what: str) -> str:
    if not IDENTIFIER.fullmatch(value):
        raise IdentifierError(
            f"{what} {value!r} is not a safe identifier: use 1-40 lower-case letters, digits and "
            "underscores, starting with a letter"
        )
    if value in RESERVED or value.startswith(RESERVED_PREFIXES):
        raise IdentifierError(f"{what} {value!r} is reserved by the hub; choose another name")
    return value


# A device login's own part: its MQTT user name and client id are `<partner>.<device>`.
DEVICE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


def check_device_name(value: str) -> str:
    if not DEVICE_NAME.fullmatch(value):
        raise IdentifierError(
            f"device name {value!r} is not usable in an MQTT login: use 1-40 lower-case letters, digits, "
            "'-' and '_', starting with a letter or digit"
        )
    return value


def device_login(partner_id: str, device: str) -> str:
    """The MQTT user name (and the only client id it may use) of a partner's device."""
    return f"{check_identifier(partner_id, 'partner id')}.{check_device_name(device)}"


def quote_ident(name: str) -> str:
    """Quote a SQL identifier (for names already validated, and as defence in depth)."""
    if "\x00" in name:
        raise IdentifierError("identifier contains a NUL byte")
    if len(name.encode()) > MAX_SQL_NAME_BYTES:
        raise IdentifierError(
            f"SQL name {name!r} is longer than {MAX_SQL_NAME_BYTES} bytes: PostgreSQL would truncate it; "
            "use shorter ids"
        )
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, table: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(table)}"


def quote_literal(value: str) -> str:
    """Quote a SQL string literal, for DDL that cannot take parameters."""
    if "\x00" in value:
        raise IdentifierError("literal contains a NUL byte")
    return "'" + value.replace("'", "''") + "'"
