"""`hub stack`: the local stack of real servers."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from hub.cli.common import console, one_line_errors, settings
from hub.stack.local import ComponentStatus, LocalStack, stack_summary

app = typer.Typer(help="Start, inspect and stop the local stack (Mosquitto, PostgreSQL, Kafka-protocol broker).")


def _print(statuses: list[ComponentStatus]) -> None:
    table = Table("component", "address", "pid", "health", "memory", "restarts", "detail")
    for s in statuses:
        table.add_row(
            s.name,
            s.address,
            str(s.pid or "-"),
            "[green]healthy[/green]" if s.healthy else "[red]down[/red]",
            f"{s.rss_mb:.0f} MB" if s.rss_mb is not None else "-",
            str(s.restarts),
            s.detail,
        )
    console.print(table)
    for s in statuses:
        if s.last_event and s.name != "supervisor":
            console.print(f"{s.name}: {s.last_event}", highlight=False)


@app.command()
@one_line_errors
def up() -> None:
    """Start every server (idempotent) and wait until each answers."""
    stack = LocalStack(settings(), log=lambda m: console.print(m, highlight=False))
    statuses = stack.up()
    _print(statuses)
    if not all(s.healthy for s in statuses):
        raise typer.Exit(1)


@app.command()
@one_line_errors
def down() -> None:
    """Stop only the servers this state directory started."""
    stopped = LocalStack(settings()).down()
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing of ours was running")


@app.command()
@one_line_errors
def status(as_json: bool = typer.Option(False, "--json", help="One JSON object for scripts.")) -> None:
    """Each component, its address, health and memory; exits 1 if any is down."""
    statuses = LocalStack(settings()).status()
    if as_json:
        print(json.dumps(stack_summary(statuses)))
    else:
        _print(statuses)
    if not all(s.healthy for s in statuses):
        raise typer.Exit(1)


@app.command(hidden=True)
@one_line_errors
def supervise() -> None:
    """The stack's supervisor (started by `hub stack up`): starts a crashed server again."""
    import asyncio
    import logging

    from hub.stack.supervisor import supervise_stack

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(supervise_stack(settings()))


@app.command()
@one_line_errors
def env() -> None:
    """Print connection settings as shell `export` lines: eval "$(hub stack env)"."""
    for line in LocalStack(settings()).env_lines():
        print(line)
