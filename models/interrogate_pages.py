"""The pages `cortexloop interrogate` draws: one per neuron and one for the population (docs/interpret.md).

Per neuron (`interpret/neuron_NNN.png`): its top natural images with the occlusion map over each, its MEI with
the predicted and (on a virtual cortex) true rate, the tuning curves of the compact model with the teacher's
and the truth's overlaid, the receptive field map, the first-layer kernels drawn so their structure shows
(each kernel at its own contrast, lightly smoothed) and the fingerprint in words. The population page
(`interpret/population.png`) groups the neurons by the family the battery typed, each shown by its MEI, beside
the typing's confusion matrix against the true types.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

CURVES = (
    ("gratings", "orientation"),
    ("gratings", "spatial_frequency"),
    ("size", "size"),
    ("bars", "bar_length"),
    ("curvature", "curvature"),
    ("dots", "dot_size"),
    ("hue", "hue"),
    ("texture", "texture"),
)


def smooth_kernels(w: np.ndarray, sigma: float = 0.5) -> np.ndarray:
    """(F, C, k, k) kernels, each blurred by a Gaussian of `sigma` pixels (3x3 taps) and scaled to [0, 1] by its own
    largest absolute value around mid grey, returned (F, k, k, C) for display."""
    taps = np.exp(-(np.arange(-1, 2) ** 2) / (2 * sigma**2))
    taps /= taps.sum()
    out = np.empty(w.shape[:1] + w.shape[2:] + w.shape[1:2])
    for f in range(w.shape[0]):
        k = w[f]
        pad = np.pad(k, ((0, 0), (1, 1), (1, 1)), mode="edge")
        rows = sum(t * pad[:, i : i + k.shape[1], 1:-1] for i, t in enumerate(taps))
        pad = np.pad(rows, ((0, 0), (0, 0), (1, 1)), mode="edge")
        sm = sum(t * pad[:, :, i : i + k.shape[2]] for i, t in enumerate(taps))
        sm = sm - sm.mean()
        span = np.abs(sm).max() or 1.0
        out[f] = (0.5 + 0.5 * sm / span).transpose(1, 2, 0)
    return out


def _meis(models: dict, neurons: list[int], natural: np.ndarray, caps: dict, colour: bool, steps: int) -> dict:
    """Each neuron's MEI (uint8 (S, S, 3)), bounded by the top of its trained range as compress bounds it, from its
    best natural image."""
    from models.compress import bounded_meis
    from models.interrogate import _to_channels

    ms = [models[n].cpu().eval() for n in neurons]
    for m in ms:
        for p in m.parameters():
            p.requires_grad_(False)
    with torch.no_grad():
        x = _to_channels(natural, colour)
        rates = torch.stack([m(x) for m in ms], 1)
    starts = [int(torch.argmax(rates[:, k])) for k in range(len(ms))]
    init = np.clip(np.rint(natural[starts] * 255), 0, 255).astype(np.uint8)
    if not colour:
        init = np.clip(np.rint(init @ np.array([0.299, 0.587, 0.114])), 0, 255).astype(np.uint8)[..., None]
    cap = [caps.get(n, float(rates[:, k].max())) for k, n in enumerate(neurons)]
    meis = bounded_meis(ms, cap, init, steps)
    if meis.shape[-1] == 1:
        meis = np.repeat(meis, 3, -1)
    return {n: meis[k] for k, n in enumerate(neurons)}


def write_pages(
    result: dict, out_dir: Path, models: dict, probe, colour: bool, population=None, mei_steps: int = 60
) -> None:
    """Draw interpret/neuron_NNN.png for every neuron of `result` and interpret/population.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from models.interrogate import _to_channels

    out_dir.mkdir(parents=True, exist_ok=True)
    neurons = [r["neuron"] for r in result["neurons"]]
    report = out_dir.parent / "report.json"
    caps = {}
    if report.exists():
        for row in json.loads(report.read_text()).get("neurons", []):
            caps[row["neuron"]] = row["trained_rate_range_hz"][1]
    meis = _meis(models, neurons, probe.natural, caps, colour, mei_steps)
    with torch.no_grad():
        mei_pred = {n: float(models[n](_to_channels(meis[n][None] / 255.0, colour))[0]) for n in neurons}
    mei_true = {}
    if population is not None:
        stack = np.stack([meis[n] for n in neurons]).astype(np.float32) / 255.0
        if not colour:
            stack = (stack @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
        tr = population.rates(stack)
        mei_true = {n: float(tr[k, n]) for k, n in enumerate(neurons)}
    for row in result["neurons"]:
        n = row["neuron"]
        _neuron_page(plt, row, result, models[n], probe, meis[n], mei_pred[n], mei_true.get(n), caps.get(n), out_dir)
    _population_page(plt, result, meis, out_dir / "population.png")


def _curve(result: dict, system: str, n: int, exp: str, name: str):
    b = result["batteries"].get(system, {}).get(str(n))
    if b is None or exp not in b["experiments"]:
        return None
    return b["experiments"][exp]["curves"].get(name)


def _neuron_page(plt, row, result, model, probe, mei, mei_pred, mei_true, cap, out_dir: Path) -> None:
    n = row["neuron"]
    fig = plt.figure(figsize=(15, 9.2))
    grid = fig.add_gridspec(3, 8, height_ratios=[1.1, 1, 1.05], hspace=0.55, wspace=0.45)
    # Row 1: MEI, then the top natural images, each with its occlusion map beside it.
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(mei, interpolation="nearest")
    title = f"MEI: predicted {mei_pred:.0f} sp/s"
    if mei_true is not None:
        title += f"\ntrue {mei_true:.0f} sp/s"
    if cap is not None:
        title += f"\n(trained max {cap:.0f})"
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    b = result["batteries"]["compact"][str(n)]["experiments"]
    nat = b.get("natural", {}).get("maps", {})
    occ = b.get("occlusion", {}).get("maps", {}).get("occlusion", [])
    truth_b = result["batteries"].get("truth_on_compact", {}).get(str(n), {}).get("experiments", {})
    true_occ = truth_b.get("occlusion", {}).get("maps", {}).get("occlusion", [])
    true_nat = truth_b.get("natural", {}).get("features", {})
    for j, (i, hz) in enumerate(zip(nat.get("natural_top", []), nat.get("natural_top_hz", []))):
        ax = fig.add_subplot(grid[0, 1 + 2 * j])
        ax.imshow(probe.natural[i], interpolation="nearest")
        ax.set_title(f"natural #{i}: {hz + result['batteries']['compact'][str(n)]['blank_hz']:.0f} sp/s", fontsize=8)
        ax.axis("off")
        ax = fig.add_subplot(grid[0, 2 + 2 * j])
        if j < len(occ):
            m = np.asarray(occ[j])
            lim = float(np.abs(m).max()) or 1.0
            ax.imshow(probe.natural[i].mean(-1), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            s = probe.size_px
            ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim, alpha=0.6, extent=(-0.5, s - 0.5, s - 0.5, -0.5))
            t = "occlusion: drop in rate"
            if j < len(true_occ):
                tm = np.asarray(true_occ[j]).ravel()
                if tm.std() > 1e-9 and m.std() > 1e-9:
                    t += f"\nr with truth's {np.corrcoef(m.ravel(), tm)[0, 1]:.2f}"
            ax.set_title(t, fontsize=8)
        ax.axis("off")
    _ = true_nat
    # Row 2: the tuning curves, compact (black), teacher (blue), truth on the same stimuli (red).
    for j, (exp, name) in enumerate(CURVES):
        ax = fig.add_subplot(grid[1, j])
        c = _curve(result, "compact", n, exp, name)
        if c is None:
            ax.axis("off")
            continue
        x = np.asarray(c["x"])
        for system, style, label in (
            ("truth_on_compact", dict(color="tab:red", lw=1.5), "truth"),
            ("teacher", dict(color="tab:blue", lw=1, ls="--"), "teacher"),
            ("compact", dict(color="k", lw=1.5), "compact"),
        ):
            cc = _curve(result, system, n, exp, name)
            if cc is not None and len(cc["y"]) == len(x):
                ax.plot(np.arange(len(x)) if name == "texture" else x, cc["y"], label=label, **style)
        if name in ("spatial_frequency", "size", "bar_length", "dot_size"):
            from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_locator(FixedLocator([x[0], x[len(x) // 2], x[-1]]))
            ax.xaxis.set_major_formatter(FormatStrFormatter("%.2g"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        r = row["compact"].get("curve_r", {}).get(name)
        tuned = name in row.get("truth", {}).get("tuned_curves", [])
        ax.set_title(
            f"{name.replace('_', ' ')}"
            + (f"\nr = {r:.2f}" if r is not None else "")
            + ("" if tuned or "truth" not in row else " (truth flat)"),
            fontsize=8,
        )
        ax.set_xlabel(c["xlabel"], fontsize=7)
        ax.tick_params(labelsize=6)
        if j == 0:
            ax.set_ylabel("sp/s above blank", fontsize=7)
            ax.legend(fontsize=6, frameon=False)
    # Row 3: RF map (compact, truth), first-layer kernels, the fingerprint in words.
    pos = b.get("position", {}).get("maps", {}).get("position")
    tpos = truth_b.get("position", {}).get("maps", {}).get("position")
    for j, (m, t) in enumerate(((pos, "RF map, compact"), (tpos, "RF map, truth"))):
        ax = fig.add_subplot(grid[2, j])
        if m is not None:
            ax.imshow(np.asarray(m), cmap="magma", interpolation="bilinear")
            ax.set_title(t, fontsize=8)
        ax.axis("off")
    w = model.state_dict()["conv0.weight"].detach().cpu().numpy()
    k = smooth_kernels(w)
    if k.shape[-1] == 1:
        k = np.repeat(k, 3, -1)
    cols = int(np.ceil(np.sqrt(len(k) * 2)))
    rows_ = int(np.ceil(len(k) / cols))
    ks = k.shape[1]
    canvas = np.ones((rows_ * (ks + 1), cols * (ks + 1), 3))
    for i in range(len(k)):
        r_, q = divmod(i, cols)
        canvas[r_ * (ks + 1) : r_ * (ks + 1) + ks, q * (ks + 1) : q * (ks + 1) + ks] = k[i]
    ax = fig.add_subplot(grid[2, 2:4])
    ax.imshow(canvas, interpolation="bilinear")
    ax.set_title(f"layer 0: {len(k)} kernels (each at its own contrast, smoothed)", fontsize=8)
    ax.axis("off")
    ax = fig.add_subplot(grid[2, 4:8])
    ax.axis("off")
    lines = [f"typed: {row['compact']['family']}  (teacher: {row.get('teacher', {}).get('family', '-')})"]
    lines += _wrap(row["compact"]["words"], 90)
    lines.append(f"why: {row['compact']['reason']}")
    if "truth" in row:
        t = row["truth"]
        lines.append(
            f"true type: {t['type']} (family {t['family']}); battery on the true neuron: {t['battery_family']}"
        )
        rs = [v for c_, v in row["compact"].get("curve_r", {}).items() if v is not None and c_ in t["tuned_curves"]]
        if rs:
            lines.append(f"median r of the tuned curves with the truth: {np.median(rs):.2f} ({len(rs)} curves)")
        desc = {
            k_: v
            for k_, v in t["described"].items()
            if k_ not in ("neuron", "type", "baseline_hz", "peak_hz", "suppression_index", "rf_sigma_px")
        }
        lines += _wrap("truth: " + ", ".join(f"{k_} {_fmt(v)}" for k_, v in desc.items()), 90)
    ax.text(0, 1, "\n".join(lines), va="top", fontsize=8.5, family="monospace")
    fig.suptitle(f"neuron {n}: what the compact model says it computes", fontsize=11)
    fig.subplots_adjust(left=0.04, right=0.99, top=0.9, bottom=0.05)
    fig.savefig(out_dir / f"neuron_{n:03d}.png", dpi=72)
    plt.close(fig)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.1f}"
    if isinstance(v, list):
        return "(" + ", ".join(_fmt(x) for x in v) + ")"
    return str(v)


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]


def _population_page(plt, result: dict, meis: dict, path: Path) -> None:
    from stimulus.fingerprint import FAMILIES

    rows = result["neurons"]
    groups = {f: [r for r in rows if r["compact"]["family"] == f] for f in FAMILIES}
    groups = {f: g for f, g in groups.items() if g}
    width = max(len(g) for g in groups.values())
    has_truth = "confusion" in result and "compact" in result["confusion"]
    fig = plt.figure(figsize=(max(10, 1.15 * width + (5 if has_truth else 0)), 1.35 * len(groups) + 1.2))
    grid = fig.add_gridspec(len(groups), width + (5 if has_truth else 0), wspace=0.15, hspace=0.6)
    for gi, (fam, g) in enumerate(groups.items()):
        for j in range(width):
            ax = fig.add_subplot(grid[gi, j])
            ax.axis("off")
            if j >= len(g):
                continue
            r = g[j]
            ax.imshow(meis[r["neuron"]], interpolation="nearest")
            label = f"n{r['neuron']}"
            if "truth" in r:
                ok = r["truth"]["family"] == fam
                label += f"\n{r['truth']['type']}" + ("" if ok else " ✗")
            ax.set_title(label, fontsize=7, color="k" if "truth" not in r or r["truth"]["family"] == fam else "tab:red")
            if j == 0:
                ax.text(-0.15, 0.5, f"{fam}\n({len(g)})", transform=ax.transAxes, ha="right", va="center", fontsize=9)
    if has_truth:
        conf = result["confusion"]["compact"]
        true_f = [f for f in FAMILIES if f in conf]
        mat = np.array([[conf[t][f] for f in FAMILIES] for t in true_f])
        ax = fig.add_subplot(grid[:, width + 1 :])
        ax.imshow(mat, cmap="Greys", vmin=0, vmax=max(1, mat.max()))
        for i in range(mat.shape[0]):
            for j in range(mat.shape[1]):
                if mat[i, j]:
                    ax.text(j, i, str(mat[i, j]), ha="center", va="center", color="tab:orange", fontsize=9)
        ax.set_xticks(range(len(FAMILIES)), FAMILIES, rotation=60, fontsize=7)
        ax.set_yticks(range(len(true_f)), true_f, fontsize=7)
        ax.set_xlabel("typed from the compact model", fontsize=8)
        ax.set_ylabel("true family", fontsize=8)
        s = result["summary"]["compact"]
        ax.set_title(f"typing: {s['typed_share']:.0%} right", fontsize=9)
    fig.suptitle(
        "Neurons grouped by the family the battery typed (each shown by its MEI; true type below, ✗ wrong)", fontsize=10
    )
    fig.subplots_adjust(left=0.08, right=0.98, top=0.88, bottom=0.12)
    fig.savefig(path, dpi=72)
    plt.close(fig)
