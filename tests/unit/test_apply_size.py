"""One apply is one transaction: a plan that would hold more locks than the server's lock table can spare is
refused up front, saying how many new feeds fit and which setting would let it through."""

from __future__ import annotations

from hub.control.plan import Change, Plan
from hub.control.size import LockTable, locks_needed, too_large

DEFAULT_SERVER = LockTable(max_locks_per_transaction=64, max_connections=200, max_prepared_transactions=0)


def new_feeds(n: int, timescale: bool = False) -> Plan:
    """What `hub plan` lists for a new partner with `n` new feeds (the shape of the 5,000-feed finding)."""
    plan = Plan(partners=[], timescale=timescale)
    plan.changes += [Change("partner", "create", "p"), Change("credentials", "create", "p")]
    for i in range(n):
        plan.changes += [
            Change("feed", "create", f"p.f{i}"),
            Change("schema", "create", f"hub.p.f{i}-value"),
            Change("topic", "create", f"hub.p.f{i}"),
            Change("table", "create", f"p.f{i}", sql=("CREATE TABLE ...",)),
        ]
    return plan


def test_the_5000_feed_config_is_refused_with_what_fits_and_the_setting_to_raise() -> None:
    plan = new_feeds(5_000)
    assert len(plan.changes) == 20_002  # as planned in the finding, before apply failed after 52 s
    why = too_large(plan, DEFAULT_SERVER)
    assert why is not None
    assert "20,002 changes (5,000 new feed tables) hold about 65,002 locks" in why
    assert "one apply may hold 6,400 (half of the server's max_locks_per_transaction 64 x (max_connections 200" in why
    assert "Apply at most 492 new feeds at a time" in why
    assert "raise max_locks_per_transaction to at least 651 in postgresql.conf" in why


def test_the_feeds_said_to_fit_do_fit() -> None:
    assert too_large(new_feeds(492), DEFAULT_SERVER) is None
    assert too_large(new_feeds(493), DEFAULT_SERVER) is not None
    raised = LockTable(max_locks_per_transaction=651, max_connections=200, max_prepared_transactions=0)
    assert too_large(new_feeds(5_000), raised) is None


def test_timescaledb_tables_count_for_more_locks() -> None:
    assert locks_needed(new_feeds(10, timescale=True)) > locks_needed(new_feeds(10))


def test_the_setting_lowers_the_budget_and_is_named() -> None:
    why = too_large(new_feeds(20), DEFAULT_SERVER, limit=100)
    assert why is not None and "one apply may hold 100 (HUB_APPLY_MAX_LOCKS=100)" in why
    assert too_large(new_feeds(5), DEFAULT_SERVER, limit=100) is None


def test_a_plan_without_new_tables_is_measured_too() -> None:
    plan = Plan(partners=[], timescale=False, changes=[Change("column", "create", f"p.f.c{i}") for i in range(2_000)])
    why = too_large(plan, DEFAULT_SERVER)
    assert why is not None and "2,000 changes hold about 12,000 locks" in why
