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

from hub.cli.common import compact_table, console, one_line_errors, settings
from hub.cli.onboard import list_partners, show_credentials
from hub.control import mqtt_logins
from hub.errors import ConfigError
from hub.mqtt_auth.accounts import ADMIN_USER, HEALTH_USER, bootstrap_document
from hub.settings import MqttAddress, write_private_json
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
    table = compact_table("username = client id", "device", "created", "password set")
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


@one_line_errors
def broker_init(
    path: Annotated[Path, typer.Argument(help="The dynamic security plugin's file (plugin_opt_config_file).")],
    health_password: Annotated[
        str, typer.Option(envvar="HUB_MQTT_HEALTH_PASSWORD", help="Password of the health probes' login hub-health.")
    ],
) -> None:
    """Write a broker's first accounts file, before it first starts (docker compose); never overwrites one.

    The hub's admin login comes from HUB_MQTT_URL, pre-hashed: no password reaches the broker in plain text.
    """
    s = settings()
    if not s.mqtt_url:
        raise ConfigError("HUB_MQTT_URL is not set: it carries the hub's admin login, mqtt://hub-admin:PASSWORD@host")
    admin = MqttAddress.parse(s.mqtt_url)
    if admin.username != ADMIN_USER or not admin.password:
        raise ConfigError(f"HUB_MQTT_URL must carry the login {ADMIN_USER} and its password")
    if path.exists():
        console.print(f"{path} exists: the broker owns it (change accounts with `hub apply`, `hub devices`)")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    write_private_json(path, bootstrap_document(s, admin.password, health_password))
    console.print(f"wrote {path}: default access denied, the hub's roles, logins {ADMIN_USER} and {HEALTH_USER}")
