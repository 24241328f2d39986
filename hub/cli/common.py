"""What every `hub` command shares: settings, console, and one-line errors."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import ParamSpec, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from hub.connector.feed_spec import parse_duration
from hub.errors import ConfigError, HubError
from hub.settings import HubSettings

console = Console(soft_wrap=True)
err_console = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")


WIDE = 120  # at least this many columns: tables show every column; below, the ones that matter most


def compact_table(*columns: str, title: str | None = None) -> Table:
    """A table that reads in an 80-column terminal: no outer border, one space of padding, a rule under the header."""
    return Table(*columns, title=title, box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 1))


Report = Callable[[str, int, int], None]  # (what, done, total): one progress bar per `what`


@contextlib.contextmanager
def progress_bars() -> Iterator[Report]:
    """Progress bars for a long command, one per thing counted; drawn only on a terminal, gone when done."""
    with Progress(
        TextColumn("   {task.description:<28}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bars:
        tasks: dict[str, TaskID] = {}

        def report(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bars.add_task(what, total=total)
            bars.update(tasks[what], completed=done, total=total)

        yield report


def wide() -> bool:
    return console.width >= WIDE


def settings() -> HubSettings:
    return HubSettings()


def one_line_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """A HubError becomes one line on stderr and exit status 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except HubError as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper


def moment(text: str | None, option: str) -> datetime | None:
    """An option's time: an age such as 2h, 30m, 7d (that long ago) or an ISO date-time (UTC when it has no zone)."""
    if text is None:
        return None
    try:
        return datetime.now(UTC) - parse_duration(text)
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{option} {text!r} is neither an age (2h, 30m, 7d) nor an ISO date-time (2026-11-23T08:00:00Z)"
        ) from None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)
