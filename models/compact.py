"""The compact per-neuron CNN (after Cowley et al. 2026), one readable file.

    image (C, H, W) in [0, 1]
      -> full KxK conv, C -> F0 filters, stride s0, batch norm, ReLU
      -> (n_layers - 1) x [ depthwise KxK conv, stride s_i ; pointwise 1x1 conv F_{i-1} -> F_i ;
                            batch norm ; ReLU ]
      -> dense spatial readout: one weight per (filter, row, column) of the last map, plus a bias
      -> rate = rate_scale * softplus(.)   (spikes/s, never negative)

`rate_scale` is a fixed buffer set from the neuron's mean rate before training, so
that a freshly initialised model already predicts about the right rate and the
optimizer only has to learn the modulation. Every layer may have its own number of
filters: pruning makes them differ.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class CompactSpec:
    """Everything needed to rebuild the architecture (also written next to saved weights)."""

    in_channels: int = 3
    image_size: int = 32
    filters: tuple[int, ...] = (8, 8, 8, 8, 8)
    strides: tuple[int, ...] = (1, 2, 2, 1, 1)
    kernel_size: int = 5

    def __post_init__(self) -> None:
        if len(self.filters) != len(self.strides) or not self.filters:
            raise ValueError("filters and strides need one entry per layer")
        if min(self.filters) < 1:
            raise ValueError("every layer needs at least one filter")

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
        return CompactSpec(self.in_channels, self.image_size, tuple(int(f) for f in filters), self.strides,
                           self.kernel_size)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["filters"], d["strides"] = list(self.filters), list(self.strides)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CompactSpec":
        return cls(int(d["in_channels"]), int(d["image_size"]), tuple(d["filters"]), tuple(d["strides"]),
                   int(d["kernel_size"]))

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
        return self.rate_scale * F.softplus(self.drive(x).float())

    @torch.no_grad()
    def set_mean_rate(self, mean_rate_hz: float) -> None:
        """Scale the output so that a drive of 0 predicts `mean_rate_hz`."""
        self.rate_scale.fill_(max(float(mean_rate_hz), 0.1) / math.log(2.0))


def count_parameters(model: nn.Module) -> int:
    """Trainable numbers (batch-norm running statistics are not counted, as in the paper)."""
    return sum(p.numel() for p in model.parameters())


def filters_per_layer(model: CompactNet) -> list[int]:
    return list(model.spec.filters)


def make_models(spec: CompactSpec, n: int, seed: int = 0) -> list[CompactNet]:
    """`n` models of the same architecture; model i is seeded with (seed, i)."""
    return [CompactNet(spec, seed=seed * 100003 + i) for i in range(n)]

