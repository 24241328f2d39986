"""What happened to the local stack's servers: the supervisor's events, one JSON object a line.

Written by the supervisor (supervisor.py) to `<state>/supervisor/events.jsonl`, read by `hub stack status`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Event:
    at: float  # Unix time
    server: str
    event: str  # crashed | restarted | restart failed | topics recreated | topics not recreated
    detail: str = ""

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.at))
        return f"{when} {self.event}" + (f": {self.detail}" if self.detail else "")


@dataclass(frozen=True)
class History:
    """One server's events, summed up for `hub stack status`."""

    restarts: int = 0
    last: Event | None = None


def append_event(path: Path, event: Event) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(asdict(event)) + "\n")


def read_events(path: Path) -> list[Event]:
    """Every event recorded; a line that is not one (cut short by a crash) is skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    events = []
    for line in lines:
        try:
            events.append(Event(**json.loads(line)))
        except (ValueError, TypeError):
            continue
    return events


def histories(events: list[Event]) -> dict[str, History]:
    """Per server: how often it was restarted, and its last event."""
    out: dict[str, History] = {}
    for e in events:
        before = out.get(e.server, History())
        out[e.server] = History(before.restarts + (e.event == "restarted"), e)
    return out
