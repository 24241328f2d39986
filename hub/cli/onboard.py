"""`hub plan`, `hub apply`, `hub feeds`, `hub partners`: onboarding, sharing and the catalog."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from hub.catalog import store as catalog
from hub.catalog.feeds_view import feed_summaries
from hub.cli.common import compact_table, console, one_line_errors, settings, wide
from hub.control import apply as applier
from hub.control import credentials, db_credentials, kafka_access
from hub.control.mapping import mapping_lines
from hub.db import connection
from hub.stack.broker_auth import LocalBrokerAuth

PathsArg = Annotated[
    list[Path],
    typer.Argument(help="Connector configs, organisations and agreements: files or directories, in any order."),
]
SchemasOpt = Annotated[
    Path | None, typer.Option("--schemas", help="Directory of .avsc files (default: schemas/ beside connectors/).")
]


@one_line_errors
def plan(paths: PathsArg, schemas: SchemasOpt = None) -> None:
    """Show what `hub apply` would change, without changing anything."""
    s = settings()
    result = asyncio.run(applier.plan(s, paths, schemas, broker=LocalBrokerAuth(s)))
    for line in result.render():
        console.print(line, highlight=False)
    for line in mapping_lines((p.id, f.feed, f.schema) for p in result.partners for f in p.feeds):
        console.print(line, highlight=False, markup=False)


@one_line_errors
def apply(
    paths: PathsArg,
    schemas: SchemasOpt = None,
    save_credentials: Annotated[
        Path | None,
        typer.Option(
            help="Also write new MQTT logins' credentials to DIR/<username>.json, new organisations' database "
            "logins to DIR/<org>.db.json and new Kafka logins to DIR/<username>.kafka.json (owner-only files)."
        ),
    ] = None,
    by: Annotated[
        str | None, typer.Option("--by", help="Who applies, for the audit trail (default: login name).")
    ] = None,
) -> None:
    """Apply connector configs, organisations and agreements: all of a run's changes or none. Re-running is a no-op."""
    s = settings()
    result = asyncio.run(applier.apply(s, paths, schemas, broker=LocalBrokerAuth(s), actor=by))
    for line in result.plan.render():
        console.print(line, highlight=False)
    if result.expectations and result.agreement_files:
        console.print(f"agreement expectations: {result.expectations} checked against the database, all hold")
    if result.plan.empty:
        return
    show_credentials(result.credentials, save_credentials)
    show_kafka_credentials(result.kafka_credentials, save_credentials)
    for org, password in result.db_passwords.items():
        login = db_credentials.describe(s, org, password)
        console.print(
            f"\nDatabase login for [bold]{org}[/bold] (shown once; PostgreSQL keeps only its SCRAM verifier):\n"
            f"  role {login['role']}\n  password {password}",
            highlight=False,
        )
        if save_credentials is not None:
            db_credentials.save(save_credentials, login)
    console.print(f"applied {len(result.plan.changes)} changes", highlight=False)


def show_credentials(passwords: dict[str, str], save_to: Path | None) -> None:
    """Each new login once on the terminal (and in an owner-only file where asked)."""
    s = settings()
    for username, password in passwords.items():
        creds = credentials.describe(s, username, password)
        console.print("\n" + credentials.render(creds), highlight=False)
        if save_to is not None:
            console.print(f"  saved to {credentials.save(save_to, creds)}", highlight=False)


def show_kafka_credentials(passwords: dict[str, str], save_to: Path | None) -> None:
    """Each new Kafka login of a consumer once (the catalog keeps a hash, the broker its SCRAM verifier)."""
    s = settings()
    bootstrap = s.kafka_public_bootstrap or s.endpoints().kafka_bootstrap
    for username, password in passwords.items():
        conf = kafka_access.client_config(bootstrap, username.removeprefix("consumer-"), password,
                                          s.kafka_security_protocol)  # fmt: skip
        lines = "\n".join(f"  {k}={v}" for k, v in conf.items())
        console.print(f"\nKafka login [bold]{username}[/bold] (shown once; confluent-kafka settings):\n{lines}",
                      highlight=False)  # fmt: skip
        if save_to is not None:
            save_to.mkdir(parents=True, exist_ok=True)
            target = save_to / f"{username}.kafka.json"
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(conf, f, indent=2)
            console.print(f"  saved to {target}", highlight=False)


async def _feeds() -> list[dict[str, Any]]:
    async with connection(settings().endpoints().database_url) as conn:
        await catalog.ensure_catalog(conn)
        return await feed_summaries(conn)


@one_line_errors
def feeds(as_json: Annotated[bool, typer.Option("--json", help="One JSON array for scripts.")] = False) -> None:
    """Every feed in the catalog: owner, table, topic, schema version and rows landed."""
    rows = asyncio.run(_feeds())
    if as_json:
        print(json.dumps(rows))
        return
    if wide():
        table = compact_table("partner", "feed", "table", "kafka topic", "schema", "rows", "licence")
        for r in rows:
            schema, landed = f"v{r['schema_version']} (id {r['schema_id']})", f"{r['rows_landed']:,}"
            table.add_row(r["partner"], r["feed"], r["table"], r["kafka_topic"], schema, landed, r["licence"])
    else:  # 80 columns: the table and topic on a line of their own under each feed
        table = compact_table("feed", "schema", "rows", "licence")
        for r in rows:
            name = f"{r['partner']}.{r['feed']}\n[dim]{r['table']}, {r['kafka_topic']}[/dim]"
            schema, landed = f"v{r['schema_version']} (id {r['schema_id']})", f"{r['rows_landed']:,}"
            table.add_row(name, schema, landed, r["licence"])
    console.print(table)


def list_partners(as_json: bool) -> None:
    """Every onboarded partner."""

    async def fetch() -> list[dict[str, Any]]:
        async with connection(settings().endpoints().database_url) as conn:
            await catalog.ensure_catalog(conn)
            return [
                {
                    "id": r["id"],
                    "name": r["name"],
                    "kind": r["kind"],
                    "contact": r["contact"],
                    "config": r["config_file"],
                }
                for r in await catalog.partners(conn)
            ]

    rows = asyncio.run(fetch())
    if as_json:
        print(json.dumps(rows))
        return
    table = compact_table("id", "name", "kind", "contact", "config")
    for r in rows:
        table.add_row(r["id"], r["name"], r["kind"], r["contact"], r["config"])
    console.print(table)
