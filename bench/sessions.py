"""What the selection benchmarks share: sessions of the product's engine, in process, on a virtual clock.

Every arm of a benchmark is a real session (controller.session.run_in_process):
the same engine, protocol, virtual cortex, presenter, model worker and image
chooser a rig runs, on the virtual clock, so the training budget is counted in
steps and runs are reproducible. Arms differ only in the rig-file keys the
benchmark says (the selection mix, the hypotheses), with paired seeds. The statistics they report
(bootstrap intervals over seeds, trials-to-target, binomial intervals) are in bench/stats.py.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from controller.config import RigConfig, load_rig, with_overrides
from models.metrics import correlation
from models.worker import ModelWorker
from stimulus.synthesis import from_pixels

DEFAULT_RIG = Path(__file__).resolve().parent.parent / "rigs" / "sim.toml"


def bench_rig(rig_path: str | Path | None = None, **sections: dict) -> RigConfig:
    """The rig a benchmark runs: the given rig file (default rigs/sim.toml) on a virtual clock, headless, no
    fixation breaks (arms compare equal numbers of trials), with the benchmark's keys on top."""
    rig = load_rig(rig_path or DEFAULT_RIG)
    base = {"session": {"speed": "max"}, "display": {"presenter": "headless"}, "fixation": {"source": "none"}}
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return with_overrides(rig, **base)


def store_dir(arg: str | None) -> Path:
    """Where the benchmark's sessions are stored (a temporary directory unless --store says)."""
    return Path(arg) if arg else Path(tempfile.mkdtemp(prefix="cortexloop-bench-"))


def model_worker(engine) -> ModelWorker:
    """The in-process model part of a benchmark session (benchmarks run in process only)."""
    worker = engine.parts.model
    if not isinstance(worker, ModelWorker):
        raise TypeError(f"benchmarks look at an in-process ModelWorker, not {type(worker).__name__}")
    return worker


def predict_mean(predictor, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Members' mean rates (n, N) for uint8 images, without gradients."""
    out = []
    with torch.no_grad():
        for s in range(0, len(images), batch):
            out.append(predictor.rates(from_pixels(images[s : s + batch])).mean(0).double().numpy())
    return np.concatenate(out)


def mean_correlation(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean over neurons of the Pearson correlation across images (a constant prediction scores 0)."""
    return float(correlation(pred, true).mean())
