"""Rig-file section owned by models: the per-neuron models and how they train."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from contract.schema import Strict


class ModelConfig(Strict):
    # "shared": per member, one conv core for all neurons + a readout per neuron (models/shared_core.py);
    # "compact": one small CNN per (neuron, member) (models/online.py); "baseline": ridge regression.
    kind: Literal["baseline", "compact", "shared"] = "baseline"
    # "auto": a GPU when torch sees one, else the CPU. "cuda" on a machine without
    # one is refused with an error (a rig file that asks for a GPU means it).
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?|auto)$")
    seed: int = Field(0, ge=0)
    ensemble_size: int = Field(4, ge=1, le=64)
    # Baseline (ridge regression on fixed features).
    ridge_alpha: float = Field(10.0, gt=0.0, le=1e8)
    # Compact CNN sizes (input size and colour come from the [images] section).
    filters_per_layer: int = Field(8, ge=1, le=512)
    n_layers: int = Field(5, ge=1, le=8)
    # One stride per layer; missing entries are 1, extra entries are ignored. The paper
    # used 1,2,2,1,1 at 112x112 (rigs/gpu.toml); at 32x32 on a CPU a stride-2 first
    # layer costs 2-3x less per step and leaves the same 8x8 last map.
    strides: list[int] = Field(default_factory=lambda: [2, 2, 1, 1, 1], max_length=8)
    kernel_size: int = Field(5, ge=1, le=11)
    learning_rate: float = Field(3e-3, gt=0.0, le=1.0)
    # Decoupled (AdamW) weight decay: a few hundred noisy presentations per neuron overfit without it.
    weight_decay: float = Field(1e-3, ge=0.0, le=1.0)
    batch_size: int = Field(32, ge=1, le=4096)
    # No training until this many presentations are stored (batch norm needs a few).
    min_responses_to_train: int = Field(16, ge=2, le=100000)
    # On a virtual clock the budget between trials is counted in steps, not seconds.
    steps_per_trial: int = Field(20, ge=0, le=100000)
    max_stored_responses: int = Field(200000, ge=100, le=10_000_000)
    # "loop": one small network per model, run one after the other; "stacked": all models in one
    # network of grouped convolutions. Which is faster depends on the device and the number of models
    # (measured: stacked 1.9x faster at 8 rig-size models on the 2-core CPU; on an H200 at paper sizes
    # stacked 1.2x faster for 8 models, the loop 1.8-2x faster for 100-120: README, "Stacked or loop",
    # docs/gpu/h200-training.json), so "auto" times a few steps of each at startup and keeps the faster.
    form: Literal["auto", "stacked", "loop"] = "auto"
    # Torch CPU threads in the process that trains (0: leave torch's default). Small
    # convolutions gain nothing from a second thread, and on a loaded 2-core machine a
    # spinning second OpenMP thread made steps up to 70x slower (measured).
    cpu_threads: int = Field(1, ge=0, le=256)
    # bf16 autocast for training steps on CUDA (ignored on CPU, where it is slower).
    mixed_precision: bool = True
    # Shared-core model (kind = "shared"). core "conv": core_layers convolutions (5x5, then 3x3) with
    # core_strides; "resnet18": torchvision resnet18's conv1, bn1, max pool and layer1 under its
    # state-dict names, so core_weights can name a torchvision-format file on disk (64 channels for
    # resnet18's own weights). core_frozen keeps loaded weights fixed (only the readouts learn).
    core: Literal["conv", "resnet18"] = "resnet18"
    core_channels: int = Field(32, ge=1, le=512)
    core_layers: int = Field(3, ge=1, le=8)
    core_strides: list[int] = Field(default_factory=lambda: [2, 1, 1], max_length=8)
    core_weights: str = ""
    core_frozen: bool = False
    # L1 on each neuron's readout (spatial mask sum |.| times feature weights sum |.|).
    readout_l1: float = Field(1e-4, ge=0.0, le=10.0)
    # Every validation_every-th presentation is held out of training; every validate_every_steps
    # steps the held-out presentations choose the published (best) weights. 0: none held out.
    validation_every: int = Field(10, ge=0, le=1000)
    validate_every_steps: int = Field(20, ge=1, le=100000)
    # On the wall clock, whether the training thread keeps stepping while a plan is chosen. "auto": yes
    # where the process may use 3 or more cores (one left to the rig's other processes, one each for
    # training and choosing); on 2 cores training during choices gained no steps and made choosing
    # twice as slow (measured), so there choosing comes first.
    train_while_choosing: Literal["auto", "always", "never"] = "auto"
    # Distillation and pruning (`cortexloop compress`). The students (one compact model per
    # neuron) may differ from the ensemble members: the paper distilled into 100 filters a
    # layer (0: as filters_per_layer), with a linear readout and Gaussian smoothing (std in
    # kernel taps) of the depthwise kernels and the readout map every `smooth_every_steps`.
    student_filters_per_layer: int = Field(0, ge=0, le=512)
    # One stride per student layer (empty: as `strides`), so that a cheap teacher (strided early)
    # can be distilled into the paper's 1,2,2,1,1 at 112x112.
    student_strides: list[int] = Field(default_factory=list, max_length=8)
    student_readout: Literal["softplus", "linear"] = "softplus"
    smooth_sigma: float = Field(0.0, ge=0.0, le=3.0)
    smooth_every_steps: int = Field(100, ge=1, le=1_000_000)
    # Defaults sized so that compress on the default session takes about 5 minutes on 2 cores
    # (README, "cortexloop compress"); the paper distilled for far longer on GPUs.
    distill_steps: int = Field(300, ge=0, le=1_000_000)
    distill_learning_rate: float = Field(2e-3, gt=0.0, le=1.0)
    distill_batch_size: int = Field(64, ge=1, le=4096)
    retrain_steps: int = Field(200, ge=0, le=1_000_000)
    # Augmented copies (flip, shift, contrast, noise) of the pool and session images in the distillation set.
    # More copies cost only teacher passes; on the default session 4 copies instead of 1 raised the students'
    # held-out r^2 with the teacher from 0.82 to 0.85 (900 distillation steps; README, "cortexloop compress").
    distill_augmented_copies: int = Field(1, ge=0, le=20)
    # How the students train: "stacked" (one network of grouped convolutions), "loop" (one after the
    # other) or "auto" (times a step of both on up to 4 students here and keeps the faster). Measured: at the
    # paper's sizes on the 2-core CPU the loop is faster, at the default rig's the stack; on an H200 (online
    # training steps, same architecture) the stack at 8 models and the loop at 100, so 4 students cannot
    # decide for 100 on a GPU: name the form there (rigs/gpu.toml).
    distill_form: Literal["auto", "stacked", "loop"] = "auto"
    # Learning rate over distillation and retraining: "constant", or "cosine" (5% warm-up, then a cosine
    # decay to 1% of distill_learning_rate).
    distill_schedule: Literal["constant", "cosine"] = "constant"
    prune_keep_r2_frac: float = Field(0.9, gt=0.0, le=1.0)
    prune_keep_variance_frac: float = Field(0.9, gt=0.0, le=1.0)
    prune_min_filters: int = Field(3, ge=1, le=512)
    # Distillation images the pruning statistics and choices are computed on (the paper: 5,000).
    prune_images: int = Field(1000, ge=10, le=100_000)

    @field_validator("strides", "student_strides", "core_strides")
    @classmethod
    def _strides_bounded(cls, v: list[int]) -> list[int]:
        if any(s < 1 or s > 4 for s in v):
            raise ValueError("each stride must be between 1 and 4")
        return v

    def layer_strides(self, strides: list[int] | None = None) -> list[int]:
        strides = self.strides if strides is None else strides
        return [strides[i] if i < len(strides) else 1 for i in range(self.n_layers)]
