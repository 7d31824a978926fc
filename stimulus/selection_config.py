"""Rig-file section owned by image selection: the mix of image kinds per block, how each kind is chosen,
and the named hypotheses the evidence tracker weighs.

    [selection]
    mix = { random = 0.2, selected = 0.4, synthesized = 0.2, mei = 0.1, repeat = 0.1 }
    objective = "epig"
    candidates_from = "natural"
    [[selection.hypotheses]]
    name = "dot"
    source = "import"
    path = "mylab.hypotheses:dot_detector"
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from contract.schema import Strict

# The kinds of image a block mixes:
#   random       natural pool images drawn uniformly (the reference arm; needs no model)
#   selected     the pool images the objective scores highest, kept diverse
#   synthesized  images made by gradient ascent on the objective, from top pool images or noise
#   mei          most exciting images of one neuron at a time (checks that the model's MEIs drive it)
#   repeat       a fixed set shown again and again, for the noise ceiling
MIX_KINDS = ("random", "selected", "synthesized", "mei", "repeat")


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
    # What an image is worth (stimulus/objectives.py): "epig" (expected information about the responses
    # to natural reference images: what the lab wants to predict), "js" (Poisson Jensen-Shannon, the
    # information one presentation gives about which hypothesis is true), "kl" (symmetrised Poisson KL),
    # "disagreement" (variance across members / mean rate).
    objective: Literal["epig", "js", "kl", "disagreement"] = "js"
    # Which pool images are candidates for "selected" (and the seeds of "synthesized"): "natural",
    # "gaudy" (each colour channel binarized at its mean) or "both".
    candidates_from: Literal["natural", "gaudy", "both"] = "both"
    # Which pool images the "random" kind draws from. "natural" is the reference a session compares with;
    # the efficiency benchmark also draws random gaudy images or the whole pool, so that a closed loop is
    # compared with random images from the same candidates it chooses among. Before a model exists, and
    # past a deadline, the kinds that need one show random images from `candidates_from`.
    random_from: Literal["natural", "gaudy", "both"] = "natural"
    # Pool images scored per choice (drawn afresh each time; the whole pool if larger than it).
    candidates: int = Field(512, ge=1, le=1_000_000)
    score_batch: int = Field(256, ge=1, le=65_536)
    # "epig": natural pool images (fixed for the session, never the held-out test set) whose responses
    # the objective asks to predict better, and the count noise it assumes (Fano factor: 1 = Poisson).
    reference_size: int = Field(128, ge=2, le=100_000)
    fano_factor: float = Field(1.0, ge=0.1, le=20.0)
    # Diversity within a block. "model": distances between the predictor's features (its `features`
    # method, else the members' mean predicted rates), each dimension standardised over the images
    # compared and the RMS difference divided by sqrt(2), so two unrelated images are about 1 apart;
    # closer than `feature_min_distance` counts as a near-duplicate. "thumbnails": RMS difference of
    # 8x8 thumbnails (0..1), closer than `min_distance`.
    diversity: Literal["model", "thumbnails"] = "model"
    feature_min_distance: float = Field(0.2, ge=0.0, le=10.0)
    min_distance: float = Field(0.05, ge=0.0, le=1.0)
    # Synthesis budget per image batch: gradient steps (what counts on a virtual clock) and step size.
    synthesis_steps: int = Field(50, ge=0, le=100_000)
    synthesis_step_size: float = Field(0.03, gt=0.0, le=1.0)
    synthesis_jitter_px: int = Field(1, ge=0, le=16)
    synthesis_start: Literal["pool", "noise"] = "pool"
    # Synthesized images and MEIs keep their mean level and RMS contrast (over all pixels and channels)
    # within these percentiles of the natural pool's ("natural"), or anywhere in [0, 1] ("none"): the
    # models were fitted on natural images and are least trustworthy far from them.
    contrast_bound: Literal["natural", "none"] = "natural"
    contrast_percentiles: tuple[float, float] = (1.0, 99.0)
    # MEIs start from the pool image the model rates highest for the neuron (among `candidates` natural
    # images drawn afresh) or from noise, and maximise the members' mean rate minus this many standard
    # deviations across members (0: the mean alone).
    mei_start: Literal["pool", "noise"] = "pool"
    mei_spread_penalty: float = Field(1.0, ge=0.0, le=100.0)
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

    @field_validator("contrast_percentiles")
    @classmethod
    def _percentiles_ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not 0.0 <= lo < hi <= 100.0:
            raise ValueError(f"contrast_percentiles must be two percentiles with 0 <= low < high <= 100, got {list(v)}")
        return v

    def shares(self) -> dict[str, float]:
        total = sum(self.mix.values())
        return {k: v / total for k, v in self.mix.items() if v > 0}
