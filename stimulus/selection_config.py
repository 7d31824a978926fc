"""Rig-file section owned by image selection: the mix of image kinds per block, how each kind is chosen,
and the named hypotheses the evidence tracker weighs.

    [selection]
    mix = { random = 0.2, selected = 0.4, synthesized = 0.2, mei = 0.1, repeat = 0.1 }
    objective = "js"
    [[selection.hypotheses]]
    name = "dot"
    source = "import"
    path = "mylab.hypotheses:dot_detector"
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# The kinds of image a block mixes:
#   random       natural pool images drawn uniformly (the reference arm; needs no model)
#   selected     the pool images the objective scores highest, kept diverse
#   synthesized  images made by gradient ascent on the objective, from top pool images or noise
#   mei          most exciting images of one neuron at a time (checks that the model's MEIs drive it)
#   repeat       a fixed set shown again and again, for the noise ceiling
MIX_KINDS = ("random", "selected", "synthesized", "mei", "repeat")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HypothesisSpec(Strict):
    """One named hypothesis. source "member": ensemble member `member` of the online model;
    "import": a hand-written model, `path` = "package.module:function", a function from images
    (B, C, H, W) float in [0, 1] (torch) to rates (B, n_neurons) in spikes/s."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    source: Literal["member", "import"] = "import"
    member: int = Field(0, ge=0, le=1023)
    path: str = Field("", max_length=300)

    @model_validator(mode="after")
    def _path_for_import(self) -> "HypothesisSpec":
        if self.source == "import" and ":" not in self.path:
            raise ValueError("an imported hypothesis needs path = 'package.module:function'")
        return self


class SelectionConfig(Strict):
    # Share of each kind of image per block; normalised to sum to one.
    mix: dict[str, float] = Field(default_factory=lambda: {"random": 1.0})
    seed: int = Field(0, ge=0)
    # Shares are met exactly over each block of this many trials.
    block_trials: int = Field(10, ge=1, le=10_000)
    # What "discriminates hypotheses" means: "js" (Poisson Jensen-Shannon, the information one
    # presentation gives), "kl" (symmetrised Poisson KL), "disagreement" (variance across members).
    objective: Literal["js", "kl", "disagreement"] = "js"
    # Pool images scored per choice (drawn afresh each time; the whole pool if larger than it).
    candidates: int = Field(512, ge=1, le=1_000_000)
    score_batch: int = Field(256, ge=1, le=65_536)
    # Diversity: two images in one block closer than this (RMS difference of 8x8 thumbnails, 0..1) are
    # near-duplicates and only the better one is kept.
    min_distance: float = Field(0.05, ge=0.0, le=1.0)
    # Synthesis budget per image batch: gradient steps (what counts on a virtual clock) and step size.
    synthesis_steps: int = Field(50, ge=0, le=100_000)
    synthesis_step_size: float = Field(0.03, gt=0.0, le=1.0)
    synthesis_jitter_px: int = Field(1, ge=0, le=16)
    synthesis_start: Literal["pool", "noise"] = "pool"
    mei_steps: int = Field(100, ge=0, le=100_000)
    # The fixed set shown again and again for the noise ceiling (pool images, chosen by seed).
    repeat_set_size: int = Field(10, ge=1, le=10_000)
    # Fraction of the time left before a deadline that synthesis may use (the rest is margin).
    deadline_share: float = Field(0.8, gt=0.0, le=1.0)
    hypotheses: list[HypothesisSpec] = Field(default_factory=list)

    @field_validator("mix")
    @classmethod
    def _known_kinds(cls, mix: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(mix) - set(MIX_KINDS))
        if unknown:
            raise ValueError(f"unknown image kind(s) {unknown}; expected some of {list(MIX_KINDS)}")
        if any(v < 0 for v in mix.values()) or sum(mix.values()) <= 0:
            raise ValueError("mix shares must be >= 0 and not all zero")
        return mix

    def shares(self) -> dict[str, float]:
        total = sum(self.mix.values())
        return {k: v / total for k, v in self.mix.items() if v > 0}
