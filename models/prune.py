"""Filter pruning of one compact model, with the rule of Cowley et al. 2026.

From the last layer back:
- last layer: each filter's contribution to the output drive is
  c_f(x) = sum over positions of readout_weight[f] * activation_f(x). Filters are
  ranked by the spread (standard deviation over images) of c_f; the fewest
  top-ranked filters are kept whose model still reaches an r^2 with the teacher of
  at least `keep_r2_frac` of the unpruned model's r^2.
- every earlier layer: filters ranked by the variance of their output (over images
  and positions); the fewest top-ranked filters are kept that hold at least
  `keep_variance_frac` of the layer's total output variance.
- never fewer than `min_filters` filters in a layer.

A removed filter is replaced by its mean output, folded into what follows (the
readout bias for the last layer, the next batch norm's running mean otherwise), so
the pruned model starts close to the original. Retraining (models/distill.py)
then recovers the rest. Works on models in eval mode (running statistics).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from models.compact import CompactNet, count_parameters
from models.metrics import r2


@dataclass
class PruneResult:
    model: CompactNet
    filters_before: list[int]
    filters_after: list[int]
    params_before: int
    params_after: int
    r2_before: float  # with the teacher, unpruned
    r2_after: float  # with the teacher, pruned, before retraining


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


@torch.no_grad()
def slice_model(model: CompactNet, keep: list[list[int]], mean_acts: list[torch.Tensor] | None = None,
                mean_contrib: torch.Tensor | None = None) -> CompactNet:
    """A new model with only filters keep[l] in layer l.

    mean_acts[l] (F_l,) and mean_contrib (F_last,) let removed filters be replaced by their means.
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
        if mean_acts is not None:
            # The removed inputs' constant mean, through the depthwise kernel (sum of its
            # taps, borders ignored) and the pointwise weights, shifted the pre-norm value.
            removed = _removed(keep[i - 1], model.spec.filters[i - 1])
            if removed:
                r = torch.as_tensor(removed)
                through_dw = mean_acts[i - 1][r] * dw[r].sum(dim=(1, 2, 3))
                shift = pw[k_out][:, r, 0, 0] @ through_dw
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
def _predict(model: CompactNet, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])


def choose_last_layer(contrib: torch.Tensor, bias: torch.Tensor, rate_scale: torch.Tensor, teacher: torch.Tensor,
                      target_r2: float, min_filters: int) -> list[int]:
    """contrib (B, F): per-filter contributions to the drive. Returns the filters to keep (sorted)."""
    n_f = contrib.shape[1]
    order = torch.argsort(contrib.std(0), descending=True).tolist()
    means = contrib.mean(0)
    for m in range(min(min_filters, n_f), n_f + 1):
        kept = order[:m]
        drive = contrib[:, kept].sum(1) + means[order[m:]].sum() + bias
        pred = rate_scale * F.softplus(drive)
        if r2(pred, teacher)[0] >= target_r2:
            return sorted(kept)
    return list(range(n_f))


def choose_by_variance(acts: torch.Tensor, keep_frac: float, min_filters: int) -> list[int]:
    """acts (B, F, h, w): keep the fewest highest-variance filters holding keep_frac of the total variance."""
    var = acts.transpose(0, 1).flatten(1).var(1)
    n_f = len(var)
    total = float(var.sum())
    order = torch.argsort(var, descending=True).tolist()
    if total <= 0:
        return sorted(order[:min(min_filters, n_f)])
    cum = np.cumsum(var[order].cpu().numpy()) / total
    m = int(np.searchsorted(cum, keep_frac - 1e-9) + 1)
    return sorted(order[:max(min(min_filters, n_f), min(m, n_f))])


@torch.no_grad()
def prune_model(model: CompactNet, images: torch.Tensor, teacher: torch.Tensor, keep_r2_frac: float = 0.9,
                keep_variance_frac: float = 0.9, min_filters: int = 3) -> PruneResult:
    """Prune one model against its teacher's rates (B,) on `images` (B, C, H, W)."""
    model = model.eval()
    before = list(model.spec.filters)
    params_before = count_parameters(model)
    r2_before = float(r2(_predict(model, images), teacher)[0])

    # Last layer: spread of each filter's contribution to the output.
    acts = layer_activations(model, images)
    contrib = (acts[-1] * model.readout_weight).flatten(2).sum(2)  # (B, F_last)
    keep = [list(range(f)) for f in before]
    keep[-1] = choose_last_layer(contrib, model.readout_bias, model.rate_scale, teacher,
                                 keep_r2_frac * r2_before, min_filters)
    current = slice_model(model, keep, mean_contrib=contrib.mean(0))

    # Earlier layers, from the back: variance of each filter's output.
    for layer in range(len(before) - 2, -1, -1):
        acts = layer_activations(current, images)
        keep_l = choose_by_variance(acts[layer], keep_variance_frac, min_filters)
        if len(keep_l) == current.spec.filters[layer]:
            continue
        keep_all = [list(range(f)) for f in current.spec.filters]
        keep_all[layer] = keep_l
        mean_acts = [a.mean(dim=(0, 2, 3)) for a in acts]
        current = slice_model(current, keep_all, mean_acts=mean_acts)

    r2_after = float(r2(_predict(current, images), teacher)[0])
    return PruneResult(current, before, list(current.spec.filters), params_before, count_parameters(current),
                       r2_before, r2_after)
