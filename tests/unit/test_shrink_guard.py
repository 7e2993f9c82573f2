"""The shrink guard as a pure function: which new lists wait for more polls, and for how many."""

from __future__ import annotations

import pytest

from sidecar.shrink import ShrinkVerdict, shrink_verdict, shrinks

TEN = [f"m{i}" for i in range(10)]


@pytest.mark.parametrize(
    ("applied", "listed", "threshold", "expected"),
    [
        ([], [], 0.5, False),  # nothing applied yet: nothing to lose
        ([], TEN, 0.5, False),
        (TEN, TEN, 0.5, False),
        (TEN, [*TEN, "new"], 0.5, False),  # growth
        (TEN, TEN[:5], 0.5, False),  # lost exactly half: not more than the threshold
        (TEN, TEN[:4], 0.5, True),  # lost 60%
        (TEN, [], 0.5, True),  # everything lost
        (TEN, [], 1.0, True),  # an empty list shrinks whatever the threshold
        (TEN, ["m0"], 1.0, False),  # a threshold of 1 holds only an empty list
        (TEN, TEN[:9], 0.0, True),  # a threshold of 0 holds any loss
        (TEN, ["other"], 0.5, True),  # replaced by other models: the applied ones are lost
        (["a", "b"], ["b", "c", "d", "e"], 0.5, False),  # lost one of two, gained three
    ],
)
def test_what_counts_as_a_shrink(applied: list[str], listed: list[str], threshold: float, expected: bool) -> None:
    assert shrinks(applied, listed, threshold) is expected


@pytest.mark.parametrize(
    ("listed", "seen", "confirmations", "expected"),
    [
        # Not a shrink: applied, and the count of held polls starts again.
        (TEN[:8], 0, 3, ShrinkVerdict(hold=False, reason="small", seen=0)),
        (TEN[:8], 2, 3, ShrinkVerdict(hold=False, reason="small", seen=0)),
        # A shrink is held until the poll that makes `confirmations` in a row.
        ([], 0, 3, ShrinkVerdict(hold=True, reason="held", seen=1)),
        ([], 1, 3, ShrinkVerdict(hold=True, reason="held", seen=2)),
        ([], 2, 3, ShrinkVerdict(hold=False, reason="confirmed", seen=0)),
        # One confirmation turns the guard off.
        ([], 0, 1, ShrinkVerdict(hold=False, reason="confirmed", seen=0)),
        (TEN[:2], 0, 2, ShrinkVerdict(hold=True, reason="held", seen=1)),
        (TEN[:2], 1, 2, ShrinkVerdict(hold=False, reason="confirmed", seen=0)),
        # A count left over from a larger SIDECAR_SHRINK_CONFIRMATIONS applies at once.
        ([], 5, 3, ShrinkVerdict(hold=False, reason="confirmed", seen=0)),
    ],
)
def test_a_shrink_waits_for_its_confirmations(
    listed: list[str], seen: int, confirmations: int, expected: ShrinkVerdict
) -> None:
    assert shrink_verdict(TEN, listed, seen, threshold=0.5, confirmations=confirmations) == expected


def test_a_shrink_seen_on_three_polls_in_a_row_is_applied_on_the_third() -> None:
    seen, verdicts = 0, []
    for _ in range(3):
        verdict = shrink_verdict(TEN, [], seen, threshold=0.5, confirmations=3)
        verdicts.append(verdict.reason)
        seen = verdict.seen
    assert verdicts == ["held", "held", "confirmed"] and seen == 0
