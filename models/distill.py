"""Distillation: one compact model per neuron trained to copy a teacher (the ensemble mean).

The teacher is queried once on a fixed distillation set (pool images plus
augmented copies: flips, small shifts, contrast changes and pixel noise), so the
students can take many steps on many more images than were ever shown to the
animal, at the price of one teacher pass. Loss: squared error between student and
teacher rates, each neuron scaled by its teacher standard deviation so that every
neuron counts alike.

The same loop retrains pruned models (students may then have different sizes). All
students train together, as one stacked network (pruned students padded to one size)
or in a loop, whichever `student_form` picks.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from models.compact import CompactNet, CompactSpec, make_models, output_rate, smooth_kernels
from models.stacked import LoopForm, StackedCompact, resolve_form


def augmented_images(pool: np.ndarray, n_copies: int, seed: int = 0, max_shift_px: int | None = None) -> np.ndarray:
    """The pool (P, H, W, C uint8) and `n_copies` augmented copies of it, as one uint8 array."""
    rng = np.random.default_rng(seed)
    h = pool.shape[1]
    shift = max(1, h // 16) if max_shift_px is None else max_shift_px
    out = [pool]
    for _ in range(n_copies):
        x = pool.astype(np.float32)
        flip = rng.random(len(x)) < 0.5
        x[flip] = x[flip, :, ::-1]
        dy, dx = rng.integers(-shift, shift + 1, 2)
        x = np.roll(x, (int(dy), int(dx)), axis=(1, 2))
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        contrast = rng.uniform(0.6, 1.4, (len(x), 1, 1, 1)).astype(np.float32)
        x = mean + (x - mean) * contrast + rng.normal(0, 8.0, x.shape).astype(np.float32)
        out.append(np.clip(np.rint(x), 0, 255).astype(np.uint8))
    return np.concatenate(out)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, C) -> float (B, C, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0


@torch.no_grad()
def teacher_rates(
    teacher: Callable[[torch.Tensor], torch.Tensor], images: np.ndarray, device: torch.device, batch: int = 256
) -> torch.Tensor:
    """teacher(images (B, C, H, W) on device) -> (B, N); returns (P, N) on the CPU."""
    out = [teacher(to_tensor(images[i : i + batch]).to(device)).float().cpu() for i in range(0, len(images), batch)]
    return torch.cat(out)


def ensemble_mean(predictor) -> Callable[[torch.Tensor], torch.Tensor]:
    """A Predictor's member-mean rates as a teacher function."""
    return lambda x: predictor.rates(x).mean(0)


class StackedStudents(StackedCompact):
    """Students stacked into one network (models/stacked.py) that honours the spec's readout (softplus
    or the paper's linear readout). Models of different sizes are padded to one size first
    (`pack`): padded filters have zero weights, get zero gradients and stay zero, so the padded
    network computes exactly what the separate models compute."""

    def forward(self, x: torch.Tensor, index: Sequence[int] | None = None) -> torch.Tensor:
        h = F.relu(self.bn0(self.conv0(x)))
        for dw, pw, bn in zip(self.depthwise, self.pointwise, self.norms):
            h = F.relu(bn(pw(dw(h))))
        h = h.reshape(h.shape[0], self.k, -1)
        drive = torch.einsum("bkd,kd->bk", h, self.readout_weight.to(h.dtype)) + self.readout_bias
        out = output_rate(drive.float(), self.rate_scale, self.spec.readout)
        return out if index is None else out[:, list(index)]


@torch.no_grad()
def pad_model(model: CompactNet, filters: Sequence[int]) -> CompactNet:
    """`model` with zero filters appended so that layer l has filters[l] (>= its own count)."""
    own = model.spec.filters
    if any(f < g for f, g in zip(filters, own)):
        raise ValueError(f"cannot pad filters {list(own)} down to {list(filters)}")
    out = CompactNet(model.spec.with_filters(filters)).to(model.readout_weight.device)
    for p in out.parameters():
        p.zero_()
    for bn in [out.bn0, *out.norms]:
        bn.weight.fill_(1.0)
        bn.running_var.fill_(1.0)
    out.conv0.weight[: own[0]] = model.conv0.weight
    _copy_bn_into(out.bn0, model.bn0, own[0])
    for i in range(model.spec.n_layers - 1):
        out.depthwise[i].weight[: own[i]] = model.depthwise[i].weight
        out.pointwise[i].weight[: own[i + 1], : own[i]] = model.pointwise[i].weight
        _copy_bn_into(out.norms[i], model.norms[i], own[i + 1])
    out.readout_weight[: own[-1]] = model.readout_weight
    out.readout_bias.copy_(model.readout_bias)
    out.rate_scale.copy_(model.rate_scale)
    return out.train(model.training)


def _copy_bn_into(dst, src, n: int) -> None:
    dst.weight[:n] = src.weight
    dst.bias[:n] = src.bias
    dst.running_mean[:n] = src.running_mean
    dst.running_var[:n] = src.running_var
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


def pack(models: Sequence[CompactNet]) -> StackedStudents:
    """One stacked network holding `models`, padded to the largest filter count of each layer."""
    widest = [max(f) for f in zip(*(m.spec.filters for m in models))]
    padded = [m if list(m.spec.filters) == widest else pad_model(m, widest) for m in models]
    return StackedStudents.from_models(padded)


def unpack(net: StackedStudents, filters: Sequence[Sequence[int]]) -> list[CompactNet]:
    """The separate models back, model k cut to its own filter counts filters[k]."""
    from models.prune import slice_model

    out = []
    for m, own in zip(net.to_models(), filters):
        if list(m.spec.filters) != list(own):
            m = slice_model(m, [list(range(f)) for f in own]).train(net.training)
        out.append(m)
    return out


def student_form(form: str, device: torch.device, spec: CompactSpec, n_students: int, batch_size: int) -> str:
    """ "stacked" or "loop" for training `n_students` students of `spec`; "auto" times a channels-last step of
    both forms on up to 4 students (models/stacked.py, resolve_form)."""
    return resolve_form(form, device, spec, n_students, batch_size, channels_last=True, max_timed=4)


def fit_students(
    students: Sequence[CompactNet],
    images: np.ndarray,
    targets: torch.Tensor,
    steps: int,
    lr: float,
    batch_size: int,
    device: torch.device,
    seed: int = 0,
    weight_decay: float = 1e-4,
    smooth_sigma: float = 0.0,
    smooth_every: int = 100,
    form: str = "stacked",
    schedule: str = "constant",
    progress: Callable[[int], None] | None = None,
) -> list[CompactNet]:
    """Train student n on targets[:, n] (rates) for `steps` steps, all students together.

    form "stacked": one stacked network (students of different sizes, pruned ones, are padded
    to one size and cut back afterwards); "loop": the students one after the other in each step;
    "auto": whichever of the two trains faster here (student_form).
    schedule "constant": `lr` throughout; "cosine": a linear warm-up over the first 5% of the
    steps, then a cosine decay to 1% of `lr` at the last step.
    With `smooth_sigma` > 0 the depthwise kernels and readout maps are smoothed every
    `smooth_every` steps and at the end (models/compact.py, smooth_kernels).
    `progress(steps_done)` is called every few steps. Returns the students in eval mode.
    """
    sizes = [list(s.spec.filters) for s in students]
    if steps <= 0:
        return [s.eval() for s in students]
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"unknown learning-rate schedule {schedule!r}")
    form = student_form(
        form,
        device,
        students[0].spec.with_filters([max(f) for f in zip(*sizes)]),
        len(students),
        min(batch_size, len(images)),
    )
    # Channels-last tensors on every device: faster training steps than the default layout on the CPU at
    # the students' sizes, and the layout the GPU's bf16 convolutions want.
    # Both forms train copies: the students passed in stay as they were (compress compares them with the result).
    net = (pack(students) if form == "stacked" else LoopForm([copy.deepcopy(s).train() for s in students])).to(device)
    net = net.to(memory_format=torch.channels_last)
    scale = targets.std(0).clamp(min=1e-3).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    sched = None
    if schedule == "cosine":
        warm = max(1, steps // 20)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda i: (
                (i + 1) / warm
                if i < warm
                else 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (i - warm) / max(1, steps - warm)))
            ),
        )
    rng = np.random.default_rng(seed)
    # On CUDA the forward pass runs in bf16, as the online trainer's steps do (models/online.py); the loss
    # and the optimizer stay in float32. On the CPU bf16 is slower, so the CPU stays in float32.
    cuda = device.type == "cuda"
    net.train()
    report_every = max(1, min(25, steps // 20))
    for step in range(1, steps + 1):
        idx = rng.integers(0, len(images), min(batch_size, len(images)))
        x = to_tensor(images[idx]).to(device).contiguous(memory_format=torch.channels_last)
        t = targets[idx].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            pred = net(x)
        loss = (((pred.float() - t) / scale) ** 2).mean(0).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        if smooth_sigma > 0 and (step % smooth_every == 0 or step == steps):
            _smooth(net, smooth_sigma)
        if progress is not None and (step % report_every == 0 or step == steps):
            progress(step)
    net.eval()
    trained = unpack(net, sizes) if form == "stacked" else net.to_models()
    return [m.to(memory_format=torch.contiguous_format).eval() for m in trained]


def _smooth(net: StackedStudents | LoopForm, sigma: float) -> None:
    for model in net.models if isinstance(net, LoopForm) else [net]:
        smooth_kernels(model, sigma)


def distill(
    images: np.ndarray,
    targets: torch.Tensor,
    spec: CompactSpec,
    steps: int,
    lr: float,
    batch_size: int,
    device: torch.device,
    seed: int = 0,
    smooth_sigma: float = 0.0,
    smooth_every: int = 100,
    form: str = "stacked",
    schedule: str = "constant",
    progress: Callable[[int], None] | None = None,
    ids: Sequence[int] | None = None,
) -> list[CompactNet]:
    """Fresh students, one per column of targets (P, N), fitted to them. Student n starts from weights seeded
    by ids[n] (default n; compress gives the recorded neuron's number), so a neuron's student does not depend on
    which others are distilled with it: the minibatches are drawn from `seed` alone and every student's loss,
    gradient and optimizer state are its own."""
    students = make_models(spec, targets.shape[1], seed=seed + 7919, ids=ids)
    for s, mean, spread in zip(students, targets.mean(0).tolist(), targets.std(0).tolist()):
        s.set_mean_rate(mean, spread)
    students = [s.to(device) for s in students]
    return fit_students(
        students,
        images,
        targets,
        steps,
        lr,
        batch_size,
        device,
        seed,
        smooth_sigma=smooth_sigma,
        smooth_every=smooth_every,
        form=form,
        schedule=schedule,
        progress=progress,
    )
