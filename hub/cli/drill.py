"""`hub drill`: faults, abuse and hostile input on a private stack, every message reconciled (a drill, not a test)."""

from __future__ import annotations

import json
import signal
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hub.cli.common import console, one_line_errors
from hub.drill.runner import DrillConfig, run_drill


@one_line_errors
def drill(
    quick: Annotated[bool, typer.Option(help="Smaller streams and 10 s pauses: under 5 minutes on 2 cores.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print only the final JSON line.")] = False,
    keep: Annotated[bool, typer.Option(help="Keep the private stack's state directory (logs) afterwards.")] = False,
    only: Annotated[
        str,
        typer.Option(
            help="Comma-separated: run only the scenario groups (abuse, hostile payloads, hostile configs, faults, "
            "disk) whose name contains one of these."
        ),
    ] = "",
) -> None:
    """Start a private stack and run each scenario with a stream of QoS 1 messages in flight: kill -9 of every
    worker and server, servers paused, the database out of disk, a consumer's forbidden reads, MQTT abuse,
    hostile payloads and configs. Each row reconciles published, acknowledged, rows, dead letters, duplicates
    and lost; the last line is JSON (scenarios, passed, failed, lost, seconds, results). Exits 1 if any failed.
    """
    # SIGTERM ends the drill as Ctrl-C does: the private stack and its workers are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    log = (lambda _m: None) if as_json else (lambda m: console.print(m, highlight=False))
    figures = run_drill(DrillConfig(quick=quick, keep=keep, only=only, log=log))
    if not as_json:
        Console(width=max(console.width, 200)).print(_table(figures))
    print(json.dumps(figures))
    if figures["failed"]:
        raise typer.Exit(1)


def _table(figures: dict[str, Any]) -> Table:
    table = Table(
        title=f"hub drill: {figures['passed']} passed, {figures['failed']} failed, "
        f"lost {figures['lost']}, {figures['seconds']:.0f} s"
    )
    for col in (
        "scenario",
        "what was done",
        "published",
        "acked",
        "rows",
        "dead letters",
        "duplicates",
        "lost",
        "recovery s",
        "result",
    ):
        table.add_column(col, justify="right" if col not in ("scenario", "what was done", "result") else "left")
    for r in figures["results"]:
        attempts = f"{r['refused']}/{r['attempts']} refused" if r["attempts"] else ""
        verdict = r["verdict"]
        style = {"passed": "green", "failed": "red"}.get(verdict, "yellow")
        notes = "; ".join(x for x in [attempts, *r["notes"]] if x)
        recovery = "" if r["recovery_s"] is None else f"{r['recovery_s']:.1f}"
        table.add_row(
            r["scenario"],
            r["action"],
            str(r["published"]),
            str(r["acked"]),
            str(r["rows"]),
            str(r["dead_letters"]),
            str(r["duplicates"]),
            str(r["lost"]),
            recovery,
            f"[{style}]{verdict}[/]" + (f": {notes}" if notes else ""),
        )
    return table
