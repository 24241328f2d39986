"""How large one apply may be: it is one transaction, and PostgreSQL holds every lock it takes until it commits.

A config of 5,000 feeds planned 20,002 changes; its apply ran for 52 s and failed with "out of shared
memory": the server's lock table, shared by every session, holds about `max_locks_per_transaction x
(max_connections + max_prepared_transactions)` locks, and creating one feed table takes about ten.
Rather than fail at the end (or commit half), an apply that cannot fit is refused up front, saying
how many new feeds fit and which setting would let it through. Pure: the server's figures are read
by apply.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from hub.control.plan import Change, Plan

# Locks one change takes until the commit. A new feed table on plain PostgreSQL: 9.2 (measured on
# PostgreSQL 15: schema, table, its TOAST table and index, primary key, time index, rollup view). With
# TimescaleDB: hypertable, its dimension and compression settings, continuous aggregate with its own
# hypertable and views, and policy jobs; estimated at three times as many (the WASM engine the tests
# use has no lock manager to count them).
LOCKS_PER_NEW_TABLE = {False: 10, True: 30}
LOCKS_PER_TABLE_CHANGE = 6  # ALTER TABLE, a rollup dropped and created again
LOCKS_PER_CATALOG_CHANGE = 1  # rows in hub.partners, hub.feeds, schema versions

# Changes that come with each feed; the others come once per partner, organisation or login.
PER_FEED_KINDS = frozenset({"table", "column", "feed", "schema", "topic", "view"})

# The share of the server's lock table one apply may use: workers and other sessions hold locks too.
SHARE_FOR_ONE_APPLY = 0.5


@dataclass(frozen=True)
class LockTable:
    """The server's settings that size its lock table."""

    max_locks_per_transaction: int
    max_connections: int
    max_prepared_transactions: int

    @property
    def slots(self) -> int:
        return self.max_locks_per_transaction * (self.max_connections + self.max_prepared_transactions)

    def describe(self) -> str:
        return (
            f"max_locks_per_transaction {self.max_locks_per_transaction} x (max_connections {self.max_connections}"
            f" + max_prepared_transactions {self.max_prepared_transactions}) = {self.slots:,} locks"
        )


def locks_for(change: Change, timescale: bool) -> int:
    if change.kind == "table" and change.action == "create":
        return LOCKS_PER_NEW_TABLE[timescale]
    if change.kind in ("table", "column"):
        return LOCKS_PER_TABLE_CHANGE
    return LOCKS_PER_CATALOG_CHANGE


def locks_needed(plan: Plan) -> int:
    return sum(locks_for(c, plan.timescale) for c in plan.changes)


def lock_budget(table: LockTable, limit: int | None = None) -> int:
    """The locks one apply may take: a share of the server's lock table, or `limit` (HUB_APPLY_MAX_LOCKS) if lower."""
    share = int(table.slots * SHARE_FOR_ONE_APPLY)
    return share if limit is None else min(share, limit)


def too_large(plan: Plan, table: LockTable, limit: int | None = None) -> str | None:
    """Why `plan` cannot be one apply (it would take more locks than one apply may), or None if it can."""
    needed = locks_needed(plan)
    budget = lock_budget(table, limit)
    if needed <= budget:
        return None
    new_tables = len([c for c in plan.changes if c.kind == "table" and c.action == "create"])
    # A new feed comes with its own catalog rows, schema version, topic and shared views: count those at the
    # plan's average per new table, after what the run needs whatever its size (a new partner's own rows,
    # logins and database role).
    per_feed = sum(locks_for(c, plan.timescale) for c in plan.changes if c.kind in PER_FEED_KINDS)
    fixed = needed - per_feed
    fits = max(0, int((budget - fixed) / (per_feed / new_tables))) if new_tables else 0
    connections = table.max_connections + table.max_prepared_transactions
    locks_per_transaction = -(-int(needed / SHARE_FOR_ONE_APPLY) // connections)  # rounded up
    source = f"HUB_APPLY_MAX_LOCKS={limit:,}" if budget == limit else f"half of the server's {table.describe()}"
    return (
        f"too large for one apply, which is one transaction: {len(plan.changes):,} changes"
        f"{f' ({new_tables:,} new feed tables)' if new_tables else ''} hold about {needed:,} locks until the "
        f"commit, and one apply may hold {budget:,} ({source}). Apply at most {fits:,} new feeds at a time "
        "(add the others to the config in later runs), or raise max_locks_per_transaction to at least "
        f"{locks_per_transaction:,} in postgresql.conf and restart PostgreSQL"
    )
