"""The benchmark: one private stack, the C-client ceiling, then the hub end to end, in the same run.

Phases (each counted at the far end, never assumed):
1. ceiling   - `mosquitto_pub` (C, QoS 1, -M 1000, chunks of at most 25,000 lines, one process per
               chunk, two at a time) -> Mosquitto -> `mosquitto_sub -C N` (C) counting every message.
2. end to end - the same publishers -> ingest workers (PUBACK after Kafka's ack, or after landing:
               `--ack`) -> Kafka -> landing -> committed rows; lost = published - landed - dead-lettered.
3. latency   - a steady publisher at half the end-to-end rate; publish -> Kafka append and
               publish -> committed row, per message; arrival at ingest -> its PUBACK (the workers'
               own histograms, hub/ingest/ack_latency.py).
4. backlog   - landing stopped while `backlog` records are ingested (acknowledging after Kafka's
               ack whatever `--ack` says: waiting for landing, ingest would stop at the broker's
               in-flight window), then started: the drain rate.
5. COPY      - the raw `COPY` rate of the same database, as the landing reference.
6-8. share   - end to end again without agreements, then with three agreements shared live, and the
               share lag at half rate (share_phase.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from hub.bench.c_clients import CClients
from hub.bench.measure import CpuWindow, PeakMemory, copy_rate, percentile
from hub.bench.payloads import DEVICES, event_time_ms, make_lines
from hub.bench.share_phase import run_share_phases
from hub.bench.tuning import tuning_env
from hub.control.apply import apply
from hub.errors import HubError
from hub.ingest import ack_latency
from hub.ingest.landed_acks import ack_mode
from hub.stack import servers
from hub.stack.broker_auth import LocalBrokerAuth
from hub.stack.local import LocalStack, cli_env, private_settings
from hub.stack.process import require_binary

HERE = Path(__file__).resolve().parent
HUB_WORKERS = ("ingest", "land")  # the `hub run` process trees the bench starts (workers and their supervisors)
FEED_TABLE = "bench_lab.air"
# Records ingest acknowledged after Kafka's ack (hub.ingest_acked) that are beyond their partition's landed position.
UNLANDED_SQL = """
SELECT coalesce(sum(greatest(0, a.next_position
                                - greatest(a.first_position, coalesce(o.base_offset + o.next_offset, 0)))), 0)
FROM hub.ingest_acked a
LEFT JOIN hub.land_offsets o ON o.topic = a.topic AND o.kafka_partition = a.kafka_partition
"""


@dataclass
class BenchConfig:
    messages: int = 100_000
    ingest_workers: int = 2
    land_workers: int = 2
    latency_seconds: float = 10.0
    # The drain is timed from the first batch landed to the last: at ~100,000 records it lasts about
    # a second on 2 cores, too short for a sustained rate, hence its own, larger, size.
    backlog: int = 300_000
    ack: str = "auto"  # HUB_INGEST_ACK for the end-to-end and latency phases
    share_workers: int = 1
    keep: bool = False
    log: Callable[[str], None] = print
    progress: Callable[[str, int, int], None] = lambda _what, _done, _total: None
    # > 0: the steady phase runs this long, the hub's memory is reported at its start and end, and the
    # backlog and COPY phases are skipped (`hub bench --soak 600`).
    soak_seconds: float = 0.0


@dataclass
class BenchResult:
    figures: dict[str, Any] = field(default_factory=dict)


class Bench:
    def __init__(self, cfg: BenchConfig) -> None:
        self.cfg = cfg
        self.log = cfg.log
        self.settings = private_settings("hub-bench-")
        self.state = self.settings.state_dir
        self.tuning = tuning_env(os.environ)
        self.env = {**cli_env(self.settings), **self.tuning}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.memory = PeakMemory()
        self.ingest_ack = "kafka"  # what `cfg.ack` means on this stack, once it is up

    # --- set-up ------------------------------------------------------------------------

    def start(self) -> None:
        require_binary("mosquitto_pub", "mosquitto-clients")
        require_binary("mosquitto_sub", "mosquitto-clients")
        self.log(f"starting a private stack in {self.state}")
        self.stack = LocalStack(self.settings)
        self.stack.up()
        asyncio.run(apply(self.settings, HERE / "bench.yaml", HERE, broker=LocalBrokerAuth(self.settings)))
        self.c = CClients(self.settings)
        self.ep = self.settings.endpoints()
        for name, proc in (
            ("mosquitto", servers.mosquitto_process(self.state)),
            ("kafka", servers.kafka_process(self.state)),
            ("postgres", servers.postgres_process(self.state)),
        ):
            self.memory.watch(name, proc.pid())
        self.memory.start()

    def close(self) -> None:
        for name in list(self.procs):
            self.stop_workers(name)
        self.memory.stop()
        if hasattr(self, "stack"):
            self.stack.down()
        if not self.cfg.keep:
            shutil.rmtree(self.state, ignore_errors=True)

    # --- processes ---------------------------------------------------------------------

    def start_workers(self, name: str, args: list[str], ack: str | None = None) -> None:
        log = (self.state / f"{name}.log").open("ab")
        env = {**self.env, "HUB_INGEST_ACK": ack or self.cfg.ack}
        proc = subprocess.Popen([sys.executable, "-m", "hub", "run", *args], env=env, stdout=log, stderr=log)
        self.procs[name] = proc
        self.memory.watch(name, proc.pid)

    def stop_workers(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    async def wait_ingest_ready(self, workers: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            n = await self.sql("SELECT count(*) FROM hub.resources WHERE kind = 'mqtt-session' AND state = 'active'")
            if n >= workers:
                await asyncio.sleep(0.5)  # the subscription follows the session record by a few ms
                return
            await asyncio.sleep(0.1)
        raise HubError(f"ingest workers did not start; see {self.state}/ingest.log")

    async def wait_land_ready(self) -> None:
        """Landing is ready when a probe record has gone all the way through."""
        await asyncio.sleep(6)  # consumer group join; the first batch below confirms it

    # --- database ----------------------------------------------------------------------

    async def sql(self, query: str, *args: Any) -> Any:
        conn = await asyncpg.connect(self.ep.database_url)
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()

    async def counts(self, conn: asyncpg.Connection) -> tuple[int, int, int]:
        """(rows landed, records acknowledged after Kafka's ack and not landed yet, messages refused)."""
        landed = await conn.fetchval("SELECT coalesce(sum(rows), 0) FROM hub.land_counters")
        unlanded = await conn.fetchval(UNLANDED_SQL)
        rejected = await conn.fetchval(
            "SELECT coalesce(sum(messages), 0) FROM hub.ingest_counters WHERE reason <> 'accepted'"
        )
        return int(landed), int(unlanded), int(rejected)

    async def ack_latencies(self) -> Counter[int]:
        """The ingest workers' PUBACK latency histograms, merged (cumulative since each worker started)."""
        conn = await asyncpg.connect(self.ep.database_url)
        try:
            found = await conn.fetch("SELECT detail FROM hub.resources WHERE kind = $1", ack_latency.KIND)
        finally:
            await conn.close()
        merged: Counter[int] = Counter()
        for r in found:
            merged.update(ack_latency.parse(r["detail"]))
        return merged

    def ceiling(self, lines: list[bytes]) -> tuple[float, int]:
        counter = self.c.counter(len(lines))
        time.sleep(0.5)  # its SUBACK; publishing earlier would not be counted
        start = self.c.publish_chunks(lines)
        out, _ = counter.communicate()
        elapsed = time.monotonic() - start
        received = out.count(b"\n")
        return received / elapsed, received

    # --- phases ------------------------------------------------------------------------

    async def end_to_end(self, lines: list[bytes]) -> dict[str, Any]:
        conn = await asyncpg.connect(self.ep.database_url)
        try:
            base_landed, _, base_rej = await self.counts(conn)
            n = len(lines)
            done = threading.Event()
            t0 = 0.0

            def publish() -> None:
                nonlocal t0
                t0 = self.c.publish_chunks(lines)
                done.set()

            threading.Thread(target=publish, daemon=True).start()
            last_progress, last_landed = time.monotonic(), -1
            landed = rejected = 0
            while True:
                await asyncio.sleep(0.2)
                lc, _ac, rc = await self.counts(conn)
                landed, rejected = lc - base_landed, rc - base_rej
                self.cfg.progress("end to end: landed", landed + rejected, n)
                if landed != last_landed:
                    last_progress, last_landed = time.monotonic(), landed
                if landed + rejected >= n:
                    break
                if time.monotonic() - last_progress > 30:
                    break
            t_end = time.monotonic()
            done.wait()
            elapsed = t_end - t0
            return {
                "published": n,
                "landed": landed,
                "dead_lettered": rejected,
                "lost": n - landed - rejected,
                "e2e_seconds": round(elapsed, 2),
                "e2e_msgs_per_s": round(landed / elapsed, 1),
            }
        finally:
            await conn.close()

    def paced_publish(self, rate: float, n: int, prefix: str, publishers: int = 2) -> None:
        """Feed `mosquitto_pub -l` processes line by line at `rate`; each line's event time is when it is written.

        The C publisher sends a line as soon as it reads it, so the measured latency is the hub's, not a
        Python publisher's queue.
        """
        procs = [self.c.mosquitto_pub(login) for login in self.c.logins[:publishers]]
        devices = [f"{prefix}-{i:04d}" for i in range(DEVICES)]
        last: dict[str, int] = {}
        start = time.monotonic()
        tick = 0.005  # write in 5 ms slices: the rate holds without a syscall per message
        i = 0
        while i < n:
            due = int(min(n, (time.monotonic() - start) * rate + 1))
            lines: list[list[bytes]] = [[] for _ in procs]
            now_ms = int(time.time() * 1000)
            while i < due:
                device = devices[i % DEVICES]
                t = max(now_ms, last.get(device, 0) + 1)  # (device, time) is a row's identity
                last[device] = t
                doc = {"id": device, "t": t, "pm2_5": 10.0, "pm10": 20.0, "temperature_c": 11.0,
                       "rh": 50.0, "pressure_hpa": 1000.0}  # fmt: skip
                lines[i % len(procs)].append(orjson.dumps(doc))
                i += 1
            for proc, chunk in zip(procs, lines, strict=True):
                if chunk:
                    assert proc.stdin is not None
                    proc.stdin.write(b"\n".join(chunk) + b"\n")
            time.sleep(tick)
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait()

    async def latency(self, rate: float, seconds: float) -> dict[str, Any]:
        """A steady load at `rate`: publish -> Kafka append, publish -> committed row and arrival -> PUBACK.

        Soaking (`cfg.soak_seconds`): the hub workers' memory is sampled once they are warm (after a
        tenth of the phase, at most 60 s) and when publishing ends; the Kafka latency is not read back.
        """
        n = int(rate * seconds)
        await asyncio.sleep(2.5)  # the workers' last histograms of the phase before (written every 2 s)
        acks_before = await self.ack_latencies()
        memory: dict[str, Any] = {}
        soaking = self.cfg.soak_seconds > 0
        if soaking:
            warm_s = min(60.0, seconds / 10)
            threading.Timer(warm_s, lambda: memory.update(start=self.memory.current_mb(HUB_WORKERS))).start()
        cpu = CpuWindow(self.memory.pids).start()
        await asyncio.to_thread(self.paced_publish, rate, n, "lat")
        busy, by_process = cpu.figures(n)
        if soaking:
            memory["end"] = self.memory.current_mb(HUB_WORKERS)
        conn = await asyncpg.connect(self.ep.database_url)
        try:
            deadline = time.monotonic() + 60
            count_sql = f"SELECT count(*) FROM {FEED_TABLE} WHERE device_id LIKE 'lat-%'"
            landed = 0
            while time.monotonic() < deadline:
                landed = await conn.fetchval(count_sql)
                self.cfg.progress("steady phase: landed", landed, n)
                if landed >= n:
                    break
                await asyncio.sleep(1.0 if soaking else 0.2)
            # ingested_at is the landing transaction's start: within a batch's write of its commit.
            p50, p99 = await conn.fetchval(
                f"""SELECT percentile_disc(ARRAY[0.5, 0.99])
                             WITHIN GROUP (ORDER BY extract(epoch FROM ingested_at - time))
                    FROM {FEED_TABLE} WHERE device_id LIKE 'lat-%'"""
            ) or (float("nan"), float("nan"))
        finally:
            await conn.close()
        kafka_ms = [] if soaking else await self.kafka_latency()
        await asyncio.sleep(2.5)  # the workers write their histograms every 2 s
        acks = await self.ack_latencies()
        acks.subtract(acks_before)
        out = {
            "p50_puback_ms": round(ack_latency.percentile(acks, 50), 1),
            "p99_puback_ms": round(ack_latency.percentile(acks, 99), 1),
            "latency_rate_msgs_per_s": round(rate, 1),
            "latency_seconds": seconds,
            "latency_messages": n,
            "latency_landed": landed,
            "p50_ms": round(float(p50) * 1000, 1),
            "p99_ms": round(float(p99) * 1000, 1),
            "p50_kafka_ms": round(percentile(kafka_ms, 50), 1) if kafka_ms else None,
            "p99_kafka_ms": round(percentile(kafka_ms, 99), 1) if kafka_ms else None,
            "latency_machine_busy": busy,
            "latency_cpu_ms_per_1k_by_process": by_process,
        }
        if soaking:
            start, end = memory.get("start", float("nan")), memory["end"]
            out.update(soak_rss_mb_start=round(start, 1), soak_rss_mb_end=round(end, 1),
                       soak_rss_growth=round(end / start - 1, 3) if start else None)  # fmt: skip
        return out

    async def kafka_latency(self) -> list[float]:
        """Publish -> Kafka append, from the producer timestamp of each latency-phase record."""
        topic = "hub.bench_lab.air"
        consumer = AIOKafkaConsumer(bootstrap_servers=self.ep.kafka_bootstrap, enable_auto_commit=False)
        await consumer.start()
        out: list[float] = []
        try:
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            idle = 0
            while idle < 5:
                batch = await consumer.getmany(timeout_ms=200, max_records=20_000)
                if not batch:
                    idle += 1
                    continue
                idle = 0
                for records in batch.values():
                    for r in records:
                        if r.key and r.key.startswith(b"lat-"):
                            device_t = event_time_ms(r.value)
                            if device_t is not None:
                                out.append(r.timestamp - device_t)
                positions = [await consumer.position(tp) for tp in tps]
                if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                    break
        finally:
            await consumer.stop()
        return out

    async def backlog(self, lines: list[bytes]) -> dict[str, Any]:
        """Stop landing, let ingest fill Kafka (acknowledging after Kafka's ack), start landing, time the drain."""
        if self.ingest_ack != "kafka":
            self.stop_workers("ingest")  # it leaves once landing stored what it waits for
            self.start_workers("ingest", ["ingest", "--workers", str(self.cfg.ingest_workers)], ack="kafka")
            await self.wait_ingest_ready(self.cfg.ingest_workers)
        self.stop_workers("land")
        conn = await asyncpg.connect(self.ep.database_url)
        try:
            base_landed, _, _ = await self.counts(conn)
            await asyncio.to_thread(self.c.publish_chunks, lines)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                _, unlanded, _ = await self.counts(conn)
                self.cfg.progress("backlog: in Kafka", unlanded, len(lines))
                if unlanded >= len(lines):
                    break
                await asyncio.sleep(0.2)
            self.start_workers("land", ["land", "--workers", str(self.cfg.land_workers)])
            start = time.monotonic()
            # The drain is timed from the first progress seen to the last (the group join before it is
            # reported apart); what landed before the first observation is not counted in the rate.
            first: tuple[float, int] | None = None
            landed = 0
            last_change = time.monotonic()
            while time.monotonic() - last_change < 20:
                lc, _, _ = await self.counts(conn)
                if lc - base_landed != landed:
                    landed = lc - base_landed
                    self.cfg.progress("backlog: landed", landed, len(lines))
                    last_change = time.monotonic()
                    if first is None:
                        first = (last_change, landed)
                if landed >= len(lines):
                    break
                await asyncio.sleep(0.05)
            end = time.monotonic()
            rate = 0.0
            if first is not None and end - first[0] > 0.2:
                rate = (landed - first[1]) / (end - first[0])
            return {
                "backlog_records": len(lines),
                "backlog_landed": landed,
                "backlog_drain_rows_per_s": round(rate, 1),
                "backlog_including_group_join_s": round(end - start, 2),
            }
        finally:
            await conn.close()


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    bench = Bench(cfg)
    figures: dict[str, Any] = {
        "messages": cfg.messages,
        "ingest_workers": cfg.ingest_workers,
        "land_workers": cfg.land_workers,
        "tuning": bench.tuning,
    }
    try:
        bench.start()
        figures["ack"] = bench.ingest_ack = ack_mode(bench.settings.replace(ingest_ack=cfg.ack), bench.ep)
        log = cfg.log
        now = int(time.time() * 1000)
        if bench.tuning:
            log("tuning from the environment: " + ", ".join(f"{k}={v}" for k, v in sorted(bench.tuning.items())))
        log(f"1/8 ceiling: mosquitto_pub -> Mosquitto -> mosquitto_sub, {cfg.messages:,} messages")
        ceiling, counted = bench.ceiling(make_lines(cfg.messages, now - 3_600_000))
        figures.update(ceiling_msgs_per_s=round(ceiling, 1), ceiling_counted=counted)
        log(f"    {ceiling:,.0f} msg/s ({counted:,} counted)")

        log(
            f"2/8 end to end with {cfg.ingest_workers} ingest and {cfg.land_workers} landing workers, "
            f"acknowledging once {'Kafka has the records' if bench.ingest_ack == 'kafka' else 'they are landed'}"
        )
        bench.start_workers("ingest", ["ingest", "--workers", str(cfg.ingest_workers)])
        bench.start_workers("land", ["land", "--workers", str(cfg.land_workers)])
        asyncio.run(bench.wait_ingest_ready(cfg.ingest_workers))
        asyncio.run(bench.wait_land_ready())
        e2e = asyncio.run(bench.end_to_end(make_lines(cfg.messages, now)))
        figures.update(e2e)
        figures["offered_msgs_per_s"] = round(cfg.messages / max(e2e["e2e_seconds"], 1e-9), 1)
        figures["ratio"] = round(e2e["e2e_msgs_per_s"] / ceiling, 3) if ceiling else None
        log(f"    {e2e['e2e_msgs_per_s']:,.0f} msg/s landed, lost {e2e['lost']}, ratio {figures['ratio']}")

        rate = max(100.0, e2e["e2e_msgs_per_s"] / 2)
        seconds = cfg.soak_seconds or cfg.latency_seconds
        log(f"3/8 {'soak' if cfg.soak_seconds else 'latency'} at {rate:,.0f} msg/s for {seconds:.0f} s")
        figures.update(asyncio.run(bench.latency(rate, seconds)))
        log(
            f"    publish->row p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms; "
            f"PUBACK p50 {figures['p50_puback_ms']} ms, p99 {figures['p99_puback_ms']} ms"
        )
        log(
            f"    while publishing: machine busy {figures['latency_machine_busy']:.0%}; CPU ms per 1000 messages: "
            + ", ".join(f"{name} {ms}" for name, ms in figures["latency_cpu_ms_per_1k_by_process"].items())
        )
        if cfg.soak_seconds:
            log(f"    hub workers' memory: {figures['soak_rss_mb_start']} MB warm, {figures['soak_rss_mb_end']} MB "
                f"at the end ({figures['soak_rss_growth']:+.1%})")  # fmt: skip
        else:
            _backlog_and_copy(bench, cfg, figures, now)
            run_share_phases(bench, figures, now + cfg.messages + cfg.backlog + 120_000)

    finally:
        bench.close()
    peaks = bench.memory.peak_mb
    # Per component, the peak of all its processes together (workers, their supervisor, server children).
    figures["peak_rss_mb"] = {k: round(v, 1) for k, v in sorted(peaks.items())}
    # The bar of issue 18: 2 ingest + 2 landing workers and their `hub run` supervisors, each tree at its peak.
    figures["peak_rss_mb_hub_workers"] = round(peaks.get("ingest", 0.0) + peaks.get("land", 0.0), 1)
    figures["peak_rss_mb_largest_hub_process"] = round(
        max((v for k, v in bench.memory.peak_process_mb.items() if k in ("ingest", "land", "share")), default=0.0), 1
    )
    return figures


def _backlog_and_copy(bench: Bench, cfg: BenchConfig, figures: dict[str, Any], now: int) -> None:
    cfg.log("4/8 backlog drain: landing stopped while ingest fills Kafka")
    figures.update(asyncio.run(bench.backlog(make_lines(cfg.backlog, now + cfg.messages + 60_000))))
    cfg.log(f"    {figures['backlog_drain_rows_per_s']:,.0f} rows/s")

    cfg.log("5/8 raw COPY into the same database")
    figures["copy_rows_per_s"] = round(asyncio.run(copy_rate(bench.ep.database_url, FEED_TABLE, cfg.messages)), 1)
    figures["landing_vs_copy"] = round(figures["backlog_drain_rows_per_s"] / figures["copy_rows_per_s"], 3)


def print_figures(figures: dict[str, Any], log: Callable[[str], None]) -> None:
    log(json.dumps(figures))
