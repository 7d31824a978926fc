"""Rig-file sections owned by models: the online model and how it trains ([model]), and what
`cortexloop compress` distils it into ([compression])."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from contract.schema import Strict


def _strides_bounded(v: list[int]) -> list[int]:
    if any(s < 1 or s > 4 for s in v):
        raise ValueError("each stride must be between 1 and 4")
    return v


class ModelConfig(Strict):
    """The online model: the ensemble the model worker trains between trials and the controller asks to score and
    synthesize images. Its kind, the device it trains on, its architecture and how it learns."""

    kind: Literal["baseline", "compact", "shared"] = Field(
        "baseline",
        description='"shared": per ensemble member, one convolutional core for all neurons and a readout per neuron '
        '(models/shared_core.py); "compact": one small CNN per neuron and member (models/online.py); "baseline": '
        "ridge regression on fixed features.",
    )
    device: str = Field(
        "cpu",
        pattern=r"^(cpu|cuda(:\d+)?|auto)$",
        description='Where the models train: "cpu", "cuda" or "cuda:N", or "auto" (a GPU when torch sees one, else '
        'the CPU). "cuda" on a machine without a GPU is refused.',
    )
    seed: int = Field(0, ge=0, description="Seed of the members' initial weights and of the training draws.")
    ensemble_size: int = Field(
        4, ge=1, le=64, description="Members of the ensemble: models trained alike from different initial weights."
    )
    ridge_alpha: float = Field(
        10.0, gt=0.0, le=1e8, description='kind "baseline": the ridge regression\'s regularisation strength.'
    )
    filters_per_layer: int = Field(
        8,
        ge=1,
        le=512,
        description='kind "compact": filters in each convolution layer of a neuron\'s CNN (input size and colour come '
        "from [images]).",
    )
    n_layers: int = Field(5, ge=1, le=8, description='kind "compact": convolution layers of a neuron\'s CNN.')
    strides: list[int] = Field(
        default_factory=lambda: [2, 2, 1, 1, 1],
        max_length=8,
        description='kind "compact": one stride (1 to 4) per layer; missing entries are 1, extra entries are ignored.',
    )
    kernel_size: int = Field(5, ge=1, le=11, description='kind "compact": side of the convolution kernels, in pixels.')
    learning_rate: float = Field(3e-3, gt=0.0, le=1.0, description="Learning rate of the optimiser (AdamW).")
    weight_decay: float = Field(1e-3, ge=0.0, le=1.0, description="Decoupled (AdamW) weight decay.")
    batch_size: int = Field(32, ge=1, le=4096, description="Presentations per training step.")
    min_responses_to_train: int = Field(
        16, ge=2, le=100000, description="No training until this many presentations are stored."
    )
    steps_per_trial: int = Field(
        20,
        ge=0,
        le=100000,
        description='Training steps between trials on a virtual clock (session speed "max"), where the budget is '
        "counted in steps, not seconds.",
    )
    max_stored_responses: int = Field(
        200000, ge=100, le=10_000_000, description="Presentations kept for training; the oldest go first."
    )
    form: Literal["auto", "stacked", "loop"] = Field(
        "auto",
        description='How the models of kind "compact" train: "loop" (one small network per model, one after the '
        'other), "stacked" (all models in one network of grouped convolutions) or "auto" (times a few steps of each '
        "at startup and keeps the faster).",
    )
    cpu_threads: int = Field(
        1, ge=0, le=256, description="Torch CPU threads in the process that trains (0: torch's default)."
    )
    mixed_precision: bool = Field(True, description="bf16 autocast for training steps on CUDA (ignored on the CPU).")
    core: Literal["conv", "resnet18"] = Field(
        "resnet18",
        description='kind "shared": the core. "conv": core_layers convolutions (5x5, then 3x3) with core_strides; '
        '"resnet18": torchvision resnet18\'s conv1, bn1, max pool and layer1, under its state-dict names.',
    )
    core_channels: int = Field(
        32,
        ge=1,
        le=512,
        description='kind "shared": channels of the core (64 to load resnet18\'s own weights).',
    )
    core_layers: int = Field(3, ge=1, le=8, description='kind "shared", core "conv": convolution layers of the core.')
    core_strides: list[int] = Field(
        default_factory=lambda: [2, 1, 1],
        max_length=8,
        description='kind "shared", core "conv": one stride (1 to 4) per core layer.',
    )
    core_weights: str = Field(
        "", description='kind "shared": a torchvision-format weights file the core starts from ("": random weights).'
    )
    init_from: str = Field(
        "",
        description='kind "shared": a previous session\'s directory (e.g. "sessions/PREVIOUS") whose model '
        "checkpoint (checkpoints/model.pt) the ensemble starts from: every member's core, and the readouts of units "
        "with the same name where the rig names its units ([cortex.openephys] units); other units' readouts start "
        'fresh. "": from scratch. A resumed session\'s own checkpoint comes first.',
    )
    core_frozen: bool = Field(
        False, description='kind "shared": keep the loaded core weights fixed (only the readouts learn).'
    )
    readout_l1: float = Field(
        1e-4,
        ge=0.0,
        le=10.0,
        description='kind "shared": L1 penalty on each neuron\'s readout (sum of |spatial mask| times sum of |feature '
        "weights|).",
    )
    validation_every: int = Field(
        10,
        ge=0,
        le=1000,
        description='kind "shared": every validation_every-th presentation is held out of training, to choose the '
        "published weights (0: none held out).",
    )
    validate_every_steps: int = Field(
        20,
        ge=1,
        le=100000,
        description='kind "shared": every this many steps the held-out presentations choose the published (best) '
        "weights.",
    )
    train_while_choosing: Literal["auto", "always", "never"] = Field(
        "auto",
        description='On the wall clock, whether training keeps stepping while a plan is chosen. "auto": where the '
        "process may use 3 or more cores; otherwise choosing comes first.",
    )

    @field_validator("strides", "core_strides")
    @classmethod
    def _strides(cls, v: list[int]) -> list[int]:
        return _strides_bounded(v)

    def layer_strides(self, strides: list[int] | None = None) -> list[int]:
        strides = self.strides if strides is None else strides
        return [strides[i] if i < len(strides) else 1 for i in range(self.n_layers)]


class CompressionConfig(Strict):
    """What `cortexloop compress` makes of a stored session: the students it distils the session's ensemble into
    (one compact CNN per neuron), how it distils, prunes and retrains them. Read by nothing else."""

    student_filters_per_layer: int = Field(
        0, ge=0, le=512, description="Filters in each layer of a student (0: as [model] filters_per_layer)."
    )
    student_strides: list[int] = Field(
        default_factory=list,
        max_length=8,
        description="One stride (1 to 4) per student layer (empty: as [model] strides).",
    )
    student_readout: Literal["softplus", "linear"] = Field(
        "softplus",
        description='The students\' output: "softplus" of the readout (never negative, as the online models), or '
        '"linear" (the readout itself, trained with squared error).',
    )
    smooth_sigma: float = Field(
        0.0,
        ge=0.0,
        le=3.0,
        description="Gaussian smoothing (std in kernel taps) of the students' depthwise kernels and readout maps, "
        "every smooth_every_steps (0: none).",
    )
    smooth_every_steps: int = Field(100, ge=1, le=1_000_000, description="Steps between two smoothings.")
    distill_steps: int = Field(300, ge=0, le=1_000_000, description="Distillation steps (all students at once).")
    distill_learning_rate: float = Field(
        2e-3, gt=0.0, le=1.0, description="Distillation learning rate; retraining uses half of it."
    )
    distill_batch_size: int = Field(64, ge=1, le=4096, description="Images per distillation and retraining step.")
    retrain_steps: int = Field(200, ge=0, le=1_000_000, description="Retraining steps of the pruned students.")
    distill_augmented_copies: int = Field(
        1,
        ge=0,
        le=20,
        description="Augmented copies (flip, shift, contrast, noise) of the pool and session images added to the "
        "distillation set.",
    )
    distill_form: Literal["auto", "stacked", "loop"] = Field(
        "auto",
        description='How the students train: "stacked" (one network of grouped convolutions), "loop" (one after '
        'the other) or "auto" (times a step of both on up to 4 students and keeps the faster).',
    )
    distill_schedule: Literal["constant", "cosine"] = Field(
        "constant",
        description='Learning rate over distillation and retraining: "constant", or "cosine" (5% warm-up, then a '
        "cosine decay to 1% of the starting rate).",
    )
    prune_keep_r2_frac: float = Field(
        0.9,
        gt=0.0,
        le=1.0,
        description="Last layer: pruning keeps the fewest filters with which the student still reaches this fraction "
        "of its unpruned r^2 with the teacher.",
    )
    prune_keep_variance_frac: float = Field(
        0.9,
        gt=0.0,
        le=1.0,
        description="Earlier layers: pruning keeps the fewest filters that keep this fraction of the next layer's "
        "input variance explained.",
    )
    prune_min_filters: int = Field(3, ge=1, le=512, description="Filters a pruned layer keeps at least.")
    prune_images: int = Field(
        1000,
        ge=10,
        le=100_000,
        description="Distillation images the pruning statistics and choices are computed on.",
    )

    @field_validator("student_strides")
    @classmethod
    def _strides(cls, v: list[int]) -> list[int]:
        return _strides_bounded(v)
