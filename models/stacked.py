"""K compact models of one architecture held in one network, and the plain loop over them.

Two forms compute the same thing (tests/models/test_compact.py proves it on the same weights):

- `LoopForm`: a list of `CompactNet`, run one after the other: least arithmetic and no
  grouped-convolution kernels, which suits a CPU.
- `StackedCompact`: one network: the first conv one dense conv C -> K*F0 (every model sees the
  same image), the pointwise convs grouped 1x1 convs with K groups, batch norm over K*F channels
  per model by construction, the readout one einsum. Fewer kernel launches, which dominate small
  models on a GPU.

Both take images (B, C, H, W) and return rates (B, K). `resolve_form("auto")` times both here and
takes the faster.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.compact import CompactNet, CompactSpec, make_models


class LoopForm(nn.Module):
    """K CompactNets run in turn: (B, C, H, W) -> (B, K), or (B, len(index)) for the models `index`."""

    def __init__(self, models: Sequence[CompactNet]):
        super().__init__()
        self.models = nn.ModuleList(models)

    @property
    def n_models(self) -> int:
        return len(self.models)

    def forward(self, x: torch.Tensor, index: Sequence[int] | None = None) -> torch.Tensor:
        chosen = self.models if index is None else [self.models[i] for i in index]
        return torch.stack([m(x) for m in chosen], 1)

    def to_models(self) -> list[CompactNet]:
        return list(self.models)


class StackedCompact(nn.Module):
    """K compact models of one spec as one network: (B, C, H, W) -> (B, K)."""

    def __init__(self, spec: CompactSpec, n_models: int):
        super().__init__()
        self.spec = spec
        self.k = n_models
        k, pad, K = spec.kernel_size, spec.kernel_size // 2, n_models
        f = spec.filters
        self.conv0 = nn.Conv2d(spec.in_channels, K * f[0], k, spec.strides[0], pad, bias=False)
        self.bn0 = nn.BatchNorm2d(K * f[0])
        self.depthwise = nn.ModuleList()
        self.pointwise = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i in range(1, spec.n_layers):
            self.depthwise.append(
                nn.Conv2d(K * f[i - 1], K * f[i - 1], k, spec.strides[i], pad, groups=K * f[i - 1], bias=False)
            )
            self.pointwise.append(nn.Conv2d(K * f[i - 1], K * f[i], 1, groups=K, bias=False))
            self.norms.append(nn.BatchNorm2d(K * f[i]))
        m = spec.map_size
        self.readout_weight = nn.Parameter(torch.zeros(K, f[-1] * m * m))
        self.readout_bias = nn.Parameter(torch.zeros(K))
        self.register_buffer("rate_scale", torch.ones(K))

    @property
    def n_models(self) -> int:
        return self.k

    def forward(self, x: torch.Tensor, index: Sequence[int] | None = None) -> torch.Tensor:
        if index is not None:
            return self.select(index)(x)
        h = F.relu(self.bn0(self.conv0(x)))
        for dw, pw, bn in zip(self.depthwise, self.pointwise, self.norms):
            h = F.relu(bn(pw(dw(h))))
        # Channels are model-major (model k owns channels k*F .. k*F+F-1), so a reshape
        # gives each model its own (F, m, m) block in the same order as CompactNet.
        h = h.reshape(h.shape[0], self.k, -1)
        drive = torch.einsum("bkd,kd->bk", h, self.readout_weight.to(h.dtype)) + self.readout_bias
        return self.rate_scale * F.softplus(drive.float())

    # --- conversion between the two forms -------------------------------------------------
    @classmethod
    def from_models(cls, models: Sequence[CompactNet]) -> "StackedCompact":
        spec = models[0].spec
        if any(m.spec != spec for m in models):
            raise ValueError("only models of one architecture can be stacked")
        out = cls(spec, len(models)).to(next(models[0].parameters()).device)
        with torch.no_grad():
            out.conv0.weight.copy_(torch.cat([m.conv0.weight for m in models]))
            _copy_bn(out.bn0, [m.bn0 for m in models])
            for i in range(spec.n_layers - 1):
                out.depthwise[i].weight.copy_(torch.cat([m.depthwise[i].weight for m in models]))
                out.pointwise[i].weight.copy_(torch.cat([m.pointwise[i].weight for m in models]))
                _copy_bn(out.norms[i], [m.norms[i] for m in models])
            out.readout_weight.copy_(torch.stack([m.readout_weight.flatten() for m in models]))
            out.readout_bias.copy_(torch.stack([m.readout_bias for m in models]))
            out.rate_scale.copy_(torch.stack([m.rate_scale for m in models]))
        out.train(models[0].training)
        return out

    def to_models(self) -> list[CompactNet]:
        spec, K = self.spec, self.k
        device = self.readout_weight.device
        models = [CompactNet(spec).to(device) for _ in range(K)]
        f = spec.filters
        with torch.no_grad():
            for j, m in enumerate(models):
                m.conv0.weight.copy_(self.conv0.weight[j * f[0] : (j + 1) * f[0]])
                _split_bn(self.bn0, m.bn0, j, f[0])
                for i in range(spec.n_layers - 1):
                    a, b = f[i], f[i + 1]
                    m.depthwise[i].weight.copy_(self.depthwise[i].weight[j * a : (j + 1) * a])
                    m.pointwise[i].weight.copy_(self.pointwise[i].weight[j * b : (j + 1) * b])
                    _split_bn(self.norms[i], m.norms[i], j, b)
                m.readout_weight.copy_(self.readout_weight[j].reshape(m.readout_weight.shape))
                m.readout_bias.copy_(self.readout_bias[j])
                m.rate_scale.copy_(self.rate_scale[j])
                m.train(self.training)
        return models

    def select(self, index: Sequence[int]) -> "StackedCompact":
        """A new stacked network holding only models `index` (copies; used to compute few neurons)."""
        models = self.to_models()
        return StackedCompact.from_models([models[i] for i in index]).train(self.training)


def _copy_bn(dst: nn.BatchNorm2d, srcs: Sequence[nn.BatchNorm2d]) -> None:
    dst.weight.copy_(torch.cat([s.weight for s in srcs]))
    dst.bias.copy_(torch.cat([s.bias for s in srcs]))
    dst.running_mean.copy_(torch.cat([s.running_mean for s in srcs]))
    dst.running_var.copy_(torch.cat([s.running_var for s in srcs]))
    dst.num_batches_tracked.copy_(srcs[0].num_batches_tracked)


def _split_bn(src: nn.BatchNorm2d, dst: nn.BatchNorm2d, j: int, n: int) -> None:
    sl = slice(j * n, (j + 1) * n)
    dst.weight.copy_(src.weight[sl])
    dst.bias.copy_(src.bias[sl])
    dst.running_mean.copy_(src.running_mean[sl])
    dst.running_var.copy_(src.running_var[sl])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


def build_form(form: str, models: Sequence[CompactNet]) -> LoopForm | StackedCompact:
    """'loop' or 'stacked' holding `models` (already resolved from 'auto')."""
    if form == "stacked":
        return StackedCompact.from_models(models)
    if form == "loop":
        return LoopForm(models)
    raise ValueError(f"unknown form {form!r}")


def time_forms(
    spec: CompactSpec,
    n_models: int,
    batch_size: int,
    device: torch.device,
    steps: int = 2,
    forms: Sequence[str] = ("loop", "stacked"),
    channels_last: bool = False,
) -> dict[str, float]:
    """Seconds per training step (forward, backward, Adam) of each form, after one warm-up step."""
    import time

    x = torch.rand(batch_size, spec.in_channels, spec.image_size, spec.image_size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out = {}
    for form in forms:
        net = build_form(form, make_models(spec, n_models)).to(device)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(net.parameters(), 1e-4)
        for i in range(steps + 1):
            if i == 1:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
            loss = net(x).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        out[form] = (time.perf_counter() - t0) / steps
    return out


def resolve_form(
    form: str,
    device: torch.device,
    spec: CompactSpec | None = None,
    n_models: int = 1,
    batch_size: int = 32,
    channels_last: bool = False,
    max_timed: int = 16,
) -> str:
    """'auto' -> whichever form trains faster here, timed on up to `max_timed` models (cost scales with K
    in both forms, so a slice of the set decides for the whole). Without a spec: stacked on CUDA,
    loop elsewhere."""
    if form != "auto":
        return form
    if spec is None:
        return "stacked" if device.type == "cuda" else "loop"
    times = time_forms(spec, min(n_models, max_timed), batch_size, device, channels_last=channels_last)
    return min(times, key=times.get)
