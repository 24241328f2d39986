"""Agreement tests: a provider's expectations ("uni_air_lab never sees raw traffic counts", "the city sees
parking occupancy at most 5 minutes late") held against two witnesses: the policy decision, and what the
database lets the organisation's role select (read from PostgreSQL's own catalogs by the caller)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from hub.agreement import names
from hub.agreement.grants import human
from hub.agreement.model import Expectation, Form
from hub.agreement.policy import Decision


@dataclass(frozen=True)
class ObjectFact:
    """A relation the organisation's role can select that reads a feed, as the database describes it."""

    object: str
    form: Form  # raw: reads the feed table; aggregate: reads its rollup
    columns: frozenset[str]
    delay: timedelta  # the view's own `statement_timestamp() - <delay>` bound (0 when it has none)


def words(e: Expectation, provider: str) -> str:
    if e.says:
        return e.says
    feed = f"{provider}.{e.feed}"
    if e.never:
        return f"{e.org} never sees {'anything of' if e.never == 'anything' else e.never} {feed}"
    text = f"{e.org} sees {feed} {e.sees}"
    if e.within is not None:
        text += f" at most {human(e.within)} late"
    return text


def problems(e: Expectation, decision: Decision, facts: list[ObjectFact]) -> list[str]:
    """Why the expectation does not hold (empty when it does), per witness."""
    out: list[str] = []
    granted = {g.clause.form for g in decision.grants}
    in_db = {f.form for f in facts}
    if e.never is not None:
        forbidden = {Form.raw, Form.aggregate} if e.never == "anything" else {Form(e.never)}
        if granted & forbidden:
            which = ", ".join(f"{g.agreement.id if g.agreement else 'owner'}" for g in decision.grants)
            out.append(f"the agreements grant it ({which})")
        for f in facts:
            if f.form in forbidden:
                out.append(f"the database lets it select {f.object} ({f.form})")
        return out
    assert e.sees is not None
    if e.sees not in granted:
        out.append(f"no agreement in force grants it {e.sees}")
    if e.sees not in in_db:
        out.append(f"its role can select no {e.sees} object of this feed")
    for g in decision.grants:
        c = g.clause
        if c.form != e.sees:
            continue
        if e.within is not None and c.delay > e.within:
            out.append(f"agreement {g.agreement.id if g.agreement else 'owner'} delays it by {human(c.delay)}")
        if e.pseudonymised is not None and c.pseudonymise != e.pseudonymised:
            out.append(f"agreement {g.agreement.id if g.agreement else 'owner'} pseudonymise is {c.pseudonymise}")
    for f in facts:
        if f.form != e.sees:
            continue
        if e.within is not None and f.delay > e.within:
            out.append(f"{f.object} holds rows back by {human(f.delay)}")
        if e.pseudonymised is not None and ("device_id" not in f.columns) != e.pseudonymised:
            out.append(f"{f.object} has {'a device_id' if 'device_id' in f.columns else 'no device_id'} column")
        if e.pseudonymised and names.PSEUDONYM_COLUMN not in f.columns:
            out.append(f"{f.object} has no {names.PSEUDONYM_COLUMN} column")
    for field in e.without:
        for g in decision.grants:
            if field in g.clause.fields:
                out.append(f"agreement {g.agreement.id if g.agreement else 'owner'} grants field {field}")
        for f in facts:
            if field in f.columns or any(c in f.columns for c in (f"avg_{field}", f"min_{field}", f"max_{field}")):
                out.append(f"{f.object} has a column of field {field}")
    return out
