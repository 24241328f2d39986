"""The drill: one private stack, every scenario in turn, one table of reconciled results."""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hub.drill.abuse import run_abuse
from hub.drill.configs import run_configs
from hub.drill.disk import run_disk
from hub.drill.faults import FULL, QUICK, Pace, run_faults
from hub.drill.hostile import run_hostile
from hub.drill.reconcile import Result, summary
from hub.drill.stack import DrillStack

Group = Callable[[DrillStack, Pace, Callable[[str], None], bool], list[Result]]


@dataclass
class DrillConfig:
    quick: bool = False
    keep: bool = False
    only: str = ""  # comma-separated: run only the groups whose name contains one of these
    log: Callable[[str], None] = print


def groups() -> dict[str, Group]:
    # Abuse and hostile input first, on a stack no fault has touched yet; the disk last (it moves a table).
    return {
        "abuse": run_abuse,
        "hostile payloads": run_hostile,
        "hostile configs": run_configs,
        "faults": run_faults,
        "disk": run_disk,
    }


def run_drill(cfg: DrillConfig) -> dict[str, Any]:
    pace = QUICK if cfg.quick else FULL
    started = time.monotonic()
    results: list[Result] = []
    with DrillStack(cfg.log, keep=cfg.keep) as stack:
        stack.start_workers()
        asyncio.run(stack.wait_ingest_ready())
        time.sleep(3)  # landing's consumer group join; the first scenario's recovery would include it
        for name, group in groups().items():
            if cfg.only and not any(part.strip() and part.strip() in name for part in cfg.only.split(",")):
                continue
            try:
                results.extend(group(stack, pace, cfg.log, cfg.quick))
            except Exception as exc:  # one broken group must not hide the others' results
                r = Result(name, "the scenario group itself")
                r.fail(f"{type(exc).__name__}: {exc}")
                cfg.log(traceback.format_exc())
                results.append(r)
    return summary(results, time.monotonic() - started)
