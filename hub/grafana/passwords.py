"""Grafana's database passwords: one owner-only env file, the one place they rest.

    HUB_GRAFANA_DB_PASSWORD_CITY_DATA_TEAM=...
    GRAFANA_DB_PASSWORD=...          (the operators' role, when the hub made it)

Provisioning files name these variables (`${...}`), so Grafana gets the values from its environment (for
example systemd's `EnvironmentFile=` pointing at this file); `hub grafana sync` sends them through Grafana's API,
which stores them encrypted. PostgreSQL keeps SCRAM verifiers only; the catalog and the repository keep nothing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from hub.errors import HubError
from hub.settings import HubSettings

_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")


def default_path(settings: HubSettings) -> Path:
    return settings.grafana_secrets_file or settings.state_dir / "grafana" / "logins.env"


def load(path: Path) -> dict[str, str]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise HubError(f"cannot read Grafana's passwords from {path}: {exc}") from None
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _LINE.match(line.strip())
        if not m:
            raise HubError(f"{path}:{n}: expected NAME=value (an env file of Grafana's database passwords)")
        out[m[1]] = m[2]
    return out


def save(path: Path, values: dict[str, str]) -> None:
    """Write atomically, owner-only (0600, in a directory only the owner may enter when the hub made it)."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# Grafana's database passwords, made by `hub grafana build` or `sync`. Keep this file secret.\n")
        f.writelines(f"{k}={v}\n" for k, v in sorted(values.items()))
    os.chmod(tmp, 0o600)
    tmp.replace(path)
