"""The sharing matrix, pure: providers x consumers, what each agreement grants, in what form, until when.

Every applied agreement is in it, with its state at the moment asked (in force, not yet in force, expired,
revoked), so the matrix shows what was and will be shared as well as what is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from hub.agreement.grants import AgreementState
from hub.agreement.policy import World, describe

EVERYONE = "everyone"


@dataclass(frozen=True)
class Cell:
    """One clause of one agreement, as one provider shares it with one consumer (or everyone)."""

    provider: str
    consumer: str  # an organisation id, or `everyone` (open data)
    feed: str
    form: str
    limits: str  # the clause in words
    agreement: str
    state: str  # in force | not yet in force | expired | revoked
    valid_from: datetime | None
    valid_until: datetime | None
    delivery: tuple[str, ...]


def state_of(a: AgreementState, at: datetime) -> str:
    if a.revoked_at is not None:
        return "revoked"
    if a.valid_from is not None and at < a.valid_from:
        return "not yet in force"
    if a.expired(at):
        return "expired"
    return "in force"


def cells(world: World, at: datetime) -> list[Cell]:
    out = []
    for a in world.agreements:
        for consumer in a.consumers if a.consumers is not None else (EVERYONE,):
            for c in a.clauses:
                out.append(
                    Cell(
                        provider=a.provider,
                        consumer=consumer,
                        feed=c.feed,
                        form=str(c.form),
                        limits=describe(c),
                        agreement=a.id,
                        state=state_of(a, at),
                        valid_from=a.valid_from,
                        valid_until=a.valid_until,
                        delivery=a.delivery,
                    )
                )
    out.sort(key=lambda x: (x.provider, x.consumer, x.feed, x.form, x.agreement))
    return out


@dataclass(frozen=True)
class Matrix:
    providers: tuple[str, ...]
    consumers: tuple[str, ...]  # `everyone` last
    grid: dict[tuple[str, str], tuple[Cell, ...]]

    def at(self, provider: str, consumer: str) -> tuple[Cell, ...]:
        return self.grid.get((provider, consumer), ())


def matrix(world: World, at: datetime, *, include: Iterable[str] = ()) -> Matrix:
    """Rows: every organisation that publishes a feed; columns: every organisation an agreement names (and
    those in `include`), then `everyone` when there is open data."""
    found = cells(world, at)
    providers = sorted({f.provider for f in world.feeds.values()})
    named = {c.consumer for c in found if c.consumer != EVERYONE} | set(include)
    consumers = sorted(named) + ([EVERYONE] if any(c.consumer == EVERYONE for c in found) else [])
    grid: dict[tuple[str, str], list[Cell]] = {}
    for c in found:
        grid.setdefault((c.provider, c.consumer), []).append(c)
    return Matrix(tuple(providers), tuple(consumers), {k: tuple(v) for k, v in grid.items()})
