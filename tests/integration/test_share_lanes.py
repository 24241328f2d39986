"""A delayed lane's partitions against the session stack's real broker: what its delay holds is read again."""

from __future__ import annotations

from aiokafka import TopicPartition

from hub.kafka import KafkaAdmin, dead_letter_spec
from hub.settings import HubSettings
from hub.share.lanes import Lane, delayed_consumer


async def test_a_partition_its_delay_paused_reads_again_once_the_lane_positions_it_again(
    stack_settings: HubSettings,
) -> None:
    """A fence or a failure positions every partition again from what is stored; one that the delay had paused
    must not stay paused (it would read nothing until the next rebalance)."""
    settings = stack_settings
    async with KafkaAdmin(settings, settings.endpoints().kafka_bootstrap) as admin:
        await admin.ensure_topics([dead_letter_spec(settings)])
    tp = TopicPartition(settings.kafka_dead_letter_topic, 0)
    consumer = delayed_consumer(settings, settings.endpoints())
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.getmany(timeout_ms=100)  # a lane reads once assigned (stopped before that, aiokafka raises)
        lane = Lane("delay-3600s", consumer, topics={tp.topic})
        lane.take([tp])
        lane.pending.discard(tp)
        lane.expected[tp] = 0
        lane.hold(tp, 0, until=4e9)  # younger than the delay: paused until then
        assert tp in consumer.paused()

        lane.repend()

        assert tp in lane.pending and tp not in lane.paused_until
        assert tp not in consumer.paused()  # read again from its stored position, held again if still too young
    finally:
        await consumer.stop()
