"""A login's MQTT credentials as a file: written once by `--save-credentials`, read by `hub simulate`.

Only hashes are in the catalog (and the broker keeps its own); this owner-only file is the one
place a password may rest, and only where the operator asked for it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hub.errors import HubError
from hub.settings import HubSettings


def default_dir(settings: HubSettings) -> Path:
    return settings.state_dir / "credentials"


def partner_of(username: str) -> str:
    """A partner's own login is its id; a device login is `<partner>.<device>`."""
    return username.split(".", 1)[0]


def describe(settings: HubSettings, username: str, password: str) -> dict[str, Any]:
    """What a partner's engineer needs to connect: address, login, client id and the topics they may use."""
    mqtt = settings.endpoints().mqtt()
    partner = partner_of(username)
    return {
        "partner": partner,
        "mqtt_host": mqtt.host,
        "mqtt_port": mqtt.port,
        "username": username,
        "password": password,
        "client_id": username,  # the broker refuses this login with any other client id
        "publish_under": f"{settings.mqtt_namespace_root}/{partner}/",
        "error_reports": f"{settings.mqtt_error_root}/{partner}/#",
    }


def render(creds: dict[str, Any]) -> str:
    return (
        f"MQTT login [bold]{creds['username']}[/bold] (shown once; only a hash is stored):\n"
        f"  username and client id {creds['username']}\n  password {creds['password']}\n"
        f"  publish under {creds['publish_under']}   error reports on {creds['error_reports']}"
    )


def save(directory: Path, creds: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{creds['username']}.json"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(creds, f, indent=2)
    return target


def save_all(settings: HubSettings, directory: Path, passwords: dict[str, str]) -> list[dict[str, Any]]:
    """Describe and save every login's new credentials; returns the descriptions."""
    out = [describe(settings, username, password) for username, password in passwords.items()]
    for creds in out:
        save(directory, creds)
    return out


def load(directory: Path, username: str) -> dict[str, Any]:
    """The saved credentials of a login (a partner's own login: its partner id)."""
    path = directory / f"{username}.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise HubError(
            f"no credentials for {username} in {directory}: apply its config with "
            f"`hub apply --save-credentials {directory}`, or issue new ones with "
            f"`hub partners rotate-credentials {partner_of(username)} --save-credentials {directory}`"
        ) from None
    except (OSError, ValueError) as exc:
        raise HubError(f"cannot read {path}: {exc}") from None
    return data
