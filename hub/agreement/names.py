"""What agreements become in PostgreSQL, by name: one place, so the SQL that creates an object and every
answer that points at it (`hub access`, `hub explain`, the tests) agree."""

from __future__ import annotations

from hub.identifiers import MAX_SQL_NAME_BYTES

ORG_PREFIX = "org_"  # organisation X: login role org_X and schema org_X (never a partner's schema X)
OPEN_SCHEMA = "open_data"  # agreements with everyone: readable by every role that may connect
SHARE_OWNER = "hub_share_owner"  # NOLOGIN, not superuser, no BYPASSRLS: owns every shared object
PRIVATE_SCHEMA = "hub_private"  # the pseudonym keys: no organisation can even look inside
PSEUDONYM_COLUMN = "device_pseudonym"
AGG_SUFFIX = "__agg"
# Grafana's login for organisation X: a NOINHERIT member of org_X whose sessions start as org_X (docs/dashboards.md).
GRAFANA_LOGIN_PREFIX = "hub_grafana_"


def org_role(org: str) -> str:
    return ORG_PREFIX + org


def grafana_login(org: str) -> str:
    """The role Grafana's datasource of organisation `org` logs in as; it reads as org_<org>, never more."""
    return GRAFANA_LOGIN_PREFIX + org


def org_schema(org: str | None) -> str:
    """The schema a grant's object lives in: the organisation's own, or open_data for everyone (None)."""
    return OPEN_SCHEMA if org is None else ORG_PREFIX + org


def view_name(provider: str, feed: str, aggregate: bool) -> str:
    return f"{provider}__{feed}" + (AGG_SUFFIX if aggregate else "")


def object_name(org: str | None, provider: str, feed: str, aggregate: bool) -> str:
    """`schema.view` as a consumer writes it in SQL (every part is a lower-case identifier)."""
    return f"{org_schema(org)}.{view_name(provider, feed, aggregate)}"


def too_long(org: str | None, provider: str, feed: str) -> str | None:
    """Which composed name would exceed PostgreSQL's limit (it would truncate it silently), if any."""
    for name in (org_schema(org), view_name(provider, feed, True)):
        if len(name.encode()) > MAX_SQL_NAME_BYTES:
            return name
    return None


# --- live share streams (hub/share/) -------------------------------------------------------

SHARE_TOPIC_PREFIX = "share."  # Kafka: share.<consumer>.<provider>.<feed>
SHARE_MQTT_ROOT = "share"  # MQTT: share/<consumer>/<provider>/<feed>/<device or pseudonym>
OPEN_DATA_CONSUMER = OPEN_SCHEMA  # the consumer part of an open-data stream's names


def stream_consumer(org: str | None) -> str:
    """The consumer part of a stream's names: the organisation, or open_data for everyone (None)."""
    return OPEN_DATA_CONSUMER if org is None else org


def share_topic(org: str | None, provider: str, feed: str, aggregate: bool = False) -> str:
    """`share.<consumer>.<provider>.<feed>` (`.agg` appended for aggregates; every part is an identifier)."""
    return f"{SHARE_TOPIC_PREFIX}{stream_consumer(org)}.{provider}.{feed}" + (".agg" if aggregate else "")


def share_topic_prefix(org: str | None) -> str:
    """`share.<consumer>.`: the prefix of a consumer's share topics, and of the consumer groups it may use."""
    return f"{SHARE_TOPIC_PREFIX}{stream_consumer(org)}."


def share_mqtt_prefix(org: str | None, provider: str, feed: str, aggregate: bool = False) -> str:
    """`share/<consumer>/<provider>/<feed>`: a raw record goes to `<prefix>/<device>`; aggregates go to
    `share/<consumer>/<provider>/<feed>.agg` itself (no device level, and no device id can collide with it)."""
    return f"{SHARE_MQTT_ROOT}/{stream_consumer(org)}/{provider}/{feed}" + (".agg" if aggregate else "")


def share_subject(topic: str) -> str:
    """The registry subject of a share topic's values (Confluent's TopicNameStrategy)."""
    return f"{topic}-value"
