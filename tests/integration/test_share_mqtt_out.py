"""The share worker's MQTT output against the session stack's real Mosquitto: batches larger than its window are
published and acknowledged, a refused publish or a lost connection fails the flush (the worker then reads its batch
again), and the flush after that goes on over the new connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from hub import worker_registry
from hub.errors import ServerUnavailable
from hub.mqtt_auth.dynsec import DynsecBroker
from hub.settings import HubSettings
from hub.share import identity
from hub.share.outputs import MqttOut


@pytest_asyncio.fixture
async def mqtt_out(stack_settings: HubSettings) -> AsyncIterator[MqttOut]:
    """A share worker's MQTT login and connection (as `ShareWorker` makes them)."""
    ep = stack_settings.endpoints()
    login = await identity.provision(stack_settings, ep)
    out = MqttOut(login.address, login.client_id, identity.tls_ca(stack_settings))
    await asyncio.to_thread(out.start)
    try:
        yield out
    finally:
        await asyncio.to_thread(out.stop)
        await identity.remove(stack_settings, ep, login)


async def test_a_batch_larger_than_the_window_is_published_and_every_puback_awaited(mqtt_out: MqttOut) -> None:
    n = 2 * MqttOut.WINDOW + 500
    for i in range(n):
        mqtt_out.publish(f"share/test/lab/air/st-{i % 7}", b'{"i":%d}' % i)
    await mqtt_out.flush()
    assert mqtt_out.published == n
    assert not mqtt_out._unacked


async def flushed_again(out: MqttOut, topic: str) -> None:
    """As the worker does after a failed flush: publish again until a flush goes through (within about 15 s)."""
    for _ in range(60):
        out.publish(topic, b"{}")
        try:
            await out.flush(5)
            return
        except ServerUnavailable:
            await asyncio.sleep(0.25)
    raise AssertionError(f"no flush went through: {out._error}")


async def test_a_refused_publish_fails_the_flush_and_a_flush_after_it_goes_through(mqtt_out: MqttOut) -> None:
    mqtt_out.publish("share/test/lab/air/st-1", b"{}")
    mqtt_out.publish("partners/someone/air/x", b"{}")  # outside the share login's ACL: PUBACK 0x87
    # Mosquitto 2.0.11 answers PUBACK 0x87 and drops the connection; paho may see the drop first
    with pytest.raises(ServerUnavailable, match=r"1 publishes refused \(reason code 0x87\)|disconnected"):
        await mqtt_out.flush()
    await flushed_again(mqtt_out, "share/test/lab/air/st-1")


async def test_a_lost_connection_fails_the_flush_and_a_flush_after_the_reconnect_goes_through(
    mqtt_out: MqttOut, stack_settings: HubSettings
) -> None:
    broker = DynsecBroker(stack_settings.endpoints().mqtt(), identity.tls_ca(stack_settings))
    name = mqtt_out.client_id
    await broker.run([{"command": "disableClient", "username": name}, {"command": "enableClient", "username": name}])
    mqtt_out.publish("share/test/lab/air/st-2", b"{}")
    with pytest.raises(ServerUnavailable, match=r"disconnected|connected again|paho connects again"):
        await mqtt_out.flush()
    await flushed_again(mqtt_out, "share/test/lab/air/st-2")


async def test_a_share_workers_login_is_the_worker_id_stack_status_lists_and_a_successor_takes_it_over(
    stack_settings: HubSettings,
) -> None:
    ep = stack_settings.endpoints()
    login = await identity.provision(stack_settings, ep, 2)
    try:
        host = worker_registry.this_host(stack_settings.worker_host)
        assert login.client_id == worker_registry.worker_id("share", host, 2)
        # The next worker of index 2 (after a kill -9 left the login behind) gets it with a new password.
        successor = await identity.provision(stack_settings, ep, 2)
        assert successor.client_id == login.client_id
        assert successor.address.password != login.address.password
        out = MqttOut(successor.address, successor.client_id, identity.tls_ca(stack_settings))
        await asyncio.to_thread(out.start)
        try:
            out.publish("share/test/lab/air/st-1", b"{}")
            await out.flush()
            assert out.published == 1
        finally:
            await asyncio.to_thread(out.stop)
    finally:
        await identity.remove(stack_settings, ep, login)
