"""Which samples are still trainable: the staleness window, counted in training steps, not version numbers.

Normally a sample of version `v` is stale at version `V` when `v < V - max_staleness`. After a crash that lost
steps, the checkpoint's weights (version C) resume under a fresh number R > C (so that a number never names two
sets of weights): R - C version numbers were skipped without any training. Counting them would mark a whole
buffer of freshly rated samples stale at the restart and throw those ratings away for time the trainer lost, not
for anything the policy learned. So the skipped numbers count as no distance: version C's samples are as fresh
at R as they were at C, and the samples the lost versions generated count as C's.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StalenessWindow:
    max_staleness: int
    """Samples more than this many training steps older than the policy are not trained."""
    checkpoint_version: int = 0
    """C: the version whose weights this run resumed from."""
    resumed_as: int = 0
    """R: the version number they resumed under (R > C only when a crash lost steps)."""

    def floor(self, version: int) -> int:
        """`min_policy_version` at `version`: samples of older versions are stale.

        With a gap (R > C) and `V - S <= R`, the oldest trainable sample is `C - (S - (V - R))`: the steps
        trained since the restart plus the distance back from C. Past that, every version below `V - S` is
        stale, the lost ones included (they are at least `V - R` steps away)."""
        plain = version - self.max_staleness
        gap = self.resumed_as - self.checkpoint_version
        if gap > 0 and plain <= self.resumed_as:
            return max(0, plain - gap)
        return max(0, plain)
