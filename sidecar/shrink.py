"""The shrink guard: a gateway's list that suddenly loses most of its models (a revoked key, a
misrouted proxy) is applied only once several polls in a row say so; growth and small changes
apply at once. Pure: the reconciler keeps the count of polls and logs the verdict."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ShrinkVerdict:
    hold: bool  # keep the applied list for now
    # "small": not a shrink the guard holds; "held": a shrink not yet seen often enough;
    # "confirmed": a shrink seen on enough polls in a row, applied now.
    reason: Literal["small", "held", "confirmed"]
    seen: int  # shrinking polls in a row, this one included; 0 once nothing is held


def shrinks(applied: Collection[str], listed: Collection[str], threshold: float) -> bool:
    """Whether `listed` lost more than `threshold` (a share) of the applied ids, or everything."""
    before = set(applied)
    if not before:
        return False
    lost = len(before - set(listed)) / len(before)
    return not len(listed) or lost > threshold


def shrink_verdict(
    applied: Collection[str], listed: Collection[str], seen: int, *, threshold: float, confirmations: int
) -> ShrinkVerdict:
    """The guard's answer for a poll that listed `listed` while `applied` is in use, `seen`
    shrinking polls in a row before it."""
    if not shrinks(applied, listed, threshold):
        return ShrinkVerdict(hold=False, reason="small", seen=0)
    if seen + 1 < confirmations:
        return ShrinkVerdict(hold=True, reason="held", seen=seen + 1)
    return ShrinkVerdict(hold=False, reason="confirmed", seen=0)
