"""Ports for private stacks: outside the range the kernel gives outgoing connections, and never handed out twice on
this machine while the process that got one runs (parallel test processes start stacks side by side)."""

from __future__ import annotations

import socket
import subprocess
import sys

from hub.stack.process import PORTS_FROM, _claim, _outgoing_range, free_port


def test_a_free_port_is_below_the_outgoing_range_and_bindable() -> None:
    port = free_port()
    assert PORTS_FROM <= port < _outgoing_range()[0]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", port))


def test_a_port_handed_out_is_claimed_against_this_and_every_other_process() -> None:
    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20
    port = ports.pop()
    assert not _claim(port)
    other = subprocess.run(
        [sys.executable, "-c", f"from hub.stack.process import _claim; print(_claim({port}))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert other.stdout.strip() == "False"
