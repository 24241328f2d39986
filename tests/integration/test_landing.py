"""Landing on real servers: every record exactly once in its table, whatever fails in between.

Records are written straight to the feed topics in the wire format ingest produces (see
`FeedWriter`), so each test decides exactly what Kafka holds: duplicates, versions, a record
the database refuses. Each landing worker uses a consumer group of its own (`own_group`):
landing offsets live in the database, so a new group resumes exactly where the table is.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from hub.catalog import store as catalog
from hub.catalog.locks import producer_lock_sql
from hub.catalog.topics import ensure_feed_topics
from hub.control.apply import apply
from hub.ingest.identity import worker_client_id
from hub.landing.broker_memory import free_landed_topics
from hub.landing.worker import LandingWorker
from hub.settings import HubSettings
from hub.stack import servers
from hub.stack.broker_auth import LocalBrokerAuth
from hub.stack.process import wait_for_port
from tests.feeds import KEY_FIELDS
from tests.integration.support import (
    REPO,
    Device,
    FeedWriter,
    air_quality_records,
    apply_examples,
    assigned_topic,
    eventually,
    feed_runtime,
    header,
    offsets_match_log_ends,
    own_group,
    private_stack,
    query,
    read_keys,
    rows_of,
    running_ingest,
    running_landing,
    unique,
    until_rows,
)

AIR = ("uni_air_lab", "air_quality")
AIR_TABLE = "uni_air_lab.air_quality"


def assert_air_rows(rows: list[Any], records: list[dict[str, Any]]) -> None:
    """The rows are exactly the records (one each, same values), whatever order they landed in."""
    got = sorted((r["device_id"], int(r["time"].timestamp() * 1000), r["pm25"]) for r in rows)
    want = sorted({(r["device_id"], r["time"], r["pm25"]) for r in records})
    assert got == want


# --- 1. a crash between writing rows and storing offsets ---------------------------------


def start_land_process(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`hub run land` in a process group of its own, so the test can kill it and its worker at once."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "hub", "run", "land"],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def test_a_landing_process_killed_after_writing_rows_but_before_storing_offsets_loses_and_duplicates_nothing(
    applied: HubSettings, hub_env: dict[str, str], tmp_path: Path
) -> None:
    url = applied.endpoints().database_url
    feed = await feed_runtime(applied, *AIR)
    devices = [unique("crash") for _ in range(8)]
    first = [r for d in devices for r in air_quality_records(d, 25)]
    second = [r for d in devices for r in air_quality_records(d, 50)[25:]]
    # Kafka delivers at least once: some records are in the log twice.
    again = first[::10] + second[::10]
    log = tmp_path / "land.log"
    blocker = await asyncpg.connect(url)
    try:
        # Hold the feed's counter row: the worker's transaction then writes the rows and
        # waits there, before it stores the offsets.
        await blocker.execute(
            """INSERT INTO hub.land_counters (partner_id, feed, kafka_partition, rows) VALUES ($1, $2, -1, 0)
               ON CONFLICT DO NOTHING""",
            *AIR,
        )
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute(
            "SELECT 1 FROM hub.land_counters WHERE partner_id = $1 AND feed = $2 AND kafka_partition = -1 FOR UPDATE",
            *AIR,
        )
        offsets_before = await query(
            applied, "SELECT coalesce(sum(next_offset), 0) FROM hub.land_offsets WHERE topic = $1", feed.row.kafka_topic
        )
        proc = start_land_process({**hub_env, "HUB_LAND_GROUP": unique("land")}, log)
        try:
            async with FeedWriter(applied, feed) as writer:
                await writer.send(first)
                await writer.send(again[: len(again) // 2])

            async def stuck_in_our_lock() -> bool:
                return bool(
                    await query(
                        applied,
                        """SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'
                           AND backend_xid IS NOT NULL AND query LIKE 'INSERT INTO hub.land_counters%'""",
                    )
                )

            assert await eventually(stuck_in_our_lock, timeout_s=40), log.read_text()[-3000:]
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        await tx.rollback()  # the killed worker's transaction now fails and rolls back
    finally:
        await blocker.close()
    assert await query(applied, f"SELECT count(*) FROM {AIR_TABLE} WHERE device_id = ANY($1::text[])", devices) == 0
    assert (
        await query(
            applied, "SELECT coalesce(sum(next_offset), 0) FROM hub.land_offsets WHERE topic = $1", feed.row.kafka_topic
        )
        == offsets_before
    )

    proc = start_land_process({**hub_env, "HUB_LAND_GROUP": unique("land")}, log)
    try:
        async with FeedWriter(applied, feed) as writer:
            await writer.send(second)  # mid-stream: while the new worker starts and catches up
            await writer.send(again[len(again) // 2 :])
        want = len(first) + len(second)
        assert await until_rows(applied, AIR_TABLE, devices, want, timeout_s=40) == want, log.read_text()[-3000:]
        assert await eventually(lambda: offsets_match_log_ends(applied, feed.row.kafka_topic), timeout_s=20)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    assert_air_rows(await rows_of(applied, AIR_TABLE, devices), first + second)


# --- 2. the database restarts mid-stream -------------------------------------------------


async def test_landing_rides_out_a_database_restart_mid_stream_and_lands_every_record_once(
    applied: HubSettings,
) -> None:
    settings = own_group(applied)
    feed = await feed_runtime(settings, *AIR)
    state = settings.state_dir.resolve()
    devices = [unique("pgrestart") for _ in range(4)]
    records = [r for d in devices for r in air_quality_records(d, 60)]
    chunks = [records[i::30] for i in range(30)]
    try:
        async with running_landing(settings.replace(land_retry_max_s=1.0)) as worker:
            assert await assigned_topic(worker, feed.row.kafka_topic)
            async with FeedWriter(settings, feed) as writer:
                for i, chunk in enumerate(chunks):
                    await writer.send(chunk)
                    await asyncio.sleep(0.05)
                    if i == 8:
                        await asyncio.to_thread(servers.stop_postgres, state)
                    if i == 20:
                        await asyncio.to_thread(servers.start_postgres, state, settings.pg_port)
            assert await until_rows(settings, AIR_TABLE, devices, len(records), timeout_s=40) == len(records)
            assert await eventually(lambda: offsets_match_log_ends(settings, feed.row.kafka_topic), timeout_s=20)
            assert worker.retries > 0, "the worker met the restart and waited it out"
    finally:
        if servers.postgres_process(state).pid() is None:
            servers.start_postgres(state, settings.pg_port)
    assert_air_rows(await rows_of(settings, AIR_TABLE, devices), records)


# --- 3. a compatible schema change mid-stream --------------------------------------------

CONNECTOR = """\
partner:
  id: {partner}
  name: Landing test partner
  kind: university
  contact: landing-tests@example.org
feeds:
  - name: readings
    description: CO2 readings for the landing tests.
    licence: CC0-1.0
    schema: {schema}
    topic: sensors/{{device_id}}
    format: json
    time:
      field: t
      format: epoch_ms
    retention: 30d
"""


def reading_schema(name: str, version: int) -> dict[str, Any]:
    fields: list[dict[str, Any]] = [*KEY_FIELDS, {"name": "ppm", "type": "double"}]
    if version >= 2:
        fields += [
            {"name": "temperature_c", "type": ["null", "double"], "default": None},
            {"name": "sensor", "type": "string", "default": "ndir"},
        ]
    return {"type": "record", "name": "Reading", "namespace": f"hub.{name}", "fields": fields}


async def test_records_of_an_older_schema_version_land_beside_the_new_one_with_its_new_columns_defaulted(
    applied: HubSettings, tmp_path: Path
) -> None:
    settings = own_group(applied)
    partner = unique("lt").replace("-", "_")
    schema_name = f"{partner}_reading"
    (tmp_path / "connectors").mkdir()
    (tmp_path / "schemas").mkdir()
    config = tmp_path / "connectors" / f"{partner}.yaml"
    config.write_text(CONNECTOR.format(partner=partner, schema=schema_name))
    avsc = tmp_path / "schemas" / f"{schema_name}.avsc"
    avsc.write_text(json.dumps(reading_schema(schema_name, 1)))
    await apply(settings, config, tmp_path / "schemas", broker=LocalBrokerAuth(settings))
    v1 = await feed_runtime(settings, partner, "readings")
    table = f"{partner}.readings"
    now = int(time.time() * 1000) - 3_600_000

    def reading(device: str, i: int, v2: bool) -> dict[str, Any]:
        r: dict[str, Any] = {"device_id": device, "time": now + i * 1000, "ppm": 400.0 + i}
        if v2:
            r.update(temperature_c=20.0 + i, sensor="pas")
        return r

    old, new = unique("v1"), unique("v2")
    # A catalog reload interval far beyond the test: the new version is picked up because its id is new.
    async with running_landing(settings.replace(catalog_reload_s=600.0)) as worker:
        assert await assigned_topic(worker, v1.row.kafka_topic)
        async with FeedWriter(settings, v1) as writer:
            await writer.send([reading(old, i, False) for i in range(5)])
            assert await until_rows(settings, table, [old], 5) == 5

            avsc.write_text(json.dumps(reading_schema(schema_name, 2)))
            await apply(settings, config, tmp_path / "schemas", broker=LocalBrokerAuth(settings))
            v2 = await feed_runtime(settings, partner, "readings")
            assert v2.schema_id != v1.schema_id
            # The worker meets v2 with its first record (its id is new). A v1 record it lands before
            # then has no column for the new fields: only once v2 has landed is the outcome fixed.
            v2_schema = (v2.schema_id, v2.schema.parsed)
            await writer.send([reading(new, 5, True)], schema=v2_schema, partition=0)
            assert await until_rows(settings, table, [new], 1) == 1
            # Both versions in the same partition, interleaved: old producers keep writing v1.
            for i in range(5, 15):
                await writer.send([reading(old, i, False)], partition=0)
                if i > 5:
                    await writer.send([reading(new, i, True)], schema=v2_schema, partition=0)
        assert await until_rows(settings, table, [old, new], 25) == 25
    rows = await rows_of(settings, table, [old, new])
    by_device: dict[str, list[Any]] = {old: [], new: []}
    for r in rows:
        by_device[r["device_id"]].append(r)
    assert len(by_device[old]) == 15 and len(by_device[new]) == 10
    # v1 rows landed before the change have the new columns null; v1 records landed once the worker
    # met v2 are read through v2, so they get its defaults (null, and 'ndir').
    assert [(r["ppm"], r["temperature_c"], r["sensor"]) for r in by_device[old]] == [
        (400.0 + i, None, None if i < 5 else "ndir") for i in range(15)
    ]
    assert [(r["ppm"], r["temperature_c"], r["sensor"]) for r in by_device[new]] == [
        (400.0 + i, 20.0 + i, "pas") for i in range(5, 15)
    ]
    assert worker.dead_lettered == 0


# --- 4. a second worker joins mid-stream -------------------------------------------------


async def test_a_second_landing_worker_joining_mid_stream_takes_partitions_and_every_record_lands_once(
    applied: HubSettings,
) -> None:
    settings = own_group(applied)
    feed = await feed_runtime(settings, *AIR)
    topic = feed.row.kafka_topic
    devices = [unique("rebal") for _ in range(16)]
    per_device = 80
    by_device = [air_quality_records(d, per_device) for d in devices]
    records = [rs[i] for i in range(per_device) for rs in by_device]  # as devices publish: all at once
    landed_before = await query(
        settings, "SELECT coalesce(sum(rows), 0) FROM hub.land_counters WHERE partner_id = $1 AND feed = $2", *AIR
    )
    async with running_landing(settings) as first, FeedWriter(settings, feed) as writer:
        assert await assigned_topic(first, topic)
        sent = 0
        step = len(devices) * 2
        async with running_landing(settings) as second:
            # The stream goes on while the group rebalances; the last quarter is held back until the
            # second worker owns partitions, so that it lands some of them (every device has records there).
            held_back = len(records) - len(records) // 4
            while sent < len(records):
                if sent >= held_back and not second.assigned:
                    assert await eventually(lambda: bool(second.assigned), timeout_s=40), "no rebalance"
                await writer.send(records[sent : sent + step])
                sent += step
                await asyncio.sleep(0.05 if second.landed else 0.15)
            assert await until_rows(settings, AIR_TABLE, devices, len(records), timeout_s=40) == len(records)
            assert second.assigned, "the second worker took partitions"
            assert second.landed > 0
            assert first.assigned.isdisjoint(second.assigned)
        assert await eventually(lambda: offsets_match_log_ends(settings, topic), timeout_s=20)
    assert_air_rows(await rows_of(settings, AIR_TABLE, devices), records)
    landed_after = await query(
        settings, "SELECT coalesce(sum(rows), 0) FROM hub.land_counters WHERE partner_id = $1 AND feed = $2", *AIR
    )
    assert landed_after - landed_before == len(records)


# --- 5. a record the database refuses ----------------------------------------------------


async def test_a_record_the_database_refuses_is_dead_lettered_and_the_rest_of_its_partition_lands(
    applied: HubSettings,
) -> None:
    settings = own_group(applied)
    feed = await feed_runtime(settings, *AIR)
    good = [unique("dlq") for _ in range(3)]
    bad = unique("dlq") + "\x00nul"  # PostgreSQL text cannot hold a NUL character
    before = [r for d in good[:2] for r in air_quality_records(d, 10)]
    poison = air_quality_records(bad, 1)
    after = air_quality_records(good[2], 10)
    async with running_landing(settings) as worker, FeedWriter(settings, feed) as writer:
        assert await assigned_topic(worker, feed.row.kafka_topic)
        # One partition, one batch: good records on both sides of the bad one.
        await writer.send(before[:10] + poison + before[10:], partition=1)
        await writer.send(after, partition=1)
        assert await until_rows(settings, AIR_TABLE, good, 30) == 30
        assert await eventually(lambda: offsets_match_log_ends(settings, feed.row.kafka_topic), timeout_s=20)
        assert worker.dead_lettered == 1
    found = await read_keys(settings.endpoints().kafka_bootstrap, settings.kafka_dead_letter_topic, {bad.encode()})
    letters = found.get(bad.encode(), [])
    assert len(letters) == 1
    assert header(letters[0], "reason") == b"refused_by_database"
    assert header(letters[0], "stage") == b"landing"
    assert b"0x00" in (header(letters[0], "message") or b"")
    assert_air_rows(await rows_of(settings, AIR_TABLE, good), before + after)


async def test_records_delivered_again_land_once_and_the_new_records_of_their_batch_land(
    applied: HubSettings,
) -> None:
    """A batch is first COPied straight into the table; one that meets rows already there takes the
    staging path (ON CONFLICT DO NOTHING) instead, and so does the table's next batch."""
    settings = own_group(applied)
    feed = await feed_runtime(settings, *AIR)
    devices = [unique("again") for _ in range(2)]
    first, second = air_quality_records(devices[0], 30), air_quality_records(devices[1], 30)
    third = air_quality_records(devices[1], 10, start_ms=second[-1]["time"] + 1000)
    async with running_landing(settings) as worker, FeedWriter(settings, feed) as writer:
        assert await assigned_topic(worker, feed.row.kafka_topic)
        await writer.send(first, partition=2)
        assert await until_rows(settings, AIR_TABLE, devices, len(first), timeout_s=30) == len(first)
        assert worker.duplicates == 0
        # One batch: a third of the first records again (as after a crash of ingest), then new ones.
        await writer.send(first[:10] + second, partition=2)
        want = len(first) + len(second)
        assert await until_rows(settings, AIR_TABLE, devices, want, timeout_s=30) == want
        assert worker.duplicates == 10
        await writer.send(third, partition=2)
        want += len(third)
        assert await until_rows(settings, AIR_TABLE, devices, want, timeout_s=30) == want
        assert await eventually(lambda: offsets_match_log_ends(settings, feed.row.kafka_topic), timeout_s=20)
        assert worker.duplicates == 10
    assert_air_rows(await rows_of(settings, AIR_TABLE, devices), first + second + third)


# --- 6, 7. the local broker: restarts and memory (a stack of this module's own) ----------


@pytest.fixture(scope="module")
def own_stack() -> Iterator[HubSettings]:
    """A local stack of this module's own: restarting its broker or deleting its topics leaves the session's alone."""
    with private_stack("hub-test-land-") as settings:
        yield apply_examples(settings)


async def test_after_a_broker_restart_landing_notices_the_lost_log_and_lands_the_new_one_from_its_start(
    own_stack: HubSettings,
) -> None:
    settings = own_group(own_stack)
    feed = await feed_runtime(settings, *AIR)
    topic = feed.row.kafka_topic
    state = settings.state_dir.resolve()
    before = [r for d in [unique("pre") for _ in range(8)] for r in air_quality_records(d, 5)]
    # More records after the restart than were landed before it, so that stored offsets
    # would fall inside the new log and skip its first records, were they trusted.
    after = [r for d in [unique("post") for _ in range(8)] for r in air_quality_records(d, 30)]
    devices_before = sorted({r["device_id"] for r in before})
    devices_after = sorted({r["device_id"] for r in after})
    stop = asyncio.Event()
    patient = settings.replace(land_retry_max_s=1.0)
    async with LandingWorker(patient, settings.endpoints()) as worker:
        running = asyncio.create_task(worker.run(stop))
        assert await assigned_topic(worker, topic)
        async with FeedWriter(settings, feed) as writer:
            await writer.send(before)
        assert await until_rows(settings, AIR_TABLE, devices_before, len(before)) == len(before)

        servers.kafka_process(state).stop()
        wait_for_port(settings.kafka_port, 15.0, servers.start_kafka(state, settings.kafka_port))
        await ensure_feed_topics(settings)  # what `hub stack up` does
        async with FeedWriter(settings, feed) as writer:
            await writer.send(after)
        assert await until_rows(settings, AIR_TABLE, devices_after, len(after), timeout_s=60) == len(after)
        assert await eventually(lambda: offsets_match_log_ends(settings, topic), timeout_s=20)
        assert worker.broker_resets >= 1
        assert worker.records_lost == 0  # everything the old log held had been landed

        # It never hangs: asked to stop while the broker is down, it stops (the bound only
        # turns a hang into a failure).
        servers.kafka_process(state).stop()
        stop.set()
        await asyncio.wait_for(running, 60)
    wait_for_port(settings.kafka_port, 15.0, servers.start_kafka(state, settings.kafka_port))
    await ensure_feed_topics(settings)
    assert_air_rows(await rows_of(settings, AIR_TABLE, devices_before + devices_after), before + after)
    event = await query(settings, "SELECT detail FROM hub.land_events WHERE kind = 'broker-reset' ORDER BY id DESC")
    assert event and "lost its log" in event


async def test_a_topic_recreated_behind_landings_back_is_noticed_by_its_shorter_log_and_landed_from_its_start(
    own_stack: HubSettings,
) -> None:
    settings = own_group(own_stack)
    feed = await feed_runtime(settings, *AIR)
    topic = feed.row.kafka_topic
    before = [r for d in [unique("old") for _ in range(8)] for r in air_quality_records(d, 5)]
    after = [r for d in [unique("new") for _ in range(2)] for r in air_quality_records(d, 2)]
    async with running_landing(settings) as worker:
        assert await assigned_topic(worker, topic)
        async with FeedWriter(settings, feed) as writer:
            await writer.send(before)
        assert await until_rows(settings, AIR_TABLE, sorted({r["device_id"] for r in before}), len(before)) == 40
        resets = worker.broker_resets

        # Someone deletes and creates the topic by hand: the broker keeps running, the stored
        # offsets stay, and the new log is shorter than them.
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.endpoints().kafka_bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([topic])
            await admin.create_topics([NewTopic(topic, feed.row.partitions, 1)])
        finally:
            await admin.close()
        async with FeedWriter(settings, feed) as writer:
            await writer.send(after)
        devices = sorted({r["device_id"] for r in after})
        assert await until_rows(settings, AIR_TABLE, devices, len(after), timeout_s=40) == len(after)
        assert await eventually(lambda: offsets_match_log_ends(settings, topic), timeout_s=20)
        assert worker.broker_resets > resets
    assert await query(
        settings, "SELECT count(*) FROM hub.land_events WHERE kind = 'log-truncated' AND topic = $1", topic
    )


async def test_without_freeing_while_ingesting_fully_landed_topics_are_recreated_only_while_no_ingest_worker_runs(
    own_stack: HubSettings,
) -> None:
    """For producers that do not hold the topic locks: HUB_LAND_FREE_BROKER_MEMORY_WHILE_INGESTING=false."""
    settings = own_group(own_stack).replace(
        land_free_broker_memory=True,
        land_free_broker_memory_every_s=0.5,
        land_free_broker_memory_min_records=1_000,
        land_free_broker_memory_while_ingesting=False,
    )
    feed = await feed_runtime(settings, *AIR)
    topic = feed.row.kafka_topic
    kafka = servers.kafka_process(settings.state_dir.resolve())
    devices = [unique("mem") for _ in range(50)]
    records = [r for d in devices for r in air_quality_records(d, 2_000)]  # 100,000 records
    later = [r for d in devices[:5] for r in air_quality_records(d, 2_010)[2_000:]]
    # An ingest worker with an active session could be sending at any moment: hands off its topics.
    url = settings.endpoints().database_url
    session = unique("hub-ingest-test")
    await query(
        settings, "INSERT INTO hub.resources (kind, name, state) VALUES ('mqtt-session', $1, 'active')", session
    )
    try:
        async with running_landing(settings) as worker:
            assert await assigned_topic(worker, topic)
            held = await query(settings, "SELECT sum(next_offset) FROM hub.land_offsets WHERE topic = $1", topic)
            rss_empty = kafka.rss_mb()
            t0 = time.monotonic()
            async with FeedWriter(settings, feed) as writer:
                for i in range(0, len(records), 10_000):
                    await writer.send(records[i : i + 10_000])
            t1 = time.monotonic()
            assert await until_rows(settings, AIR_TABLE, devices, len(records), timeout_s=60) == len(records)
            print(f"produced {len(records)} in {t1 - t0:.1f} s, landed after {time.monotonic() - t0:.1f} s")
            assert await eventually(lambda: offsets_match_log_ends(settings, topic), timeout_s=20)
            rss_full = kafka.rss_mb()
            await asyncio.sleep(2)  # several rounds of the check
            assert worker.topics_recreated == 0

            await query(settings, "UPDATE hub.resources SET state = 'ended' WHERE name = $1", session)
            assert await eventually(lambda: worker.topics_recreated == 1, timeout_s=20)
            assert await query(settings, "SELECT sum(next_offset) FROM hub.land_offsets WHERE topic = $1", topic) == 0
            freed = await query(
                settings, "SELECT records FROM hub.land_events WHERE kind = 'topic-recreated' AND topic = $1", topic
            )
            assert freed == held + len(records)
            rss_freed = kafka.rss_mb()

            # The recreated topic carries on from offset 0: new records land.
            async with FeedWriter(settings, feed) as writer:
                await writer.send(later)
            want = len(records) + len(later)
            assert await until_rows(settings, AIR_TABLE, devices, want, timeout_s=60) == want
            assert await eventually(lambda: offsets_match_log_ends(settings, topic), timeout_s=20)

            # With producers that hold the topic's shared lock around each send, topics may be
            # recreated while ingest runs: never while a send holds it.
            eager = settings.replace(
                land_free_broker_memory_while_ingesting=True, land_free_broker_memory_min_records=1
            )
            lock, unlock = producer_lock_sql()
            producer, landing = await asyncpg.connect(url), await asyncpg.connect(url)
            try:
                await producer.execute(lock, [topic])
                held = await free_landed_topics(landing, eager, settings.endpoints(), [feed.row])
                await producer.execute(unlock, [topic])
                freed_again = await free_landed_topics(landing, eager, settings.endpoints(), [feed.row])
            finally:
                await producer.close()
                await landing.close()
            assert [(o.recreated, o.reason) for o in held] == [
                (False, "a producer is sending to it, or another worker is checking it")
            ]
            assert [(o.recreated, o.records) for o in freed_again] == [(True, len(later))]
    finally:
        await query(settings, "DELETE FROM hub.resources WHERE name = $1", session)
    assert_air_rows(await rows_of(settings, AIR_TABLE, devices), records + later)
    assert rss_empty is not None and rss_full is not None and rss_freed is not None
    print(
        f"broker rss: {rss_empty:.0f} MB empty, {rss_full:.0f} MB with {len(records)} records, {rss_freed:.0f} MB after"
    )
    assert rss_full - rss_freed > (rss_full - rss_empty) / 2


async def test_fully_landed_topics_are_recreated_while_ingest_runs_and_every_published_message_lands_once(
    own_stack: HubSettings,
) -> None:
    """The default: ingest holds each feed topic's shared lock from send to acknowledgement, so landing
    may recreate a fully landed topic between two of its batches while devices keep publishing."""
    settings = own_group(own_stack).replace(
        land_free_broker_memory=True,
        land_free_broker_memory_every_s=0.5,
        land_free_broker_memory_min_records=100,
    )
    assert settings.land_free_broker_memory_while_ingesting, "the default"
    feed = await feed_runtime(settings, *AIR)
    topic = feed.row.kafka_topic
    devices = [unique("live") for _ in range(10)]
    start_ms = int(time.time() * 1000) - 3_600_000
    published: list[tuple[str, int, float]] = []  # (device, time, pm25) of each message, in order
    stop = asyncio.Event()
    last_event = await query(settings, "SELECT coalesce(max(id), 0) FROM hub.land_events")
    dev = Device(settings, AIR[0])

    async def publish_steadily() -> None:
        """About 300 messages a second, one per device per round, until told to stop."""
        i = 0
        while not stop.is_set():
            for d in devices:
                t = start_ms + i * 1000
                body = {"t": t, "pm2_5": float(i), "pm10": 1.0, "temp_f": 68.0, "rh": 40.0}
                dev.publish(f"partners/{AIR[0]}/stations/{d}/air", json.dumps(body))
                published.append((d, t, float(i)))
            i += 1
            await asyncio.sleep(1 / 30)

    try:
        async with running_landing(settings) as landing, running_ingest(settings):
            assert await assigned_topic(landing, topic)
            session = "SELECT state FROM hub.resources WHERE kind = 'mqtt-session' AND name = $1"
            assert await query(settings, session, worker_client_id(settings, 0)) == "active"
            recreated_before = landing.topics_recreated
            stream = asyncio.create_task(publish_steadily())
            try:
                assert await eventually(lambda: landing.topics_recreated >= recreated_before + 3, timeout_s=20), (
                    f"recreated {landing.topics_recreated - recreated_before} times; {len(published)} published"
                )
                at_recreation = len(published)
                # The stream goes on across the recreations and after them.
                assert await eventually(lambda: len(published) >= at_recreation + 300, timeout_s=10)
            finally:
                stop.set()
                await stream
            acks = await dev.wait_acks(len(published), timeout_s=30)
            assert len(acks) == len(published) and set(acks.values()) == {"Success"}
            assert await until_rows(settings, AIR_TABLE, devices, len(published), timeout_s=30) == len(published)
            assert await eventually(lambda: offsets_match_log_ends(settings, topic), timeout_s=20)
            recreations = landing.topics_recreated - recreated_before
    finally:
        dev.close()
    rows = await rows_of(settings, AIR_TABLE, devices)
    got = sorted((r["device_id"], int(r["time"].timestamp() * 1000), r["pm25"]) for r in rows)
    assert got == sorted(published), "every published message is a row, exactly once"
    events = await query(
        settings,
        "SELECT count(*) FROM hub.land_events WHERE kind = 'topic-recreated' AND topic = $1 AND id > $2",
        topic,
        last_event,
    )
    assert events >= recreations >= 3
    print(f"{len(published)} published; {topic} recreated {recreations} times while ingest ran; all landed once")


# --- the catalog's landing tables --------------------------------------------------------


async def test_the_catalog_brings_an_older_database_up_to_date_once_and_then_never_queues_behind_landing(
    applied: HubSettings,
) -> None:
    """Landing's tables, column and view are part of the catalog; upgrading runs its DDL once.

    The DDL's ALTER TABLE locks hub.land_offsets exclusively even when it changes nothing, so
    running it at every worker start (or catalog reload) would wait for landing's transactions
    and stop every other worker behind it: ensure_catalog runs it only for another version.
    """
    url = applied.endpoints().database_url
    name = unique("catalog").replace("-", "_")
    db_url = urlunsplit(urlsplit(url)._replace(path=f"/{name}"))
    server = await asyncpg.connect(url)
    await server.execute(f'CREATE DATABASE "{name}"')
    conn = landing = ddl_conn = None
    try:
        conn = await asyncpg.connect(db_url)
        # The catalog as the release before landing's tables moved into it left it.
        await conn.execute(catalog.CATALOG_DDL)
        await conn.execute(
            """DROP VIEW hub.catalog_feeds; DROP TABLE hub.land_events, hub.land_broker;
               ALTER TABLE hub.land_offsets DROP COLUMN log_end; COMMENT ON SCHEMA hub IS NULL;
               INSERT INTO hub.land_offsets (topic, kafka_partition, next_offset) VALUES ('hub.t', 0, 7)"""
        )
        await catalog.ensure_catalog(conn)
        assert await catalog.installed_version(conn) == catalog.CATALOG_VERSION
        assert await conn.fetchval("SELECT log_end IS NULL AND next_offset = 7 FROM hub.land_offsets")
        assert await conn.fetchval("SELECT count(*) FROM hub.catalog_feeds") == 0
        assert await conn.fetchval("SELECT count(*) FROM hub.land_events") == 0
        await conn.execute(catalog.CATALOG_DDL)  # the DDL itself is idempotent

        # A landing worker's transaction holds a row of hub.land_offsets.
        landing = await asyncpg.connect(db_url)
        tx = landing.transaction()
        await tx.start()
        await landing.execute("UPDATE hub.land_offsets SET next_offset = 8")
        await asyncio.wait_for(catalog.ensure_catalog(conn), 30)  # the bound only turns a hang into a failure
        # ... whereas the DDL waits for it.
        ddl_conn = await asyncpg.connect(db_url)
        ddl = asyncio.create_task(ddl_conn.execute(catalog.CATALOG_DDL))

        async def ddl_waits() -> bool:
            return bool(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'", name
                )
            )

        assert await eventually(ddl_waits)
        await tx.commit()
        await ddl
    finally:
        for c in (conn, landing, ddl_conn):
            if c is not None:
                await c.close()
        await server.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await server.close()


# --- the query guide ---------------------------------------------------------------------


async def test_every_query_in_the_query_guide_and_hub_query_run_on_plain_postgresql(
    applied: HubSettings, hub_env: dict[str, str]
) -> None:
    settings = own_group(applied)
    feed = await feed_runtime(settings, *AIR)
    device = "station-7"  # the guide's example device
    start_ms = int(time.time() * 1000) - 600_000
    async with FeedWriter(settings, feed) as writer:
        await writer.send(air_quality_records(device, 4, start_ms))
    async with running_landing(settings) as worker:
        assert await assigned_topic(worker, feed.row.kafka_topic)
        assert await until_rows(settings, AIR_TABLE, [device], 4) >= 4
    text = (REPO / "docs" / "queries.md").read_text()
    blocks = [b.strip().rstrip(";") for b in re.findall(r"```sql\n(.*?)```", text, re.S)]
    conn = await asyncpg.connect(settings.endpoints().database_url)
    try:
        results = [await conn.fetch(sql) for sql in blocks]
    finally:
        await conn.close()
    assert len(results) == 6
    assert device in {r["device_id"] for r in results[0]}  # latest value per device
    assert any(r["feed"] == "air_quality" and r["schema_version"] >= 1 for r in results[4])  # the catalog

    def hub_query(*args: str) -> list[dict[str, Any]]:
        done = subprocess.run(
            [sys.executable, "-m", "hub", "query", *args, "--json"],
            env=hub_env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return [json.loads(line) for line in done.stdout.splitlines()]

    latest = await asyncio.to_thread(hub_query, "latest", "uni_air_lab.air_quality", "--device", device)
    assert [(r["device_id"], r["pm25"]) for r in latest] == [(device, 3.0)]
    day = datetime.fromtimestamp(start_ms / 1000, UTC).date().isoformat()
    buckets = await asyncio.to_thread(hub_query, "rollup", "air_quality", "--device", device, "--day", day)
    assert sum(r["samples"] for r in buckets) >= 1
    feeds = await asyncio.to_thread(hub_query, "catalog")
    assert {"owner", "licence", "table_name", "schema_version"} <= set(feeds[0])
