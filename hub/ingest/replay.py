"""Replaying dead letters: messages refused at ingest, re-run through the feed's current config.

`replay(settings, partner, feed, since)` takes the feed's dead letters kept in the database (and
the partner's `_unknown` ones, refused because their topic matched no feed), routes each by the
MQTT topic it came on and decodes it exactly as an ingest worker does now. What decodes is sent to
the feed's Kafka topic, as ingest sends it (same key, partition and headers, with the original
receive time), under the feed topics' shared locks (topic_locks.py); what fails again stays a
dead letter with its new reason.

Exactly once: the dead letters are claimed with `FOR UPDATE SKIP LOCKED` and marked replayed in
the same transaction, committed only after Kafka acknowledged every record sent, so a second
replay finds nothing to send and two replays at once never share a row. Were the process to die
between Kafka's acknowledgement and the commit, the next replay sends those records again, and
landing, idempotent on (device_id, time), lands each once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from hub.catalog import dead_letters as stored
from hub.catalog.runtime import load_feeds
from hub.catalog.topics import feed_topic_specs
from hub.db import connection
from hub.dead_letters import DEVICE, MQTT_TOPIC, RECEIVED_MS
from hub.errors import NotFound, PayloadError
from hub.ingest.kafka_send import KafkaSender
from hub.ingest.outgoing import HEADER_LINE, UNKNOWN, Outgoing, partition_for
from hub.ingest.routes import Router
from hub.ingest.topic_locks import TopicLocks
from hub.ingest.worker import build_routes
from hub.kafka import TopicSpec
from hub.settings import HubSettings

REPLAYED_FROM = "replayed_from"  # header of a replayed record: the id of its row in hub.dead_letters
CHUNK = 2_000


@dataclass
class ReplayResult:
    sent: int = 0  # sent to the feed's topic: landing lands them (once each)
    refused: list[tuple[int, str, str]] = field(default_factory=list)  # (id, reason, message): dead letters still
    elsewhere: int = 0  # the partner's `_unknown` dead letters whose topic now belongs to another feed: left
    skipped_headers: int = 0  # CSV header lines: nothing to land, marked replayed


async def replay(settings: HubSettings, partner: str, feed: str, since: datetime | None = None) -> ReplayResult:
    ep = settings.endpoints()
    result = ReplayResult()
    async with connection(ep.database_url) as conn:
        feeds = await load_feeds(conn)
        if not any(f.key == (partner, feed) for f in feeds):
            known = ", ".join(f"{p}.{n}" for p, n in sorted(f.key for f in feeds)) or "none"
            raise NotFound(f"no applied feed {partner}.{feed} (applied feeds: {known})")
        router = Router(build_routes(feeds, settings))
        locks = TopicLocks(ep.database_url)
        marker = TopicSpec(f"{settings.kafka_topic_prefix}_replay.alive", 1, settings.kafka_replication_factor)
        specs = feed_topic_specs(settings, (f.row for f in feeds))
        sender = KafkaSender(settings, ep.kafka_bootstrap, 0, specs, locks, marker=marker)
        await sender.start()
        try:
            after = 0
            while True:
                async with conn.transaction():
                    letters = await stored.claim_for_replay(conn, partner, feed, since, after, CHUNK)
                    if not letters:
                        break
                    after = letters[-1].id
                    outgoing, done, refusals = _prepare(letters, router, sender.partitions, feed, result)
                    await sender.deliver(outgoing)  # returns once Kafka acknowledged every record
                    await stored.mark_replayed(conn, done, feed)
                    await stored.refused_again(conn, [(i, feed, r, m) for i, r, m in refusals])
                result.refused += refusals
        finally:
            await sender.stop(10.0)
            await locks.close()
    return result


Refusal = tuple[int, str, str]  # (dead letter id, reason, message)


def _prepare(
    letters: list[stored.DeadLetter], router: Router, partitions: dict[str, int], feed: str, result: ReplayResult
) -> tuple[list[Outgoing], list[int], list[Refusal]]:
    """Records to send, the ids they settle (sent, or header lines), and the ids refused again."""
    outgoing: list[Outgoing] = []
    done: list[int] = []
    refusals: list[Refusal] = []
    for letter in letters:
        found = router.route(letter.mqtt_topic) if letter.mqtt_topic else None
        if found is None:
            if letter.feed != UNKNOWN:
                refusals.append((letter.id, "unknown_topic", f"no feed is configured for topic {letter.mqtt_topic!r}"))
            continue
        route, device = found
        if route.feed != feed:
            result.elsewhere += 1
            continue
        received_ms = int(letter.at.timestamp() * 1000)
        try:
            record = route.decoder.decode(letter.payload, device, received_ms)
            value = route.encoder.encode(record)
        except PayloadError as exc:
            if exc.code == HEADER_LINE:
                result.skipped_headers += 1
                done.append(letter.id)
            else:
                refusals.append((letter.id, exc.code, str(exc)))
            continue
        key = record["device_id"].encode()
        headers = [
            *route.headers,
            (DEVICE, key),
            (RECEIVED_MS, str(received_ms).encode()),
            (MQTT_TOPIC, (letter.mqtt_topic or "").encode()),
            (REPLAYED_FROM, str(letter.id).encode()),
        ]
        outgoing.append(
            Outgoing(route.kafka_topic, partition_for(key, partitions[route.kafka_topic]), key, value, headers)
        )
        done.append(letter.id)
    result.sent += len(outgoing)
    return outgoing, done, refusals
