"""The drill's arithmetic: what became of every message a scenario published (pure, no I/O).

A message is *acknowledged* when its publisher got a successful PUBACK. After the scenario, each
acknowledged message must be a row, a dead letter, or a copy the hub counted as a duplicate;
one that is none of these is *lost*. Messages published but never acknowledged (the broker was
down) may or may not have arrived: they are reported, never counted as lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Verdict = Literal["passed", "failed", "not simulated"]


@dataclass(frozen=True)
class Tally:
    published: int = 0
    acked: int = 0
    rows: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    lost: int = 0


def tally(
    published: Iterable[int],
    acked: Iterable[int],
    landed: Iterable[int],
    dead: Iterable[int],
    duplicates: int,
) -> Tally:
    """Reconcile by message key: `landed` and `dead` are the keys found in the feed table and the dead letters.

    A key both landed and dead-lettered counts as landed (the dead letter was of a copy). Duplicates,
    copies the hub recognised and did not land twice, are copies of a key that landed, so they excuse
    no missing key: lost is every acknowledged key that is neither a row nor a dead letter.
    """
    pub, ack, rows, dl = set(published), set(acked), set(landed), set(dead)
    dl -= rows
    missing = len(ack - rows - dl)
    return Tally(
        published=len(pub),
        acked=len(ack),
        rows=len(rows),
        dead_letters=len(dl),
        duplicates=duplicates,
        lost=missing,
    )


def recovery_seconds(sent_at: Mapping[int, float], landed_at: Mapping[int, float], fault_at: float,
                     fault_end: float) -> float | None:  # fmt: skip
    """Seconds from the end of a fault to the first row of a message sent after the fault began.

    `sent_at` and `landed_at` map message keys to wall-clock times (seconds). None when no message
    sent after the fault landed (the stream never recovered, or nothing was sent after it).
    """
    after = [landed_at[k] for k, t in sent_at.items() if t >= fault_at and k in landed_at]
    if not after:
        return None
    return max(0.0, min(after) - fault_end)


@dataclass
class Result:
    """One row of the drill's table."""

    scenario: str
    action: str
    verdict: Verdict = "passed"
    tally: Tally = field(default_factory=Tally)
    recovery_s: float | None = None
    attempts: int = 0  # abuse and hostile-config scenarios: tries made ...
    refused: int = 0  # ... and refused as they must be
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def fail(self, why: str) -> None:
        self.verdict = "failed"
        self.notes.append(why)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(out.pop("tally"))
        return out


def judge_stream(result: Result, *, expect_rows: bool = True, expect_dead: int | None = None) -> None:
    """The bar of a scenario with messages in flight: nothing acknowledged lost; what must arrive arrived."""
    t = result.tally
    if t.lost:
        result.fail(f"{t.lost} acknowledged messages are neither a row nor a dead letter")
    if t.acked == 0 and t.published:
        result.fail("no message was acknowledged")
    if expect_rows and t.rows < t.acked - t.dead_letters:
        result.fail(f"only {t.rows} of {t.acked} acknowledged messages landed")
    if expect_dead is not None and t.dead_letters != expect_dead:
        result.fail(f"{t.dead_letters} dead letters, {expect_dead} expected")


def judge_refusals(result: Result) -> None:
    if result.attempts == 0:
        result.fail("nothing was attempted")
    elif result.refused != result.attempts:
        result.fail(f"{result.attempts - result.refused} of {result.attempts} attempts were not refused")


def summary(results: list[Result], seconds: float) -> dict[str, Any]:
    """The final JSON line: counts of each verdict, lost messages in all, and every row."""
    return {
        "scenarios": len(results),
        "passed": sum(r.verdict == "passed" for r in results),
        "failed": sum(r.verdict == "failed" for r in results),
        "not_simulated": sum(r.verdict == "not simulated" for r in results),
        "lost": sum(r.tally.lost for r in results),
        "seconds": round(seconds, 1),
        "results": [r.as_json() for r in results],
    }
