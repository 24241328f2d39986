"""Entry point of the `hub` command."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from hub.cli import logins, onboard, run, stack
from hub.cli.bench import bench
from hub.cli.demo import demo
from hub.cli.maintain import maintain
from hub.cli.query import app as query_app
from hub.cli.serve import serve
from hub.cli.simulate import simulate_cmd
from hub.cli.stats import stats as stats_cmd

app = typer.Typer(
    help="Civic data-sharing hub: onboard partners, ingest their devices' data, land it, share it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(stack.app, name="stack")
app.add_typer(run.app, name="run")
app.add_typer(query_app, name="query")
app.add_typer(logins.partners_app, name="partners")
app.add_typer(logins.devices_app, name="devices")
app.command()(demo)
app.command()(maintain)
app.command()(bench)
app.command("simulate")(simulate_cmd)
app.command("stats")(stats_cmd)
app.command()(serve)
app.command("broker-init")(logins.broker_init)
for _cmd in (onboard.plan, onboard.apply, onboard.feeds):
    app.command()(_cmd)


@app.callback()
def main(
    state_dir: Annotated[
        Path | None,
        typer.Option("--state-dir", help="State directory of the local stack (env HUB_STATE_DIR; default .hub)."),
    ] = None,
) -> None:
    if state_dir is not None:
        os.environ["HUB_STATE_DIR"] = str(state_dir)
