"""The model.kind = "shared" online model: per ensemble member, one convolutional core shared by all
neurons and a factorized readout per neuron (why, and how to set it up: docs/models.md).

Same interface as CompactOnline (models/online.py) and RidgeBaseline (models/baseline.py):
    model = SharedCoreOnline(cfg, n_neurons, image_shape (H, W, C))
    model.add_responses(images uint8 (n, H, W, C), counts (n, N), window_s)
    model.train(steps); model.steps_done; model.last_loss
    model.snapshot() -> SharedCorePredictor (.version, .n_members, .n_neurons, .rates(), .features())
    model.weights_state() / model.load_weights_state(state)

Members differ by their initial weights (seeded by member) and by an online bootstrap (one Poisson(1)
weight per stored presentation and member; member 0 weights every presentation 1), as in CompactOnline.

Published weights are chosen on held-out responses: every `validation_every`-th presentation is kept out
of training; every `validate_every_steps` steps the current and the best weights are scored, per member,
by correlation with the held-out counts, and snapshots publish the best. A few hundred presentations
overfit when trained on many times over, which a model training in real time does.

Normalization never learns from batches (`FixedNorm`, fixed ImageNet input statistics): the closed loop
shows mostly off-distribution (gaudy) images, which would set batch statistics, and per-image norms would
remove the contrast that drives the neurons. The loss is each neuron's Poisson NLL divided by its mean
count, so high-rate neurons do not dominate the core's gradient.

Cores (`model.core`): "conv" (`core_layers` convolutions, 5x5 then 3x3, `core_channels` wide, strides
`core_strides`), or "resnet18" (the stem and first stage of torchvision's resnet18 under its state-dict
names, so `model.core_weights` can name a torchvision-format file; width core_channels, 64 for those
weights).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.config import ModelConfig
from models.data import ResponseBuffer
from models.metrics import held_out_quality
from models.online import prepare_torch_for, resolve_device

# torchvision's normalization: fixed, so no batch decides it; for grey images their mean.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Validation picks between weights only once it has this many held-out presentations: fewer make the
# choice noise.
MIN_VALIDATION = 8
# At most this many (the newest) held-out presentations are scored per check: the check stays cheap
# in a long session.
MAX_VALIDATION = 1024


class CoreWeightsError(ValueError):
    """A core weights file that does not fit: names the file and the key."""


class FixedNorm(nn.Module):
    """A BatchNorm2d's parameters and buffers (torchvision's names: weight, bias, running_mean, running_var,
    num_batches_tracked), applied as a fixed per-channel affine: the running statistics come from a weights
    file or stay at (0, 1); no batch ever changes them (see the module docstring)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale[:, None, None] + shift[:, None, None]


class BasicBlock(nn.Module):
    """torchvision's resnet BasicBlock without downsampling (layer1 keeps width and size)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn1 = FixedNorm(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = FixedNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(h)))


class ResNetStemCore(nn.Module):
    """conv1 (7x7, stride 2), bn1, ReLU, max pool (3x3, stride 2), layer1 (two BasicBlocks): resnet18's early
    layers under its state-dict names. Input: 3 channels, already normalized."""

    def __init__(self, channels: int = 64):
        super().__init__()
        self.out_channels = channels
        self.conv1 = nn.Conv2d(3, channels, 7, 2, 3, bias=False)
        self.bn1 = FixedNorm(channels)
        self.layer1 = nn.Sequential(BasicBlock(channels), BasicBlock(channels))
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
        for block in self.layer1:  # each block starts as the identity: a deep stack trains from the start
            nn.init.zeros_(block.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        return self.layer1(h)


class ConvCore(nn.Module):
    """A plain stack: conv (5x5 first, then 3x3), fixed affine, ELU."""

    def __init__(self, in_channels: int, channels: int, n_layers: int, strides: Sequence[int]):
        super().__init__()
        self.out_channels = channels
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        c = in_channels
        for i in range(n_layers):
            k = 5 if i == 0 else 3
            stride = strides[i] if i < len(strides) else 1
            self.convs.append(nn.Conv2d(c, channels, k, stride, k // 2, bias=False))
            self.norms.append(FixedNorm(channels))
            c = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, norm in zip(self.convs, self.norms):
            x = F.elu(norm(conv(x)))
        return x


class FactorizedReadout(nn.Module):
    """Per neuron: a spatial mask (h, w) times feature weights (C), plus a bias; rate = mean_rate *
    softplus(z) / log 2, so an untrained readout (z = 0) predicts each neuron's mean rate."""

    def __init__(self, n_neurons: int, channels: int, h: int, w: int, generator: torch.Generator):
        super().__init__()
        self.mask = nn.Parameter(torch.randn(n_neurons, h, w, generator=generator) / (h * w))
        self.features = nn.Parameter(torch.randn(n_neurons, channels, generator=generator) / channels)
        self.bias = nn.Parameter(torch.zeros(n_neurons))
        self.register_buffer("rate_scale", torch.ones(n_neurons) / np.log(2.0))

    def forward(self, feats: torch.Tensor, neurons: Sequence[int] | None = None) -> torch.Tensor:
        mask, weights, bias, scale = self.mask, self.features, self.bias, self.rate_scale
        if neurons is not None:
            idx = torch.as_tensor(list(neurons), dtype=torch.long, device=mask.device)
            mask, weights, bias, scale = mask[idx], weights[idx], bias[idx], scale[idx]
        pooled = torch.einsum("bchw,nhw->bnc", feats, mask)  # where each neuron looks, per feature
        z = (pooled * weights).sum(-1) + bias
        return scale * F.softplus(z)

    def penalty(self) -> torch.Tensor:
        """L1 of mask and feature weights (sparse, local readouts), per neuron, summed over neurons."""
        n = self.mask.shape[0]
        return (self.mask.abs().reshape(n, -1).sum(1) * self.features.abs().sum(1)).sum()


class SharedCoreEnsemble(nn.Module):
    """members x (core + readout). forward -> (M, B, N) rates in spikes/s."""

    def __init__(self, cfg: ModelConfig, n_neurons: int, image_shape: tuple[int, int, int]):
        super().__init__()
        h, w, c = image_shape
        self.n_members = cfg.ensemble_size
        self.core_kind = cfg.core
        self.in_channels = c
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        if c == 1:
            mean, std = mean.mean(0, keepdim=True), std.mean(0, keepdim=True)
        self.register_buffer("input_mean", mean[:, None, None].clone())
        self.register_buffer("input_std", std[:, None, None].clone())
        # A frozen core is the same for every member: one copy, run once per batch.
        n_cores = 1 if cfg.core_frozen else self.n_members
        self.cores = nn.ModuleList()
        self.readouts = nn.ModuleList()
        for m in range(n_cores):
            torch.manual_seed(cfg.seed * 1009 + m)
            self.cores.append(self._make_core(cfg, c))
        with torch.no_grad():
            probe = self.cores[0](torch.zeros(1, 3 if cfg.core == "resnet18" else c, h, w))
        _, ch, fh, fw = probe.shape
        for m in range(self.n_members):
            g = torch.Generator().manual_seed(cfg.seed * 1009 + 500 + m)
            self.readouts.append(FactorizedReadout(n_neurons, ch, fh, fw, g))
        self.feature_shape = (ch, fh, fw)

    @staticmethod
    def _make_core(cfg: ModelConfig, in_channels: int) -> nn.Module:
        if cfg.core == "resnet18":
            return ResNetStemCore(cfg.core_channels)
        return ConvCore(in_channels, cfg.core_channels, cfg.core_layers, cfg.core_strides)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.input_mean) / self.input_std
        if self.core_kind == "resnet18" and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # torchvision's stem takes colour: grey is the same on all three
        return x

    def core_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """One (B, C, h, w) map per core."""
        x = self.prepare(images)
        return [core(x) for core in self.cores]

    def forward(
        self, images: torch.Tensor, neurons: Sequence[int] | None = None, members: Sequence[int] | None = None
    ) -> torch.Tensor:
        feats = self.core_features(images)
        members = range(self.n_members) if members is None else members
        out = [self.readouts[m](feats[m if len(feats) > 1 else 0], neurons) for m in members]
        return torch.stack(out)


def load_core_weights(cores: Sequence[nn.Module], path: str | Path) -> None:
    """Copy torchvision-format weights (a state dict saved by torch.save) into each core. Keys the core does
    not have (a whole resnet18's layer2..fc) are ignored; a key it needs that is missing or of another shape is
    an error naming the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise CoreWeightsError(f"model.core_weights: no file {str(path)!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CoreWeightsError(f"model.core_weights: {str(path)!r} is not a torch state dict ({err})") from err
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # the form many training scripts save
    if not isinstance(state, dict):
        raise CoreWeightsError(f"model.core_weights: {str(path)!r} holds a {type(state).__name__}, not a state dict")
    if any(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    wanted = cores[0].state_dict()
    picked = {}
    for key, ref in wanted.items():
        if key not in state:
            raise CoreWeightsError(
                f"model.core_weights: {str(path)!r} has no key {key!r} (a torchvision resnet18 state dict is expected)"
            )
        value = state[key]
        if not isinstance(value, torch.Tensor) or value.shape != ref.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise CoreWeightsError(
                f"model.core_weights: {str(path)!r} key {key!r} has shape {shape}, the core "
                f"needs {tuple(ref.shape)} (model.core_channels sets the width)"
            )
        picked[key] = value.to(ref.dtype)
    for core in cores:
        core.load_state_dict(picked)


class SharedCorePredictor:
    """A frozen ensemble: rates (n_members, B, n_selected) in spikes/s, differentiable in the images."""

    def __init__(self, version: int, net: SharedCoreEnsemble, n_neurons: int, device: torch.device):
        self.version = version
        self.n_neurons = n_neurons
        self.n_members = net.n_members
        self.device = device
        self.quality: dict | None = None  # held-out quality when published (SharedCoreOnline.held_out_quality)
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def rates(self, images: torch.Tensor, neurons: Sequence[int] | None = None) -> torch.Tensor:
        sel = None if neurons is None else [int(n) for n in neurons]
        out = self.net(images.to(self.device, torch.float32), sel)
        return out.to(images.device)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, D): the members' core features, averaged over space and members (a feature space for diversity)."""
        feats = self.net.core_features(images.to(self.device, torch.float32))
        pooled = torch.stack([f.mean((2, 3)) for f in feats]).mean(0)
        return pooled.to(images.device)


class SharedCoreOnline:
    """The model.kind = "shared" online model (the module docstring)."""

    def __init__(self, cfg: ModelConfig, n_neurons: int, image_shape: tuple[int, int, int]):
        self.cfg = cfg
        self.n_neurons = n_neurons
        self.n_members = cfg.ensemble_size
        self.image_shape = tuple(image_shape)
        self.device = resolve_device(cfg.device)
        prepare_torch_for(self.device, cfg.cpu_threads)
        if cfg.core_frozen and not cfg.core_weights:
            raise ValueError("model.core_frozen = true needs model.core_weights (a frozen random core learns nothing)")
        if cfg.core_weights and cfg.core != "resnet18":
            raise ValueError(f"model.core_weights is read into the resnet18 core; model.core is {cfg.core!r}")
        self.net = SharedCoreEnsemble(cfg, n_neurons, self.image_shape)
        # How the ensemble runs, as CompactOnline.form says it (compress's report names the teacher's form).
        self.form = f"shared {cfg.core} core"
        if cfg.core_weights:
            load_core_weights(self.net.cores, cfg.core_weights)
        if cfg.core_frozen:
            for p in self.net.cores.parameters():
                p.requires_grad_(False)
        self.net.to(self.device)
        # Weight decay on the core's convolutions only (strong decay keeps the many steps taken on the first
        # trials' few presentations from spoiling what later trials teach); the readouts have their own L1 penalty.
        core_params = [p for p in self.net.cores.parameters() if p.requires_grad]
        groups = [{"params": list(self.net.readouts.parameters()), "weight_decay": 0.0}]
        if core_params:
            groups.append({"params": core_params, "weight_decay": cfg.weight_decay})
        self.opt = torch.optim.AdamW(groups, lr=cfg.learning_rate)
        self.best = copy.deepcopy(self.net)  # the published weights (best on the held-out presentations)
        self.best_r = torch.full((self.n_members,), float("nan"))  # held-out r of the published weights
        self.buffer = ResponseBuffer(cfg.max_stored_responses, self.image_shape, n_neurons)
        cap = cfg.max_stored_responses
        self.window_s = np.zeros(cap, np.float32)
        self.boot_weights = np.zeros((cap, self.n_members), np.float32)
        self.held_out = np.zeros(cap, bool)
        self.rng = np.random.default_rng(cfg.seed)
        self.version = 0
        self.steps_done = 0
        self._steps_at_snapshot = 0
        self._scaled = False
        self._validated_at = 0  # steps_done at the last validation check
        self.last_loss = float("nan")
        self.last_validation_r = float("nan")
        self.best_changes = 0  # how often a member's best weights were replaced (for diagnostics)
        self._held_out: tuple[torch.Tensor, torch.Tensor] | None = None  # published predictions, rates at validation

    # -- data --------------------------------------------------------------------------
    def add_responses(self, images: np.ndarray, counts: np.ndarray, window_s: float) -> None:
        n = len(images)
        order = self.buffer.n_total + np.arange(n)
        rows = order % self.buffer.capacity
        w = self.rng.poisson(1.0, (n, self.n_members)).astype(np.float32)
        w[:, 0] = 1.0
        self.boot_weights[rows] = w
        self.window_s[rows] = window_s
        k = self.cfg.validation_every
        self.held_out[rows] = (order % k == k - 1) if k > 0 else False
        self.buffer.add(images, counts, window_s)

    def _rows(self) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.buffer)
        held = self.held_out[:n]
        return np.flatnonzero(~held), np.flatnonzero(held)

    def _start_scale(self, train_rows: np.ndarray) -> None:
        mean = torch.from_numpy(self.buffer.rates[train_rows].mean(0)).clamp(min=0.1) / np.log(2.0)
        for net in (self.net, self.best):
            for r in net.readouts:
                r.rate_scale.copy_(mean.to(r.rate_scale))
        self._scaled = True

    def _nll(self, net: SharedCoreEnsemble, rows: np.ndarray) -> torch.Tensor:
        """(M, B, N) Poisson NLL per presentation and neuron, each neuron's divided by its mean count."""
        images, rates = self.buffer.tensors(rows)
        window = torch.from_numpy(self.window_s[rows]).to(self.device)[:, None]
        counts = rates.to(self.device) * window
        mu = net(images.to(self.device)) * window + 1e-6
        nll = mu - counts * torch.log(mu)
        scale = net.readouts[0].rate_scale * np.log(2.0) * window.mean()  # each neuron's mean count
        return nll / scale.clamp(min=1e-3)

    # -- training ----------------------------------------------------------------------
    def train(self, steps: int) -> None:
        train_rows, _ = self._rows()
        n = len(train_rows)
        if steps <= 0 or len(self.buffer) < self.cfg.min_responses_to_train or n == 0:
            return
        if not self._scaled:
            self._start_scale(train_rows)
        self.net.train()
        for _ in range(steps):
            idx = train_rows[self.rng.integers(0, n, min(self.cfg.batch_size, n))]
            weights = torch.from_numpy(self.boot_weights[idx]).to(self.device).T[:, :, None]  # (M, B, 1)
            nll = self._nll(self.net, idx)
            fit = ((weights * nll).sum(1) / weights.sum(1).clamp(min=1.0)).sum()  # members' losses, summed
            penalty = sum(r.penalty() for r in self.net.readouts)
            loss = fit + self.cfg.readout_l1 * penalty
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.steps_done += 1
            if self.steps_done - self._validated_at >= self.cfg.validate_every_steps:
                self.validate()
        self.last_loss = float(fit.detach()) / (self.n_members * self.n_neurons)
        self.net.eval()

    @torch.no_grad()
    def _validation_r(self, net: SharedCoreEnsemble, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(M,) each member's correlation with the held-out counts, averaged over neurons; and the predictions
        (M, B, N)."""
        images, rates = self.buffer.tensors(rows)
        pred = net(images.to(self.device)).cpu()  # (M, B, N)
        p = pred - pred.mean(1, keepdim=True)
        t = (rates - rates.mean(0))[None]
        denom = torch.sqrt((p**2).sum(1) * (t**2).sum(1))
        r = torch.where(denom > 1e-12, (p * t).sum(1) / denom.clamp(min=1e-12), torch.zeros_like(denom))
        return r.mean(1), pred

    def held_out_quality(self) -> dict | None:
        """The published weights' held-out quality at the last validation (models.metrics.held_out_quality: the
        ensemble's mean prediction against the held-out counts, and chance); None before any validation."""
        if self._held_out is None:
            return None
        pred, rates = self._held_out
        return held_out_quality(pred.mean(0), rates, seed=self.cfg.seed)

    @torch.no_grad()
    def validate(self) -> None:
        """Score the current and the best weights on the held-out presentations; keep the better, per member.

        The score is the correlation with the held-out counts, not the Poisson loss: the loss on the
        held-out set rose while the correlation with the truth on natural test images still rose (the
        loss there is dominated by the gaudy and synthesized images' high rates), and the correlation is
        what the session reports."""
        self._validated_at = self.steps_done
        _, val_rows = self._rows()
        if len(val_rows) < MIN_VALIDATION or self.cfg.validation_every == 0:
            self.best.load_state_dict(self.net.state_dict())  # nothing to choose with: publish the newest
            return
        val_rows = val_rows[-MAX_VALIDATION:]
        was_training = self.net.training
        self.net.eval()
        now, pred_now = self._validation_r(self.net, val_rows)
        before, pred_before = self._validation_r(self.best, val_rows)
        self.net.train(was_training)
        self.last_validation_r = float(now.mean())
        better = now > before
        published = torch.where(better[:, None, None], pred_now, pred_before)
        self._held_out = (published, self.buffer.tensors(val_rows)[1])
        for m in np.flatnonzero(better.numpy()):
            self._copy_member(self.net, self.best, int(m))
            self.best_changes += 1
        self.best_r = torch.where(better, now, before)

    def _copy_member(self, src: SharedCoreEnsemble, dst: SharedCoreEnsemble, m: int) -> None:
        dst.readouts[m].load_state_dict(src.readouts[m].state_dict())
        if len(src.cores) == src.n_members:  # one core per member (a frozen core is one, shared, never changed)
            dst.cores[m].load_state_dict(src.cores[m].state_dict())

    # -- publishing --------------------------------------------------------------------
    def snapshot(self) -> SharedCorePredictor:
        if self.steps_done > self._steps_at_snapshot:
            self.version += 1
            self._steps_at_snapshot = self.steps_done
        frozen = copy.deepcopy(self.best if self.cfg.validation_every > 0 else self.net)
        snap = SharedCorePredictor(self.version, frozen.to(self.device), self.n_neurons, self.device)
        snap.quality = self.held_out_quality()
        return snap

    def weights_state(self) -> dict:
        """What a checkpoint keeps: current and best weights, the optimizer's moments and the counters (tensors
        and numbers only: torch.load(weights_only=True) reads it). The responses are in the session store."""
        return {
            "net": self.net.state_dict(),
            "best": self.best.state_dict(),
            "best_r": self.best_r.clone(),
            "opt": self.opt.state_dict(),
            "version": self.version,
            "steps_done": self.steps_done,
            "scaled": self._scaled,
            "core": self.cfg.core,
        }

    def start_from(self, published: dict, kept: Sequence[tuple[int, int]], source: str) -> None:
        """Start from another session's published weights (`weights_state()["best"]`): every core, and the
        readouts of the `kept` (their neuron, this model's neuron) pairs; the other readouts keep their fresh
        initialization. ValueError naming `source` when the cores or readouts differ in structure or shape."""
        own = self.net.state_dict()
        need = sorted(k for k in own if k.startswith("cores."))
        have = sorted(k for k in published if k.startswith("cores."))
        if need != have:
            raise ValueError(
                f"model.init_from: {source} holds {len(have)} core tensors, this model needs {len(need)} "
                f"(model.core, core_layers, core_frozen and ensemble_size must match the previous session's)"
            )
        for k in need:
            if tuple(published[k].shape) != tuple(own[k].shape):
                raise ValueError(
                    f"model.init_from: {source}: {k} has shape {tuple(published[k].shape)}, this model needs "
                    f"{tuple(own[k].shape)} (model.core_channels and the image size must match)"
                )
        names = ("mask", "features", "bias")
        for m in range(self.n_members):
            for name in names:
                key = f"readouts.{m}.{name}"
                if key not in published or tuple(published[key].shape[1:]) != tuple(own[key].shape[1:]):
                    got = tuple(published[key].shape) if key in published else "none"
                    raise ValueError(
                        f"model.init_from: {source}: {key} has shape {got}, this model needs (n, "
                        f"{', '.join(str(d) for d in own[key].shape[1:])})"
                    )
        old = torch.as_tensor([a for a, _ in kept], dtype=torch.long)
        new = torch.as_tensor([b for _, b in kept], dtype=torch.long)
        with torch.no_grad():
            for net in (self.net, self.best):
                target = net.state_dict()  # aliases of the parameters: written in place
                for k in need:
                    target[k].copy_(published[k])
                if len(kept):
                    for m in range(self.n_members):
                        for name in names:
                            key = f"readouts.{m}.{name}"
                            target[key][new] = published[key][old].to(target[key].dtype)

    def load_weights_state(self, state: dict) -> None:
        if state.get("core") != self.cfg.core:
            raise ValueError(f"checkpoint of the {state.get('core')!r} core, this model has the {self.cfg.core!r} core")
        self.net.load_state_dict(state["net"])
        self.best.load_state_dict(state["best"])
        self.best_r = state["best_r"].clone()
        self.opt.load_state_dict(state["opt"])
        self.version, self.steps_done = int(state["version"]), int(state["steps_done"])
        self._steps_at_snapshot = self._validated_at = self.steps_done
        self._scaled = bool(state["scaled"])
