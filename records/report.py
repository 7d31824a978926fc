"""`cortexloop report SESSION`: one self-contained HTML page about a stored session.

Built from the session store (session.sqlite) and summary.json alone, plus
compact/report.json and its figures where `cortexloop compress` ran. Every
figure is a matplotlib PNG embedded as base64, so the page is one file with no
scripts and nothing to fetch: it opens offline, in any browser, years later.

What the store does not hold is said so on the page ("not recorded in this
session") rather than guessed. Series over trials (held-out accuracy, hypothesis
evidence, plan latency) come from the session log where the session logged them.
Where a figure can be computed cheaply from what is stored, it is:

- noise ceiling: from images shown more than once (the "repeat" images);
- predicted against observed: the compact models from `compress` where they
  exist, else (simulated rig) the virtual cortex's true rates, which the
  stored rig reproduces exactly; the models' own prediction for each MEI is in
  its recorded reason, so MEIs are also scored against what they evoked;
- clock alignment residuals: refitted from the stored onset/event-code pairs.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from acquisition.alignment import fit_clock
from contract import messages as m
from controller.config import RigFileError, parse_rig
from models.metrics import correlation
from records.nwb import image_kind
from records.space import write_atomic
from records.store import SessionStore
from records.summary import repeat_noise_ceiling
from stimulus.mei_hold import median_ratio, observed_over_predicted

MEI_REASON = re.compile(r"mei neuron#(\d+) predicted ([-\d.]+)Hz")
KIND_ORDER = ["random", "selected", "synthesized", "mei", "evolved", "repeat", "requeued", "pool fallback"]


@dataclass
class Session:
    """Everything the report reads, read once."""

    path: Path
    rig_dict: dict
    rig: object | None  # RigConfig, or None where the stored rig no longer validates
    rig_problem: str | None
    summary: dict | None
    created_wall_s: float
    status: str | None
    responses: dict  # SessionStore.responses(valid_only=False)
    onsets: list
    plans: list
    trials: list
    model_versions: list
    events_acq: list
    log_counts: Counter  # entries of the session log, by kind
    log_json: dict = field(default_factory=dict)  # kind -> [parsed entries] for "heldout", "evidence", "plan_latency"
    images: dict = field(default_factory=dict)  # hash -> pixels of every image shown
    compact: dict | None = None
    compact_dir: Path | None = None

    @property
    def n_neurons(self) -> int:
        if self.responses["counts"].size:
            return int(self.responses["counts"].shape[1])
        return int((self.summary or {}).get("neurons") or 0)

    def shown_reasons(self) -> list[tuple[str, str]]:
        """(image hash, reason) of every onset, aborted trials included, in order."""
        reasons = {p["trial_id"]: p["reasons"] for p in self.plans}
        out = []
        for trial_id, idx, h, _flip, _frame in self.onsets:
            rs = reasons.get(trial_id, [])
            out.append((h, rs[idx] if idx < len(rs) else "not recorded"))
        return out


def load_session(session_dir: str | Path) -> Session:
    session_dir = Path(session_dir)
    store = SessionStore.open(session_dir)
    try:
        rig_dict = json.loads(store.rig_json())
        try:
            rig, problem = parse_rig(rig_dict, f"{session_dir} (stored rig)", stored=True), None
        except RigFileError as err:
            rig, problem = None, str(err)
        s = Session(
            path=session_dir,
            rig_dict=rig_dict,
            rig=rig,
            rig_problem=problem,
            summary=None,
            created_wall_s=float(store.meta("created_wall_s") or 0.0),
            status=store.meta("status"),
            responses=store.responses(valid_only=False),
            onsets=store.onsets(),
            plans=store.plans(),
            trials=store.trials(),
            model_versions=store.model_versions(),
            events_acq=store.event_codes(clock="acquisition"),
            log_counts=Counter(kind for _, kind, _ in store.log_entries()),
        )
        for kind in ("heldout", "evidence", "plan_latency"):
            s.log_json[kind] = [json.loads(text) for _, _, text in store.log_entries(kind)]
        s.images = {h: store.image(h) for h in dict.fromkeys(o[2] for o in s.onsets)}
        for h, px in zip(s.responses["image_hash"], s.responses["pixels"]):
            s.images.setdefault(h, px)
    finally:
        store.close()
    summary_path = session_dir / "summary.json"
    if summary_path.exists():
        s.summary = json.loads(summary_path.read_text())
    compact_report = session_dir / "compact" / "report.json"
    if compact_report.exists():
        s.compact, s.compact_dir = json.loads(compact_report.read_text()), compact_report.parent
    return s


# -- computations on stored data ------------------------------------------------------------


def image_means(image_hash: list[str], counts: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(distinct hashes in first-seen order, mean counts (n_images, N), presentations per image)."""
    order = list(dict.fromkeys(image_hash))
    where = {h: i for i, h in enumerate(order)}
    sums = np.zeros((len(order), counts.shape[1]))
    k = np.zeros(len(order))
    for h, c in zip(image_hash, counts):
        sums[where[h]] += c
        k[where[h]] += 1
    return order, sums / np.maximum(k, 1)[:, None], k


def mei_checks(
    hashes: list[str], reasons: list[str], counts: np.ndarray, valid: np.ndarray, window_s: float
) -> list[dict]:
    """Each valid MEI presentation: its neuron, the rate the model predicted when it chose it, the rate observed."""
    out = []
    for h, r, c, ok in zip(hashes, reasons, counts, valid):
        hit = MEI_REASON.search(r)
        if ok and hit and int(hit.group(1)) < len(c):
            n = int(hit.group(1))
            out.append(
                {"hash": h, "neuron": n, "predicted_hz": float(hit.group(2)), "observed_hz": float(c[n]) / window_s}
            )
    return out


def predictions(s: Session, pixels: np.ndarray) -> tuple[np.ndarray | None, str]:
    """(rates (n, N) in spikes/s, what made them) for these images: compressed models, else the true rates."""
    n_neurons = s.n_neurons
    if s.compact_dir is not None and len(pixels):
        files = [s.compact_dir / f"neuron_{n:03d}.pt" for n in range(n_neurons)]
        if all(f.exists() for f in files):
            import torch

            from models.save import load_model

            x = torch.from_numpy(pixels.astype(np.float32) / 255.0).permute(0, 3, 1, 2)
            with torch.no_grad():
                rates = np.stack([load_model(f)[0](x).numpy().reshape(-1) for f in files], 1)
            return rates, "the compact models from `cortexloop compress` (trained on these responses)"
    cortex, images = _cortex_and_images(s)
    if cortex is not None and cortex.source == "virtual" and len(pixels):
        from acquisition.population import Population

        pop = Population(cortex.population, images.size_px, images.colour)
        return pop.rates(pixels)[:, :n_neurons], "the virtual cortex's true rates (the simulated rig's ground truth)"
    return None, ""


def _cortex_and_images(s: Session):
    """The rig's [cortex] and [images] sections, even where another section of an older rig no longer validates."""
    if s.rig is not None:
        return s.rig.cortex, s.rig.images
    from pydantic import ValidationError

    from acquisition.config import CortexConfig
    from stimulus.config import ImagesConfig

    try:
        return (
            CortexConfig.model_validate(s.rig_dict.get("cortex", {})),
            ImagesConfig.model_validate(s.rig_dict.get("images", {})),
        )
    except ValidationError:
        return None, None


def clock_residuals(s: Session) -> tuple[np.ndarray, np.ndarray, object] | None:
    """(presenter time of each onset, residual in s, fit) refitted from the stored pairs."""
    acq = {(e[5], e[6]): e[3] for e in s.events_acq if e[2] == m.Codes.IMAGE_ONSET}
    pairs = [(o[3], acq[(o[0], o[1])]) for o in s.onsets if (o[0], o[1]) in acq]
    if len(pairs) < 2:
        return None
    p, a = np.array(pairs).T
    fit = fit_clock(p, a)
    return p, a - fit.to_acquisition(p), fit


# -- figures -----------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig, dpi: int = 80) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    _plt().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _missing(what: str, why: str = "", verdict: str = "not recorded in this session") -> str:
    return f'<div class="missing"><b>{html.escape(what)}: {html.escape(verdict)}.</b> {html.escape(why)}</div>'


def _show(img: np.ndarray) -> np.ndarray:
    return img[..., 0] if img.shape[-1] == 1 else img


def _mosaic(images: list[np.ndarray], gap: int = 2, slots: int | None = None) -> np.ndarray:
    """Images side by side on white, one row (all the same size), padded to `slots` images wide."""
    h, w, c = images[0].shape
    slots = max(slots or 0, len(images))
    out = np.full((h, slots * (w + gap) - gap, c), 255, np.uint8)
    for i, im in enumerate(images):
        out[:, i * (w + gap) : i * (w + gap) + w] = im
    return out


def fig_accuracy(s: Session) -> str:
    plt = _plt()
    curve = s.log_json.get("heldout") or []
    if curve:
        fig, ax = plt.subplots(figsize=(12, 2.8))
        ax.plot(
            [c["trials_done"] for c in curve],
            [c["median_r"] for c in curve],
            "o-",
            color="#4C72B0",
            label="median held-out r (model vs true rate)",
        )
        ax.set_xlabel("trials done")
        ax.set_ylabel("median r")
        ax.set_title("Held-out accuracy during the session, as the live status measured it", fontsize=10)
        ax.legend(fontsize=8, frameon=False)
        fig.tight_layout()
        parts = [_img(_png(fig), "held-out accuracy over trials")]
    else:
        parts = [
            _missing(
                "Held-out accuracy after each trial",
                "the live status measures it every 10 trials in `cortexloop run`; this session has no "
                "such measurement (a session run in process, or shorter than 10 trials)",
            )
        ]
    per = (s.summary or {}).get("heldout_r_per_neuron")
    resp = s.responses
    valid = resp["valid"]
    ceil = (
        repeat_noise_ceiling([h for h, v in zip(resp["image_hash"], valid) if v], resp["counts"][valid])
        if resp["counts"].size
        else None
    )
    truth_ceil = (((s.summary or {}).get("noise_ceiling") or {}).get("truth") or {}).get("per_neuron")
    if not per and ceil is None and not truth_ceil:
        return "".join(parts) + _missing(
            "Held-out accuracy and noise ceiling",
            "no held-out accuracy in summary.json and fewer than 3 repeated images",
        )
    n = s.n_neurons
    fig, ax = plt.subplots(figsize=(12, 3.4))
    x = np.arange(n)
    if per:
        r = np.array([np.nan if v is None else v for v in per], float)
        ax.bar(x, r, color="#4C72B0", label=f"held-out r, model vs true rate (median {np.nanmedian(r):.2f})")
    if ceil is not None:
        ax.plot(
            x,
            ceil["ceiling"],
            "_",
            color="#C44E52",
            markersize=16,
            mew=2.5,
            label=f"noise ceiling from {ceil['images']} repeated images (median {np.nanmedian(ceil['ceiling']):.2f})",
        )
    if truth_ceil:
        tc = np.array(truth_ceil[:n], float)
        ax.plot(
            x[: len(tc)],
            tc,
            "o",
            color="#55A868",
            markersize=5,
            label=f"noise ceiling on the held-out images from the virtual cortex's model (median {np.median(tc):.2f})",
        )
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xticks(x)
    ax.set_xlabel("neuron")
    ax.set_ylabel("correlation")
    ax.set_ylim(min(-0.2, ax.get_ylim()[0]), 1.3)
    ax.set_yticks([t for t in ax.get_yticks() if t <= 1.0])
    ax.legend(loc="upper left", ncol=2, fontsize=8, frameon=False)
    ax.set_title("End of session: held-out accuracy per neuron, and the noise ceiling", fontsize=10)
    fig.tight_layout()
    parts.append(_img(_png(fig), "held-out accuracy per neuron with the noise ceiling"))
    parts.append(
        "<p class='note'>Held-out r: the session's model against the virtual cortex's true rates on "
        "the held-out test images (never shown); its ceiling is 1. Noise ceiling: the best correlation "
        "any model could reach with one presentation's spike counts, estimated from the images shown "
        "more than once (pool images) and, on the simulated rig, computed from the virtual cortex's "
        "spiking model on the held-out images (the known answer); a rig without ground truth divides "
        "count-based accuracy by it."
        + ("" if ceil is not None else " (Fewer than 3 repeated images: no ceiling.)")
        + "</p>"
    )
    if not per:
        parts.append(
            _missing(
                "Held-out accuracy",
                "summary.json has none (a rig without ground truth, or the model worker did not answer at the end)",
            )
        )
    return "".join(parts)


def fig_predicted_observed(s: Session) -> str:
    plt = _plt()
    resp = s.responses
    valid = resp["valid"]
    if not valid.any():
        return _missing("Predicted against observed responses", "no valid responses stored")
    hashes, means, k = image_means([h for h, v in zip(resp["image_hash"], valid) if v], resp["counts"][valid])
    window = resp["window_s"] or 1.0
    pixels = np.stack([s.images[h] for h in hashes])
    pred, source = predictions(s, pixels)
    parts = []
    if pred is None:
        parts.append(
            _missing(
                "Model predictions for the shown images",
                "the session's model is not saved; run `cortexloop compress SESSION` for "
                "per-neuron models, then report again",
            )
        )
    else:
        n = s.n_neurons
        cols = min(6, n)
        rows = -(-n // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 1.9 * rows), squeeze=False)
        obs = means / window
        r = correlation(pred, obs)
        for j, ax in enumerate(axes.flat):
            if j >= n:
                ax.axis("off")
                continue
            ax.scatter(pred[:, j], obs[:, j], s=np.clip(4 * k, 4, 20), alpha=0.5, color="#4C72B0", lw=0)
            hi = max(float(pred[:, j].max()), float(obs[:, j].max()), 1.0)
            ax.plot([0, hi], [0, hi], color="0.6", lw=0.8)
            ax.set_title(f"neuron {j}: r = {r[j]:.2f}", fontsize=8)
            ax.tick_params(labelsize=6)
        fig.supxlabel("predicted rate (spikes/s)", fontsize=9)
        fig.supylabel("observed rate (spikes/s)", fontsize=9)
        fig.tight_layout()
        parts.append(_img(_png(fig, 70), "predicted against observed rate per neuron"))
        parts.append(
            f"<p class='note'>Predicted: {html.escape(source)}. Observed: spike count in the response "
            f"window / {window * 1000:.0f} ms, averaged over repeats ({len(hashes)} images, "
            f"{int(k.sum())} valid presentations). Dot size: presentations.</p>"
        )
    valid_mei = mei_checks(list(resp["image_hash"]), list(resp["reason"]), resp["counts"], valid, window)
    if valid_mei:
        fig, ax = plt.subplots(figsize=(4.6, 3.6))
        p = np.array([c["predicted_hz"] for c in valid_mei])
        o = np.array([c["observed_hz"] for c in valid_mei])
        ax.scatter(p, o, color="#DD8452", s=18)
        hi = max(p.max(), o.max(), 1.0)
        ax.plot([0, hi], [0, hi], color="0.6", lw=0.8)
        ax.set_xlabel("rate the model predicted when it chose the MEI (spikes/s)", fontsize=8)
        ax.set_ylabel("rate observed (spikes/s)", fontsize=8)
        ax.set_title(
            f"MEIs: {len(valid_mei)} presentations, median observed/predicted {np.median(o / np.maximum(p, 1e-9)):.2f}",
            fontsize=9,
        )
        fig.tight_layout()
        parts.append(_img(_png(fig), "MEI predicted against observed"))
        held = observed_over_predicted(list(resp["reason"]), resp["counts"], window, valid)
        held = {j: v for j, v in held.items() if np.isfinite(v["ratio"])}  # a prediction of 0 Hz has no ratio
        worst = sorted(held.items(), key=lambda kv: kv[1]["ratio"])[:5]
        med = median_ratio(held)
        level = getattr(getattr(s.rig, "selection", None), "mei_hold_below", None)
        parts.append(
            f"<p class='note'>Per neuron, mean observed over mean predicted rate of its MEI presentations: median "
            f"{'n/a' if med is None else f'{med:.2f}'} over {len(held)} neurons; lowest "
            + ", ".join(f"neuron {j} {v['ratio']:.2f} ({v['presentations']})" for j, v in worst)
            + (
                f"; MEIs of neurons below {level:g} are made more cautiously (selection.mei_hold_below)"
                if level is not None
                else "; selection.mei_hold_below is unset: MEIs are made the same way whatever the ratio"
            )
            + ".</p>"
        )
    else:
        parts.append(_missing("MEI predictions", "no MEI was shown in a completed trial"))
    return "".join(parts)


def fig_images_by_reason(s: Session) -> str:
    plt = _plt()
    shown = s.shown_reasons()
    if not shown:
        return _missing("Images shown", "no onsets stored")
    by_kind: dict[str, list[str]] = defaultdict(list)
    for h, why in shown:
        by_kind[image_kind(why)].append(h)
    kinds = sorted(by_kind, key=lambda k: (KIND_ORDER.index(k) if k in KIND_ORDER else len(KIND_ORDER), k))
    per_row = 16
    fig, axes = plt.subplots(len(kinds), 1, figsize=(12, 0.95 * len(kinds) + 0.3), squeeze=False)
    for ax, kind in zip(axes[:, 0], kinds):
        distinct = list(dict.fromkeys(by_kind[kind]))
        ax.imshow(
            _show(_mosaic([s.images[h] for h in distinct[:per_row]], slots=per_row)),
            cmap="gray",
            vmin=0,
            vmax=255,
            interpolation="nearest",
        )
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(
            f"{kind}\n{len(by_kind[kind])} shown\n{len(distinct)} images",
            rotation=0,
            ha="right",
            va="center",
            fontsize=8,
        )
    fig.suptitle(
        f"Images shown, grouped by why they were chosen (first {per_row} distinct images of each kind)", fontsize=10
    )
    fig.tight_layout()
    counts = Counter(image_kind(why) for _, why in shown)
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{counts[k]}</td><td>{len(set(by_kind[k]))}</td>"
        f"<td>{html.escape(_example_reason(shown, k))}</td></tr>"
        for k in kinds
    )
    table = (
        "<table><tr><th>kind</th><th>presentations</th><th>distinct images</th><th>a recorded reason</th></tr>"
        f"{rows}</table>"
    )
    return _img(_png(fig, 80), "images grouped by why they were chosen") + table


def _example_reason(shown: list[tuple[str, str]], kind: str) -> str:
    return next(why for _, why in shown if image_kind(why) == kind)


def fig_neuron_images(s: Session) -> str:
    plt = _plt()
    resp = s.responses
    valid = resp["valid"]
    parts = []
    if not valid.any():
        parts.append(_missing("Top images per neuron", "no valid responses stored"))
    else:
        window = resp["window_s"] or 1.0
        hashes, means, _ = image_means([h for h, v in zip(resp["image_hash"], valid) if v], resp["counts"][valid])
        meis = {}  # neuron -> (hash, predicted, observed) of its last MEI shown in a completed trial
        for c in mei_checks(list(resp["image_hash"]), list(resp["reason"]), resp["counts"], valid, window):
            meis[c["neuron"]] = c
        n = s.n_neurons
        top_k = 5
        blocks = 2  # neurons side by side
        rows = -(-n // blocks)
        fig, axes = plt.subplots(rows, blocks, figsize=(12, 1.25 * rows + 0.4), squeeze=False)
        blank = np.full_like(s.images[hashes[0]], 255)
        for j, ax in enumerate(axes.flat):
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= n:
                ax.axis("off")
                continue
            top = np.argsort(-means[:, j])[:top_k]
            mei = meis.get(j)
            tiles = [s.images[mei["hash"]] if mei else blank] + [s.images[hashes[i]] for i in top]
            ax.imshow(_show(_mosaic(tiles, gap=3)), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            w = tiles[0].shape[1] + 3
            labels = [f"MEI {mei['observed_hz']:.0f}/{mei['predicted_hz']:.0f}" if mei else "no MEI"]
            labels += [f"{means[i, j] / window:.0f} sp/s" for i in top]
            for t, lab in enumerate(labels):
                ax.text(t * w + (w - 3) / 2, tiles[0].shape[0] + 1, lab, ha="center", va="top", fontsize=6.5)
            ax.set_ylabel(f"neuron {j}", rotation=0, ha="right", va="center", fontsize=8)
        fig.suptitle(
            "Per neuron: its last MEI shown (observed / predicted sp/s), then the 5 shown images it "
            "responded to most (observed mean)",
            fontsize=9,
        )
        fig.tight_layout()
        parts.append(_img(_png(fig, 80), "MEI and top images per neuron"))
    if s.compact_dir is not None:
        pngs = sorted(s.compact_dir.glob("neuron_*.png"))
        if pngs:
            parts.append(
                "<p class='note'>From <code>cortexloop compress</code>: each compact model's MEI, its "
                "best pool images and the filters it kept.</p>"
            )
            parts += [_img(base64.b64encode(p.read_bytes()).decode("ascii"), p.stem) for p in pngs]
        parts.append(interpretation_links(s.compact_dir, s.path))
    return "".join(parts)


def interpretation_links(compact_dir: Path, session_dir: Path) -> str:
    """The population page of `cortexloop interrogate` and a link to each neuron's page, where they exist."""
    pages = sorted((compact_dir / "interpret").glob("neuron_*.png"))
    if not pages:
        return ""
    out = [
        "<p class='note'>From <code>cortexloop interrogate</code>: what each neuron computes, from in-silico "
        "experiments on its compact model (docs/interpret.md).</p>"
    ]
    pop = compact_dir / "interpret" / "population.png"
    if pop.exists():
        out.append(_img(base64.b64encode(pop.read_bytes()).decode("ascii"), "neurons grouped by type"))
    families = {}
    if (compact_dir / "report.json").exists():
        for row in json.loads((compact_dir / "report.json").read_text()).get("neurons", []):
            if "interpretation" in row:
                families[row["neuron"]] = row["interpretation"]["family"]
    links = []
    for p in pages:
        n = int(p.stem.split("_")[1])
        try:
            href = p.relative_to(session_dir).as_posix()
        except ValueError:
            href = p.resolve().as_uri()
        label = f"neuron {n}" + (f" ({families[n]})" if n in families else "")
        links.append(f"<a href='{html.escape(href)}'>{html.escape(label)}</a>")
    out.append("<p class='note'>Each neuron's page: " + " · ".join(links) + "</p>")
    return "".join(out)


def fig_evidence(s: Session) -> str:
    plt = _plt()
    reported = [v["info"]["evidence"] for v in s.model_versions if v["info"].get("evidence")]
    ev = (s.summary or {}).get("hypothesis_evidence") or (reported[-1] if reported else None)
    over = s.log_json.get("evidence") or []
    if over:
        names_over = list(over[-1]["posterior"])
        fig, ax = plt.subplots(figsize=(12, 2.8))
        for h in names_over:
            ax.plot([e["trials_done"] for e in over], [e["posterior"].get(h, np.nan) for e in over], label=h)
        ax.set_xlabel("trials done")
        ax.set_ylabel("posterior")
        ax.set_ylim(0, 1)
        ax.set_title("Hypothesis posterior during the session, as the live status heard it", fontsize=10)
        ax.legend(fontsize=8, frameon=False, ncol=min(6, len(names_over)))
        fig.tight_layout()
        parts = [_img(_png(fig), "hypothesis posterior over trials")]
    else:
        parts = [
            _missing(
                "Hypothesis evidence after each trial",
                "the live status of `cortexloop run` keeps it every 2 s; this session has none",
            )
        ]
    if not ev or not ev.get("hypotheses") or not ev.get("presentations"):
        parts.append(
            _missing(
                "Hypothesis evidence",
                "neither summary.json nor the model versions hold any "
                "weighed on responses (the model worker did not answer at "
                "the end)",
            )
        )
        return "".join(parts) + _model_versions(s)
    names = ev["hypotheses"]
    start = reported[0] if reported else None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 3.0))
    ll = np.array([ev["log_likelihood"][h] for h in names])
    x = np.arange(len(names))
    if start is not None and start.get("presentations"):
        a1.bar(
            x - 0.2,
            [start["log_likelihood"][h] for h in names],
            0.4,
            color="0.7",
            label=f"start ({start['presentations']} presentations)",
        )
    a1.bar(x + 0.2, ll - ll.max(), 0.4, color="#4C72B0", label=f"end ({ev['presentations']} presentations)")
    a1.set_xticks(x, names, fontsize=8)
    a1.set_ylabel("log-likelihood, relative to the best")
    a1.legend(fontsize=8)
    a1.set_title("Evidence: log-likelihood of the counts", fontsize=10)
    a2.bar(x, [ev["posterior"][h] for h in names], color="#55A868")
    a2.set_xticks(x, names, fontsize=8)
    a2.set_ylim(0, 1)
    a2.set_title(
        f"Posterior at the end: best {ev['best']}, log Bayes factor vs next {ev['log_bayes_factor_best_vs_next']:.1f}",
        fontsize=10,
    )
    fig.tight_layout()
    parts.append(_img(_png(fig), "hypothesis evidence"))
    return "".join(parts) + _model_versions(s)


def _model_versions(s: Session) -> str:
    if not s.model_versions:
        return _missing("Model versions", "the controller recorded none")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(12, 2.2))
    ax.step(
        [v["trial_id"] for v in s.model_versions],
        [v["version"] for v in s.model_versions],
        where="post",
        color="#4C72B0",
    )
    ax.set_xlabel("trial")
    ax.set_ylabel("model version")
    ax.set_title("Model versions as the controller first saw them", fontsize=10)
    fig.tight_layout()
    return _img(_png(fig), "model version over trials")


def fig_timing(s: Session) -> str:
    plt = _plt()
    summ = s.summary or {}
    intervals = np.concatenate([t["frame_intervals_s"] for t in s.trials]) if s.trials else np.zeros(0)
    errors = np.concatenate([t["onset_to_flip_error_s"] for t in s.trials]) if s.trials else np.zeros(0)
    p50, p99 = summ.get("loop_latency_p50_ms"), summ.get("loop_latency_p99_ms")
    lat = np.array([x["ms"] for x in s.log_json.get("plan_latency") or []])
    note = (
        f"plans ready on time {_share(summ.get('plans_on_time_share'))}; {s.log_counts['slow_plan']} slow plans "
        f"(ready more than half a trial after their window) and {s.log_counts['plan_late']} late ones (pool "
        f"images shown instead)"
    )
    if len(lat):
        fig, ax = plt.subplots(figsize=(12, 2.6))
        ax.hist(lat, bins=50, color="#4C72B0")
        ax.set_xlabel("loop latency (ms): a trial's responses complete to the next plan ready")
        ax.set_title(
            f"Loop latency of {len(lat)} plans: p50 {np.percentile(lat, 50):.0f} ms, p99 "
            f"{np.percentile(lat, 99):.0f} ms; {note}",
            fontsize=9,
        )
        fig.tight_layout()
        parts = [_img(_png(fig), "loop latency of each plan")]
    else:
        parts = [
            _missing(
                "Loop latency of each plan",
                "none stored (a session from before it was kept): p50 and p99 only"
                + (f", {p50:.0f} ms and {p99:.0f} ms" if p50 is not None and p99 is not None else "")
                + "; "
                + note,
            )
        ]
    if not len(intervals) and not len(errors):
        return "".join(parts) + _missing("Frame timing", "no trial reports stored")
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.0))
    ax = axes[0]
    if len(intervals):
        refresh = s.rig.display.refresh_hz if s.rig is not None else None
        ax.hist(intervals * 1000, bins=50, color="#55A868")
        if refresh:
            ax.axvline(1000 / refresh, color="0.3", ls="--", lw=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("frame interval (ms)")
        ax.set_title(
            f"Frame intervals: {len(intervals)} frames, {sum(t['dropped_frames'] or 0 for t in s.trials)} dropped",
            fontsize=10,
        )
    else:
        ax.text(0.5, 0.5, "no frame intervals stored", ha="center", va="center", transform=ax.transAxes)
        ax.axis("off")
    ax = axes[1]
    if len(errors):
        ax.hist(errors * 1e6, bins=50, color="#8172B2")
        ax.set_xlabel("onset stamp minus flip time (µs)")
        ax.set_title(f"Onset-to-flip error: median {np.median(errors) * 1e6:.0f} µs", fontsize=10)
    else:
        ax.text(0.5, 0.5, "no onset errors stored", ha="center", va="center", transform=ax.transAxes)
        ax.axis("off")
    fig.tight_layout()
    parts.append(_img(_png(fig), "loop latency and frame timing"))
    return "".join(parts)


def _share(v) -> str:
    return "n/a" if v is None else f"{v:.1%}"


def fig_clock(s: Session) -> str:
    plt = _plt()
    res = clock_residuals(s)
    if res is None:
        return _missing("Clock alignment", "fewer than two onsets with a recorded event code")
    p, resid, fit = res
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 2.8), gridspec_kw={"width_ratios": [2, 1]})
    a1.plot(p - p[0], resid * 1000, ".", ms=3, color="#4C72B0")
    a1.set_xlabel("presenter clock since the first onset (s)")
    a1.set_ylabel("residual (ms)")
    a1.set_title(
        f"acquisition = {fit.offset_s:.4f} s + presenter x (1 {fit.drift_ppm:+.2f} ppm); {fit.n_pairs} onsets",
        fontsize=10,
    )
    a2.hist(resid * 1000, bins=40, color="#4C72B0")
    a2.set_xlabel("residual (ms)")
    a2.set_title(f"rms {fit.residual_rms_s * 1000:.3g} ms, max {fit.residual_max_s * 1000:.3g} ms", fontsize=10)
    for ax in (a1, a2):
        ax.ticklabel_format(axis="both", style="sci", scilimits=(-3, 4), useOffset=False)
    fig.tight_layout()
    return _img(_png(fig), "clock alignment residuals")


def compression_table(s: Session) -> str:
    if s.compact is None:
        return _missing(
            "Compression",
            "run `cortexloop compress SESSION`, then report again (it reads compact/report.json)",
            verdict="not run on this session",
        )
    from models.compress import format_table

    rows = s.compact.get("neurons", [])
    try:
        text = format_table(rows, s.compact)
    except (KeyError, IndexError, TypeError, ZeroDivisionError) as err:  # written by another cortexloop version
        text = json.dumps(s.compact, indent=1, default=str) + f"\n(table not formatted: {err!r})"
    return (
        f"<p class='note'>From <code>{html.escape(str(s.compact_dir))}/report.json</code> "
        f"({len(rows)} neurons).</p><pre>{html.escape(text)}</pre>"
    )


def overview(s: Session) -> str:
    summ = s.summary
    if summ is None:
        return _missing(
            "Summary", "no summary.json (the session ended before writing one); the figures below come from the store"
        )
    from records.summary import format_table

    try:
        text = format_table(summ)
    except (KeyError, TypeError) as err:  # a summary from another cortexloop version
        text = json.dumps(summ, indent=1, default=str) + f"\n(table not formatted: {err})"
    return f"<pre class='summary'>{html.escape(text.strip())}</pre>"


SECTIONS = [
    ("overview", "Summary", overview),
    ("accuracy", "Held-out accuracy and the noise ceiling", fig_accuracy),
    ("predicted", "Predicted against observed responses", fig_predicted_observed),
    ("images", "Images shown, by why they were chosen", fig_images_by_reason),
    ("neurons", "MEIs and top images per neuron", fig_neuron_images),
    ("evidence", "Hypothesis evidence and model versions", fig_evidence),
    ("timing", "Loop latency and frame timing", fig_timing),
    ("clock", "Clock alignment", fig_clock),
    ("compression", "Compression", compression_table),
]

STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1220px; padding: 0 16px 40px; color: #222; }
h1 { font-size: 22px; margin: 18px 0 4px; } h2 { font-size: 17px; border-bottom: 1px solid #ddd; padding-top: 8px; }
nav a { margin-right: 12px; font-size: 13px; } img { max-width: 100%; display: block; margin: 6px 0; }
table { border-collapse: collapse; font-size: 12px; margin: 6px 0; }
td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: left; }
pre { background: #f6f6f6; padding: 8px; font-size: 12px; overflow-x: auto; }
.missing { background: #fff6e0; border-left: 4px solid #e0a800; padding: 6px 10px; margin: 8px 0; font-size: 13px; }
.note { font-size: 12px; color: #555; } .meta { font-size: 13px; color: #555; }
"""


def rig_toml(rig: dict) -> str:
    """The stored (JSON) rig written back as a rig file: a table per section, nested sections as sub-tables."""

    def value(v) -> str:
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)  # strings, numbers and booleans are written alike in TOML

    lines: list[str] = []

    def table(name: str, d: dict) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict)}
        if scalars or not d:
            lines.append(f"[{name}]")
            for k, v in scalars.items():
                lines.append(f"# {k}: not set" if v is None else f"{k} = {value(v)}")
            lines.append("")
        for k, v in d.items():
            if isinstance(v, dict):
                table(f"{name}.{k}", v)

    for section, d in rig.items():
        if isinstance(d, dict):
            table(section, d)
        else:
            lines.insert(0, f"{section} = {value(d)}")
    return "\n".join(lines).strip() + "\n"


def render(s: Session) -> str:
    name = s.rig_dict.get("session", {}).get("name", s.path.name)
    created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s.created_wall_s)) if s.created_wall_s else "?"
    body = [
        f"<h1>cortexloop session {html.escape(s.path.name)}</h1>",
        f"<p class='meta'>rig <b>{html.escape(str(name))}</b>, started {created}, status "
        f"<b>{html.escape(str(s.status or 'running or killed (no status stored)'))}</b>; "
        f"{len(s.trials)} trials, {len(s.onsets)} onsets, {s.n_neurons} neurons. "
        f"Directory: <code>{html.escape(str(s.path.resolve()))}</code></p>",
        "<nav>"
        + "".join(f"<a href='#{k}'>{html.escape(t)}</a>" for k, t, _ in SECTIONS)
        + "<a href='#rig'>Rig file</a></nav>",
    ]
    for key, title, make in SECTIONS:
        body.append(f"<section id='{key}'><h2>{html.escape(title)}</h2>{make(s)}</section>")
    rig_note = f"<div class='missing'>{html.escape(s.rig_problem)}</div>" if s.rig_problem else ""
    body.append(
        f"<section id='rig'><h2>Rig file</h2><p class='note'>The resolved rig every process used, "
        f"defaults included (stored in the session), as TOML.</p>{rig_note}"
        f"<pre>{html.escape(rig_toml(s.rig_dict))}</pre></section>"
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>cortexloop report: {html.escape(s.path.name)}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def write_report(session_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of a stored session; returns its path (default SESSION/report.html)."""
    s = load_session(session_dir)
    out = Path(out) if out else Path(session_dir) / "report.html"
    write_atomic(out, render(s))  # a failed write (a full disk) leaves no empty or partial file
    return out
