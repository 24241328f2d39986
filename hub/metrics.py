"""Prometheus metrics and health routes of a hub process, on one small HTTP server per worker process.

Routes: `/metrics` (Prometheus text format: the hub's `hub_*` metrics and prometheus-client's own
`process_*` and `python_*`), `/health/live` (200 while the process's event loop turns: its heartbeat
is recent) and `/health/ready` (200 once the worker has started and while no server it needs is
away; 503 with the reason otherwise). Kubernetes probes and `hub stack status` use the two health
routes. The names of every metric are in docs/operations.md ("Metrics").

Metrics are counted per batch, never per message (a labelled increment costs a few microseconds).
Each worker process serves its own registry; nothing is shared between processes, so no
multiprocess mode is needed.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import prometheus_client
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, generate_latest

prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series beside every counter

SERVER_UP = Gauge(
    "hub_server_up", "1 while this process reaches the server, 0 while it waits for it to come back.", ["server"]
)
RETRIES = Counter("hub_retries", "Failed attempts to reach a server that were retried (after backoff).", ["server"])
WORKER_INFO = Gauge("hub_worker_info", "Always 1: what this process is.", ["kind", "index", "client_id"])

HEALTH_ROUTES = ("/health/live", "/health/ready", "/health")  # `/health` is `/health/ready`, as on the API
LIVE_AFTER_S = 30.0  # a heartbeat older than this: the event loop is stuck


@dataclass
class Health:
    """What the health routes answer for this process."""

    started: bool = False
    heartbeat: float = field(default_factory=time.monotonic)
    away: dict[str, float] = field(default_factory=dict)  # server -> since (monotonic)

    def beat(self) -> None:
        self.heartbeat = time.monotonic()

    def live(self) -> tuple[bool, dict[str, object]]:
        age = time.monotonic() - self.heartbeat
        return age < LIVE_AFTER_S, {"heartbeat_age_s": round(age, 1)}

    def ready(self) -> tuple[bool, dict[str, object]]:
        now = time.monotonic()
        waiting = {server: round(now - since, 1) for server, since in sorted(self.away.items())}
        detail: dict[str, object] = {"started": self.started, "waiting_for_s": waiting}
        return self.started and not waiting, detail


HEALTH = Health()


def server_failed(server: str) -> None:
    """A retriable failure talking to `server` (hub/outage.py calls this for every one)."""
    RETRIES.labels(server).inc()
    if server not in HEALTH.away:
        _SEEN.add(server)
        HEALTH.away[server] = time.monotonic()
        SERVER_UP.labels(server).set(0)


_SEEN: set[str] = set()


def server_back(server: str) -> None:
    """`server` answered (called after every success: only a change of state costs anything)."""
    if HEALTH.away.pop(server, None) is not None or server not in _SEEN:
        _SEEN.add(server)
        SERVER_UP.labels(server).set(1)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
        elif path in HEALTH_ROUTES:
            ok, detail = HEALTH.live() if path == "/health/live" else HEALTH.ready()
            body = json.dumps({"status": "ok" if ok else "unavailable", **detail}).encode()
            self._send(200 if ok else 503, body, "application/json")
        else:
            self._send(404, b'{"status": "not found"}', "application/json")

    def _send(self, status: int, body: bytes, media_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # a scrape every few seconds is not worth a log line


class MetricsServer:
    """The HTTP server of `/metrics` and the health routes, in a daemon thread."""

    def __init__(self, host: str, port: int) -> None:
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="hub-metrics", daemon=True)

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def __enter__(self) -> MetricsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
