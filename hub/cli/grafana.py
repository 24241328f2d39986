"""`hub grafana build | sync | check`: dashboards for every feed and every grant (docs/dashboards.md)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from hub.cli.common import console, err_console, one_line_errors, settings
from hub.db import connection
from hub.errors import ConfigError
from hub.grafana import files, passwords
from hub.grafana.check import check_site
from hub.grafana.database import LoginReport, ensure_logins, read_site
from hub.grafana.model import Site
from hub.grafana.sync import Grafana, sync
from hub.settings import HubSettings

app = typer.Typer(
    help="Dashboards in Grafana, generated from the catalog and the agreements (docs/dashboards.md).",
    no_args_is_help=True,
)


def say(text: str) -> None:
    console.print(text, markup=False, highlight=False)


def warn(text: str) -> None:
    err_console.print(text, markup=False, highlight=False)


SecretsOpt = Annotated[
    Path | None,
    typer.Option("--secrets", help="Owner-only env file of Grafana's database passwords (default <state>/grafana)."),
]


async def _prepare(s: HubSettings, secrets_file: Path) -> tuple[Site, LoginReport, dict[str, str]]:
    async with connection(s.endpoints().database_url) as conn:
        site = await read_site(conn, s)
        report, values = await ensure_logins(conn, s, site, secrets_file)
    return site, report, values


def _report_logins(report: LoginReport, secrets_file: Path) -> None:
    if report.created:
        say(f"database logins created: {', '.join(report.created)}")
    if report.new_passwords:
        say(f"new passwords for {', '.join(report.new_passwords)}: in {secrets_file} (owner-only)")
    for org in report.missing:
        warn(f"note: {org} has no database role yet (`hub apply` makes it): its datasource has no login")
    for note in report.notes:
        say(f"note: {note}")


def _summary(site: Site, org_ids: dict[str, int]) -> None:
    for org in site.orgs:
        ds = site.datasource(org.hub_org)
        where = "Grafana org 1" if org.hub_org is None else f"Grafana org {org_ids.get(org.hub_org, '?')}"
        reads = "" if org.hub_org is None else f", reads as org_{org.hub_org}"
        say(f"{org.hub_org or 'operators'} ({where}): datasource {ds.uid} logs in as {ds.user}{reads}")
        if org.hub_org is None and site.prometheus is not None:
            say(f"operators ({where}): datasource {site.prometheus.uid} reads {site.prometheus.url}")
        for d in site.dashboards_of(org.hub_org):
            say(f"  {d.kind:8} {d.title}  ({d.uid})")
    for note in site.notes:
        say(f"note: {note}")


def _org_ids(path: Path | None) -> dict[str, int]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
        return {str(k): int(v) for k, v in data.items()}
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise ConfigError(f"{path}: expected a JSON object of organisation -> Grafana org id ({exc})") from None


@app.command()
@one_line_errors
def build(
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Output directory (default HUB_GRAFANA_DASHBOARDS_DIR or <state>/dashboards)."),
    ] = None,
    grafana_path: Annotated[
        str | None, typer.Option("--grafana-path", help="Where Grafana sees the output directory (default: --out).")
    ] = None,
    org_ids: Annotated[
        Path | None,
        typer.Option("--org-ids", help="JSON of organisation -> Grafana org id (`hub grafana sync --write-org-ids`)."),
    ] = None,
    secrets: SecretsOpt = None,
) -> None:
    """Write every dashboard (one JSON file each) and Grafana provisioning files; no Grafana needed."""
    s = settings()
    target = out or s.grafana_dashboards_dir or s.state_dir / "dashboards"
    secrets_file = secrets or passwords.default_path(s)
    ids = _org_ids(org_ids)
    site, report, _ = asyncio.run(_prepare(s, secrets_file))
    built = files.render(site, grafana_path or str(target.resolve()), ids)
    written, removed = files.write(target, built)
    _report_logins(report, secrets_file)
    _summary(site, ids)
    say(
        f"{len(site.dashboards)} dashboards for {len(site.orgs)} Grafana organisations in {target} "
        f"({len(written)} files written, {len(removed)} removed)"
    )
    if built.unprovisioned:
        say(
            f"not in the provisioning files until Grafana has their organisations: {', '.join(built.unprovisioned)} "
            "(Grafana cannot create organisations from files: `hub grafana sync` does, then build with --org-ids)"
        )


@app.command("sync")
@one_line_errors
def sync_cmd(
    url: Annotated[str | None, typer.Option("--url", help="Grafana's URL (default HUB_GRAFANA_URL).")] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="HUB_GRAFANA_TOKEN", help="A service-account token (one organisation)."),
    ] = None,
    user: Annotated[str | None, typer.Option("--user", help="A Grafana server admin (every organisation).")] = None,
    password: Annotated[
        str | None, typer.Option("--password", envvar="HUB_GRAFANA_PASSWORD", help="That admin's password.")
    ] = None,
    secrets: SecretsOpt = None,
    write_org_ids: Annotated[
        Path | None, typer.Option("--write-org-ids", help="Write organisation -> Grafana org id as JSON here.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Read Grafana, print the writes, send none.")] = False,
) -> None:
    """Push organisations, datasources, folders and dashboards to a running Grafana, idempotently; dashboards
    of grants that ended are deleted."""
    s = settings()
    target = url or s.grafana_url
    if not target:
        raise ConfigError("no Grafana to sync: pass --url or set HUB_GRAFANA_URL")
    if token and user:
        raise ConfigError("pass either --token or --user, not both")
    if user and not password:
        raise ConfigError(f"no password for Grafana user {user}: set HUB_GRAFANA_PASSWORD or pass --password")
    if not token and not user:
        raise ConfigError("no Grafana credentials: pass --user (a server admin; with HUB_GRAFANA_PASSWORD) or --token")
    credential: str | tuple[str, str] = token if token else (str(user), str(password))
    secrets_file = secrets or passwords.default_path(s)
    site, report, values = asyncio.run(_prepare(s, secrets_file))
    _report_logins(report, secrets_file)
    result = sync(
        Grafana(target, credential), site, values, frozenset(report.new_passwords), token=bool(token), dry_run=dry_run
    )
    for call in result.done:
        say(f"{'would ' if dry_run else ''}{call.why}  ({call.method} {call.path}, org {call.org or '-'})")
    for note in result.notes:
        say(f"note: {note}")
    if not result.done:
        say("no changes: Grafana already holds these organisations, datasources and dashboards")
    ids = {k: v for k, v in result.org_ids.items() if k is not None}
    if write_org_ids:
        write_org_ids.write_text(json.dumps(ids, indent=2, sort_keys=True) + "\n")
    say("Grafana organisations: " + ", ".join(f"{k}={v}" for k, v in sorted(ids.items())))


@app.command()
@one_line_errors
def check(
    org: Annotated[
        list[str] | None, typer.Option("--org", help="Only this organisation's dashboards (`operators`: the overview).")
    ] = None,
    hours: Annotated[float, typer.Option("--hours", help="The time range the queries cover.")] = 6.0,
    secrets: SecretsOpt = None,
) -> None:
    """Run every panel's SQL as its datasource's login; fails if any query fails or returns other columns."""
    s = settings()
    secrets_file = secrets or passwords.default_path(s)
    site, report, values = asyncio.run(_prepare(s, secrets_file))
    _report_logins(report, secrets_file)
    runs = asyncio.run(
        check_site(
            s.endpoints().database_url,
            site,
            values,
            hours=hours,
            orgs={None if o == "operators" else o for o in org} if org else None,
        )
    )
    bad = [r for r in runs if not r.ok]
    for r in bad:
        got = r.outcome.error or f"columns {list(r.outcome.columns or ())}, expected {list(r.query.columns)}"
        warn(f"{r.dashboard.uid} / {r.query.panel} as {r.role}: {got}")
    say(f"{len(runs) - len(bad)} of {len(runs)} panel queries ran as their organisation's login")
    if bad:
        raise typer.Exit(1)
