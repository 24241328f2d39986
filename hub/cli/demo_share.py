"""The end of `hub demo`: one consumer organisation's view of the data, as its own database role, beside what
it is refused. Run with psql, the way a city data team would (asyncpg where psql is missing)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Callable

import asyncpg

DEMO_ORG = "city_data_team"
SEES = [
    r"\dv",
    "SELECT device_id, time, pm25, pm10, no2 FROM uni_air_lab__air_quality ORDER BY time DESC, device_id LIMIT 5;",
    "SELECT device_id, time, status, power_kw FROM voltcharge__charger_status ORDER BY time DESC LIMIT 3;",
]
REFUSED = [
    "SELECT * FROM uni_air_lab.air_quality LIMIT 1;",  # the feed table itself
    "SELECT battery_v FROM uni_air_lab__air_quality LIMIT 1;",  # a field the agreement does not grant
    "SELECT * FROM org_health_research.uni_air_lab__air_quality LIMIT 1;",  # another organisation's share
    "SELECT * FROM hub_private.pseudonym_keys;",  # the pseudonym secret
    "SET ROLE org_health_research;",  # becoming another organisation
]


def show(url: str, say: Callable[[str], None]) -> None:
    psql = shutil.which("psql")
    if psql is None:
        say("   (psql is not installed: the same statements through asyncpg)")
        for line in asyncio.run(_with_asyncpg(url)):
            say(line)
        return
    base = [psql, url, "-X", "-P", "pager=off", "-v", "VERBOSITY=terse", "-e"]
    say("\n   what it sees:")
    seen = subprocess.run(
        [*base, *(arg for stmt in SEES for arg in ("-c", stmt))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    for line in (seen.stdout + seen.stderr).splitlines():
        say(f"   {line}")
    say("   what it is refused:")
    for stmt in REFUSED:  # one psql each, so every statement is followed by its own answer
        refused = subprocess.run([*base, "-c", stmt], capture_output=True, text=True, timeout=60, check=False)
        for line in (refused.stdout + refused.stderr).splitlines():
            say(f"   {line}")


async def _with_asyncpg(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    out = []
    try:
        for stmt in SEES[1:]:
            rows = await conn.fetch(stmt)
            out += [stmt] + [f"   {tuple(r.values())}" for r in rows]
        for stmt in REFUSED:
            try:
                await conn.execute(stmt)
                out.append(f"{stmt}\n   (allowed)")
            except asyncpg.PostgresError as exc:
                out.append(f"{stmt}\n   ERROR: {exc}")
    finally:
        await conn.close()
    return out
