"""Before `hub run` starts its ingest workers: end the broker sessions of this machine's workers that no longer run.

A persistent session left behind stays a member of the shared subscription and keeps receiving its
share of messages, which would then wait there undelivered. Sessions of other machines' workers are
left to their own `hub run`; a session whose index another `hub run` here holds is running.
"""

from __future__ import annotations

import contextlib
import logging
import re

from hub.catalog import store as catalog
from hub.db import connection
from hub.errors import HubError
from hub.ingest import identity
from hub.ingest.worker import IngestWorker
from hub.settings import HubSettings
from hub.worker_registry import slot

log = logging.getLogger("hub.supervise")

LEGACY_ID = re.compile(r"^hub-ingest-\d+$")  # client ids of versions that did not name the host


async def drain(settings: HubSettings, mine: list[int]) -> list[str]:
    """End the stale sessions, after taking what waits in them to Kafka; `mine`: the indexes about to start.

    Returns the sessions ended; one whose messages cannot reach Kafka now is left out of the shared
    group but kept (with its messages), and tried again next time.
    """
    ep = settings.endpoints()
    async with connection(ep.database_url) as conn:
        await catalog.ensure_catalog(conn)
        rows = await conn.fetch("SELECT name FROM hub.resources WHERE kind = 'mqtt-session' AND state = 'active'")
    host = identity.this_host(settings)
    ended = []
    for name in sorted(r["name"] for r in rows):
        index = identity.index_on_host(name, host)
        if index in mine or (index is None and not LEGACY_ID.match(name)):
            continue
        try:
            with contextlib.ExitStack() as held:
                if index is not None:
                    held.enter_context(identity.claim(settings, slot("ingest", index)))
                async with IngestWorker(settings, ep, index or 0, drain_only=True, client_id=name) as worker:
                    pass  # entering resumes the old session; leaving takes what waits in it to Kafka and ends it
        except HubError as exc:
            if "is in use" in str(exc):
                continue  # its worker runs
            raise
        if worker.session_ended:
            ended.append(name)
            log.info("drained and ended stale ingest session %s", name)
        else:
            log.warning("stale ingest session %s still holds messages (Kafka down?); it is kept for now", name)
    return ended
