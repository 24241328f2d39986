"""Live share streams against the session stack's real servers: each limit gives the same rows on the share
topics (Kafka and MQTT) as in the consumer's SQL view over the same window; revocation stops both protocols;
a killed share worker loses nothing; a consumer cannot subscribe to another's share topic."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as AioTopicPartition
from aiokafka.structs import OffsetAndMetadata
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from prometheus_client import REGISTRY

from hub.agreement import names
from hub.control.revoke import revoke
from hub.landing.broker_memory import free_landed_topics
from hub.mqtt_auth.accounts import consumer_name
from hub.settings import HubSettings
from hub.share import memory
from hub.share.worker import ShareWorker
from hub.stack.local import cli_env
from tests.integration.sharing_support import Workspace
from tests.integration.support import (
    FeedWriter,
    Subscriber,
    api_token,
    eventually,
    feed_runtime,
    own_group,
    query,
    running,
    running_land,
    until_rows,
)

ORGS = ["city", "health", "startup", "later"]
AGREEMENTS = """\
agreements:
  - {id: s_fields_{tag}, provider: {partner}, consumers: [city_{tag}], purpose: t, licence: L,
     delivery: [sql, kafka, mqtt], grants: [{feed: air, fields: [pm25, no2], devices: ["st-00*", "st_01"]}]}
  - {id: s_pseudo_{tag}, provider: {partner}, consumers: [health_{tag}], purpose: t, licence: L,
     delivery: [sql, kafka, mqtt], grants: [{feed: air, fields: [pm25], pseudonymise: true, delay: 1h}]}
  - {id: s_agg_{tag}, provider: {partner}, consumers: [startup_{tag}], purpose: t, licence: L,
     delivery: [sql, kafka], grants: [{feed: noise, form: aggregate, min_devices: 3}]}
  - {id: s_raw_{tag}, provider: {partner}, consumers: [startup_{tag}], purpose: t, licence: L,
     delivery: [sql, kafka], grants: [{feed: air, fields: [pm25]}]}
  - {id: s_later_{tag}, provider: {partner}, consumers: [later_{tag}], purpose: t, licence: L,
     valid_from: {tomorrow}, delivery: [sql, kafka], grants: [{feed: air}]}
"""
DEVICES = ("st-001", "st-002", "st_01", "stX01", "secret-9")


def air(now_ms: int) -> list[dict[str, Any]]:
    """Two hours of readings, one every 4 minutes, per device (the newest ones younger than the 1 h delay)."""
    out = []
    for i in range(30):
        t = now_ms - 2 * 3600_000 + i * 4 * 60_000 + 1000
        for n, device in enumerate(DEVICES):
            no2 = None if i % 3 == 0 else 20.0 + n + i
            out.append({"device_id": device, "time": t, "pm25": 10.0 + n + i % 5, "pm10": 1.0, "no2": no2,
                        "temperature_c": 15.0, "humidity_pct": 60.0, "battery_v": None})  # fmt: skip
    return out


def noise(start_ms: int) -> list[dict[str, Any]]:
    """The four 15-minute windows before the current one: 2, 4, 4 and 3 devices (the first is below k = 3)."""
    out = []
    for w, devices in enumerate((2, 4, 4, 3)):
        for d in range(devices):
            for k in range(3):
                t = start_ms + w * 900_000 + k * 60_000 + d * 1000
                out.append({"device_id": f"n-{d}", "time": t, "laeq_db": 50.0 + d + k, "lamax_db": 70.0 + w,
                            "interval_s": 60})  # fmt: skip
    return out


@pytest_asyncio.fixture(scope="module")
async def streams(stack_settings: HubSettings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Workspace]:
    """The tests' partner and organisations, the agreements applied, records landed and shared by real workers."""
    w = Workspace(tmp_path_factory.mktemp("streams"), stack_settings)
    w.setup(ORGS)
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    w.write("agreements/lab.yaml", AGREEMENTS.replace("{tomorrow}", tomorrow))
    result = await w.apply()
    w.mqtt = result.credentials  # type: ignore[attr-defined]
    settings = own_group(stack_settings).replace(share_group=f"share-{w.tag}", share_window_backfill=4)
    now = datetime.now(UTC)
    window = 15 * 60_000
    noise_start = (int(now.timestamp() * 1000) // window - 4) * window  # the grid's origin is a whole 15 min
    noise_feed, air_feed = [await feed_runtime(settings, w.partner, feed) for feed in ("noise", "air")]
    # Waits on the feeds' own tables: the landing worker's count would also take in records that other test
    # modules of this process left unlanded on their feed topics.
    noise_table, air_table = (f'"{f.row.table_schema}"."{f.row.table_name}"' for f in (noise_feed, air_feed))
    async with running_land(settings) as land:
        async with FeedWriter(settings, noise_feed) as writer:
            sent = noise(noise_start)
            await writer.send(sent)
            noise_devices = sorted({str(r["device_id"]) for r in sent})
            assert await until_rows(settings, noise_table, noise_devices, len(sent)) == len(sent)
        async with FeedWriter(settings, air_feed) as writer:
            w.air = air(int(now.timestamp() * 1000))  # type: ignore[attr-defined]
            half = len(w.air) // 2  # type: ignore[attr-defined]
            await writer.send(w.air[:half])  # type: ignore[attr-defined]
            assert await until_rows(settings, air_table, list(DEVICES), half) == half
            w.city_mqtt = Subscriber(  # type: ignore[attr-defined]
                settings, consumer_name(w.org("city")), result.credentials[consumer_name(w.org("city"))],
                f"share/{w.org('city')}/#",
            )  # fmt: skip
            async with running(ShareWorker(settings, settings.endpoints())) as share:
                await writer.send(w.air[half:])  # type: ignore[attr-defined]
                assert await until_rows(settings, air_table, list(DEVICES), len(w.air)) == len(w.air)  # type: ignore[attr-defined]
                assert await eventually(lambda: share.windows >= 1, 20)
                w.share = share  # type: ignore[attr-defined]
                w.land = land  # type: ignore[attr-defined]
                w.settings = settings
                yield w
            w.city_mqtt.close()  # type: ignore[attr-defined]


def read_share_topic(
    settings: HubSettings, topic: str, want: int, timeout_s: float = 30.0, done: Any = None
) -> list[dict[str, Any]]:
    """A consumer as a partner would write it: confluent-kafka, partition assignment (no group), the hub's registry."""
    ep = settings.endpoints()
    consumer = Consumer({"bootstrap.servers": ep.kafka_bootstrap, "group.id": "reader", "enable.auto.commit": False})
    reader = topic.split(".")[1]  # the registry shows a share topic's schema to its consumer's token (+17)
    registry = SchemaRegistryClient(
        {"url": ep.registry_url, "basic.auth.user.info": f"{reader}:{api_token(settings, reader)}"}
    )
    deserialize = AvroDeserializer(registry)
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < want and time.monotonic() < deadline and not (done and done(out)):
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            out.append(deserialize(msg.value(), SerializationContext(topic, MessageField.VALUE)))
        return out
    finally:
        consumer.close()


async def view(ws: Workspace, org: str, sql: str) -> list[asyncpg.Record]:
    conn = await ws.connect(org)
    try:
        return list(await conn.fetch(sql.replace("{partner}", ws.partner)))
    finally:
        await conn.close()


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


# --------------------------------------------------------------------------- parity, per kind of limit


async def test_fields_and_devices_give_the_same_rows_on_kafka_mqtt_and_sql(streams: Workspace) -> None:
    rows = await view(streams, "city", "SELECT * FROM {partner}__air")
    want = {(r["device_id"], ms(r["time"]), r["pm25"], r["no2"]) for r in rows}
    assert {d for d, *_ in want} == {"st-001", "st-002", "st_01"}
    topic = names.share_topic(streams.org("city"), streams.partner, "air")
    got = await asyncio.to_thread(read_share_topic, streams.settings, topic, len(want))
    assert {(r["device_id"], ms(r["time"]), r["pm25"], r["no2"]) for r in got} == want
    assert all(set(r) == {"device_id", "time", "pm25", "no2"} for r in got)
    subscriber = streams.city_mqtt  # type: ignore[attr-defined]
    await subscriber.wait_for(len(want))
    by_mqtt = {(json.loads(p)["device_id"], json.loads(p)["time"], json.loads(p)["pm25"], json.loads(p)["no2"])
               for _t, p in subscriber.messages}  # fmt: skip
    assert len(by_mqtt) == len(want)
    assert {(d, p) for d, _t, p, _n in by_mqtt} == {(d, p) for d, _t, p, _n in want}
    assert {t.split("/")[-1] for t, _p in subscriber.messages} == {"st-001", "st-002", "st_01"}
    # the share worker's Prometheus counter says the same (it runs in this process)
    counted = sum(
        sample.value
        for family in REGISTRY.collect()
        if family.name == "hub_share_records"
        for sample in family.samples
        if sample.name == "hub_share_records_total" and sample.labels["consumer"] == streams.org("city")
    )
    assert counted >= len(want)
    print(f"\nconfluent-kafka consumer (assign(), hub registry) on {topic}: {len(got)} records, e.g. {got[0]}")
    print(f"MQTT consumer {consumer_name(streams.org('city'))}: {len(subscriber.messages)} messages, e.g. "
          f"{subscriber.messages[0][0]} {subscriber.messages[0][1].decode()}")  # fmt: skip


async def test_pseudonyms_and_delay_match_the_view_over_the_same_window(streams: Workspace) -> None:
    rows = await view(streams, "health", "SELECT * FROM {partner}__air")
    want = {(r["device_pseudonym"], ms(r["time"]), r["pm25"]) for r in rows}
    newest = max(t for _d, t, _p in want)
    assert newest <= time.time() * 1000 - 3600_000  # the delay holds in SQL ...
    topic = names.share_topic(streams.org("health"), streams.partner, "air")
    got = await asyncio.to_thread(read_share_topic, streams.settings, topic, len(want))
    shared = {(r["device_pseudonym"], ms(r["time"]), r["pm25"]) for r in got}
    # ... and in the stream: records become old enough by the minute, so compare up to the older of the two ends
    cut = min(newest, max(t for _d, t, _p in shared))
    assert {x for x in shared if x[1] <= cut} == {x for x in want if x[1] <= cut}
    assert max(t for _d, t, _p in shared) <= time.time() * 1000 - 3600_000
    assert all("device_id" not in r for r in got)


async def test_aggregate_windows_match_the_view_with_k_suppression(streams: Workspace) -> None:
    rows = await view(streams, "startup", "SELECT * FROM {partner}__noise__agg ORDER BY bucket")
    topic = names.share_topic(streams.org("startup"), streams.partner, "noise", aggregate=True)
    got = await asyncio.to_thread(read_share_topic, streams.settings, topic, 3, 15.0)
    by_bucket = {ms(r["bucket"]): r for r in rows}
    assert sorted(ms(g["bucket"]) for g in got) == sorted(by_bucket)[-3:]  # the window of 2 devices is suppressed
    for g in got:
        r = by_bucket[ms(g["bucket"])]
        assert (g["devices"], g["samples"]) == (r["devices"], r["samples"])
        assert g["avg_laeq_db"] == pytest.approx(r["avg_laeq_db"]) and g["max_lamax_db"] == r["max_lamax_db"]
    assert all(g["devices"] >= 3 for g in got)


async def test_an_agreement_not_yet_in_force_streams_nothing(streams: Workspace) -> None:
    assert await view(streams, "later", "SELECT * FROM {partner}__air") == []
    assert not any(s.agreement.id.startswith("s_later") for s in streams.share.active.values())  # type: ignore[attr-defined]


async def test_another_consumer_cannot_subscribe_to_a_share_topic_not_its_own(streams: Workspace) -> None:
    health = consumer_name(streams.org("health"))
    other = Subscriber(streams.settings, health, streams.mqtt[health], f"share/{streams.org('city')}/#")  # type: ignore[attr-defined]
    try:
        assert other.granted == ["Not authorized"]  # SUBACK reason 135
    finally:
        other.close()


async def test_stats_show_records_shared_per_agreement(streams: Workspace) -> None:
    conn = await asyncpg.connect(streams.settings.endpoints().database_url)
    try:
        rows = await conn.fetch("SELECT * FROM hub.share_counters WHERE agreement_id LIKE $1", f"%_{streams.tag}")
    finally:
        await conn.close()
    by = {r["agreement_id"]: r for r in rows}
    assert by[f"s_fields_{streams.tag}"]["records"] >= 90 and by[f"s_fields_{streams.tag}"]["last_shared_at"]


# --------------------------------------------------------------------------- revocation, crashes


async def test_revocation_stops_both_protocols_within_5_seconds(streams: Workspace) -> None:
    share: ShareWorker = streams.share  # type: ignore[attr-defined]
    subscriber = streams.city_mqtt  # type: ignore[attr-defined]
    disconnected = asyncio.Event()
    loop = asyncio.get_running_loop()
    subscriber.client.on_disconnect = lambda *_a: loop.call_soon_threadsafe(disconnected.set)
    topic = names.share_topic(streams.org("city"), streams.partner, "air")
    started = time.monotonic()
    await revoke(streams.settings, f"s_fields_{streams.tag}", "consent withdrawn", "test-suite")
    assert await eventually(lambda: not any(s.topic == topic for s in share.active.values()), 5)
    await asyncio.wait_for(disconnected.wait(), 5)
    stopped = time.monotonic() - started
    assert stopped < 5
    before = len(subscriber.messages)
    async with FeedWriter(streams.settings, await feed_runtime(streams.settings, streams.partner, "air")) as writer:
        await writer.send([{**r, "time": r["time"] + 1} for r in streams.air[:10]])  # type: ignore[attr-defined]
    await asyncio.sleep(2)
    assert len(subscriber.messages) == before
    print(f"\nrevocation: stream stopped and the consumer's MQTT session ended {stopped:.1f} s after revoke")


async def test_a_share_worker_killed_mid_stream_loses_nothing(streams: Workspace, stack_settings: HubSettings) -> None:
    """A second share process joins the group, takes partitions, and is killed while records flow: the worker
    that stays takes its partitions over from their stored positions, and every record reaches the share topic."""
    settings = streams.settings
    topic = names.share_topic(streams.org("startup"), streams.partner, "air")
    env = {**os.environ, **cli_env(stack_settings), "HUB_SHARE_GROUP": settings.share_group}
    old = int(time.time() * 1000) - 3 * 3600_000
    records = [{"device_id": f"k-{i % 7}", "time": old + i, "pm25": float(i), "pm10": 1.0, "no2": None,
                "temperature_c": 1.0, "humidity_pct": 1.0, "battery_v": None} for i in range(6000)]  # fmt: skip
    share: ShareWorker = streams.share  # type: ignore[attr-defined]
    # One share worker process as `hub run share` starts it (index 1: the test's own worker is 0).
    child = subprocess.Popen([sys.executable, "-m", "hub.worker_process", "share", "1"], env=env)  # noqa: ASYNC220
    try:
        owned = len(share.assigned)
        assert await eventually(lambda: 0 < len(share.assigned) < owned, 30), "the second worker took partitions"
        async with FeedWriter(settings, await feed_runtime(settings, streams.partner, "air")) as writer:
            for i in range(0, len(records), 250):
                await writer.send(records[i : i + 250])
                if i == 3000:
                    os.kill(child.pid, signal.SIGKILL)
                await asyncio.sleep(0.05)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    want = {(r["time"], r["pm25"]) for r in records}

    seen: set[tuple[int, float]] = set()

    def every_one(got: list[dict[str, Any]]) -> bool:
        if not got:
            return False
        seen.add((ms(got[-1]["time"]), got[-1]["pm25"]))
        return len(seen) >= len(want) and want <= seen

    # A partner's reader (confluent-kafka, assign(), the hub's registry) until it has seen every record.
    got = await asyncio.to_thread(read_share_topic, settings, topic, 10**9, 40.0, every_one)
    missing = want - {(ms(r["time"]), r["pm25"]) for r in got}
    assert not missing, f"{len(missing)} of {len(records)} records never reached {topic}"


async def test_a_lane_that_reads_nothing_finds_its_stored_positions_moved_and_reads_again_from_there(
    streams: Workspace,
) -> None:
    """What landing's freeing of the local broker's memory does to a feed topic: recreated, and every lane's
    stored positions set back to 0. The lane's consumer would keep its old position and read nothing until the
    new log passed it (a share phase of `hub bench` stalled so): an idle lane compares what is stored."""
    share: ShareWorker = streams.share  # type: ignore[attr-defined]
    topic = (await feed_runtime(streams.settings, streams.partner, "air")).row.kafka_topic
    lane = share.lanes["now"]

    def positioned() -> bool:
        return any(tp.topic == topic and offset > 0 for tp, offset in lane.expected.items())

    assert await eventually(positioned, 20)
    old = {tp: offset for tp, offset in lane.expected.items() if tp.topic == topic}
    fenced = share.fenced
    await query(streams.settings, "UPDATE hub.share_offsets SET next_offset = 0 WHERE lane = 'now' AND topic = $1",
                topic)  # fmt: skip
    assert await eventually(lambda: share.fenced > fenced, 10), "the idle lane never noticed"
    # Read again from 0 up to where it was: repeats with the same keys, never a gap.
    assert await eventually(lambda: all(lane.expected.get(tp) == offset for tp, offset in old.items()), 20)


async def test_landing_frees_no_feed_topic_that_a_share_lane_has_not_shared(streams: Workspace) -> None:
    """The delayed lane still holds this hour's records in the feed topic: the local broker keeps them."""
    settings = streams.settings.replace(land_free_broker_memory_min_records=1)
    feed = await feed_runtime(settings, streams.partner, "air")
    conn = await asyncpg.connect(settings.endpoints().database_url)
    try:
        [outcome] = await free_landed_topics(conn, settings, settings.endpoints(), [feed.row], catch_up_s=5.0)
    finally:
        await conn.close()
    assert not outcome.recreated and "share streams have not shared every record yet" in outcome.reason
    assert "delay-3600s" in outcome.reason


# --------------------------------------------------------------------------- the local broker's memory


async def commit_reading(settings: HubSettings, topic: str, group: str, upto: dict[int, int]) -> None:
    """A consumer of the share topic (partition assignment, its own group) that commits where it has read to."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.endpoints().kafka_bootstrap, group_id=group,
                                enable_auto_commit=False)  # fmt: skip
    await consumer.start()
    try:
        tps = [AioTopicPartition(topic, p) for p in sorted(upto)]
        consumer.assign(tps)
        await consumer.commit({tp: OffsetAndMetadata(upto[tp.partition], "") for tp in tps})
    finally:
        await consumer.stop()


async def test_a_local_share_topic_is_freed_once_its_consumers_groups_committed_all_of_it_or_at_the_bound(
    streams: Workspace,
) -> None:
    settings = streams.settings.replace(share_free_min_records=1, share_local_max_records=10**9)
    bootstrap = settings.endpoints().kafka_bootstrap
    org = streams.org("startup")
    topic = names.share_topic(org, streams.partner, "air")
    prefix = names.share_topic_prefix(org)

    async def free(s: HubSettings = settings) -> memory.Outcome:
        conn = await asyncpg.connect(s.endpoints().database_url)
        try:
            return await memory.free_share_topic(conn, s, bootstrap, topic, prefix)
        finally:
            await conn.close()

    assert await eventually(lambda: topic_holds(settings, topic, len(streams.air)), 30)  # type: ignore[attr-defined]
    unread = await free()
    assert not unread.recreated and "none of the consumer's groups" in unread.reason and unread.records > 0
    ends = await memory._highwaters(settings, bootstrap, topic)
    assert ends is not None
    await commit_reading(settings, topic, f"{prefix}dashboard", ends)
    await commit_reading(settings, topic, f"{prefix}model", {p: max(0, e - 1) for p, e in ends.items()})
    await commit_reading(settings, topic, "someone-else", {p: 0 for p in ends})  # not the consumer's group
    behind = await free()
    assert not behind.recreated and f"{sum(1 for e in ends.values() if e)} records not committed" in behind.reason
    await commit_reading(settings, topic, f"{prefix}model", ends)
    freed = await free()
    assert freed.recreated and freed.unread == 0 and freed.records == sum(ends.values())
    assert await memory._highwaters(settings, bootstrap, topic) == {p: 0 for p in ends}
    assert await memory._committed(settings, bootstrap, topic, [f"{prefix}dashboard"], sorted(ends)) == {
        p: 0 for p in ends
    }
    # The bound: recreated whatever was read, the unread records counted.
    async with FeedWriter(settings, await feed_runtime(settings, streams.partner, "air")) as writer:
        await writer.send([{**r, "time": r["time"] + 7} for r in streams.air[:20]])  # type: ignore[attr-defined]
    assert await eventually(lambda: topic_holds(settings, topic, 20), 20)
    bounded = await free(settings.replace(share_local_max_records=20))
    assert bounded.recreated and bounded.unread == 20 and "the bound is 20" in bounded.reason
    events = await query(settings, "SELECT count(*) FROM hub.land_events WHERE kind = 'share-topic-recreated' "
                                   "AND topic = $1", topic)  # fmt: skip
    assert events == 2


async def topic_holds(settings: HubSettings, topic: str, n: int) -> bool:
    ends = await memory._highwaters(settings, settings.endpoints().kafka_bootstrap, topic)
    return ends is not None and sum(ends.values()) >= n
