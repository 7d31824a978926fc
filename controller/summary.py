"""The end-of-session summary: one table on the terminal, the same figures in summary.json."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def format_table(summary: dict) -> str:
    def fmt(v):
        if v is None:
            return "n/a"
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v)

    rows = [
        ("trials done", summary.get("trials_done")),
        ("trials aborted", summary.get("trials_aborted")),
        ("images shown", summary.get("images_shown")),
        ("neurons", summary.get("neurons")),
        ("spikes received", summary.get("spikes_received")),
        ("spikes lost", summary.get("spikes_lost")),
        ("loop latency p50 (ms)", summary.get("loop_latency_p50_ms")),
        ("loop latency p99 (ms)", summary.get("loop_latency_p99_ms")),
        ("plans ready on time", f"{summary['plans_on_time_share']:.1%}" if summary.get("plans_on_time_share") is not None else None),
        ("dropped frames", summary.get("dropped_frames")),
        ("presenter gaps (queue empty)", summary.get("presenter_gaps")),
        ("clock drift (ppm) / residual (ms)", summary.get("clock_alignment") and
         f"{summary['clock_alignment']['drift_ppm']:.1f} / {summary['clock_alignment']['residual_rms_ms']:.3f}"),
        ("photodiode - flip (ms) median / p99", summary.get("photodiode") and
         f"{summary['photodiode']['latency_ms_median'] or float('nan'):.2f} / "
         f"{summary['photodiode']['latency_ms_p99'] or float('nan'):.2f} "
         f"({summary['photodiode']['onsets_without_edge']} onsets without an edge)"),
        ("model version at end", summary.get("model_version")),
        ("held-out accuracy, median r", summary.get("heldout_median_r")),
    ]
    ev = summary.get("hypothesis_evidence")
    if ev and ev.get("updates"):
        rows.append(("hypothesis evidence", f"best {ev['best']} (posterior {ev['posterior'][ev['best']]:.3f}, "
                                            f"log BF vs next {ev['log_bayes_factor_best_vs_next']:.1f}, "
                                            f"{ev['presentations']} presentations)"))
    rows.append(("session saved in", summary.get("session_dir")))
    width = max(len(k) for k, _ in rows)
    lines = ["", "cortexloop session summary", "-" * (width + 30)]
    lines += [f"{k:<{width}}  {fmt(v)}" for k, v in rows]
    per = summary.get("heldout_r_per_neuron")
    if per:
        lines.append(f"{'held-out r per neuron':<{width}}  " + " ".join("n/a" if v is None else f"{v:.2f}" for v in per))
    lines.append("-" * (width + 30))
    return "\n".join(lines)


def write_summary(session_dir: Path, summary: dict) -> Path:
    path = Path(session_dir) / "summary.json"
    path.write_text(json.dumps(summary, indent=2, default=float))
    return path
