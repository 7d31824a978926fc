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

# The kinds of image a block mixes (SelectionConfig says what each is).
MIX_KINDS = ("random", "selected", "synthesized", "mei", "repeat", "evolved")


class HypothesisSpec(Strict):
    """One named hypothesis the evidence tracker weighs ([[selection.hypotheses]], one table each). source "member":
    ensemble member `member` of the online model; "import": a hand-written model, `path` = "package.module:function",
    a function from images (B, C, H, W) float in [0, 1] (torch) to rates (B, n_neurons) in spikes/s."""

    name: str = Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$", description="The hypothesis's name (required)."
    )
    source: Literal["member", "import"] = Field(
        "import", description='"member": a member of the online ensemble; "import": a function named by path.'
    )
    member: int = Field(0, ge=0, le=1023, description='source "member": the ensemble member\'s index.')
    path: str = Field("", max_length=300, description='source "import": the function, "package.module:function".')

    @model_validator(mode="after")
    def _path_for_import(self) -> "HypothesisSpec":
        if self.source == "import" and ":" not in self.path:
            raise ValueError("an imported hypothesis needs path = 'package.module:function'")
        return self


class SelectionConfig(Strict):
    """Which images each trial shows: the mix of image kinds per block, what an image is worth (the objective), how
    candidates are drawn and kept diverse, the synthesis and MEI budgets, and the named hypotheses the evidence
    tracker weighs. The kinds of image a block mixes:

    - random: natural pool images drawn uniformly (the reference arm; needs no model);
    - selected: the pool images the objective scores highest, kept diverse;
    - synthesized: images made by gradient ascent on the objective, from top pool images or noise;
    - mei: most exciting images of one neuron at a time (checks that the model's MEIs drive it);
    - repeat: a fixed set shown again and again, for the noise ceiling;
    - evolved: images bred from the images already shown, parents chosen by one neuron's recorded responses (a
      genetic search; the model, where there is one, only screens the children)."""

    mix: dict[str, float] = Field(
        default_factory=lambda: {"random": 1.0},
        description="Share of each kind of image per block (random, selected, synthesized, mei, repeat, evolved), "
        "normalised to sum to one; non-negative, not all zero.",
    )
    seed: int = Field(0, ge=0, description="Seed of the choices (mix order, candidates, random images).")
    block_trials: int = Field(
        10, ge=1, le=10_000, description="Shares are met exactly over each block of this many trials."
    )
    objective: Literal["epig", "js", "kl", "disagreement"] = Field(
        "js",
        description='What an image is worth (stimulus/objectives.py): "epig" (expected information about the '
        'responses to natural reference images), "js" (Poisson Jensen-Shannon: information about which hypothesis '
        'is true), "kl" (symmetrised Poisson KL), "disagreement" (variance across members / mean rate).',
    )
    candidates_from: Literal["natural", "gaudy", "both"] = Field(
        "both",
        description='Which pool images are candidates for "selected" (and seeds of "synthesized"): "natural", '
        '"gaudy" or "both".',
    )
    random_from: Literal["natural", "gaudy", "both"] = Field(
        "natural",
        description='Which pool images the "random" kind draws from. Before a model exists, and past a deadline, '
        "the kinds that need one show random images from candidates_from.",
    )
    candidates: int = Field(
        512,
        ge=1,
        le=1_000_000,
        description="Pool images scored per choice, drawn afresh each time (the whole pool if it is smaller).",
    )
    score_batch: int = Field(
        256, ge=1, le=65_536, description="Images scored per batch; the deadline is checked between batches."
    )
    reference_size: int = Field(
        128,
        ge=2,
        le=100_000,
        description='objective "epig": natural pool images (fixed for the session, never the test set) whose '
        "responses the objective asks to predict better.",
    )
    fano_factor: float = Field(
        1.0,
        ge=0.1,
        le=20.0,
        description='objective "epig": the count noise it assumes (Fano factor; 1: Poisson).',
    )
    diversity: Literal["model", "thumbnails"] = Field(
        "model",
        description='Diversity within a block. "model": distances between the predictor\'s features, standardised, '
        'so two unrelated images are about 1 apart (feature_min_distance); "thumbnails": RMS difference of 8x8 '
        "thumbnails, 0..1 (min_distance).",
    )
    feature_min_distance: float = Field(
        0.2,
        ge=0.0,
        le=10.0,
        description='diversity "model": images closer than this count as near-duplicates.',
    )
    min_distance: float = Field(
        0.05, ge=0.0, le=1.0, description='diversity "thumbnails": images closer than this count as near-duplicates.'
    )
    synthesis_steps: int = Field(
        50, ge=0, le=100_000, description="Gradient steps per synthesized image batch (the budget on a virtual clock)."
    )
    synthesis_step_size: float = Field(0.03, gt=0.0, le=1.0, description="Step size of synthesis's gradient ascent.")
    synthesis_jitter_px: int = Field(
        1, ge=0, le=16, description="Largest random shift, in pixels, of the images at each synthesis step."
    )
    synthesis_start: Literal["pool", "noise"] = Field(
        "pool", description="Synthesis starts from the top pool images or from noise."
    )
    contrast_bound: Literal["natural", "none"] = Field(
        "natural",
        description='"natural": synthesized images and MEIs keep their mean level and RMS contrast within '
        'contrast_percentiles of the natural pool\'s; "none": anywhere in [0, 1].',
    )
    contrast_percentiles: tuple[float, float] = Field(
        (1.0, 99.0),
        description="The percentiles of the natural pool's mean level and contrast that bound synthesized images: "
        "0 <= low < high <= 100.",
    )
    model_driven_after: float | None = Field(
        None,
        ge=-1.0,
        lt=1.0,
        description="Cold start: the model-driven kinds (selected, synthesized, mei) start once the ensemble's "
        "held-out r (its published weights' mean prediction against the held-out presentations' counts, averaged "
        "over neurons) is above both this value and chance (the 95th percentile of the same r with the "
        "presentations shuffled), on at least 8 held-out presentations; until then their slots are random images "
        "from candidates_from. Decided at every plan and recorded in its reasons. Unset: model-driven from the "
        'first model. Needs a model that holds presentations out (model.kind "shared", validation_every > 0).',
    )
    mei_start: Literal["pool", "recorded", "noise"] = Field(
        "pool",
        description="MEIs start from the pool image the model rates highest for the neuron (among `candidates` "
        "natural images), from the shown image the neuron answered most strongly (recorded rate; the pool start "
        "until it answered one above its mean), or from noise.",
    )
    mei_spread_penalty: float = Field(
        1.0,
        ge=0.0,
        le=100.0,
        description="MEIs maximise the members' mean rate minus this many standard deviations across members "
        "(0: the mean alone).",
    )
    mei_steps: int = Field(100, ge=0, le=100_000, description="Gradient steps per MEI.")
    mei_hold_below: float | None = Field(
        None,
        gt=0.0,
        le=10.0,
        description="MEIs that hold: a neuron whose MEIs evoked less than this share of the rate the model predicted "
        "when it chose them (mean observed over mean predicted rate, over at least 2 of its MEI presentations) gets "
        "more cautious MEIs: caution k = 1 + floor(log2(this / ratio)), at most 3; mei_steps / 2**k steps and "
        "mei_spread_penalty x (k + 1) (stimulus/mei_hold.py). Unset: every MEI uses mei_steps and "
        "mei_spread_penalty.",
    )
    repeat_set_size: int = Field(
        10,
        ge=1,
        le=10_000,
        description="The fixed set of pool images (chosen by seed) shown again and again, for the noise ceiling.",
    )
    deadline_share: float = Field(
        0.8,
        gt=0.0,
        le=1.0,
        description="Share of the time left before a deadline that synthesis and MEIs may use (the rest is margin).",
    )
    evolve_parents: int = Field(
        8,
        ge=2,
        le=1000,
        description="evolved: the parents of a child are drawn from this many images already shown, those with the "
        "highest recorded rate of the child's target neuron (its own responses are the judge).",
    )
    evolve_candidates: int = Field(
        8,
        ge=1,
        le=1000,
        description="evolved: children bred per slot; the model (once it may choose, see model_driven_after) "
        "screens them and the one it predicts to drive the target neuron most is shown (1: no screening).",
    )
    hypotheses: list[HypothesisSpec] = Field(
        default_factory=list, description="Named hypotheses the evidence tracker weighs ([[selection.hypotheses]])."
    )

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
