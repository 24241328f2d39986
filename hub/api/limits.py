"""What one HTTP client may cost the API: body size and read time, header read time, the length of what is echoed.

Three places enforce them, each where it can: the HTTP protocol (a request's headers must arrive within
`header_timeout_s`, or the connection is closed with 408), an ASGI middleware before routing (a body
announced larger than `max_body_bytes` is refused with 413 at once, without waiting for it), and
`read_body` in the registry routes (a body streamed without a length is counted, and its reading timed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h11
import orjson
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("hub.api")


@dataclass(frozen=True)
class ApiLimits:
    max_body_bytes: int = 1024 * 1024  # a schema is a few kilobytes
    body_timeout_s: float = 30.0
    header_timeout_s: float = 10.0
    max_message_chars: int = 2_000  # an error message; a submitted value inside it is cut far shorter


def content_length(scope: Scope) -> int | None:
    """The Content-Length a request announces, or None (none, or not a number: h11 has refused those)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimit:
    """Refuse a request that announces a body larger than the limit before routing, and close its connection.

    Otherwise the server would wait for the body, and a client announcing 99,999,999,999 bytes would
    hold the connection for as long as it liked.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, media_type: Callable[[str], str]) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.media_type = media_type  # of the error body, by path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = content_length(scope)
            if length is not None and length > self.max_body_bytes:
                await _refuse_body(send, length, self.max_body_bytes, self.media_type(scope["path"]))
                return
        await self.app(scope, receive, send)


async def _refuse_body(send: Send, length: int, limit: int, media_type: str) -> None:
    message = f"the request body would be {length:,} bytes; at most {limit:,} are accepted"
    body = orjson.dumps({"error_code": 413, "message": message})
    headers = [
        (b"content-type", media_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),  # the body the client may still send is never read
    ]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\nconnection: close\r\ncontent-length: 41\r\n\r\n"
    b"the request's headers came in too slowly\n"
)


class HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, with a deadline for each request's line and headers.

    uvicorn bounds only the idle time between requests, and any byte received cancels that
    timer, so a client sending its headers a byte at a time ("slowloris") held a connection forever.
    """

    header_timeout_s = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._waiting_cycle: object = None

    def _arm(self) -> None:
        self._disarm()
        self._waiting_cycle = self.cycle  # a new request replaces the cycle: its headers are in
        self._deadline = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._deadline is not None and self.cycle is not self._waiting_cycle:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.cycle is not None and self.cycle.response_complete:
            self._arm()  # the next request on this connection gets its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _headers_too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self.cycle is not self._waiting_cycle:
            return
        log.info("closed a connection whose request headers took over %.0f s", self.header_timeout_s)
        if self.conn.our_state in (h11.IDLE, h11.DONE):  # no response of ours is half-written
            self.transport.write(REQUEST_TIMEOUT)
        self.transport.close()


def protocol_with_deadline(header_timeout_s: float) -> type[HeaderDeadlineProtocol]:
    """The protocol class for uvicorn's `http=` setting, with this deadline."""
    return type("HubHttpProtocol", (HeaderDeadlineProtocol,), {"header_timeout_s": header_timeout_s})
