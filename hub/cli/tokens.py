"""`hub tokens create | list | revoke`: organisations' API tokens for the page and the HTTP API."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from rich.table import Table

from hub.agreement.world import load_world
from hub.catalog import store as catalog
from hub.catalog import tokens
from hub.catalog.tokens import TokenRow
from hub.cli.common import console, one_line_errors, settings
from hub.control.apply import actor_name
from hub.db import connection
from hub.errors import NotFound

app = typer.Typer(help="Organisations' API tokens: for the web page, the HTTP API and the schema registry.")
ByOpt = Annotated[str | None, typer.Option("--by", help="Who does it, for the record (default: login name).")]


@app.command()
@one_line_errors
def create(
    org: Annotated[str, typer.Argument(help="An organisation id (a partner, or one of organisations/).")],
    label: Annotated[str, typer.Option(help="What the token is for (shown by `hub tokens list`).")] = "",
    by: ByOpt = None,
) -> None:
    """A new API token for ORG, shown once (the hub keeps only its SHA-256)."""

    async def make() -> tuple[str, str]:
        async with connection(settings().endpoints().database_url) as conn:
            await catalog.ensure_catalog(conn)
            world = await load_world(conn)
            if org not in world.orgs:
                raise NotFound(f"unknown organisation {org!r} (`hub orgs` lists them; `hub apply` adds them)")
            return await tokens.create(conn, org, label, by or actor_name())

    token_id, token = asyncio.run(make())
    url = settings().endpoints().registry_url
    console.print(
        f"API token {token_id} for [bold]{org}[/bold] (shown once; the hub keeps only its hash):\n  {token}\n"
        f"Sign in on the page ({url}/signin) with it, send it as `Authorization: Bearer TOKEN`, or, for a Confluent "
        f"schema registry client, set basic.auth.user.info={org}:TOKEN. Revoke it with `hub tokens revoke {token_id}`.",
        highlight=False,
        markup=True,
    )


def _json(r: TokenRow) -> dict[str, str | None]:
    return {
        "id": r.id,
        "org": r.org,
        "label": r.label,
        "created_at": r.created_at.isoformat(),
        "created_by": r.created_by,
        "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
        "revoked_by": r.revoked_by,
    }


@app.command("list")
@one_line_errors
def list_cmd(
    org: Annotated[str | None, typer.Argument(help="Only this organisation's tokens.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Every token (never the token itself): its id, organisation, label, and whether it was revoked."""

    async def fetch() -> list[TokenRow]:
        async with connection(settings().endpoints().database_url) as conn:
            await catalog.ensure_catalog(conn)
            return await tokens.listing(conn, org)

    rows = asyncio.run(fetch())
    if as_json:
        print(json.dumps([_json(r) for r in rows]))
        return
    table = Table("id", "organisation", "label", "created", "revoked")
    for r in rows:
        revoked = f"{r.revoked_at:%Y-%m-%d %H:%M} by {r.revoked_by}" if r.revoked_at else "-"
        table.add_row(r.id, r.org, r.label or "-", f"{r.created_at:%Y-%m-%d %H:%M} by {r.created_by}", revoked)
    console.print(table)


@app.command()
@one_line_errors
def revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (`hub tokens list`).")], by: ByOpt = None
) -> None:
    """Revoke a token at once: the next request with it is refused (401)."""

    async def run() -> TokenRow | None:
        async with connection(settings().endpoints().database_url) as conn:
            await catalog.ensure_catalog(conn)
            return await tokens.revoke(conn, token_id, by or actor_name())

    row = asyncio.run(run())
    if row is None:
        raise NotFound(f"no API token {token_id!r} (`hub tokens list` shows them)")
    console.print(f"revoked API token {row.id} of {row.org}", highlight=False)
