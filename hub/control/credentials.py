"""A partner's MQTT credentials as a file: written once by `hub apply --save-credentials`, read by `hub simulate`.

Only the hash is in the catalog; this owner-only file is the one place the password
may rest, and only where the operator asked for it.
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


def describe(settings: HubSettings, partner: str, password: str) -> dict[str, Any]:
    """What a partner's engineer needs to connect: address, login and the topics they may use."""
    mqtt = settings.endpoints().mqtt()
    return {
        "partner": partner,
        "mqtt_host": mqtt.host,
        "mqtt_port": mqtt.port,
        "username": partner,
        "password": password,
        "publish_under": f"{settings.mqtt_namespace_root}/{partner}/",
        "error_reports": f"{settings.mqtt_error_root}/{partner}/#",
    }


def save(directory: Path, creds: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{creds['partner']}.json"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(creds, f, indent=2)
    return target


def save_all(settings: HubSettings, directory: Path, passwords: dict[str, str]) -> list[dict[str, Any]]:
    """Describe and save every new partner's credentials; returns the descriptions."""
    out = [describe(settings, partner, password) for partner, password in passwords.items()]
    for creds in out:
        save(directory, creds)
    return out


def load(directory: Path, partner: str) -> dict[str, Any]:
    path = directory / f"{partner}.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise HubError(
            f"no credentials for partner {partner} in {directory}: apply its config with "
            f"`hub apply --save-credentials {directory}`"
        ) from None
    except (OSError, ValueError) as exc:
        raise HubError(f"cannot read {path}: {exc}") from None
    return data
