"""Small measuring tools for the benchmark: percentiles and peak memory of process trees."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import psutil

from hub.bench.payloads import DEVICES


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return float(ordered[k])


class PeakMemory:
    """Samples resident memory of named process trees until stopped.

    `peak_mb[name]` is the peak of the tree's total; `peak_process_mb[name]` the peak of its largest process.
    """

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.pids: dict[str, int] = {}
        self.peak_mb: dict[str, float] = {}
        self.peak_process_mb: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def watch(self, name: str, pid: int | None) -> None:
        if pid:
            self.pids[name] = pid

    def current_mb(self, names: tuple[str, ...]) -> float:
        """The resident memory of these trees right now, added up."""
        sizes = _tree_sizes_mb({name: self.pids[name] for name in names if name in self.pids})
        return sum(sum(each) for each in sizes.values())

    def start(self) -> PeakMemory:
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        return dict(self.peak_mb)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, sizes in _tree_sizes_mb(dict(self.pids)).items():
                if sizes:
                    self.peak_mb[name] = max(self.peak_mb.get(name, 0.0), sum(sizes))
                    self.peak_process_mb[name] = max(self.peak_process_mb.get(name, 0.0), max(sizes))
            time.sleep(self.interval_s)


def process_trees(roots: Mapping[str, int]) -> dict[str, list[psutil.Process]]:
    """Each named root and its living descendants, from one pass over the process table (empty: the root is gone).

    The benchmark runs on the cores it measures: `Process.children()` reads the whole table once per tree (about
    3.4 ms of CPU each here; the memory sampler looks at six trees five times a second), one pass about 6 ms.
    """
    children: dict[int, list[int]] = {}
    for p in psutil.process_iter(["ppid"]):
        children.setdefault(p.info["ppid"], []).append(p.pid)
    out: dict[str, list[psutil.Process]] = {}
    for name, root in roots.items():
        tree, found = [root], []
        while tree:
            pid = tree.pop()
            tree.extend(children.get(pid, ()))
            try:
                found.append(psutil.Process(pid))
            except psutil.Error:
                continue
        out[name] = found
    return out


def _tree_sizes_mb(roots: Mapping[str, int]) -> dict[str, list[float]]:
    """The resident memory (MB) of each process of each named tree."""
    out: dict[str, list[float]] = {}
    for name, processes in process_trees(roots).items():
        sizes = []
        for p in processes:
            try:
                sizes.append(p.memory_info().rss / 1e6)
            except psutil.Error:
                continue
        out[name] = sizes
    return out


def _cpu_s(processes: list[psutil.Process]) -> float:
    total = 0.0
    for p in processes:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process and its living children have used so far; 0 once it is gone.

    Load-insensitive where a rate is not: other work on the machine slows a process down, but hardly changes
    how much CPU it spends per record.
    """
    return _cpu_s(process_trees({"tree": pid})["tree"])


def components_cpu_s(pids: Mapping[str, int]) -> dict[str, float]:
    """`tree_cpu_s` of each named process tree (the servers, and each kind's `hub run`)."""
    return {name: _cpu_s(processes) for name, processes in sorted(process_trees(pids).items())}


def own_cpu_s() -> float:
    """CPU seconds this process alone has used (the benchmark's own publishers and readers run here)."""
    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


def machine_cpu() -> Any:
    return psutil.cpu_times()


def machine_busy(before: Any, after: Any) -> float:
    """The share of the machine's CPU time (every core) that was not idle between two `machine_cpu` readings."""
    total = sum(after) - sum(before)
    idle = (after.idle + getattr(after, "iowait", 0.0)) - (before.idle + getattr(before, "iowait", 0.0))
    return round(1 - idle / total, 3) if total > 0 else 0.0


class CpuWindow:
    """Who spent the machine's CPU between `start()` and `figures()`: each named tree, this process, and how busy
    the machine was (whether a steady phase left CPU to spare)."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = pids
        self._start: tuple[dict[str, float], float, Any] | None = None

    def start(self) -> CpuWindow:
        self._start = (components_cpu_s(self.pids), own_cpu_s(), machine_cpu())
        return self

    def figures(self, messages: int) -> tuple[float, dict[str, float]]:
        """The machine's busy share, and CPU ms per 1000 messages per tree (`bench`: this process)."""
        assert self._start is not None, "start() first"
        components, own, machine = self._start
        by_process = cpu_ms_per_1k(components, components_cpu_s(self.pids), messages)
        by_process["bench"] = round((own_cpu_s() - own) * 1e6 / max(1, messages), 1)
        return machine_busy(machine, machine_cpu()), by_process


def cpu_ms_per_1k(before: Mapping[str, float], after: Mapping[str, float], messages: int) -> dict[str, float]:
    """CPU milliseconds per 1000 messages each tree spent between two `components_cpu_s` readings."""
    return {name: round((after[name] - before.get(name, 0.0)) * 1e6 / max(1, messages), 1) for name in after}


async def copy_rate(database_url: str, table: str, n: int) -> float:
    """Rows per second of one raw `COPY` of `n` rows into a temporary table like `table` (the landing reference)."""
    import datetime as dt

    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"CREATE TEMP TABLE copy_ref (LIKE {table})")
        now = dt.datetime.now(dt.UTC)
        rows = [
            (f"st-{i % DEVICES:04d}", now + dt.timedelta(milliseconds=i), 10.0, 20.0, 30.0, 11.0, 50.0, 1000.0,
             3.9, now, now)
            for i in range(n)
        ]  # fmt: skip
        cols = ["device_id", "time", "pm25", "pm10", "no2", "temperature_c", "humidity_pct", "pressure_hpa",
                "battery_v", "received_at", "ingested_at"]  # fmt: skip
        start = time.monotonic()
        await conn.copy_records_to_table("copy_ref", records=rows, columns=cols)
        return n / (time.monotonic() - start)
    finally:
        await conn.close()
