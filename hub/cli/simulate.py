"""`hub simulate`: realistic traffic from the applied partners' devices."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from paho.mqtt.enums import MQTTProtocolVersion

from hub.catalog.runtime import FeedRuntime, load_feeds
from hub.cli.common import console, one_line_errors, progress_bars, settings
from hub.control import credentials as partner_credentials
from hub.db import connection
from hub.errors import ConfigError
from hub.simulate import SimulationReport, simulate


async def applied_feeds(only: list[str] | None = None) -> list[FeedRuntime]:
    async with connection(settings().endpoints().database_url) as conn:
        feeds = await load_feeds(conn)
    if only:
        known = {f.row.partner_id for f in feeds} | {f"{f.row.partner_id}.{f.row.name}" for f in feeds}
        for name in only:
            if name not in known:
                raise ConfigError(f"no applied partner or feed named {name!r}; see `hub feeds`")
        feeds = [f for f in feeds if f.row.partner_id in only or f"{f.row.partner_id}.{f.row.name}" in only]
    return feeds


def print_report(report: SimulationReport) -> None:
    for feed, n in sorted(report.sent.items()):
        console.print(f"  {feed:40} {n:>9} messages", highlight=False)
    if report.invalid:
        console.print(f"  invalid on purpose: {dict(report.invalid)}", highlight=False)
    rate = report.total / report.seconds if report.seconds else 0
    console.print(
        f"sent {report.total} in {report.seconds:.1f} s ({rate:,.0f} msg/s); broker acknowledged {report.acked}, "
        f"refused {report.refused}",
        highlight=False,
    )


@one_line_errors
def simulate_cmd(
    messages: Annotated[int, typer.Option("--messages", "-n", min=1, help="How many messages in total.")] = 1000,
    rate: Annotated[float, typer.Option(help="Messages per second; 0 publishes as fast as possible.")] = 200.0,
    devices: Annotated[int, typer.Option(min=1, help="Devices per feed.")] = 50,
    invalid: Annotated[float, typer.Option(min=0.0, max=1.0, help="Fraction of messages made invalid.")] = 0.0,
    partner: Annotated[list[str] | None, typer.Option(help="Only these partners or partner.feed (repeatable).")] = None,
    credentials: Annotated[Path | None, typer.Option(help="Where `hub apply --save-credentials` wrote them.")] = None,
    mqtt311: Annotated[bool, typer.Option("--mqtt311", help="Publish with MQTT 3.1.1 instead of v5.")] = False,
) -> None:
    """Publish realistic data for the applied partners' devices over MQTT, with their own credentials."""
    s = settings()
    feeds = asyncio.run(applied_feeds(partner))
    with progress_bars() as progress:
        report = simulate(
            feeds,
            s.endpoints().mqtt(),
            credentials or partner_credentials.default_dir(s),
            namespace=s.mqtt_namespace_root,
            messages=messages,
            rate=rate,
            devices=devices,
            invalid_fraction=invalid,
            protocol=MQTTProtocolVersion.MQTTv311 if mqtt311 else MQTTProtocolVersion.MQTTv5,
            progress=progress,
        )
    print_report(report)
