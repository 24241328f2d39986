"""`hub demo`: the main job on the local stack, end to end, for a first look.

Starts the stack, onboards the example partners of connectors/ with the organisations and
agreements of organisations/ and agreements/, runs the workers in the background, publishes
simulated device data over MQTT, shows the rows landed, and ends with one consumer
organisation's view of them, as its own database role, beside what it is refused, and the page's address
with an API token to sign in there as that organisation.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Annotated

import asyncpg
import typer

from hub.catalog import tokens
from hub.cli import demo_share
from hub.cli.common import compact_table, console, one_line_errors, progress_bars, settings
from hub.cli.simulate import applied_feeds, print_report
from hub.control import credentials, db_credentials
from hub.control.apply import apply
from hub.errors import HubError
from hub.simulate import simulate
from hub.stack.broker_auth import LocalBrokerAuth
from hub.stack.local import LocalStack, workers_process

SAMPLE_QUERY = """SELECT device_id, time, pm25, pm10, temperature_c
FROM uni_air_lab.air_quality ORDER BY time DESC LIMIT 5"""


async def _ingest_subscribed(url: str, timeout_s: float) -> bool:
    conn = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await conn.fetchval(
                "SELECT to_regclass('hub.resources') IS NOT NULL AND EXISTS (SELECT 1 FROM hub.resources "
                "WHERE kind = 'mqtt-session' AND state = 'active' AND updated_at > now() - interval '1 minute')"
            ):
                return True
            await asyncio.sleep(0.1)
        return False
    finally:
        await conn.close()


async def _demo_token(url: str, org: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        return (await tokens.create(conn, org, "hub demo", "hub demo"))[1]
    finally:
        await conn.close()


async def _landed(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT coalesce(sum(rows), 0) FROM hub.land_counters"))
    finally:
        await conn.close()


async def _sample(url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(SAMPLE_QUERY))
    finally:
        await conn.close()


@one_line_errors
def demo(
    connectors: Annotated[Path, typer.Option(help="Connector configs to onboard.")] = Path("connectors"),
    organisations: Annotated[Path, typer.Option(help="Organisations to create.")] = Path("organisations"),
    agreements: Annotated[Path, typer.Option(help="Agreements to apply.")] = Path("agreements"),
    messages: Annotated[int, typer.Option("--messages", "-n", min=1)] = 2000,
    rate: Annotated[float, typer.Option(help="Messages per second from the simulated devices.")] = 500.0,
    invalid: Annotated[float, typer.Option(help="Fraction of deliberately invalid messages.")] = 0.05,
) -> None:
    """Stack up, onboard the example partners, run the workers, simulate devices, show the rows."""
    s = settings()

    def say(message: str) -> None:
        console.print(message, highlight=False)

    say("[bold]1. local stack[/bold] (real Mosquitto, PostgreSQL and Kafka-protocol broker on loopback)")
    LocalStack(s, log=say).up()

    say(f"\n[bold]2. onboarding[/bold] the partners in {connectors}/, the organisations and agreements in "
        f"{organisations}/ and {agreements}/")  # fmt: skip
    creds_dir = credentials.default_dir(s)
    result = asyncio.run(apply(s, [connectors, organisations, agreements], broker=LocalBrokerAuth(s)))
    credentials.save_all(s, creds_dir, result.credentials)
    for org, password in result.db_passwords.items():
        db_credentials.save(creds_dir, db_credentials.describe(s, org, password))
    mqtt = s.endpoints().mqtt()
    say("   " + ("\n   ".join(result.plan.render())))
    if result.credentials or result.db_passwords:
        say(f"   new partners' MQTT credentials and organisations' database logins saved (owner-only) in {creds_dir}/")

    say("\n[bold]3. workers[/bold]: ingest (MQTT -> Kafka), landing (Kafka -> database) and share (agreements' live "
        "streams to Kafka and MQTT)")  # fmt: skip
    proc = workers_process(s.state_dir.resolve())
    if proc.pid() is None:
        proc.start([sys.executable, "-m", "hub", "run"], env={"HUB_STATE_DIR": str(s.state_dir.resolve())})
        say(f"   started `hub run` in the background (pid {proc.pid()}, log {proc.log_path})")
        # Devices must not publish before ingest has subscribed: the broker drops messages nobody
        # subscribes to. Landing may join later (Kafka keeps the records).
        if not asyncio.run(_ingest_subscribed(s.endpoints().database_url, timeout_s=60)):
            raise HubError(f"the ingest worker did not start within 60 s; see {proc.log_path}")
    else:
        say(f"   already running (pid {proc.pid()})")

    url = s.endpoints().database_url
    before = asyncio.run(_landed(url))
    say(f"\n[bold]4. devices[/bold]: {messages} messages at {rate:.0f}/s, {invalid:.0%} invalid on purpose")
    feeds = asyncio.run(applied_feeds())
    with progress_bars() as progress:
        report = simulate(
            feeds, mqtt, creds_dir, namespace=s.mqtt_namespace_root, messages=messages, rate=rate,
            invalid_fraction=invalid, progress=progress,
        )  # fmt: skip
    print_report(report)

    expected = report.total - sum(report.invalid.values())
    deadline = time.monotonic() + 60
    landed = 0
    with progress_bars() as progress:
        while time.monotonic() < deadline:
            landed = asyncio.run(_landed(url)) - before
            progress("landed as rows", landed, expected)
            if landed >= expected:
                break
            time.sleep(0.5)
    if landed < expected:
        raise HubError(f"only {landed} of {expected} valid messages landed in 60 s; see {proc.log_path}")
    say(f"\n[bold]5. landed[/bold]: {landed} rows (every valid message exactly once); the invalid ones are in "
        f"the dead-letter topic, with reports on hub/errors/<partner>/<feed>")  # fmt: skip
    say(f"\n{SAMPLE_QUERY};")
    table = compact_table("device_id", "time", "pm25", "pm10", "temperature_c")
    for r in asyncio.run(_sample(url)):
        table.add_row(
            r["device_id"], str(r["time"]), f"{r['pm25']:.1f}", f"{r['pm10']:.1f}", f"{r['temperature_c']:.1f}"
        )
    console.print(table)
    login = db_credentials.load(creds_dir, demo_share.DEMO_ORG)
    if login is not None:
        org = demo_share.DEMO_ORG
        say(f"\n[bold]6. sharing[/bold]: {org} reads what its agreements grant, in SQL, as its own role "
            f"(`hub access {org}`, `hub explain {org} FEED`)")  # fmt: skip
        demo_share.show(login["url"], say)
    page = s.endpoints().registry_url
    token = asyncio.run(_demo_token(url, demo_share.DEMO_ORG))
    say(f"\n[bold]7. the page[/bold]: {page}/ (the catalog, searchable; DCAT-AP 3 for harvesters at "
        f"{page}/catalog.ttl). Sign in as {demo_share.DEMO_ORG} with this API token (shown once; `hub tokens create "
        f"ORG` makes more) to see what it may read, the sharing matrix, and to ask for feeds:\n   {token}")  # fmt: skip
    say(
        '\nNext: `eval "$(.venv/bin/hub stack env)"; psql "$HUB_DATABASE_URL"`, `.venv/bin/hub feeds`, '
        f'`psql "$(.venv/bin/hub db-url {demo_share.DEMO_ORG})"`, `.venv/bin/hub orgs`, `.venv/bin/hub audit`; '
        "the workers keep running in the background (`.venv/bin/hub stack status` lists them); "
        "stop them and the servers with `.venv/bin/hub stack down`."
    )
