"""The small interface through which stimulus/ uses models: images in, per-hypothesis rates out.

models/ implements it (structurally; models imports nothing from here).
"""

from __future__ import annotations

from typing import Protocol, Sequence

import torch


class Predictor(Protocol):
    version: int  # model version that made these predictions (recorded with every plan)
    n_members: int  # hypotheses (e.g. ensemble members)
    n_neurons: int

    def rates(self, images: torch.Tensor, neurons: Sequence[int] | None = None) -> torch.Tensor:
        """images: (B, C, H, W) float in [0, 1] -> (n_members, B, n_selected_neurons) spikes/s.

        Differentiable with respect to `images`; computes only `neurons` when given.
        """
        ...
