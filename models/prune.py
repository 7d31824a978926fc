"""Filter pruning of compact models, with the rule of Cowley et al. 2026 (the rule explained: docs/compress.md).

From the last layer back, one layer at a time, never below `min_filters` filters:

- last layer: filters ranked by the spread over images of their contribution to the output drive; the fewest
  top-ranked kept whose model still reaches `keep_r2_frac` of the unpruned model's r^2 with the teacher.
- earlier layer l: filters ranked by var(d_j) * |w_j|^2 (d_j: filter j's depthwise output inside layer l+1,
  w_j: its pointwise weights to the kept filters); the fewest kept whose pointwise output keeps
  `keep_variance_frac` of its variance explained, fv = 1 - |Y - Y_kept|^2 / |Y|^2 (centred per channel).
  fv of every candidate count comes exactly from one Gram matrix per layer.

One forward pass gives every layer's statistics (eval-mode batch norm is per channel, so pruning a later layer
does not change them), for all models at once when stacked. A removed filter's mean output is folded into what
follows (readout bias, or the next batch norm's running mean), so the pruned model starts close to the original;
retraining (models/distill.py) recovers the rest. Models must be in eval mode.

Read from the authors' description and code (cowleygroup/V4_compact_models), not copied; unlike theirs, every
count is evaluated exactly (no bisection) and removed filters' means are folded in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from models.compact import CompactNet, count_parameters, output_rate
from models.metrics import r2
from models.stacked import StackedCompact


@dataclass
class LayerStats:
    """Statistics of the depthwise outputs d_j inside layer l+1, for the filters j of layer l, per model."""

    gram: torch.Tensor  # (K, F, F) sum over images and positions of centred d_i * d_j
    mean: torch.Tensor  # (K, F) mean of d_j over images and positions
    position_variance: torch.Tensor  # (K, F) variance over images at each position, summed over positions


@dataclass
class PruneResult:
    """One pruned model and what pruning kept."""

    model: CompactNet
    filters_before: list[int]
    filters_after: list[int]
    params_before: int
    params_after: int
    r2_before: float  # with the teacher on the pruning images, unpruned
    r2_after: float  # with the teacher on the pruning images, pruned, before retraining
    kept: list[list[int]] = field(default_factory=list)  # indices of the original filters kept, per layer
    explained: list[float] = field(default_factory=list)  # fv kept in each layer's next layer (layers 0..L-2)


# ----------------------------------------------------------------------------- statistics


@torch.no_grad()
def network_statistics(
    net: StackedCompact, images: torch.Tensor, batch: int = 32
) -> tuple[list[LayerStats], torch.Tensor]:
    """One pass over `images`: LayerStats for layers 0..L-2, and the last layer's contributions (B, K, F_last)."""
    spec, K = net.spec, net.n_models
    f = spec.filters
    m = spec.map_size
    n_layers = spec.n_layers
    sums = [None] * (n_layers - 1)  # per layer: (shift, s1 per channel-position, s2 per position, gram, count)
    contribs = []
    readout = net.readout_weight.reshape(K, f[-1], m * m)
    for i in range(0, len(images), batch):
        x = images[i : i + batch]
        h = F.relu(net.bn0(net.conv0(x)))
        for layer, (dw, pw, bn) in enumerate(zip(net.depthwise, net.pointwise, net.norms)):
            d = dw(h)
            _accumulate(sums, layer, d.reshape(len(x), K, f[layer], -1))
            h = F.relu(bn(pw(d)))
        contribs.append(torch.einsum("bkfp,kfp->bkf", h.reshape(len(x), K, f[-1], m * m), readout))
    stats = []
    for shift, s1, s2, gram, n_img in sums:
        n = n_img * s1.shape[-1]
        mean_shifted = s1.sum(-1) / n  # (K, F)
        centred = gram - n * mean_shifted[:, :, None] * mean_shifted[:, None, :]
        pos_var = (s2 - s1**2 / n_img).sum(-1)
        stats.append(LayerStats(centred.float(), (mean_shifted + shift).float(), pos_var.float()))
    return stats, torch.cat(contribs)


def _accumulate(sums: list, layer: int, d: torch.Tensor) -> None:
    """Add a batch d (B, K, F, P) to the running sums, in float64, shifted by the first batch's means.

    The shift keeps the centred Gram (sum - n * mean^2) free of cancellation when a
    channel's mean is large against its spread (ReLU outputs are).
    """
    if sums[layer] is None:
        shift = d.mean(dim=(0, 3)).double()
        k, f, p = d.shape[1:]
        z = torch.zeros
        sums[layer] = [
            shift,
            z(k, f, p, dtype=torch.float64, device=d.device),
            z(k, f, p, dtype=torch.float64, device=d.device),
            z(k, f, f, dtype=torch.float64, device=d.device),
            0,
        ]
    entry = sums[layer]
    dc = d - entry[0].to(d.dtype)[None, :, :, None]
    entry[1] += dc.sum(0).double()
    entry[2] += (dc * dc).sum(0).double()
    entry[3] += torch.einsum("bkfp,bkgp->kfg", dc, dc).double()
    entry[4] += len(d)


# ----------------------------------------------------------------------------- the rules


def explained_variance_curve(gram: torch.Tensor, pointwise: torch.Tensor, order: Sequence[int]) -> torch.Tensor:
    """fv[m] for keeping filters order[:m], m = 0..F: gram (F, F) centred, pointwise (F_out, F) weights."""
    # F x F matrices: on the CPU, wherever the statistics were gathered (the curve is read element by element).
    gram, pointwise = gram.detach().double().cpu(), pointwise.detach().double().cpu()
    g = gram * (pointwise.T @ pointwise)
    idx = torch.as_tensor(list(order))
    g = g[idx][:, idx]
    total = float(g.sum())
    # removed[m] = g[m:, m:].sum(): suffix sums along both axes, read on the diagonal.
    suffix = g.flip(0, 1).cumsum(0).cumsum(1).flip(0, 1)
    removed = torch.cat([suffix.diagonal(), torch.zeros(1, dtype=g.dtype)])
    if total <= 0:
        return torch.ones(len(order) + 1, dtype=torch.float64)
    return 1.0 - removed / total


def choose_by_explained_variance(
    stats_gram: torch.Tensor,
    position_variance: torch.Tensor,
    pointwise: torch.Tensor,
    keep_frac: float,
    min_filters: int,
) -> tuple[list[int], float]:
    """The authors' rule for one layer of one model: (filters to keep, sorted; fv they keep).

    pointwise (F_out, F): the next layer's pointwise weights to the filters still kept there.
    """
    n_f = stats_gram.shape[0]
    score = position_variance.double() * (pointwise.double() ** 2).sum(0)
    order = torch.argsort(score, descending=True, stable=True).tolist()
    fv = explained_variance_curve(stats_gram, pointwise, order)
    least = min(min_filters, n_f)
    for m in range(least, n_f + 1):
        if fv[m] >= keep_frac - 1e-12:
            return sorted(order[:m]), float(fv[m])
    return list(range(n_f)), 1.0


def choose_last_layer(
    contrib: torch.Tensor,
    bias: torch.Tensor,
    rate_scale: torch.Tensor,
    teacher: torch.Tensor,
    target_r2: float,
    min_filters: int,
    readout: str = "softplus",
) -> list[int]:
    """contrib (B, F): per-filter contributions to the drive. Returns the filters to keep (sorted)."""
    n_f = contrib.shape[1]
    order = torch.argsort(contrib.std(0), descending=True, stable=True).tolist()
    means = contrib.mean(0)
    for m in range(min(min_filters, n_f), n_f + 1):
        kept = order[:m]
        drive = contrib[:, kept].sum(1) + means[order[m:]].sum() + bias
        if r2(output_rate(drive, rate_scale, readout), teacher)[0] >= target_r2:
            return sorted(kept)
    return list(range(n_f))


# ----------------------------------------------------------------------------- slicing


@torch.no_grad()
def slice_model(
    model: CompactNet,
    keep: list[list[int]],
    depthwise_means: list[torch.Tensor] | None = None,
    mean_contrib: torch.Tensor | None = None,
) -> CompactNet:
    """A new model with only filters keep[l] in layer l.

    depthwise_means[l] (F_l,): mean depthwise output of layer l's filters inside layer l+1, and
    mean_contrib (F_last,): mean contribution of each last-layer filter, let removed filters be
    replaced by their means.
    """
    spec = model.spec.with_filters([len(k) for k in keep])
    out = CompactNet(spec).to(model.readout_weight.device)
    k0 = torch.as_tensor(keep[0])
    out.conv0.weight.copy_(model.conv0.weight[k0])
    _copy_bn(out.bn0, model.bn0, k0)
    for i in range(1, spec.n_layers):
        k_in, k_out = torch.as_tensor(keep[i - 1]), torch.as_tensor(keep[i])
        dw, pw = model.depthwise[i - 1].weight, model.pointwise[i - 1].weight
        out.depthwise[i - 1].weight.copy_(dw[k_in])
        out.pointwise[i - 1].weight.copy_(pw[k_out][:, k_in])
        _copy_bn(out.norms[i - 1], model.norms[i - 1], k_out)
        removed = _removed(keep[i - 1], model.spec.filters[i - 1])
        if depthwise_means is not None and removed:
            # The removed inputs' mean through the pointwise weights shifted the pre-norm value.
            r = torch.as_tensor(removed)
            shift = pw[k_out][:, r, 0, 0] @ depthwise_means[i - 1][r].to(pw.dtype)
            out.norms[i - 1].running_mean.sub_(shift)
    kl = torch.as_tensor(keep[-1])
    out.readout_weight.copy_(model.readout_weight[kl])
    bias = model.readout_bias.clone()
    removed = _removed(keep[-1], model.spec.filters[-1])
    if mean_contrib is not None and removed:
        bias += mean_contrib[torch.as_tensor(removed)].sum()
    out.readout_bias.copy_(bias)
    out.rate_scale.copy_(model.rate_scale)
    return out.eval()


def _removed(keep: list[int], n: int) -> list[int]:
    kept = set(keep)
    return [f for f in range(n) if f not in kept]


def _copy_bn(dst, src, idx) -> None:
    dst.weight.copy_(src.weight[idx])
    dst.bias.copy_(src.bias[idx])
    dst.running_mean.copy_(src.running_mean[idx])
    dst.running_var.copy_(src.running_var[idx])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


@torch.no_grad()
def layer_activations(model: CompactNet, x: torch.Tensor) -> list[torch.Tensor]:
    """Post-ReLU output of every layer, (B, F_l, h_l, w_l) each."""
    acts = []
    h = F.relu(model.bn0(model.conv0(x)))
    acts.append(h)
    for dw, pw, bn in zip(model.depthwise, model.pointwise, model.norms):
        h = F.relu(bn(pw(dw(h))))
        acts.append(h)
    return acts


# ----------------------------------------------------------------------------- whole models


@torch.no_grad()
def prune_models(
    models: Sequence[CompactNet],
    images: torch.Tensor,
    teacher: torch.Tensor,
    keep_r2_frac: float = 0.9,
    keep_variance_frac: float = 0.9,
    min_filters: int = 3,
    batch: int = 32,
    progress=None,
) -> list[PruneResult]:
    """Prune models of one architecture, model k against teacher[:, k] (rates on `images` (B, C, H, W)).

    The statistics come from one pass of all models stacked; the choices are then per model.
    `progress(k)` is called after each model is pruned.
    """
    models = [m.eval() for m in models]
    net = StackedCompact.from_models(models).eval()
    stats, contribs = network_statistics(net, images, batch)
    teacher = teacher.to(contribs.device)
    results = []
    for k, model in enumerate(models):
        res = _prune_one(model, k, stats, contribs[:, k], teacher[:, k], keep_r2_frac, keep_variance_frac, min_filters)
        pred = torch.cat([res.model(images[i : i + batch]) for i in range(0, len(images), batch)])
        res.r2_after = float(r2(pred, teacher[:, k])[0])
        results.append(res)
        if progress is not None:
            progress(k)
    return results


def prune_model(
    model: CompactNet,
    images: torch.Tensor,
    teacher: torch.Tensor,
    keep_r2_frac: float = 0.9,
    keep_variance_frac: float = 0.9,
    min_filters: int = 3,
) -> PruneResult:
    """Prune one model against its teacher's rates (B,) on `images` (B, C, H, W)."""
    return prune_models([model], images, teacher[:, None], keep_r2_frac, keep_variance_frac, min_filters)[0]


def _prune_one(
    model: CompactNet,
    k: int,
    stats: list[LayerStats],
    contrib: torch.Tensor,
    teacher: torch.Tensor,
    keep_r2_frac: float,
    keep_variance_frac: float,
    min_filters: int,
) -> PruneResult:
    spec = model.spec
    before = list(spec.filters)
    drive = contrib.sum(1) + model.readout_bias
    r2_before = float(r2(output_rate(drive, model.rate_scale, spec.readout), teacher)[0])

    keep: list[list[int]] = [list(range(f)) for f in before]
    keep[-1] = choose_last_layer(
        contrib, model.readout_bias, model.rate_scale, teacher, keep_r2_frac * r2_before, min_filters, spec.readout
    )
    explained = [1.0] * (spec.n_layers - 1)
    for layer in range(spec.n_layers - 2, -1, -1):
        pointwise = model.pointwise[layer].weight[torch.as_tensor(keep[layer + 1]), :, 0, 0]
        s = stats[layer]
        keep[layer], explained[layer] = choose_by_explained_variance(
            s.gram[k], s.position_variance[k], pointwise, keep_variance_frac, min_filters
        )

    pruned = slice_model(model, keep, [s.mean[k] for s in stats], contrib.mean(0))
    return PruneResult(
        pruned,
        before,
        list(pruned.spec.filters),
        count_parameters(model),
        count_parameters(pruned),
        r2_before,
        float("nan"),
        keep,
        explained,
    )
