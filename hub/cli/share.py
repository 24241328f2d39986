"""`hub orgs`, `hub access`, `hub explain`, `hub audit`, `hub db-url`: who may read what, why, and who did."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from hub.access import audit as audit_report
from hub.access import explain as explaining
from hub.agreement import names
from hub.agreement.model import Form
from hub.agreement.policy import Question
from hub.cli.common import compact_table, console, err_console, moment, one_line_errors, settings
from hub.control import credentials, db_credentials, kafka_access
from hub.control.apply import actor_name
from hub.db import connection
from hub.errors import NotFound
from hub.kafka import is_local_broker

JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON document, for scripts.")]
OrgArg = Annotated[str, typer.Argument(help="An organisation id (a partner's id, or one of organisations/).")]


def _relative(path: str) -> str:
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def _json(value: Any) -> Any:
    return value.isoformat().replace("+00:00", "Z") if isinstance(value, datetime) else str(value)


@one_line_errors
def orgs(as_json: JsonOpt = False) -> None:
    """Every organisation, partners included: its database role and what it can read now."""

    async def fetch() -> list[dict[str, Any]]:
        async with connection(settings().endpoints().database_url) as conn:
            return await explaining.organisations(conn)

    rows = asyncio.run(fetch())
    if as_json:
        print(json.dumps(rows))
        return
    table = compact_table("id", "name", "kind", "publishes", "database role", "reads")
    for r in rows:
        role = r["role"] if r["role_exists"] else f"{r['role']} (not created yet)"
        table.add_row(
            r["id"], r["name"], r["kind"], "\n".join(r["publishes"]) or "-", role, "\n".join(r["reads"]) or "-"
        )
    console.print(table)


@one_line_errors
def access(org: OrgArg, as_json: JsonOpt = False) -> None:
    """Everything ORG can read now, in what form, and the SQL object to select from."""

    async def fetch() -> tuple[bool, list[dict[str, Any]]]:
        async with connection(settings().endpoints().database_url) as conn:
            known, entries = await explaining.access(conn, org)
            return known, [e.to_json() for e in entries]

    known, entries = asyncio.run(fetch())
    if not known:
        raise NotFound(f"unknown organisation {org!r}: `hub orgs` lists them")
    if as_json:
        print(json.dumps({"org": org, "access": entries, "kafka_login": kafka_login(org)}))
        return
    if not entries:
        console.print(f"{org} can read nothing now (`hub explain {org} FEED` says why)", highlight=False)
        return
    console.print(f"{org} can read, as role {names.org_role(org)}:", highlight=False)
    for e in entries:
        limits = [f"fields {', '.join(e['fields'])}" if e["fields"] else "no field beyond device and time"]
        if e["devices"] or e["device_patterns"]:
            limits.append(f"devices {', '.join(e['devices'] + e['device_patterns'])}")
        if e["pseudonymised"]:
            limits.append(f"device ids pseudonymised ({names.PSEUDONYM_COLUMN})")
        if e["delay"] != "0s":
            limits.append(f"{e['delay']} late")
        if e["bucket"]:
            limits.append(f"{e['bucket']} buckets of at least {e['min_devices']} devices")
        if e["valid_until"]:
            limits.append(f"until {e['valid_until']}")
        why = f"agreement {e['agreement']} ({e['licence']})" if e["agreement"] else "it publishes this feed"
        console.print(f"  [bold]{e['object']}[/bold]  {e['form']} {e['feed']}, {why}", highlight=False)
        console.print(f"      {'; '.join(limits)}", highlight=False)
        if e["kafka_topic"]:
            console.print(
                f"      live on Kafka: {e['kafka_topic']} (values: subject {e['kafka_topic']}-value)", highlight=False
            )
        if e["mqtt_topic"]:
            console.print(f"      live over MQTT: {e['mqtt_topic']} (login consumer-{org})", highlight=False)
    if any(e["kafka_topic"] for e in entries):
        console.print(f"  Kafka: {kafka_login(org)['says']}", highlight=False)


def kafka_login(org: str) -> dict[str, Any]:
    """Whether ORG gets a Kafka login for its share topics here, and which (or, in one line, why not)."""
    s = settings()
    mode = kafka_access.access_mode(s, is_local_broker(s, s.endpoints().kafka_bootstrap))
    if not mode.issues_logins:
        return {"issued": False, "user": None, "says": mode.reason}
    user = kafka_access.kafka_user(org)
    return {
        "issued": True,
        "user": user,
        "says": f"SASL/{kafka_access.MECHANISM} login {user} (made by hub apply, password shown once): READ on topics "
        f"{kafka_access.topic_prefix(org)}* and {kafka_access.topic_prefix(None)}*, consumer groups "
        f"{kafka_access.group_prefix(org)}*",
    }


@one_line_errors
def explain(
    org: OrgArg,
    feed: Annotated[str, typer.Argument(help="A feed: partner.feed (or its name when it is unique).")],
    at: Annotated[str | None, typer.Option("--at", help="When: a date-time (default now) or an age (1d ago).")] = None,
    form: Annotated[Form | None, typer.Option("--form", help="Ask for this form only.")] = None,
    fields: Annotated[list[str] | None, typer.Option("--field", help="Ask for this field (repeatable).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """May ORG read FEED (at a time, in a form, these fields)? Which clause grants it, or rule by rule why not."""
    question = Question(org, feed, moment(at, "--at") or datetime.now(UTC), form, tuple(fields or ()))

    async def fetch() -> dict[str, Any]:
        async with connection(settings().endpoints().database_url) as conn:
            return (await explaining.explain(conn, question)).to_json()

    d = asyncio.run(fetch())
    if any(g["kafka_topic"] for g in d["grants"]):
        d["kafka_login"] = kafka_login(org)
    if as_json:
        print(json.dumps(d))
        return
    verdict = f"[green]allowed[/green]: {d['form']} from {d['object']}" if d["allowed"] else "[red]not allowed[/red]"
    console.print(f"{org} reading {feed} at {d['at']}: {verdict}", highlight=False)
    for r in d["rules"]:
        mark = "[green]yes[/green]" if r["ok"] else "[red]no [/red]"
        where = f"  ({_relative(r['file'])}:{r['line']})" if r.get("file") else ""
        console.print(f"  {mark} {r['rule']}: {r['detail']}{where}", highlight=False)
    live = [g["kafka_topic"] for g in d["grants"] if g["kafka_topic"]]
    if d["allowed"] and live:
        console.print(f"  live on Kafka: {', '.join(live)}; {kafka_login(org)['says']}", highlight=False)


@one_line_errors
def audit(
    org: Annotated[str | None, typer.Option("--org", help="Only this organisation.")] = None,
    since: Annotated[str | None, typer.Option(help="From a date-time, or an age such as 1d, 6h.")] = "7d",
    as_json: JsonOpt = False,
) -> None:
    """Who read which shared object, when and how many rows; what was refused; every agreement change."""
    start = moment(since, "--since")

    async def fetch() -> audit_report.AuditReport:
        async with connection(settings().endpoints().database_url) as conn:
            return await audit_report.report(conn, org, start, actor_name())

    r = asyncio.run(fetch())
    if as_json:
        print(
            json.dumps(
                {
                    "read_auditing": r.reading,
                    "why_not": r.why_not,
                    "reads": [x.__dict__ for x in r.reads],
                    "refused": r.refused,
                    "events": r.events,
                },
                default=_json,
            )
        )
        return
    console.print(r.why_not or f"reads since {_json(start)} (pgaudit, organisation roles):", highlight=False)
    if r.reading:
        for x in r.reads:
            console.print(
                f"  {x.role} read {x.object}: {x.reads} statements, {x.rows} rows, {_json(x.first)} .. {_json(x.last)}",
                highlight=False,
            )
        if not r.reads:
            console.print("  no reads", highlight=False)
        for f in r.refused[-10:]:
            console.print(f"  refused {_json(f['at'])} {f['role']}: {f['message']} -- {(f['statement'] or '')[:80]}")
        if len(r.refused) > 10:
            console.print(f"  ... and {len(r.refused) - 10} earlier refusals (--json for all)")
    console.print("agreement events:", highlight=False)
    for e in r.events:
        why = f": {e['reason']}" if e["reason"] else ""
        console.print(
            f"  {_json(e['at'])} {e['agreement']} {e['action']} by {e['actor']} (as {e['db_role']}){why}",
            highlight=False,
        )


@one_line_errors
def db_url(
    org: OrgArg,
    new_password: Annotated[
        bool, typer.Option("--new-password", help="Give the role a new password (shown once; the old one stops).")
    ] = False,
    save: Annotated[
        bool, typer.Option(help="With --new-password: keep it in the state dir's credentials (0600).")
    ] = True,
) -> None:
    """A database URL for ORG's own role on this hub (with its password where it was saved)."""
    s = settings()
    directory = credentials.default_dir(s)
    if new_password:
        password = asyncio.run(db_credentials.new_password(s, org))
        login = db_credentials.describe(s, org, password)
        if save:
            db_credentials.save(directory, login)
        print(login["url"])
        return
    saved = db_credentials.load(directory, org)
    if saved is not None:
        print(db_credentials.org_url(s.endpoints().database_url, org, saved["password"]))
        return
    url = db_credentials.org_url(s.endpoints().database_url, org, None)
    print(url)
    err_console.print(
        f"note: no saved password for {org} in {directory}; it was shown once by `hub apply` "
        f"(or make a new one: `hub db-url {org} --new-password`)",
        highlight=False,
    )


__all__ = ["access", "audit", "db_url", "explain", "orgs"]
