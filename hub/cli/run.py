"""`hub run`: the data plane's workers."""

from __future__ import annotations

from typing import Annotated

import typer

from hub.cli.common import one_line_errors
from hub.supervise import supervise

app = typer.Typer(
    help="Run the hub's workers: ingest (MQTT -> Kafka), landing (Kafka -> database) and share (agreements' live "
    "streams); all three by default.",
    invoke_without_command=True,
)

Workers = Annotated[int, typer.Option("--workers", "-w", min=1, help="Worker processes.")]


@app.command()
@one_line_errors
def ingest(workers: Workers = 1) -> None:
    """MQTT messages to validated Avro records in Kafka (dead letters for the rest)."""
    raise typer.Exit(supervise(workers, 0))


@app.command()
@one_line_errors
def land(workers: Workers = 1) -> None:
    """Kafka feed topics into feed tables, each record exactly once."""
    raise typer.Exit(supervise(0, workers))


@app.command()
@one_line_errors
def share(workers: Workers = 1) -> None:
    """Agreements' live streams: share.<consumer>.<provider>.<feed> in Kafka, share/<consumer>/... over MQTT."""
    raise typer.Exit(supervise(0, 0, workers))


@app.callback()
@one_line_errors
def run_all(
    ctx: typer.Context,
    ingest_workers: Annotated[int, typer.Option(min=1, help="Ingest processes.")] = 1,
    land_workers: Annotated[int, typer.Option(min=1, help="Landing processes.")] = 1,
    share_workers: Annotated[int, typer.Option(min=0, help="Share stream processes.")] = 1,
) -> None:
    """Ingest, landing and share workers together, for a single machine (`hub run`)."""
    if ctx.invoked_subcommand is None:
        raise typer.Exit(supervise(ingest_workers, land_workers, share_workers))
