"""One page that shows the virtual cortex: where its receptive fields are, what each neuron likes, how it fires.

    draw_cortex_sheet(population, images, out_path, title="")

Top left: every receptive field drawn over an image (circles of the RF diameter,
coloured by type, numbered). Top right: each neuron's rates over `images`
(box: quartiles, whiskers: 5th-95th percentile, dot: baseline). Below, one cell
per neuron: its three preferred images with their rates, and a histogram of its
rates over `images` headed by its sparseness (acquisition.population.sparseness: the share
of the natural images that drive it above half its maximum); the title holds the median.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TYPE_COLOURS = {
    "oriented": "#1f77b4",
    "curvature": "#ff7f0e",
    "dot": "#2ca02c",
    "texture": "#9467bd",
    "colour": "#d62728",
    "cnn": "#8c564b",
    "conjunction": "#e377c2",
    "sparse_curvature": "#bcbd22",
    "sparse_texture": "#17becf",
    "custom": "#7f7f7f",
}
MAX_CELLS = 48  # neurons drawn in the per-neuron grid (the page stays readable)


def _type_key(t: str) -> str:
    return "custom" if t.startswith("custom") else t


def _label(d: dict) -> str:
    t = d["type"]
    if t == "oriented":
        return f"ori {d['orientation_deg']:.0f}°"
    if t == "curvature":
        return f"curv {d['turning_deg']:.0f}°"
    if t == "dot":
        return f"dot {d['polarity']}"
    if t == "texture":
        return f"tex {d['texture']}"
    if t == "colour":
        return f"hue {d['hue_deg']:.0f}°" if "hue_deg" in d else f"lum {d['polarity']}"
    if t == "cnn":
        return "cnn"
    if t == "conjunction":
        hue = f"hue {d['hue_deg']:.0f}°" if "hue_deg" in d else d["polarity"]
        return f"conj {d['orientation_deg']:.0f}°+{hue}"
    if t == "sparse_curvature":
        return f"s-curv {d['turning_deg']:.0f}°"
    if t == "sparse_texture":
        return f"s-tex {d['texture']}"
    return "custom"


def _show(ax, img: np.ndarray) -> None:
    ax.imshow(
        img[..., 0] if img.shape[-1] == 1 else img,
        cmap="gray" if img.shape[-1] == 1 else None,
        vmin=0,
        vmax=255,
        interpolation="nearest",
    )
    ax.set_xticks([])
    ax.set_yticks([])


def draw_cortex_sheet(
    population, images: np.ndarray, out_path: str | Path, title: str = "", natural: np.ndarray | None = None
) -> Path:
    """Draw `population` (acquisition.population.Population) against `images` (uint8 (B, H, W, C)); write a PNG.
    natural: (B,) bool, which images are natural (sparseness is measured on those; default all)."""
    import matplotlib

    from acquisition.population import sparseness

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec
    from matplotlib.patches import Circle, Patch

    images = np.asarray(images)
    rates = population.rates(images)
    desc = population.describe()
    n = population.n_neurons
    nat = np.ones(len(images), bool) if natural is None else np.asarray(natural, bool)
    sparse = sparseness(rates[nat], population.baseline_hz)
    shown = min(n, MAX_CELLS)
    cols = 8
    rows = int(np.ceil(shown / cols))
    fig = plt.figure(figsize=(17, 5.5 + 2.3 * rows), dpi=90)
    gs = GridSpec(
        1 + rows, cols, figure=fig, height_ratios=[2.6] + [1.0] * rows, hspace=0.55, wspace=0.25, top=0.95, bottom=0.03
    )
    heading = title or f"virtual cortex: {n} neurons, {len(images)} images, {population.size}x{population.size} px"
    fig.suptitle(
        f"{heading}  ·  sparseness (share of {int(nat.sum())} natural images above half max): "
        f"median {np.median(sparse):.3f}",
        fontsize=14,
        y=0.99,
    )

    # Receptive fields over a natural-looking image: many distinct grey levels (not a
    # binarized gaudy one), and the most colourful of those.
    ax = fig.add_subplot(gs[0, 0:3])
    flat = images.reshape(len(images), -1, images.shape[-1]).astype(np.float32)
    levels = np.array([len(np.unique(im[:, 0])) for im in flat])
    saturation = np.abs(flat - flat.mean(-1, keepdims=True)).mean((1, 2))
    _show(ax, images[int(np.argmax(np.where(levels > 16, saturation + 1.0, 0.0)))])
    ax.imshow(np.full(images.shape[1:3] + (4,), [1.0, 1.0, 1.0, 0.45]), interpolation="nearest")  # fade it
    for d in desc:
        c = d.get("rf_centre_px")
        if c is None or not np.all(np.isfinite(c)):
            continue
        col = TYPE_COLOURS[_type_key(d["type"])]
        ax.add_patch(Circle((c[1], c[0]), d["rf_diameter_px"] / 2, fill=False, lw=1.6, ec=col, alpha=0.9))
        ax.text(c[1], c[0], str(d["neuron"]), color=col, fontsize=8, ha="center", va="center", weight="bold")
    ax.set_xlim(-0.5, population.size - 0.5)
    ax.set_ylim(population.size - 0.5, -0.5)
    ax.set_title("receptive fields (circle: RF diameter)")
    present = sorted({_type_key(d["type"]) for d in desc}, key=list(TYPE_COLOURS).index)
    ax.legend(
        handles=[Patch(color=TYPE_COLOURS[t], label=t) for t in present],
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        fontsize=9,
        frameon=False,
    )

    # Rates of every neuron over the images.
    ax = fig.add_subplot(gs[0, 4:])
    q = np.percentile(rates, [5, 25, 50, 75, 95], axis=0)
    x = np.arange(n)
    colours = [TYPE_COLOURS[_type_key(d["type"])] for d in desc]
    ax.vlines(x, q[0], q[4], color=colours, lw=1)
    ax.bar(x, q[3] - q[1], bottom=q[1], color=colours, alpha=0.6, width=0.7)
    ax.scatter(x, q[2], color="k", s=8, marker="_", label="median")
    ax.scatter(x, population.baseline_hz, color="k", s=10, label="baseline")
    ax.set_xlabel("neuron")
    ax.set_ylabel("rate (spikes/s)")
    ax.set_xlim(-1, n)
    ax.set_title("rates over the images (box: quartiles, line: 5-95 %)")
    ax.legend(fontsize=8, loc="upper right")

    # One cell per neuron: its three preferred images, and its rate histogram.
    for i in range(shown):
        r, c = divmod(i, cols)
        sub = gs[1 + r, c].subgridspec(2, 3, height_ratios=[1.0, 0.8], hspace=0.15, wspace=0.05)
        top = np.argsort(rates[:, i])[::-1][:3]
        for k, j in enumerate(top):
            a = fig.add_subplot(sub[0, k])
            _show(a, images[j])
            a.set_xlabel(f"{rates[j, i]:.0f}", fontsize=7, labelpad=1)
            if k == 0:
                a.set_title(f"#{i} {_label(desc[i])}", fontsize=8, loc="left", color=colours[i])
        h = fig.add_subplot(sub[1, :])
        h.hist(rates[:, i], bins=25, color=colours[i], alpha=0.8)
        h.axvline(population.baseline_hz[i], color="k", lw=0.8)
        h.tick_params(labelsize=6, pad=1)
        h.set_yticks([])
        h.set_title(f"sparseness {sparse[i]:.3f}", fontsize=6, pad=1, loc="right")
    if shown < n:
        fig.text(0.5, 0.005, f"first {shown} of {n} neurons shown", ha="center", fontsize=9)

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, bbox_inches="tight")
    plt.close(fig)
    return out_path
