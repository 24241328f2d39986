"""An organisation's database login: the URL to give it, and the owner-only file `hub apply
--save-credentials` writes (the one place its password may rest; PostgreSQL keeps only a SCRAM verifier)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from hub.agreement import names
from hub.control import share_sql
from hub.control.share_apply import check_verifier
from hub.db import connection
from hub.errors import HubError, NotFound
from hub.settings import HubSettings


def org_url(database_url: str, org: str, password: str | None) -> str:
    """The hub's database URL with the organisation's login in place of the hub's own."""
    parts = urlsplit(database_url)
    auth = names.org_role(org) + (":" + quote(password, safe="") if password else "")
    host = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
    return f"{parts.scheme}://{auth}@{host}{parts.path}"


def describe(settings: HubSettings, org: str, password: str) -> dict[str, Any]:
    return {
        "organisation": org,
        "role": names.org_role(org),
        "password": password,
        "url": org_url(settings.endpoints().database_url, org, password),
    }


def path_of(directory: Path, org: str) -> Path:
    return directory / f"{org}.db.json"


def save(directory: Path, creds: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = path_of(directory, creds["organisation"])
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(creds, f, indent=2)
    return target


def load(directory: Path, org: str) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path_of(directory, org).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise HubError(f"cannot read {path_of(directory, org)}: {exc}") from None
    return data


async def new_password(settings: HubSettings, org: str) -> str:
    """Give an organisation's role a new generated password (the old one stops working at once)."""
    password = share_sql.generate_password()
    verifier = share_sql.scram_verifier(password)
    async with connection(settings.endpoints().database_url) as conn:
        role = names.org_role(org)
        if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
            raise NotFound(f"no database role {role}: apply the organisation first (`hub apply organisations/`)")
        async with conn.transaction():
            await conn.execute(share_sql.password_sql(org, verifier))
            await check_verifier(conn, org, verifier)
    return password
