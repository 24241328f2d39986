"""Entry point of the `hub` command."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from hub.cli import connector, dead_letters, logins, onboard, run, share, stack
from hub.cli.access_requests import app as requests_app
from hub.cli.agreements import app as agreements_app
from hub.cli.bench import bench
from hub.cli.demo import demo
from hub.cli.drill import drill
from hub.cli.grafana import app as grafana_app
from hub.cli.maintain import maintain
from hub.cli.query import app as query_app
from hub.cli.serve import serve
from hub.cli.simulate import simulate_cmd
from hub.cli.stats import stats as stats_cmd
from hub.cli.tokens import app as tokens_app
from hub.cli.try_payload import try_payload

app = typer.Typer(
    help="Civic data-sharing hub: onboard partners, ingest their devices' data, land it, share it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(stack.app, name="stack")
app.add_typer(run.app, name="run")
app.add_typer(query_app, name="query")
app.add_typer(dead_letters.app, name="dead-letters")
app.add_typer(connector.app, name="connector")
app.add_typer(agreements_app, name="agreements")
app.add_typer(logins.partners_app, name="partners")
app.add_typer(logins.devices_app, name="devices")
app.add_typer(tokens_app, name="tokens")  # +17: API tokens and access requests
app.add_typer(requests_app, name="requests")
app.add_typer(grafana_app, name="grafana")
app.command()(demo)
app.command()(maintain)
app.command()(bench)
app.command()(drill)
app.command("simulate")(simulate_cmd)
app.command("stats")(stats_cmd)
app.command()(serve)
app.command("try")(try_payload)
app.command("broker-init")(logins.broker_init)
for _cmd in (onboard.plan, onboard.apply, onboard.feeds):
    app.command()(_cmd)
for _share in (share.orgs, share.access, share.explain, share.audit):
    app.command()(_share)
app.command("db-url")(share.db_url)


@app.callback()
def main(
    state_dir: Annotated[
        Path | None,
        typer.Option("--state-dir", help="State directory of the local stack (env HUB_STATE_DIR; default .hub)."),
    ] = None,
) -> None:
    if state_dir is not None:
        os.environ["HUB_STATE_DIR"] = str(state_dir)
