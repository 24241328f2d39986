"""`hub agreements list | revoke | export | import`: agreements as the catalog has them, ended early, and as ODRL."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from hub.agreement.loader import load_agreements
from hub.agreement.odrl import export as odrl_export
from hub.agreement.odrl import import_document
from hub.catalog import agreements as shared
from hub.catalog import store as catalog
from hub.cli.common import compact_table, console, one_line_errors, settings
from hub.control.apply import actor_name
from hub.control.revoke import revoke as revoke_agreement
from hub.control.sources import classify
from hub.db import connection
from hub.errors import ConfigError

app = typer.Typer(help="Agreements: list the applied ones, revoke one now, export or import them as ODRL.")


@app.command("list")
@one_line_errors
def list_cmd(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every applied agreement: provider, consumers, status, where it was applied from."""

    async def fetch() -> list[dict[str, Any]]:
        async with connection(settings().endpoints().database_url) as conn:
            await catalog.ensure_catalog(conn)
            await shared.record_expiries(conn, actor_name())
            return [
                {
                    "id": r.id,
                    "provider": r.provider,
                    "consumers": r.spec["consumers"],
                    "feeds": [g["feed"] for g in r.spec["grants"]],
                    "status": "revoked" if r.status == "revoked" else ("expired" if r.expiry_recorded else "active"),
                    "valid_until": r.spec.get("valid_until"),
                    "source": f"{r.source}:{r.line}",
                }
                for r in (await shared.agreements(conn)).values()
            ]

    rows = asyncio.run(fetch())
    if as_json:
        print(json.dumps(rows))
        return
    table = compact_table("id", "provider", "consumers", "feeds", "status", "valid until", "file")
    for r in rows:
        consumers = r["consumers"] if isinstance(r["consumers"], str) else ", ".join(r["consumers"])
        table.add_row(
            r["id"], r["provider"], consumers, ", ".join(r["feeds"]), r["status"], r["valid_until"] or "-", r["source"]
        )
    console.print(table)


@app.command()
@one_line_errors
def revoke(
    agreement: Annotated[str, typer.Argument(help="The agreement's id.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit trail).")],
    by: Annotated[str | None, typer.Option("--by", help="Who revokes (default: login name).")] = None,
) -> None:
    """End an agreement now: its objects dropped, the organisations' open sessions ended; it stays revoked."""
    done = asyncio.run(revoke_agreement(settings(), agreement, reason, by or actor_name()))
    console.print(
        f"revoked {done.agreement}: dropped {', '.join(done.objects) or 'no object'}; "
        f"{done.sessions_ended} open session{'s' if done.sessions_ended != 1 else ''} ended",
        highlight=False,
    )


@app.command("export")
@one_line_errors
def export_cmd(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Agreement files or directories (default agreements/).")
    ] = None,
    odrl: Annotated[bool, typer.Option("--odrl", help="As ODRL 2.2 Agreements in JSON-LD (the only format).")] = True,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of standard output.")
    ] = None,
) -> None:
    """Write agreements as ODRL 2.2 `Agreement` policies (JSON-LD), one graph for all of them."""
    if not odrl:
        raise ConfigError("ODRL is the one export format: use --odrl")
    sources = classify(paths or [Path("agreements")])
    agreements = [loaded.agreement for p in sources.agreements for loaded in load_agreements(p)]
    if not agreements:
        raise ConfigError("no agreements in these files (an agreements file starts with `agreements:`)")
    text = json.dumps(odrl_export(agreements), indent=2) + "\n"
    if output is None:
        print(text, end="")
    else:
        output.write_text(text)
        console.print(f"wrote {len(agreements)} agreements to {output}", highlight=False)


@app.command("import")
@one_line_errors
def import_cmd(
    file: Annotated[Path, typer.Argument(help="A JSON-LD file written by `hub agreements export --odrl`.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the YAML here (never overwrites).")
    ] = None,
) -> None:
    """Turn ODRL Agreements (as exported) back into an agreements file."""
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read JSON-LD: {exc}", file=str(file)) from None
    try:
        agreements = import_document(doc)
    except ConfigError as exc:
        raise ConfigError(exc.reason, file=str(file), field=exc.field) from None
    data = {"agreements": [a.model_dump(mode="json", exclude_defaults=True) for a in agreements]}
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    if output is None:
        print(text, end="")
        return
    if output.exists():
        raise ConfigError("exists already: choose another file", file=str(output))
    output.write_text(text)
    console.print(f"wrote {len(agreements)} agreements to {output}", highlight=False)
