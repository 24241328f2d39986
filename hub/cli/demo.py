"""`hub demo`: the main job on the local stack, for a first look."""

from __future__ import annotations

from hub.cli.common import console, one_line_errors, settings
from hub.stack.local import LocalStack


@one_line_errors
def demo() -> None:
    """Start the local stack and show its status."""
    s = settings()
    stack = LocalStack(s, log=lambda m: console.print(m, highlight=False))
    statuses = stack.up()
    for st in statuses:
        console.print(f"{st.name:10} {st.address:22} {'healthy' if st.healthy else 'DOWN'}  {st.detail}")
    console.print('connection settings: eval "$(.venv/bin/hub stack env)"')
