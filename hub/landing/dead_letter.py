"""Landing's dead letters: records that never became rows, sent to the dead-letter topic before their offsets move."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer

from hub import dead_letters
from hub.kafka import TRANSIENT_KAFKA_ERRORS, client_options
from hub.landing.rows import Rejected
from hub.settings import HubSettings

log = logging.getLogger("hub.land")


class DeadLetterSender:
    """A producer for the dead-letter topic; an async context manager."""

    def __init__(self, settings: HubSettings, bootstrap: str) -> None:
        self.settings = settings
        self.producer = AIOKafkaProducer(**client_options(settings, bootstrap), acks="all")

    async def __aenter__(self) -> DeadLetterSender:
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await asyncio.wait_for(self.producer.stop(), self.settings.land_kafka_timeout_s)
        except TRANSIENT_KAFKA_ERRORS as e:
            log.warning("dead-letter producer did not stop cleanly: %r", e)

    async def send(self, rejected: list[Rejected]) -> None:
        """Send and wait for the broker's acknowledgement (bounded by `land_kafka_timeout_s`)."""
        topic = self.settings.kafka_dead_letter_topic

        async def send() -> None:
            futures = []
            for r in rejected:
                headers = dead_letters.refused(
                    r.reason, r.message, stage="landing", keep=r.headers, origin=(r.topic, r.partition, r.offset)
                )
                futures.append(await self.producer.send(topic, value=r.value, key=r.key, headers=headers))
            await asyncio.gather(*futures)

        await asyncio.wait_for(send(), self.settings.land_kafka_timeout_s)
        for r in rejected:
            log.warning("dead-lettered %s[%d]@%d (%s): %s", r.topic, r.partition, r.offset, r.reason, r.message)
