"""The broker epoch: which incarnation of the Kafka log the stored offsets refer to.

The local broker (Tansu) keeps its log in memory. When it restarts, its topics and
records are gone; the hub recreates the topics and producers start again at offset 0.
Stored offsets then point into a log that no longer exists. Comparing them with the new
log's end is not enough: producers may already have written more records than the stored
offset by the time a landing worker looks, and the worker would skip them for good.

So the hub marks each incarnation. A small marker topic, `<prefix>landing-epoch.<id>`, is
created on the broker, and `<id>` is recorded in `hub.land_broker`. Only landing creates
these topics, and a broker that restarts loses them with everything else. A worker checks,
after each fetch and before storing offsets, that its marker still exists:
- present: the records it fetched came from the log its offsets refer to;
- missing: the broker lost its log. Under a lock, one worker starts a new epoch (a new
  marker, every stored offset back to 0, a `broker-reset` event); the others adopt it.

The same holds for Apache Kafka, where a marker only goes missing if someone deletes it,
or the cluster is rebuilt, which is exactly when stored offsets must not be trusted.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg

from hub.catalog.broker_epoch import Epoch, current, marker_topic, new_marker
from hub.catalog.locks import EPOCH_LOCK
from hub.kafka import KafkaAdmin, TopicSpec
from hub.landing.events import record_event
from hub.landing.lost import count_lost, record_lost
from hub.settings import HubSettings

__all__ = ["Epoch", "EpochWatch", "Reset", "current", "establish", "marker_topic"]


@dataclass(frozen=True)
class Reset:
    """What starting a new epoch found: offsets set back, and acknowledged records the lost log took with it."""

    offsets_reset: int
    records_lost: int  # exactly: records ingest acknowledged that were not landed (hub/landing/lost.py)


async def establish(conn: asyncpg.Connection, admin: KafkaAdmin, settings: HubSettings) -> tuple[Epoch, Reset | None]:
    """The epoch to land under: the recorded one if the broker still has its marker, else a new one.

    Returns (epoch, reset): `reset` is set when this call found the broker without the
    recorded marker and so started a new epoch, setting every stored offset back to 0.
    With no recorded epoch (first start) a new one is recorded and offsets are kept.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", EPOCH_LOCK)
        row = await conn.fetchrow("SELECT epoch, marker_topic, since FROM hub.land_broker FOR UPDATE")
        topics = await admin.topics()
        if row is not None and row["marker_topic"] in topics:
            return Epoch(row["epoch"], row["marker_topic"]), None
        new = await new_marker(admin, settings)
        if row is None:
            await conn.execute(
                "INSERT INTO hub.land_broker (epoch, marker_topic) VALUES ($1, $2)", new.epoch, new.marker_topic
            )
            return new, None
        by_topic = await count_lost(conn, row["epoch"])
        await record_lost(conn, by_topic)
        lost = sum(by_topic.values())
        await conn.execute("DELETE FROM hub.ingest_acked WHERE epoch <> $1", new.epoch)  # older epochs' leftovers
        moved = int(
            await conn.fetchval(
                """SELECT count(*) FROM hub.land_offsets
                   WHERE next_offset <> 0 OR base_offset <> 0 OR log_end IS NOT NULL"""
            )
        )
        # The generation moves on for every partition: a producer waiting for its records to land
        # (HUB_INGEST_ACK=landed) sends them again rather than trust offsets of the new log.
        await conn.execute(
            """UPDATE hub.land_offsets SET next_offset = 0, base_offset = 0, log_end = NULL,
                   generation = generation + 1, updated_at = now()"""
        )
        await conn.execute(
            """UPDATE hub.land_broker SET epoch = $1, marker_topic = $2, since = now(), resets = resets + 1,
                   records_lost = records_lost + $3""",
            new.epoch,
            new.marker_topic,
            lost,
        )
        await record_event(
            conn,
            "broker-reset",
            None,
            lost,
            f"the broker no longer has marker topic {row['marker_topic']} (epoch since {row['since']:%Y-%m-%d %H:%M:%S}"
            f" UTC): it lost its log, and with it {lost} records acknowledged to devices and not landed yet"
            f" ({', '.join(f'{t}: {n}' for t, n in sorted(by_topic.items())) or 'none'}; counted from ingest's"
            f" acknowledgements); {moved} stored offsets set back to 0 for the new log (epoch {new.epoch})",
        )
        return new, Reset(moved, lost)


class EpochWatch:
    """The broker epoch a landing worker lands under, and whether the broker still holds that log."""

    def __init__(self, settings: HubSettings, admin: KafkaAdmin, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.admin = admin
        self.pool = pool
        self.epoch: Epoch | None = None

    async def start(self) -> Reset | None:
        """Adopt the recorded epoch, or start one if the broker lost its log while no worker ran."""
        async with self.pool.acquire() as conn:
            self.epoch, reset = await establish(conn, self.admin, self.settings)
        return reset

    async def intact(self) -> bool:
        """True while the broker still has this epoch's marker topic (the log the stored offsets refer to)."""
        if self.epoch is None:
            return False
        topics = await asyncio.wait_for(self.admin.topics(), self.settings.land_kafka_timeout_s)
        return self.epoch.marker_topic in topics

    async def renew(self, topics: list[TopicSpec]) -> tuple[Epoch | None, Reset | None]:
        """The broker lost its log: recreate `topics`, then start a new epoch or adopt one another worker started.

        Returns (the epoch before, the reset this call made or None when it adopted one).
        """
        old = self.epoch
        await self.admin.ensure_topics(topics)
        async with self.pool.acquire() as conn:
            self.epoch, reset = await establish(conn, self.admin, self.settings)
        return old, reset
