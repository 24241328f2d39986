"""The benchmark's share phase: the hub end to end with three agreements shared live, against itself without.

With the example agreements of `sharing/` applied to the benchmark feed (a subset of fields over Kafka,
pseudonyms of a tenth of the stations over MQTT, aggregates with k-anonymity over Kafka) and share
workers running, the same messages are published as in the end-to-end phase:

- `share_e2e_msgs_per_s`: the end-to-end rate as every other phase measures it (publish -> committed row)
  while the share workers run; `share_ratio` divides it by the rate without agreements measured just
  before (same run, same workers, same message count), so the bar does not depend on the machine;
- `share_e2e_shared_msgs_per_s`: messages / seconds until every one is also shared on the fields stream's
  Kafka topic, and `share_ratio_until_shared` the same against the reference: the stricter figure, which
  also counts how far sharing trails landing at the end of the burst (the lag phase below measures that);
- share lag at half that rate: publish -> record on the share topic, from each share record's timestamp
  (set by the share worker when it writes the batch) minus the device's event time (when the benchmark
  wrote the line), like the publish -> Kafka figure of the latency phase;
- `share_lag_machine_busy`: the share of both cores' time that was not idle while that phase published, and
  `share_lag_cpu_ms_per_1k_by_process` who spent it (every process tree, and `bench`, this process: the
  publishers' lines, the reader, the memory sampler): whether half rate left the machine CPU to spare;
- what the MQTT consumer of the pseudonymised stream received (a C subscriber with that consumer's login);
- `share_cpu_ms_per_1k`: CPU milliseconds the share workers' processes (`hub run share` and its workers) spent
  per 1000 messages of the phase with three agreements: a cost per record that other load on the machine
  hardly changes, unlike the rates; `share_cpu_ms_per_1k_by_process` gives the same for every process tree
  (servers, ingest, landing, share) in the runs without and with agreements, which shows where the rest of
  the difference goes.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from hub.agreement.names import share_topic
from hub.bench.c_clients import CClients
from hub.bench.measure import CpuWindow, PeakMemory, components_cpu_s, cpu_ms_per_1k, percentile, tree_cpu_s
from hub.bench.payloads import DEVICES, event_time_ms, make_lines
from hub.control.apply import apply
from hub.errors import HubError
from hub.mqtt_auth.accounts import consumer_name
from hub.settings import Endpoints, HubSettings
from hub.stack.broker_auth import LocalBrokerAuth


class Bench(Protocol):
    """What the share phase uses of the benchmark's private stack (hub/bench/runner.py `Bench`)."""

    cfg: Any  # runner.BenchConfig (a Protocol here keeps this module out of an import circle with the runner)
    settings: HubSettings
    ep: Endpoints
    state: Path
    ingest_ack: str
    c: CClients
    procs: dict[str, subprocess.Popen[bytes]]
    memory: PeakMemory  # its `pids`: every server's and every `hub run`'s process tree

    def start_workers(self, name: str, args: list[str], ack: str | None = None) -> None: ...
    def stop_workers(self, name: str) -> None: ...
    async def wait_ingest_ready(self, workers: int, timeout_s: float = 60) -> None: ...
    async def end_to_end(self, lines: list[bytes]) -> dict[str, Any]: ...
    async def counts(self, conn: asyncpg.Connection) -> tuple[int, int, int]: ...
    def paced_publish(self, rate: float, n: int, prefix: str, publishers: int = 2) -> None: ...


HERE = Path(__file__).resolve().parent
FIELDS_AGREEMENT = "bench_fields"  # every message of the feed reaches its stream
FIELDS_TOPIC = share_topic("bench_city", "bench_lab", "air")
MQTT_CONSUMER = "bench_health"
LAG_PREFIX = "shl"


class SharePhase:
    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.mqtt_lines = 0
        self._mqtt: subprocess.Popen[bytes] | None = None
        self._mqtt_reader: threading.Thread | None = None

    # --- set-up ----------------------------------------------------------------------------

    def apply_agreements(self) -> None:
        b = self.bench
        result = asyncio.run(
            apply(b.settings, [HERE / "bench.yaml", HERE / "sharing"], HERE, broker=LocalBrokerAuth(b.settings))
        )
        password = result.credentials.get(consumer_name(MQTT_CONSUMER))
        if password is None:
            raise HubError(f"hub apply made no MQTT login for {MQTT_CONSUMER}")
        self._start_mqtt_consumer(consumer_name(MQTT_CONSUMER), password)

    def _start_mqtt_consumer(self, login: str, password: str) -> None:
        """A C subscriber with the consumer's own login, counting what its share topics deliver."""
        b = self.bench
        self._mqtt = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(b.settings.mqtt_port), "-u", login, "-P", password,
             "-i", login, "-q", "1", "-V", "mqttv5", "-t", f"share/{MQTT_CONSUMER}/#"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

        def count() -> None:
            assert self._mqtt is not None and self._mqtt.stdout is not None
            for _line in self._mqtt.stdout:
                self.mqtt_lines += 1

        self._mqtt_reader = threading.Thread(target=count, daemon=True)
        self._mqtt_reader.start()

    def close(self) -> None:
        if self._mqtt is not None:
            self._mqtt.terminate()
            self._mqtt.wait(10)
            self._mqtt = None

    async def shared(self, conn: asyncpg.Connection) -> int:
        n = await conn.fetchval(
            "SELECT coalesce(sum(records), 0) FROM hub.share_counters WHERE agreement_id = $1", FIELDS_AGREEMENT
        )
        return int(n)

    async def wait_caught_up(self, timeout_s: float = 900) -> dict[str, Any]:
        """The share workers joined their group and passed every record already in the feed topic (the earlier
        phases' records: a new stream shares what its feed topic holds); how many, and how fast."""
        conn = await asyncpg.connect(self.bench.ep.database_url)
        try:
            start = time.monotonic()
            deadline = start + timeout_s
            first: tuple[float, int] | None = None
            while time.monotonic() < deadline:
                lag = await conn.fetchval(
                    """SELECT coalesce(sum(greatest(l.next_offset - coalesce(o.next_offset, 0), 0)), 0)
                       FROM hub.land_offsets l LEFT JOIN hub.share_offsets o
                            ON o.topic = l.topic AND o.kafka_partition = l.kafka_partition AND o.lane = 'now'
                       WHERE l.topic = 'hub.bench_lab.air'"""
                )
                positioned = await conn.fetchval(
                    "SELECT count(*) FROM hub.share_offsets WHERE topic = 'hub.bench_lab.air' AND lane = 'now'"
                )
                if positioned and first is None:
                    first = (time.monotonic(), int(lag))
                if positioned and lag == 0:
                    assert first is not None
                    took = time.monotonic() - first[0]
                    return {
                        "share_catch_up_records": first[1],
                        "share_catch_up_records_per_s": round(first[1] / took, 1) if took > 0.5 else None,
                        "share_join_s": round(first[0] - start, 1),
                    }
                await asyncio.sleep(0.5)
        finally:
            await conn.close()
        raise HubError(f"the share workers did not catch up with the feed topic; see {self.bench.state}/share.log")

    # --- phases ------------------------------------------------------------------------------

    async def end_to_end(self, lines: list[bytes]) -> dict[str, Any]:
        """Publish `lines`; time until every message is landed and shared on the fields stream."""
        b = self.bench
        conn = await asyncpg.connect(b.ep.database_url)
        try:
            base_landed, _, base_rejected = await b.counts(conn)
            base_shared = await self.shared(conn)
            n = len(lines)
            t0 = 0.0
            done = threading.Event()

            def publish() -> None:
                nonlocal t0
                t0 = b.c.publish_chunks(lines)
                done.set()

            threading.Thread(target=publish, daemon=True).start()
            landed_at = shared_at = None
            landed = shared = 0
            last_progress, last_seen = time.monotonic(), (-1, -1)
            while landed_at is None or shared_at is None:
                await asyncio.sleep(0.1)
                lc, _, rc = await b.counts(conn)
                landed = lc - base_landed + rc - base_rejected
                shared = await self.shared(conn) - base_shared
                now = time.monotonic()
                if landed_at is None and landed >= n:
                    landed_at = now
                if shared_at is None and shared >= n:
                    shared_at = now
                if (landed, shared) != last_seen:
                    last_progress, last_seen = now, (landed, shared)
                elif now - last_progress > 30:
                    break
            end = time.monotonic()
            done.wait()
            landed_s, shared_s = (landed_at or end) - t0, (shared_at or end) - t0
            return {
                "share_e2e_landed": landed,
                "share_e2e_shared": shared,
                "share_e2e_landed_seconds": round(landed_s, 2),
                "share_e2e_shared_seconds": round(shared_s, 2),
                "share_e2e_msgs_per_s": round(landed / landed_s, 1),
                "share_e2e_shared_msgs_per_s": round(min(landed, shared) / max(landed_s, shared_s), 1),
            }
        finally:
            await conn.close()

    async def lag(self, rate: float, seconds: float) -> dict[str, Any]:
        """A steady load at `rate`: publish -> record on the fields stream's share topic, per message."""
        b = self.bench
        n = int(rate * seconds)
        mqtt_before = self.mqtt_lines
        consumer = AIOKafkaConsumer(bootstrap_servers=b.ep.kafka_bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(FIELDS_TOPIC, p) for p in sorted(consumer.partitions_for_topic(FIELDS_TOPIC) or [])]
            consumer.assign(tps)
            # Where the topic ends before this phase (the local broker may report up to a batch less: the
            # records before are told apart by their keys anyway).
            for tp, end in (await consumer.end_offsets(tps)).items():
                consumer.seek(tp, end)
            cpu = CpuWindow(b.memory.pids).start()
            await asyncio.to_thread(b.paced_publish, rate, n, LAG_PREFIX)
            busy, by_process = cpu.figures(n)
            lags: list[float] = []
            deadline = time.monotonic() + 60
            while len(lags) < n and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=200, max_records=20_000)
                for records in batch.values():
                    for r in records:
                        if r.key and r.key.startswith(LAG_PREFIX.encode()):
                            t = event_time_ms(r.value)
                            if t is not None:
                                lags.append(r.timestamp - t)
        finally:
            await consumer.stop()
        await asyncio.sleep(1.0)  # the last MQTT deliveries of the phase
        return {
            "share_lag_rate_msgs_per_s": round(rate, 1),
            "share_lag_messages": n,
            "share_lag_shared": len(lags),
            "share_lag_p50_ms": round(percentile(lags, 50), 1),
            "share_lag_p99_ms": round(percentile(lags, 99), 1),
            "share_mqtt_expected": sum(1 for i in range(n) if i % DEVICES < DEVICES // 10),  # shl-00*
            "share_mqtt_received": self.mqtt_lines - mqtt_before,
            "share_lag_machine_busy": busy,
            "share_lag_cpu_ms_per_1k_by_process": by_process,
        }


def run_share_phases(bench: Bench, figures: dict[str, Any], start_ms: int) -> None:
    """Phases 6-8 of `hub bench`: the reference without agreements, the same with three, the share lag."""
    cfg, log = bench.cfg, bench.cfg.log
    if bench.ingest_ack != "kafka":  # the backlog phase acknowledged after Kafka's ack
        bench.stop_workers("ingest")
        bench.start_workers("ingest", ["ingest", "--workers", str(cfg.ingest_workers)])
        asyncio.run(bench.wait_ingest_ready(cfg.ingest_workers))
    log("6/8 end to end again, no agreements (the reference of the share phase, measured just before it)")
    reference_start = components_cpu_s(bench.memory.pids)
    ref = asyncio.run(bench.end_to_end(make_lines(cfg.messages, start_ms)))
    cpu_without = cpu_ms_per_1k(reference_start, components_cpu_s(bench.memory.pids), cfg.messages)
    figures["share_reference_e2e_msgs_per_s"] = ref["e2e_msgs_per_s"]
    log(f"    {ref['e2e_msgs_per_s']:,.0f} msg/s landed, lost {ref['lost']}")

    log(f"7/8 end to end with three agreements shared live by {cfg.share_workers} share worker(s): fields (Kafka), "
        "pseudonyms of some devices (MQTT), aggregates (Kafka)")  # fmt: skip
    phase = SharePhase(bench)
    try:
        phase.apply_agreements()
        bench.start_workers("share", ["share", "--workers", str(cfg.share_workers)])
        figures.update(asyncio.run(phase.wait_caught_up()))
        log(f"    caught up with the {figures['share_catch_up_records']:,} records already in the feed topic "
            f"({figures['share_catch_up_records_per_s']} records/s)")  # fmt: skip
        share_pid = bench.procs["share"].pid
        cpu_before = tree_cpu_s(share_pid)
        components_before = components_cpu_s(bench.memory.pids)
        e2e = asyncio.run(phase.end_to_end(make_lines(cfg.messages, start_ms + cfg.messages + 60_000)))
        cpu_s = tree_cpu_s(share_pid) - cpu_before
        # Where the CPU of the shared run goes, against the run without agreements: the share workers'
        # own, and what their streams add to the servers (the Kafka broker serves their reads and writes).
        cpu_with = cpu_ms_per_1k(components_before, components_cpu_s(bench.memory.pids), cfg.messages)
        figures["share_cpu_ms_per_1k_by_process"] = {"without_agreements": cpu_without, "with_agreements": cpu_with}
        figures.update(e2e)
        figures["share_ratio"] = round(e2e["share_e2e_msgs_per_s"] / ref["e2e_msgs_per_s"], 3)
        figures["share_ratio_until_shared"] = round(e2e["share_e2e_shared_msgs_per_s"] / ref["e2e_msgs_per_s"], 3)
        figures["share_cpu_ms_per_1k"] = round(cpu_s * 1e6 / max(1, e2e["share_e2e_landed"]), 1)
        log(f"    {e2e['share_e2e_msgs_per_s']:,.0f} msg/s landed, {figures['share_ratio']} of the reference; "
            f"{e2e['share_e2e_shared_msgs_per_s']:,.0f} msg/s landed and shared, "
            f"{figures['share_ratio_until_shared']}; share workers' CPU {figures['share_cpu_ms_per_1k']} ms per 1000 "
            "messages")  # fmt: skip
        log("    CPU ms per 1000 messages, without -> with agreements: " + ", ".join(
            f"{name} {cpu_without.get(name, 0.0)} -> {ms}" for name, ms in cpu_with.items()))  # fmt: skip

        rate = max(100.0, e2e["share_e2e_msgs_per_s"] / 2)
        log(f"8/8 share lag at {rate:,.0f} msg/s for {cfg.latency_seconds:.0f} s")
        figures.update(asyncio.run(phase.lag(rate, cfg.latency_seconds)))
        log(f"    publish->share topic p50 {figures['share_lag_p50_ms']} ms, p99 {figures['share_lag_p99_ms']} ms; "
            f"MQTT consumer got {figures['share_mqtt_received']} of {figures['share_mqtt_expected']}")  # fmt: skip
        log(
            f"    while publishing: machine busy {figures['share_lag_machine_busy']:.0%}; CPU ms per 1000 messages: "
            + ", ".join(f"{name} {ms}" for name, ms in figures["share_lag_cpu_ms_per_1k_by_process"].items())
        )
    finally:
        phase.close()
