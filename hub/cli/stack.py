"""`hub stack`: the local stack of real servers."""

from __future__ import annotations

import json
import time

import typer

from hub.cli.common import compact_table, console, one_line_errors, settings, wide
from hub.stack.local import ComponentStatus, LocalStack, stack_summary
from hub.stack.workers import WorkerStatus, worker_statuses

app = typer.Typer(help="Start, inspect and stop the local stack (Mosquitto, PostgreSQL, Kafka-protocol broker).")


def _print_workers(workers: list[WorkerStatus]) -> None:
    if not workers:
        console.print("workers: none running (start them with `hub run`)", highlight=False)
        return
    headers = ["worker", "pid", "client id", "since", "health", "metrics"]
    table = compact_table(*([*headers[:5], "memory", "metrics"] if wide() else headers))
    for w in workers:
        cells = [
            f"{w.kind}-{w.index}",
            str(w.pid),
            w.client_id or "-",
            time.strftime("%H:%M:%S", time.localtime(w.since)),
            f"[green]{w.health}[/green]" if w.healthy else f"[yellow]{w.health}[/yellow]",
        ]
        if wide():
            cells.append(f"{w.rss_mb:.0f} MB" if w.rss_mb is not None else "-")
        table.add_row(*cells, w.metrics or "-")
    console.print(table)


def _print(statuses: list[ComponentStatus]) -> None:
    full = wide()  # below 120 columns each server's detail goes on a line of its own, under the table
    table = compact_table("component", "address", "pid", "health", "memory", "restarts", *(["detail"] if full else []))
    for s in statuses:
        table.add_row(
            s.name,
            s.address,
            str(s.pid or "-"),
            "[green]healthy[/green]" if s.healthy else "[red]down[/red]",
            f"{s.rss_mb:.0f} MB" if s.rss_mb is not None else "-",
            str(s.restarts),
            *([s.detail] if full else []),
        )
    console.print(table)
    for s in statuses:
        if not full:
            console.print(f"{s.name}: {s.detail}", highlight=False, soft_wrap=False)  # wrapped at the terminal
        if s.last_event and s.name != "supervisor":
            console.print(f"{s.name}: {s.last_event}", highlight=False, soft_wrap=False)


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
    """Each server and every running worker: address, health, memory; exits 1 if a server is down."""
    s = settings()
    statuses = LocalStack(s).status()
    workers = worker_statuses(s.state_dir)
    if as_json:
        print(json.dumps({**stack_summary(statuses), "workers": [w.as_json() for w in workers]}))
    else:
        _print(statuses)
        _print_workers(workers)
    if not all(s.healthy for s in statuses):
        raise typer.Exit(1)


@app.command(hidden=True)
@one_line_errors
def supervise() -> None:
    """The stack's supervisor (started by `hub stack up`): starts a crashed server again."""
    import asyncio

    from hub import log_format
    from hub.stack.supervisor import supervise_stack

    s = settings()
    log_format.configure(s.log_format)
    asyncio.run(supervise_stack(s))


@app.command()
@one_line_errors
def env() -> None:
    """Print connection settings as shell `export` lines: eval "$(hub stack env)"."""
    for line in LocalStack(settings()).env_lines():
        print(line)
