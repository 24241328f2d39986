"""The broker epoch as producers and landing share it: which incarnation of the Kafka log `hub.land_offsets` refers to.

Landing owns the epoch (hub/landing/epoch.py starts a new one when the broker lost its log).
Ingest reads it to know where its acknowledged records must land, and records the very first
epoch itself when no landing worker ever ran, so that what it acknowledges before landing
starts is counted in a log the stored offsets will refer to.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from hub.catalog.locks import EPOCH_LOCK
from hub.kafka import KafkaAdmin, TopicSpec
from hub.settings import HubSettings


@dataclass(frozen=True)
class Epoch:
    epoch: str
    marker_topic: str


def marker_topic(settings: HubSettings, epoch: str) -> str:
    return f"{settings.kafka_topic_prefix}landing-epoch.{epoch}"


async def current(conn: asyncpg.Connection) -> Epoch | None:
    row = await conn.fetchrow("SELECT epoch, marker_topic FROM hub.land_broker")
    return Epoch(row["epoch"], row["marker_topic"]) if row else None


async def new_marker(admin: KafkaAdmin, settings: HubSettings) -> Epoch:
    """A new epoch id and its marker topic, created on the broker (not recorded yet)."""
    eid = uuid.uuid4().hex[:16]
    new = Epoch(eid, marker_topic(settings, eid))
    await admin.ensure_topics([TopicSpec(new.marker_topic, 1, settings.kafka_replication_factor)])
    return new


async def record_first(conn: asyncpg.Connection, admin: KafkaAdmin, settings: HubSettings) -> Epoch:
    """The recorded epoch; on a database where none is recorded yet, a new one (its marker created first)."""
    found = await current(conn)
    if found is not None:
        return found
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", EPOCH_LOCK)
        found = await current(conn)
        if found is not None:
            return found
        new = await new_marker(admin, settings)
        await conn.execute(
            "INSERT INTO hub.land_broker (epoch, marker_topic) VALUES ($1, $2)", new.epoch, new.marker_topic
        )
        return new
