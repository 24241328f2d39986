"""The drill's reconciliation, on plain data: what counts as lost, and when a scenario fails."""

from __future__ import annotations

from hub.drill.reconcile import Result, Tally, judge_refusals, judge_stream, recovery_seconds, summary, tally


def test_every_acknowledged_message_landed_or_dead_lettered_means_nothing_lost() -> None:
    t = tally(published=range(10), acked=range(8), landed=range(7), dead=[7], duplicates=2)
    assert t == Tally(published=10, acked=8, rows=7, dead_letters=1, duplicates=2, lost=0)


def test_an_acknowledged_message_that_is_neither_row_nor_dead_letter_is_lost_even_with_duplicates() -> None:
    t = tally(published=range(10), acked=range(10), landed=range(8), dead=[], duplicates=5)
    assert t.lost == 2, "duplicates are copies of rows that landed: they excuse no missing message"


def test_a_message_never_acknowledged_is_not_lost_whether_or_not_it_arrived() -> None:
    t = tally(published=range(10), acked=range(5), landed=[0, 1, 2, 3, 4, 9], dead=[], duplicates=0)
    assert (t.lost, t.rows) == (0, 6)


def test_a_key_both_landed_and_dead_lettered_counts_once_as_a_row() -> None:
    t = tally(published=[1, 2], acked=[1, 2], landed=[1, 2], dead=[2], duplicates=0)
    assert (t.rows, t.dead_letters, t.lost) == (2, 0, 0)


def test_recovery_is_measured_from_the_end_of_the_fault_to_the_first_row_sent_after_it_began() -> None:
    sent = {0: 100.0, 1: 101.0, 2: 102.5, 3: 103.0}
    landed = {0: 100.1, 1: 101.1, 2: 112.0, 3: 111.5}  # 2 and 3 were sent during the fault
    assert recovery_seconds(sent, landed, fault_at=102.0, fault_end=102.0) == 9.5
    assert recovery_seconds(sent, landed, fault_at=102.0, fault_end=110.0) == 1.5
    assert recovery_seconds(sent, {0: 100.1}, fault_at=102.0, fault_end=102.0) is None


def test_a_scenario_with_a_lost_message_fails_and_says_how_many() -> None:
    r = Result("kill ingest", "kill -9", tally=Tally(published=5, acked=5, rows=4, lost=1))
    judge_stream(r)
    assert r.verdict == "failed"
    assert any("1 acknowledged" in n for n in r.notes)


def test_hostile_payloads_pass_only_when_every_one_is_a_dead_letter() -> None:
    ok = Result("json", "hostile", tally=Tally(published=4, acked=4, dead_letters=4))
    judge_stream(ok, expect_rows=False, expect_dead=4)
    short = Result("json", "hostile", tally=Tally(published=4, acked=4, dead_letters=3, lost=1))
    judge_stream(short, expect_rows=False, expect_dead=4)
    assert (ok.verdict, short.verdict) == ("passed", "failed")


def test_an_abuse_scenario_fails_when_one_attempt_was_allowed_or_none_was_made() -> None:
    allowed = Result("sql", "reads", attempts=10, refused=9)
    judge_refusals(allowed)
    empty = Result("sql", "reads")
    judge_refusals(empty)
    held = Result("sql", "reads", attempts=10, refused=10)
    judge_refusals(held)
    assert [r.verdict for r in (allowed, empty, held)] == ["failed", "failed", "passed"]


def test_the_summary_counts_verdicts_and_sums_lost_messages() -> None:
    rows = [
        Result("a", "x", tally=Tally(lost=0)),
        Result("b", "x", verdict="failed", tally=Tally(lost=3)),
        Result("c", "x", verdict="not simulated"),
    ]
    s = summary(rows, 12.34)
    assert {k: s[k] for k in ("scenarios", "passed", "failed", "not_simulated", "lost", "seconds")} == {
        "scenarios": 3, "passed": 1, "failed": 1, "not_simulated": 1, "lost": 3, "seconds": 12.3,
    }  # fmt: skip
    assert s["results"][1]["lost"] == 3 and s["results"][1]["verdict"] == "failed"
