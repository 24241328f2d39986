"""After each database commit, the same offsets committed to the Kafka group too: best effort, in the background.

The database stays the source of truth (a worker positions its partitions at the offsets stored
there, never at Kafka's). Kafka's committed offsets are only for the ecosystem's tools:
`kafka-consumer-groups --describe --group hub-landing`, Burrow or kafka-exporter then show the
group's lag. A commit never holds up landing: one runs at a time, later offsets replace ones not
sent yet, each is bounded in time (a restarted local broker makes aiokafka retry a commit
forever), and a failure is counted (`hub_land_kafka_commit_failures_total`) and said once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from hub.landing import metrics as land_metrics

log = logging.getLogger("hub.land")


class KafkaCommits:
    def __init__(self, consumer: Callable[[], AIOKafkaConsumer | None], timeout_s: float = 10.0) -> None:
        self._consumer = consumer  # the group's current consumer (it is rebuilt after some failures)
        self.timeout_s = timeout_s
        self.pending: dict[TopicPartition, int] = {}
        self.committed = 0  # commits that succeeded (read by tests)
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def offer(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit these next offsets soon (later ones for a partition replace earlier ones not yet sent)."""
        if not offsets:
            return
        self.pending.update(offsets)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="land-kafka-commits")

    async def _run(self) -> None:
        while self.pending:
            offsets, self.pending = self.pending, {}
            consumer = self._consumer()
            if consumer is None:
                return
            owned = consumer.assignment()
            offsets = {tp: o for tp, o in offsets.items() if tp in owned}
            if not offsets:
                continue
            try:
                await asyncio.wait_for(consumer.commit(offsets), self.timeout_s)
            except Exception as exc:  # best effort: the database has the offsets
                land_metrics.KAFKA_COMMIT_FAILURES.inc()
                if not self._failing:
                    self._failing = True
                    log.warning("cannot commit landed offsets to the Kafka group (%s: %s); its lag as Kafka's tools "
                                "show it is stale until a commit succeeds", type(exc).__name__, exc)  # fmt: skip
                continue
            self.committed += 1
            if self._failing:
                self._failing = False
                log.info("committing landed offsets to the Kafka group again")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
