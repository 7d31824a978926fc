"""The end-of-session summary: one table on the terminal, the same figures in summary.json."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np


def percentile(values: list[float], q: float) -> float | None:
    """numpy's interpolated q-th percentile; None for no values."""
    return float(np.percentile(values, q)) if values else None


def repeat_noise_ceiling(image_hash: list[str], counts: np.ndarray, min_images: int = 3) -> dict | None:
    """Per neuron, the best correlation any model could reach with single-presentation counts, from repeats.

    Over the images shown at least twice: noise = mean within-image variance of the counts (unbiased),
    signal = variance of the image means less what the noise adds to them. The ceiling is
    sqrt(signal / (signal + noise)), the correlation of one presentation's counts with the image's expected
    count (truth_noise_ceiling computes the same quantity from the virtual cortex's model).
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(image_hash):
        groups[h].append(i)
    rep = [ix for ix in groups.values() if len(ix) >= 2]
    if len(rep) < min_images:
        return None
    means = np.stack([counts[ix].mean(0) for ix in rep])
    within = np.stack([counts[ix].var(0, ddof=1) for ix in rep])
    n = np.array([len(ix) for ix in rep], np.float64)[:, None]
    noise = within.mean(0)
    signal = np.maximum(means.var(0, ddof=1) - (within / n).mean(0), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ceiling = np.where(signal + noise > 0, np.sqrt(signal / (signal + noise)), np.nan)
    return {"ceiling": ceiling, "images": len(rep), "presentations": int(n.sum())}


def truth_population(truth):
    """The simulated neurons behind a truth function, where it is a population's own `rates` (the rig file's
    virtual cortex, or a benchmark's population): something with rates(images) and baseline_hz. None where
    the truth is anything else (a live rig has none; an Open Ephys unit map reorders neurons)."""
    owner = getattr(truth, "__self__", None)
    if owner is not None and callable(getattr(owner, "rates", None)) and hasattr(owner, "baseline_hz"):
        return owner
    return None


def truth_noise_ceiling(
    population, spiking_cfg, images: np.ndarray, window_s: tuple[float, float], seed: int, n_neurons: int | None = None
) -> np.ndarray:
    """(N,) single-trial noise ceiling of each simulated neuron over `images`: the expected correlation between
    one presentation's spike count in the response window and the neuron's true rate, from the spiking
    model's own means and variances (acquisition/ground_truth.py), for isolated onsets without slow drift."""
    from acquisition.ground_truth import noise_ceiling

    c = noise_ceiling(population, spiking_cfg, images, window_s, seed=seed, n_repeats=1)
    return c if n_neurons is None else c[:n_neurons]


def _median(values) -> float | None:
    v = np.asarray([np.nan if x is None else x for x in values], np.float64)
    return float(np.nanmedian(v)) if np.isfinite(v).any() else None


def noise_ceilings(rig, truth, test_images, stored: dict | None, n_neurons: int | None) -> dict:
    """The summary's noise ceilings, each saying what it is.

    truth: on the simulated rig, from the virtual cortex's spiking model on the held-out test images (the
    known answer). repeats: estimated from the session's own counts of images shown more than once (the
    "repeat" kind and any other repeat): training pool images, not the held-out set; what a rig without
    ground truth has. stored: SessionStore.responses() (valid ones), or None."""
    out: dict = {"truth": None, "repeats": None}
    pop = truth_population(truth) if truth is not None else None
    if pop is not None and test_images is not None and len(test_images):
        window = (rig.response.window_start_ms / 1000, rig.response.window_end_ms / 1000)
        # The virtual cortex seeds its spiking model with population seed + 1 (its neurons' latencies).
        c = truth_noise_ceiling(pop, rig.cortex.spiking, test_images, window, rig.cortex.population.seed + 1, n_neurons)
        out["truth"] = {
            "per_neuron": [float(x) for x in c],
            "median": float(np.median(c)),
            "images": int(len(test_images)),
            "what": "single-trial ceiling on the held-out test images, from the virtual cortex's "
            "spiking model: expected correlation of one presentation's count with the true "
            "rate",
        }
    if stored is not None and len(stored.get("image_hash", [])):
        rep = repeat_noise_ceiling(list(stored["image_hash"]), np.asarray(stored["counts"], np.float64))
        if rep is not None:
            per = [None if not np.isfinite(x) else float(x) for x in rep["ceiling"]]
            out["repeats"] = {
                "per_neuron": per,
                "median": _median(per),
                "images": rep["images"],
                "presentations": rep["presentations"],
                "what": "single-trial ceiling estimated from this session's repeated images (training "
                "pool images, not the held-out set)",
            }
    return out


def resume_command(summary: dict) -> str | None:
    """`cortexloop run --resume DIR` for a session that stopped before its trials were done and can go on (a
    process died, an interrupt, a full disk); None where it completed, or stopped for a rule (resuming would stop
    again at once)."""
    status = str(summary.get("status") or "")
    if not status or status.startswith(("completed", "stopped short")) or not summary.get("session_dir"):
        return None
    return f"cortexloop run --resume {summary['session_dir']}"


def format_table(summary: dict) -> str:
    def fmt(v):
        if v is None:
            return "n/a"
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v)

    rows = [
        ("status", summary.get("status")),
        *([("resume with", resume_command(summary))] if resume_command(summary) else []),
        ("trials done", summary.get("trials_done")),
        ("trials aborted", summary.get("trials_aborted")),
        ("images shown", summary.get("images_shown")),
        *(
            [
                (
                    "responses invalid",
                    f"{summary['responses_invalid']} (stream silent over the window "
                    f"{summary.get('responses_stream_silent') or 0}, image not shown as planned "
                    f"{summary.get('responses_misshown') or 0})",
                )
            ]
            if summary.get("responses_invalid")
            else []
        ),
        ("neurons", summary.get("neurons")),
        ("spikes received", summary.get("spikes_received")),
        ("spikes lost", summary.get("spikes_lost")),
        ("loop latency p50 (ms)", summary.get("loop_latency_p50_ms")),
        ("loop latency p99 (ms)", summary.get("loop_latency_p99_ms")),
        (
            "plans ready on time",
            f"{summary['plans_on_time_share']:.1%}" if summary.get("plans_on_time_share") is not None else None,
        ),
        ("dropped frames", summary.get("dropped_frames")),
        ("presenter gaps (queue empty)", summary.get("presenter_gaps")),
        (
            "clock drift (ppm) / residual (ms)",
            summary.get("clock_alignment")
            and f"{summary['clock_alignment']['drift_ppm']:.1f} / {summary['clock_alignment']['residual_rms_ms']:.3f}",
        ),
        (
            "photodiode - flip (ms) median / p99",
            summary.get("photodiode")
            and f"{summary['photodiode']['latency_ms_median'] or float('nan'):.2f} / "
            f"{summary['photodiode']['latency_ms_p99'] or float('nan'):.2f} "
            f"({summary['photodiode']['onsets_without_edge']} onsets without an edge)",
        ),
        ("model version at end", summary.get("model_version")),
        ("held-out accuracy, median r", summary.get("heldout_median_r")),
        ("noise ceiling, median (truth)", summary.get("noise_ceiling_truth_median")),
        ("noise ceiling, median (repeats)", summary.get("noise_ceiling_repeats_median")),
        ("training steps per trial", summary.get("training_steps_per_trial")),
    ]
    ev = summary.get("hypothesis_evidence")
    if ev and ev.get("updates"):
        rows.append(
            (
                "hypothesis evidence",
                f"best {ev['best']} (posterior {ev['posterior'][ev['best']]:.3f}, "
                f"log BF vs next {ev['log_bayes_factor_best_vs_next']:.1f}, "
                f"{ev['presentations']} presentations)",
            )
        )
    rows.append(("session saved in", summary.get("session_dir")))
    width = max(len(k) for k, _ in rows)
    lines = ["", "cortexloop session summary", "-" * (width + 30)]
    lines += [f"{k:<{width}}  {fmt(v)}" for k, v in rows]
    per = summary.get("heldout_r_per_neuron")
    ceil = summary.get("noise_ceiling") or {}
    for label, values in (
        ("held-out r per neuron", per),
        ("noise ceiling (truth)", (ceil.get("truth") or {}).get("per_neuron")),
        ("noise ceiling (repeats)", (ceil.get("repeats") or {}).get("per_neuron")),
    ):
        if values:
            lines.append(f"{label:<{width}}  " + " ".join("n/a" if v is None else f"{v:.2f}" for v in values))
    if ceil.get("truth") or ceil.get("repeats"):
        lines.append(
            f"{'':<{width}}  noise ceiling: the correlation one presentation's spike count reaches with "
            "the true rate (truth: the virtual cortex's spiking model on the held-out images; repeats: "
            "estimated from this session's repeated pool images)"
        )
    lines.append("-" * (width + 30))
    return "\n".join(lines)


def write_summary(session_dir: Path, summary: dict) -> Path:
    path = Path(session_dir) / "summary.json"
    path.write_text(json.dumps(summary, indent=2, default=float))
    return path
