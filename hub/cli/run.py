"""`hub run`: the data plane's workers, kept running by a lean supervisor process (hub/supervise.py)."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from hub.cli.common import one_line_errors, settings
from hub.ingest.identity import this_host
from hub.supervise import exec_argv

app = typer.Typer(
    help="Run the hub's workers: ingest (MQTT -> Kafka), landing (Kafka -> database) and share (agreements' live "
    "streams); all three by default. `hub stack status` lists them; `hub stack down` stops them.",
    invoke_without_command=True,
)

Workers = Annotated[int, typer.Option("--workers", "-w", min=1, help="Worker processes.")]


def run_workers(workers: dict[str, int]) -> None:
    """Become the supervisor (exec: the same process, without the CLI's modules in memory)."""
    s = settings()
    wanted = {kind: n for kind, n in workers.items() if n > 0}
    argv = exec_argv(s.state_dir, this_host(s), wanted, s.metrics_port, s.log_format)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)  # noqa: S606 (our own interpreter, argv built above)


@app.command()
@one_line_errors
def ingest(workers: Workers = 1) -> None:
    """MQTT messages to validated Avro records in Kafka (dead letters for the rest)."""
    run_workers({"ingest": workers})


@app.command()
@one_line_errors
def land(workers: Workers = 1) -> None:
    """Kafka feed topics into feed tables, each record exactly once."""
    run_workers({"land": workers})


@app.command()
@one_line_errors
def share(workers: Workers = 1) -> None:
    """Agreements' live streams: share.<consumer>.<provider>.<feed> in Kafka, share/<consumer>/... over MQTT."""
    run_workers({"share": workers})


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
        run_workers({"land": land_workers, "ingest": ingest_workers, "share": share_workers})
