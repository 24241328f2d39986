"""`hub serve`: the HTTP API (the web page, the DCAT-AP catalog, access requests, schema registry, feeds,
health) on uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from hub.cli.common import console, one_line_errors, settings
from hub.errors import HubError


@one_line_errors
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Port (default: HUB_API_PORT, 18081).")] = None,
) -> None:
    """Serve the web page and DCAT-AP catalog, access requests, the schema registry (read-only), /feeds, /health."""
    import uvicorn

    from hub import log_format
    from hub.api.app import create_app
    from hub.api.limits import ApiLimits, protocol_with_deadline
    from hub.api.site import Site
    from hub.stack.broker_auth import LocalBrokerAuth

    s = settings()
    log_format.configure(s.log_format)
    database_url = s.endpoints().database_url  # no stack and no HUB_DATABASE_URL: a one-line error
    port = port if port is not None else s.api_port
    console.print(
        f"hub API on http://{host}:{port}: the page at /, the catalog at /catalog.ttl, the schema registry, /metrics",
        highlight=False,
    )
    limits = ApiLimits(
        max_body_bytes=s.api_max_body_bytes,
        body_timeout_s=s.api_body_timeout_s,
        header_timeout_s=s.api_header_timeout_s,
    )
    config = uvicorn.Config(
        create_app(database_url, limits=limits, site=Site.from_settings(s, LocalBrokerAuth(s))),
        host=host,
        port=port,
        lifespan="on",
        access_log=False,
        log_config=None,  # our handler (plain or JSON lines, secrets redacted), not uvicorn's own
        http=protocol_with_deadline(limits.header_timeout_s),
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        raise HubError(f"the API did not start on {host}:{port}: see the messages above")
