"""The HTTP API bounds what one client may cost it: malformed input is a 4xx, bodies and headers are
limited in size and time, and no error echoes a large input back.

A real `hub serve` (uvicorn) on a free port, with short time limits set through its environment,
reading the test stack's catalog; raw sockets where a well-behaved HTTP client cannot misbehave.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hub.settings import HubSettings
from hub.stack.local import cli_env
from hub.stack.process import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
AIR_SUBJECT = "hub.uni_air_lab.air_quality-value"
MAX_BODY = 64 * 1024
MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"


@pytest.fixture(scope="module")
def server(applied: HubSettings) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = cli_env(applied) | {
        "HUB_API_HEADER_TIMEOUT_S": "1",
        "HUB_API_BODY_TIMEOUT_S": "1",
        "HUB_API_MAX_BODY_BYTES": str(MAX_BODY),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        wait_for_port(port, 30)
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def exchange(address: tuple[str, int], data: bytes, *, wait_s: float = 5.0) -> tuple[bytes, float]:
    """Send `data`, then read until the server closes the connection: (all it sent, seconds until it closed)."""
    with socket.create_connection(address, timeout=wait_s) as sock:
        started = time.monotonic()
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received, time.monotonic() - started


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_a_nul_byte_in_a_subject_is_a_client_error_not_a_500(server: tuple[str, int]) -> None:
    base = f"http://{server[0]}:{server[1]}"
    got = httpx.get(f"{base}/subjects/air%00quality/versions")
    assert got.status_code == 400  # it was a 500: "invalid byte sequence for encoding UTF8: 0x00"
    assert "NUL" in got.json()["message"]
    body = json.dumps({"schema": (REPO / "schemas" / "air_quality.avsc").read_text()})
    posted = httpx.post(f"{base}/subjects/a%00b/versions", content=body, headers={"Content-Type": MEDIA_TYPE})
    assert posted.status_code == 400


def test_a_body_announced_larger_than_the_limit_is_refused_at_once_and_the_connection_closed(
    server: tuple[str, int],
) -> None:
    request = (
        b"POST /subjects/x/versions HTTP/1.1\r\nHost: hub\r\nContent-Type: application/json\r\n"
        b"Content-Length: 99999999999\r\n\r\n{"
    )
    response, seconds = exchange(server, request)
    assert status_of(response) == 413  # the connection used to stay open until the client gave up
    assert b"99,999,999,999 bytes" in response
    assert seconds < 1.0  # closed at once, not after the body timeout


def test_a_body_streamed_past_the_limit_without_a_length_is_refused(server: tuple[str, int]) -> None:
    chunk = b"x" * 16_384
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(MAX_BODY // len(chunk) + 1))
    request = (
        b"POST /subjects/x/versions HTTP/1.1\r\nHost: hub\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    )
    response, _ = exchange(server, request)
    assert status_of(response) == 413


def test_a_body_that_comes_too_slowly_is_refused(server: tuple[str, int]) -> None:
    request = b'POST /subjects/x/versions HTTP/1.1\r\nHost: hub\r\nContent-Length: 100\r\n\r\n{"sch'
    response, seconds = exchange(server, request)
    assert status_of(response) == 408
    assert 0.9 < seconds < 4.0


def test_headers_that_never_end_are_cut_off_at_the_header_deadline(server: tuple[str, int]) -> None:
    with socket.create_connection(server, timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: hub\r\n")
        received = b""
        for _ in range(40):  # a header line a byte at a time, every 0.1 s ("slowloris")
            try:
                sock.sendall(b"X")
            except OSError:
                break
            time.sleep(0.1)
        while chunk := sock.recv(65536):
            received += chunk
        closed_after = time.monotonic() - started
    assert status_of(received) == 408
    assert closed_after < 3.0  # uvicorn alone never closed it


def test_an_idle_connection_is_closed_at_the_header_deadline(server: tuple[str, int]) -> None:
    response, seconds = exchange(server, b"")
    assert status_of(response) == 408
    assert 0.9 < seconds < 3.0


def test_keep_alive_requests_each_get_their_own_header_deadline(server: tuple[str, int]) -> None:
    with httpx.Client(base_url=f"http://{server[0]}:{server[1]}") as client:
        for _ in range(3):
            assert client.get("/health").status_code == 200
            time.sleep(0.6)  # under the deadline each time, over it in all


def test_a_schema_error_does_not_echo_a_large_submitted_schema(server: tuple[str, int]) -> None:
    schema = json.loads((REPO / "schemas" / "air_quality.avsc").read_text())
    big = {
        "type": "record",
        "name": "Big",
        "fields": [{"name": f"f{i}", "type": "string", "doc": "x" * 30} for i in range(400)],
    }
    schema["fields"].append({"name": "extra", "type": "int", "default": big})  # a default of the wrong type
    text = json.dumps({"schema": json.dumps(schema)})
    assert len(text) > 25_000
    base = f"http://{server[0]}:{server[1]}"
    for path in (f"/compatibility/subjects/{AIR_SUBJECT}/versions", f"/subjects/{AIR_SUBJECT}/versions"):
        got = httpx.post(base + path, content=text, headers={"Content-Type": MEDIA_TYPE})
        assert got.status_code == 422
        message = got.json()["message"]
        assert "not valid Avro" in message
        assert len(message) < 1_000  # it was the whole schema, 31 KB


def test_compatibility_messages_are_bounded_in_number_and_length(server: tuple[str, int]) -> None:
    schema = json.loads((REPO / "schemas" / "air_quality.avsc").read_text())
    schema["fields"] += [{"name": f"added_{i}", "type": "int"} for i in range(30)]  # 30 fields without defaults
    base = f"http://{server[0]}:{server[1]}"
    got = httpx.post(
        f"{base}/compatibility/subjects/{AIR_SUBJECT}/versions",
        content=json.dumps({"schema": json.dumps(schema)}),
        headers={"Content-Type": MEDIA_TYPE},
    )
    assert got.status_code == 200
    messages = got.json()["messages"]
    assert got.json()["is_compatible"] is False
    assert len(messages) == 21 and messages[-1] == "... and 10 more"
    assert all(len(m) <= 500 for m in messages)
