"""The HTTP API in the test process, and what the browser tests need: uvicorn in a thread on a free loopback
port (stopped cleanly), and Debian's Chromium as Playwright's browser (Playwright cannot download its own here)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import uvicorn

from hub.api.app import create_app
from hub.api.site import Site
from hub.catalog import tokens
from hub.settings import HubSettings
from hub.stack.broker_auth import LocalBrokerAuth
from hub.stack.process import free_port
from tests.integration.sharing_support import Workspace, seed

CHROMIUM = Path("/usr/bin/chromium")
# Chromium resolves Google's hosts in the background even with Playwright's flags; this stops every lookup but
# loopback's. (Never pass a --disable-features of one's own: Chromium keeps only the last, Playwright's is lost.)
CHROMIUM_ARGS = ["--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1"]


@contextmanager
def serving(settings: HubSettings, agreements_dir: Path, page_size: int = 100) -> Iterator[str]:
    """`hub serve`'s app for `settings`, approvals writing to `agreements_dir`: yields its base URL."""
    settings = settings.replace(agreements_dir=agreements_dir, catalog_page_size=page_size)
    app = create_app(settings.endpoints().database_url, site=Site.from_settings(settings, LocalBrokerAuth(settings)))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="hub-api-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


async def workspace(settings: HubSettings, root: Path, orgs: list[str], agreements: str) -> Workspace:
    """The tests' own partner (lab_<tag>, feeds air and noise, with rows) and organisations, with `agreements`."""
    ws = Workspace(root, settings)
    ws.setup(orgs)
    await ws.apply("connectors", "organisations")
    conn = await asyncpg.connect(settings.endpoints().database_url)
    try:
        await seed(conn, ws.partner, datetime.now(UTC))
    finally:
        await conn.close()
    ws.write("agreements/lab.yaml", agreements)
    await ws.apply()
    return ws


async def new_token(settings: HubSettings, org: str) -> str:
    conn = await asyncpg.connect(settings.endpoints().database_url)
    try:
        return (await tokens.create(conn, org, "tests", "test-suite"))[1]
    finally:
        await conn.close()
