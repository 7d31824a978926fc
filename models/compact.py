"""The compact per-neuron CNN (after Cowley et al. 2026), one readable file.

    image (C, H, W) in [0, 1]
      -> full KxK conv, C -> F0 filters, stride s0, batch norm, ReLU
      -> (n_layers - 1) x [ depthwise KxK conv, stride s_i ; pointwise 1x1 conv F_{i-1} -> F_i ;
                            batch norm ; ReLU ]
      -> dense spatial readout: one weight per (filter, row, column) of the last map, plus a bias
      -> rate = rate_scale * softplus(.)   (spikes/s, never negative; `readout = "softplus"`)
         or rate = rate_scale * (.)            (the paper's linear readout; `readout = "linear"`)

`rate_scale` is a fixed buffer set before training (`set_mean_rate`), so that a
freshly initialised model already predicts about the right rate and the optimizer
only has to learn the modulation. Every layer may have its own number of filters:
pruning makes them differ.

The softplus readout is what the online ensemble uses (its Poisson loss needs a rate
that is never negative). Cowley et al. distilled into a linear readout trained with
squared error; `cortexloop compress` offers both (`compression.student_readout`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

READOUTS = ("softplus", "linear")


@dataclass(frozen=True)
class CompactSpec:
    """Everything needed to rebuild the architecture (also written next to saved weights)."""

    in_channels: int = 3
    image_size: int = 32
    filters: tuple[int, ...] = (8, 8, 8, 8, 8)
    strides: tuple[int, ...] = (1, 2, 2, 1, 1)
    kernel_size: int = 5
    readout: str = "softplus"

    def __post_init__(self) -> None:
        if len(self.filters) != len(self.strides) or not self.filters:
            raise ValueError("filters and strides need one entry per layer")
        if min(self.filters) < 1:
            raise ValueError("every layer needs at least one filter")
        if self.readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {self.readout!r}")

    @property
    def n_layers(self) -> int:
        return len(self.filters)

    @property
    def map_size(self) -> int:
        """Side of the last feature map (padding keeps 'same' size before striding)."""
        s = self.image_size
        for st in self.strides:
            s = (s - 1) // st + 1
        return s

    def with_filters(self, filters: list[int] | tuple[int, ...]) -> "CompactSpec":
        return replace(self, filters=tuple(int(f) for f in filters))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["filters"], d["strides"] = list(self.filters), list(self.strides)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CompactSpec":
        # A spec without "readout" (format cortexloop.compact/1) means softplus.
        return cls(
            int(d["in_channels"]),
            int(d["image_size"]),
            tuple(d["filters"]),
            tuple(d["strides"]),
            int(d["kernel_size"]),
            str(d.get("readout", "softplus")),
        )

    @classmethod
    def from_config(cls, cfg, image_shape: tuple[int, int, int]) -> "CompactSpec":
        """From a ModelConfig and the stored image shape (H, W, C)."""
        h, w, c = image_shape
        if h != w:
            raise ValueError(f"compact models expect square images, got {h}x{w}")
        return cls(c, h, (cfg.filters_per_layer,) * cfg.n_layers, tuple(cfg.layer_strides()), cfg.kernel_size)


class CompactNet(nn.Module):
    """One compact model: (B, C, H, W) -> (B,) rates in spikes/s."""

    def __init__(self, spec: CompactSpec, seed: int | None = None):
        super().__init__()
        self.spec = spec
        gen = None
        if seed is not None:
            gen = torch.Generator().manual_seed(seed)
        k, pad = spec.kernel_size, spec.kernel_size // 2
        # Batch norm follows every conv, so the convs carry no bias.
        self.conv0 = nn.Conv2d(spec.in_channels, spec.filters[0], k, spec.strides[0], pad, bias=False)
        self.bn0 = nn.BatchNorm2d(spec.filters[0])
        self.depthwise = nn.ModuleList()
        self.pointwise = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i in range(1, spec.n_layers):
            f_in, f_out = spec.filters[i - 1], spec.filters[i]
            self.depthwise.append(nn.Conv2d(f_in, f_in, k, spec.strides[i], pad, groups=f_in, bias=False))
            self.pointwise.append(nn.Conv2d(f_in, f_out, 1, bias=False))
            self.norms.append(nn.BatchNorm2d(f_out))
        m = spec.map_size
        self.readout_weight = nn.Parameter(torch.zeros(spec.filters[-1], m, m))
        self.readout_bias = nn.Parameter(torch.zeros(()))
        self.register_buffer("rate_scale", torch.ones(()))
        self._init_weights(gen)

    def _init_weights(self, gen: torch.Generator | None) -> None:
        # Kaiming-uniform as torch does by default, but drawn from our own generator
        # so that a model's weights depend on its seed only.
        with torch.no_grad():
            for conv in [self.conv0, *self.depthwise, *self.pointwise]:
                fan_in = conv.weight[0].numel()
                bound = math.sqrt(6.0 / fan_in)
                conv.weight.copy_(torch.rand(conv.weight.shape, generator=gen) * 2 * bound - bound)
            # A small readout: the model starts near its mean rate.
            n_in = self.readout_weight.numel()
            self.readout_weight.copy_(torch.randn(self.readout_weight.shape, generator=gen) * 0.1 / math.sqrt(n_in))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map (B, F_last, m, m)."""
        x = F.relu(self.bn0(self.conv0(x)))
        for dw, pw, bn in zip(self.depthwise, self.pointwise, self.norms):
            x = F.relu(bn(pw(dw(x))))
        return x

    def drive(self, x: torch.Tensor) -> torch.Tensor:
        """Readout before the output nonlinearity (B,)."""
        feats = self.features(x)
        return (feats * self.readout_weight.to(feats.dtype)).flatten(1).sum(1) + self.readout_bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return output_rate(self.drive(x).float(), self.rate_scale, self.spec.readout)

    @torch.no_grad()
    def set_mean_rate(self, mean_rate_hz: float, spread_hz: float | None = None) -> None:
        """Start the output at the neuron's mean rate.

        softplus: scale so that a drive of 0 predicts `mean_rate_hz`. linear: scale by the
        spread (standard deviation) of the rates and put the mean in the bias, so the drive
        starts in units of that spread, as the softplus drive does.
        """
        if self.spec.readout == "linear":
            scale = max(float(spread_hz if spread_hz is not None else mean_rate_hz), 0.1)
            self.rate_scale.fill_(scale)
            self.readout_bias.fill_(float(mean_rate_hz) / scale)
        else:
            self.rate_scale.fill_(max(float(mean_rate_hz), 0.1) / math.log(2.0))


def output_rate(drive: torch.Tensor, rate_scale: torch.Tensor, readout: str) -> torch.Tensor:
    """Drive -> spikes/s (shared by the single and the stacked models)."""
    if readout == "linear":
        return rate_scale * drive
    return rate_scale * F.softplus(drive)


def count_parameters(model: nn.Module) -> int:
    """Trainable numbers (batch-norm running statistics are not counted, as in the paper)."""
    return sum(p.numel() for p in model.parameters())


def filters_per_layer(model: CompactNet) -> list[int]:
    return list(model.spec.filters)


def make_models(spec: CompactSpec, n: int, seed: int = 0, ids: Sequence[int] | None = None) -> list[CompactNet]:
    """`n` models of the same architecture; model i is seeded with (seed, ids[i]) (ids default 0..n-1), so a
    model's initial weights depend on its id only, not on which other models are made with it."""
    ids = list(range(n)) if ids is None else [int(i) for i in ids]
    if len(ids) != n:
        raise ValueError(f"{n} models but {len(ids)} ids")
    return [CompactNet(spec, seed=seed * 100003 + i) for i in ids]


@torch.no_grad()
def smooth_kernels(net: nn.Module, sigma: float) -> None:
    """Gaussian smoothing (std `sigma` in taps) of every depthwise kernel and of the readout map, in place.

    As Cowley et al. did during distillation: it keeps kernels and readout maps
    spatially smooth, which they found costs no accuracy at sigma 0.5 and makes
    the models easier to read. The first (full) conv is left alone (smoothing it
    hurt in their hands). Works on a CompactNet and on a stacked network of them
    (both have `depthwise`, `readout_weight` and `spec`). Edges reflect, as
    scipy.ndimage.gaussian_filter does by default.
    """
    if sigma <= 0:
        return
    from scipy.ndimage import gaussian_filter

    def smooth(w: torch.Tensor, shape: tuple[int, ...]) -> None:
        a = w.detach().float().cpu().numpy().reshape(shape)
        a = gaussian_filter(a, sigma=[0.0] * (a.ndim - 2) + [sigma, sigma])
        w.copy_(torch.from_numpy(a).reshape(w.shape).to(w.dtype))

    for dw in net.depthwise:
        smooth(dw.weight, tuple(dw.weight.shape))
    m = net.spec.map_size
    smooth(net.readout_weight, (-1, m, m))


def student_spec(cfg, compression, image_shape: tuple[int, int, int]) -> CompactSpec:
    """The architecture `cortexloop compress` distils into, from a ModelConfig, a CompressionConfig and the image
    shape (H, W, C)."""
    spec = CompactSpec.from_config(cfg, image_shape)
    filters = compression.student_filters_per_layer or cfg.filters_per_layer
    strides = tuple(cfg.layer_strides(compression.student_strides or None))
    return replace(spec, filters=(filters,) * cfg.n_layers, strides=strides, readout=compression.student_readout)
