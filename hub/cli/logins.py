"""`hub partners [rotate-credentials P]` and `hub devices add|list|remove P ...`: partners' MQTT logins.

Every connection to the broker needs a login of its own: the broker binds each login to the client
id equal to its user name, so one login cannot be shared by two devices at once.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from hub.cli.common import console, one_line_errors, settings
from hub.cli.onboard import list_partners, show_credentials
from hub.control import mqtt_logins
from hub.stack.broker_auth import LocalBrokerAuth

SaveOpt = Annotated[
    Path | None, typer.Option(help="Also write the credentials to DIR/<username>.json (owner-only files).")
]
Partner = Annotated[str, typer.Argument(help="The partner's id.")]

partners_app = typer.Typer(help="Onboarded partners, and new passwords for their MQTT logins.")
devices_app = typer.Typer(help="A partner's MQTT logins, one per device or gateway.", no_args_is_help=True)


@partners_app.callback(invoke_without_command=True)
@one_line_errors
def partners(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every onboarded partner (`hub partners`), or one of the commands below."""
    if ctx.invoked_subcommand is None:
        list_partners(as_json)


@partners_app.command("rotate-credentials")
@one_line_errors
def rotate_credentials(partner: Partner, save_credentials: SaveOpt = None) -> None:
    """New passwords for every MQTT login of the partner; the old ones stop working at once."""
    s = settings()
    passwords = asyncio.run(mqtt_logins.rotate(s, partner, broker=LocalBrokerAuth(s)))
    show_credentials(passwords, save_credentials)
    console.print(
        f"\n{len(passwords)} login(s) of {partner} have new passwords; connections with the old ones were closed",
        highlight=False,
    )


@devices_app.command("add")
@one_line_errors
def add(
    partner: Partner,
    names: Annotated[list[str], typer.Argument(help="Device names: the login is <partner>.<name>.")],
    save_credentials: SaveOpt = None,
) -> None:
    """A login per device, bound to the client id <partner>.<name>; each password is shown once."""
    s = settings()
    passwords = asyncio.run(mqtt_logins.add_devices(s, partner, names, broker=LocalBrokerAuth(s)))
    show_credentials(passwords, save_credentials)


@devices_app.command("list")
@one_line_errors
def list_devices(partner: Partner, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The partner's logins: its own and one per device."""
    rows: list[dict[str, str]] = [
        {
            "username": x.username,
            "client_id": x.username,
            "device": x.device or "",
            "created_at": x.created_at.isoformat(),
            "password_set_at": x.rotated_at.isoformat(),
        }
        for x in asyncio.run(mqtt_logins.list_logins(settings(), partner))
    ]
    if as_json:
        print(json.dumps(rows))
        return
    table = Table("username = client id", "device", "created", "password set")
    for r in rows:
        table.add_row(
            r["username"], r["device"] or "(the partner's own login)", r["created_at"][:19], r["password_set_at"][:19]
        )
    console.print(table)


@devices_app.command("remove")
@one_line_errors
def remove(partner: Partner, names: Annotated[list[str], typer.Argument(help="Device names.")]) -> None:
    """Remove device logins: from the catalog and the broker, their connections closed at once."""
    s = settings()
    removed = asyncio.run(mqtt_logins.remove_devices(s, partner, names, broker=LocalBrokerAuth(s)))
    console.print(f"removed {', '.join(removed)}", highlight=False)
