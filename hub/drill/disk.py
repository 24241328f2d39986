"""The database out of disk for a while, with a stream in flight.

Simulated where the machine allows it, never faked: the feed table moves to a tablespace on a small
loop-mounted ext4 file system (root and a loop device needed), a filler table takes its last byte,
the stream goes on for the pause, then the filler is dropped. Where the mount cannot be made the row
says why.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg

from hub.drill.faults import Pace, stream_scenario
from hub.drill.reconcile import Result
from hub.drill.stack import FEED_TABLE, DrillStack
from hub.identifiers import quote_literal

SIZE_MB = 48
TABLESPACE = "drill_small"
FILL = "drill_fill"
# Incompressible rows stored in place (no TOAST compression): each takes most of a page.
FILL_ROWS_SQL = f"INSERT INTO {FILL} SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 180), generate_series(1, $1) g GROUP BY g"  # noqa: E501


def _run(argv: list[str]) -> str | None:
    """None on success, else the first line of what the command said."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode:
        return (
            (done.stderr or done.stdout).strip().splitlines()[0] if (done.stderr or done.stdout).strip() else "failed"
        )
    return None


class SmallDisk:
    """A loop-mounted file system of SIZE_MB in the state directory (mounted on enter, unmounted on exit)."""

    def __init__(self, state: Path) -> None:
        self.image, self.mount = state / "drill-disk.img", state / "drill-disk"
        self.mounted = False

    def make(self) -> str | None:
        """None when mounted; otherwise why it cannot be done here."""
        if os.geteuid() != 0:
            return "mounting a small file system needs root"
        for tool in ("mount", "umount", "mkfs.ext4"):
            if shutil.which(tool) is None:
                return f"{tool} is not installed"
        with self.image.open("wb") as f:
            f.truncate(SIZE_MB * 1024 * 1024)
        self.mount.mkdir(exist_ok=True)
        why = _run(["mkfs.ext4", "-q", "-F", str(self.image)]) or _run(["mount", "-o", "loop", str(self.image),
                                                                          str(self.mount)])  # fmt: skip
        if why:
            return f"mount -o loop failed: {why}"
        self.mounted = True
        data = self.mount / "pg"
        data.mkdir()
        owner = pwd.getpwnam("postgres")
        os.chown(data, owner.pw_uid, owner.pw_gid)
        return None

    def remove(self) -> None:
        if self.mounted:
            _run(["umount", "-l", str(self.mount)])
            self.mounted = False
        self.image.unlink(missing_ok=True)


async def fill(stack: DrillStack) -> None:
    """Take the tablespace's last free byte."""
    conn = await stack.connect()
    try:
        for rows in (2000, 200, 20, 1):
            while True:
                try:
                    await conn.execute(FILL_ROWS_SQL, rows)
                except asyncpg.DiskFullError:
                    break
    finally:
        await conn.close()


async def feed_table_full(stack: DrillStack) -> bool:
    """Whether the feed table's tablespace refuses a new page (checked, so the fault is never assumed)."""
    conn = await stack.connect()
    try:
        async with conn.transaction():
            await conn.execute(f"CREATE TABLE drill_probe TABLESPACE {TABLESPACE} AS SELECT * FROM {FEED_TABLE}")
            raise _RolledBack
    except asyncpg.DiskFullError:
        return True
    except _RolledBack:
        return False
    finally:
        await conn.close()


class _RolledBack(Exception):
    """Leaves the probe's transaction without keeping what it made."""


def out_of_disk(stack: DrillStack, seconds: float) -> Callable[[Result], tuple[float, float]]:
    def fault(result: Result) -> tuple[float, float]:
        asyncio.run(fill(stack))
        began = time.time()
        if not asyncio.run(feed_table_full(stack)):
            result.fail("the feed table still took rows once its tablespace was full: the fault was not made")
        time.sleep(seconds)
        asyncio.run(stack.fetchval(f"DROP TABLE {FILL}"))
        return began, time.time()

    return fault


def run_disk(stack: DrillStack, pace: Pace, log: Callable[[str], None], quick: bool) -> list[Result]:
    action = f"the feed table's tablespace full for {pace.pause_s:.0f} s ({SIZE_MB} MB loop-mounted ext4)"
    disk = SmallDisk(stack.state)
    why = disk.make()
    if why:
        disk.remove()
        return [Result("database out of disk", action, verdict="not simulated", notes=[f"not simulated here: {why}"])]
    log(f"the database out of disk for {pace.pause_s:.0f} s")
    try:
        asyncio.run(_move(stack, disk.mount / "pg", TABLESPACE))
        return [stream_scenario(stack, pace, "database out of disk", action, out_of_disk(stack, pace.pause_s))]
    finally:
        asyncio.run(_move(stack, None, "pg_default"))
        disk.remove()


async def _move(stack: DrillStack, location: Path | None, tablespace: str) -> None:
    conn = await stack.connect()
    try:
        if location is not None:
            await conn.execute(f"CREATE TABLESPACE {TABLESPACE} LOCATION {quote_literal(str(location))}")
            await conn.execute(f"CREATE TABLE {FILL} (b text) TABLESPACE {TABLESPACE}")
            await conn.execute(f"ALTER TABLE {FILL} ALTER COLUMN b SET STORAGE PLAIN")
        await conn.execute(f"ALTER TABLE {FEED_TABLE} SET TABLESPACE {tablespace}")
        if location is None:
            await conn.execute(f"DROP TABLE IF EXISTS {FILL}")
            await conn.execute(f"DROP TABLESPACE IF EXISTS {TABLESPACE}")
    finally:
        await conn.close()
