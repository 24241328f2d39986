"""`hub bench`: the benchmark command (a benchmark, not a test)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from hub.bench.runner import BenchConfig, print_figures, run_bench
from hub.cli.common import Report, console, one_line_errors, progress_bars


class Ack(StrEnum):
    auto = "auto"
    kafka = "kafka"
    landed = "landed"


@one_line_errors
def bench(
    messages: Annotated[int, typer.Option("--messages", "-n", min=1000, help="Messages per phase.")] = 100_000,
    ingest_workers: Annotated[int, typer.Option(min=1, help="Ingest processes on the shared subscription.")] = 2,
    land_workers: Annotated[int, typer.Option(min=1, help="Landing processes (the backlog drain uses as many).")] = 2,
    share_workers: Annotated[int, typer.Option(min=1, help="Share processes in the share phase.")] = 1,
    latency_seconds: Annotated[float, typer.Option(min=1.0, help="Length of the steady-rate latency phase.")] = 10.0,
    backlog: Annotated[
        int, typer.Option(min=1000, help="Records landing drains in the backlog phase (a few seconds' worth).")
    ] = 300_000,
    ack: Annotated[
        Ack,
        typer.Option(
            help="When ingest acknowledges (HUB_INGEST_ACK): kafka, landed, or auto (landed: the private stack's "
            "broker keeps its log in memory only)."
        ),
    ] = Ack.auto,
    keep: Annotated[bool, typer.Option(help="Keep the private stack's state directory (logs) afterwards.")] = False,
    soak: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Seconds: run the steady phase this long and report the hub workers' memory at its start and end "
            "(skips the backlog and COPY phases); e.g. --soak 600.",
        ),
    ] = 0.0,
) -> None:
    """Start a private stack and measure: C-client ceiling, end to end, latency, backlog drain, raw COPY, and
    end to end with three agreements shared live against the same without (share_ratio, share_lag_p99_ms).

    Ends with one JSON line (ack, e2e_msgs_per_s, peak_rss_mb_hub_workers, soak_rss_mb_start, soak_rss_mb_end,
    offered_msgs_per_s, published, landed, dead_lettered, lost,
    p50_ms, p99_ms, p50_puback_ms, p99_puback_ms, peak_rss_mb, ceiling_msgs_per_s, ratio, ...) so runs can be
    compared.
    """
    with progress_bars() as progress:
        figures = run_bench(
            _config(
                messages,
                ingest_workers,
                land_workers,
                share_workers,
                latency_seconds,
                backlog,
                ack,
                keep,
                soak,
                progress,
            )
        )
    print_figures(figures, print)


def _config(
    messages: int,
    ingest_workers: int,
    land_workers: int,
    share_workers: int,
    latency_seconds: float,
    backlog: int,
    ack: Ack,
    keep: bool,
    soak: float,
    progress: Report,
) -> BenchConfig:
    return BenchConfig(
        messages=messages,
        ingest_workers=ingest_workers,
        land_workers=land_workers,
        share_workers=share_workers,
        latency_seconds=latency_seconds,
        backlog=backlog,
        ack=ack.value,
        keep=keep,
        log=lambda m: console.print(m, highlight=False),
        progress=progress,
        soak_seconds=soak,
    )
