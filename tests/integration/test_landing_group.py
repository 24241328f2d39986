"""The landing group on the local broker: landing workers started together split every partition between them."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import TopicPartition

from hub.landing.worker import LandingWorker
from hub.settings import HubSettings
from tests.integration.support import eventually, own_group, running_land


def every_partition(worker: LandingWorker) -> set[TopicPartition]:
    consumer = worker.group.consumer
    assert consumer is not None
    return {TopicPartition(t, p) for t in worker.feeds.topics for p in consumer.partitions_for_topic(t) or ()}


async def test_two_landing_workers_own_disjoint_partitions_that_cover_every_partition(applied: HubSettings) -> None:
    """Started at once, as `hub run land --workers 2` starts them (indexes 0 and 1). Each member has a client id of
    its own: with aiokafka's default one, the local broker was seen handing two share workers the same partitions
    and nobody the others."""
    settings = own_group(applied)
    async with contextlib.AsyncExitStack() as stack:
        first, second = await asyncio.gather(
            stack.enter_async_context(running_land(settings, 0)), stack.enter_async_context(running_land(settings, 1))
        )
        assert first.group.consumer is not None and second.group.consumer is not None
        assert first.group.consumer._client._client_id != second.group.consumer._client._client_id

        def split() -> bool:
            a, b = first.assigned, second.assigned
            return bool(a) and bool(b) and a.isdisjoint(b) and a | b == every_partition(first)

        assert await eventually(split, 40), f"first {sorted(first.assigned)}, second {sorted(second.assigned)}"
