"""Distillation: one compact model per neuron trained to copy a teacher (the ensemble mean).

The teacher is queried once on a fixed distillation set (pool images plus
augmented copies: flips, small shifts, contrast changes and pixel noise), so the
students can take many steps on many more images than were ever shown to the
animal, at the price of one teacher pass. Loss: squared error between student and
teacher rates, each neuron scaled by its teacher standard deviation so that every
neuron counts alike.

The same loop retrains pruned models (students may then have different sizes).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from models.compact import CompactNet, CompactSpec, make_models
from models.stacked import LoopForm, build_form


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
def teacher_rates(teacher: Callable[[torch.Tensor], torch.Tensor], images: np.ndarray, device: torch.device,
                  batch: int = 256) -> torch.Tensor:
    """teacher(images (B, C, H, W) on device) -> (B, N); returns (P, N) on the CPU."""
    out = [teacher(to_tensor(images[i:i + batch]).to(device)).float().cpu() for i in range(0, len(images), batch)]
    return torch.cat(out)


def ensemble_mean(predictor) -> Callable[[torch.Tensor], torch.Tensor]:
    """A Predictor's member-mean rates as a teacher function."""
    return lambda x: predictor.rates(x).mean(0)


def fit_students(students: Sequence[CompactNet], images: np.ndarray, targets: torch.Tensor, steps: int,
                 lr: float, batch_size: int, device: torch.device, seed: int = 0, form: str = "loop",
                 weight_decay: float = 1e-4) -> list[CompactNet]:
    """Train student n on targets[:, n] (rates) for `steps` steps; returns the trained students (eval mode)."""
    if steps <= 0:
        return [s.eval() for s in students]
    same = all(s.spec == students[0].spec for s in students)
    net = build_form(form if same else "loop", list(students)).to(device)
    scale = targets.std(0).clamp(min=1e-3).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    net.train()
    for _ in range(steps):
        idx = rng.integers(0, len(images), min(batch_size, len(images)))
        x = to_tensor(images[idx]).to(device)
        t = targets[idx].to(device)
        loss = (((net(x) - t) / scale) ** 2).mean(0).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    return [m.eval() for m in (net.to_models() if not isinstance(net, LoopForm) else net.models)]


def distill(images: np.ndarray, targets: torch.Tensor, spec: CompactSpec, steps: int, lr: float,
            batch_size: int, device: torch.device, seed: int = 0, form: str = "loop") -> list[CompactNet]:
    """Fresh students, one per column of targets (P, N), fitted to them."""
    students = make_models(spec, targets.shape[1], seed=seed + 7919)
    for s, mean in zip(students, targets.mean(0).tolist()):
        s.set_mean_rate(mean)
    students = [s.to(device) for s in students]
    return fit_students(students, images, targets, steps, lr, batch_size, device, seed, form)
