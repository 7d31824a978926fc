"""The mix of image kinds within a block of trials.

Each image slot goes to the kind furthest behind its share so far in the
current block (largest deficit first; ties broken by the order in the rig
file). Counts therefore stay within one image of the shares at every point of
a block, the schedule is deterministic, and a block with shares 0.3/0.7 over 10
slots gets exactly 3 and 7. The tally restarts at each block boundary, so
every block carries its own repeats and MEI checks.
"""

from __future__ import annotations


class MixSchedule:
    """The kinds of each trial's image slots under `shares` (normalized to sum to one), block by block."""

    def __init__(self, shares: dict[str, float], block_trials: int):
        if not shares:
            raise ValueError("a mix needs at least one kind with a share above zero")
        total = sum(shares.values())
        self.shares = {k: v / total for k, v in shares.items()}
        self.block_trials = block_trials
        self._block = None
        self._counts = {k: 0 for k in self.shares}

    def block_of(self, trial_id: int) -> int:
        return trial_id // self.block_trials

    def kinds_for(self, trial_id: int, n_images: int) -> list[str]:
        """The kind of each of this trial's `n_images` slots."""
        block = self.block_of(trial_id)
        if block != self._block:
            self._block = block
            self._counts = {k: 0 for k in self.shares}
        kinds = []
        for _ in range(n_images):
            shown = sum(self._counts.values()) + 1
            kind = max(self.shares, key=lambda k: self.shares[k] * shown - self._counts[k])
            self._counts[kind] += 1
            kinds.append(kind)
        return kinds
