"""Hostile payloads while a stream is in flight: every one a dead letter with a reason, the workers unharmed.

Families are sent one after another from a partner's device login (QoS 1, MQTT 5); each family's
dead letters are those stored after it began (the stream beside it sends only valid readings).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from hub.drill.faults import Pace, stream_scenario
from hub.drill.hostile_payloads import Family, families
from hub.drill.reconcile import Result, Tally, judge_stream
from hub.drill.stack import PARTNER, DrillStack
from hub.drill.stream import connect

HOSTILE_ROWS_SQL = """SELECT (SELECT count(*) FROM drill_lab.air WHERE device_id LIKE 'hostile%')
                           + (SELECT count(*) FROM drill_lab.air_csv WHERE device_id LIKE 'hostile%')
                           + (SELECT count(*) FROM drill_lab.air_avro WHERE device_id LIKE 'hostile%')"""
DEAD_SQL = "SELECT reason FROM hub.dead_letters WHERE partner_id = $1 AND stored_at >= $2"


def publish_all(stack: DrillStack, topic: str, payloads: list[bytes]) -> int:
    """Publish each payload (QoS 1); how many the broker acknowledged."""
    acked, lock, done = [0, 0], threading.Lock(), threading.Event()

    def on_publish(_c: Any, _u: Any, _mid: int, reason: Any, _p: Any) -> None:
        with lock:
            acked[0] += not reason.is_failure
            acked[1] += 1
            if acked[1] == len(payloads):
                done.set()

    client = connect(stack, stack.logins[PARTNER])
    client.on_publish = on_publish
    address = stack.ep.mqtt()
    client.connect(address.host, address.port, 30)
    client.loop_start()
    try:
        for payload in payloads:
            client.publish(f"partners/{PARTNER}/{topic}", payload, qos=1)
        done.wait(30)
    finally:
        client.disconnect()
        client.loop_stop()
    return acked[0]


async def dead_letters_since(stack: DrillStack, since: Any, expected: int, quiet_s: float) -> list[str]:
    """The reasons of the dead letters stored since `since`, once `expected` are there or none came for `quiet_s`."""
    last, changed, reasons = -1, time.monotonic(), []
    while time.monotonic() - changed < quiet_s:
        reasons = [r["reason"] for r in await stack.fetch(DEAD_SQL, PARTNER, since)]
        if len(reasons) >= expected:
            break
        if len(reasons) != last:
            last, changed = len(reasons), time.monotonic()
        await asyncio.sleep(0.3)
    return reasons


def family_row(stack: DrillStack, family: Family, pace: Pace) -> Result:
    result = Result(f"hostile {family.name}", f"{len(family.payloads)} payloads to {family.topic}")
    started = time.time()
    since = asyncio.run(stack.fetchval("SELECT now()"))
    rows_before = int(asyncio.run(stack.fetchval(HOSTILE_ROWS_SQL)))
    acked = publish_all(stack, family.topic, family.payloads)
    reasons = asyncio.run(dead_letters_since(stack, since, acked, pace.settle_s))
    rows = int(asyncio.run(stack.fetchval(HOSTILE_ROWS_SQL))) - rows_before
    dead = len(reasons)
    result.tally = Tally(published=len(family.payloads), acked=acked, rows=rows, dead_letters=dead,
                         lost=max(0, acked - rows - dead))  # fmt: skip
    judge_stream(result, expect_rows=False, expect_dead=acked)
    if rows:
        result.fail(f"{rows} hostile payloads landed as rows")
    if any(not r for r in reasons):
        result.fail("a dead letter has no reason")
    result.notes.append("reasons: " + ", ".join(sorted(set(reasons))))
    result.seconds = round(time.time() - started, 1)
    return result


def run_hostile(stack: DrillStack, pace: Pace, log: Callable[[str], None], _quick: bool) -> list[Result]:
    rows: list[Result] = []
    pids: dict[str, int | None] = {}

    def send(result: Result) -> tuple[float, float]:
        began = time.time()
        pids.update({kind: stack.worker_pid(kind) for kind in ("ingest", "land")})
        for family in families(stack.settings.ingest_max_payload_bytes):
            log(f"hostile payloads: {family.name}")
            rows.append(family_row(stack, family, pace))
        for kind, pid in pids.items():
            if pid is None or stack.worker_pid(kind) != pid:
                result.fail(f"the {kind} worker did not keep running (pid {pid}, now {stack.worker_pid(kind)})")
        return began, time.time()

    action = "valid readings beside every hostile payload family; the ingest and landing workers keep running"
    beside = stream_scenario(stack, pace, "beside hostile payloads", action, send, recovery=False)
    return [*rows, beside]
