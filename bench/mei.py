"""Benchmark: do the model's most exciting images (MEIs) drive the real neurons harder than natural images?

The online model is fitted by a session of the product's engine, in process, on
the virtual clock (bench/sessions.py): random natural pool images, the virtual
cortex's spikes binned in the rig's response window, the model worker training
`--steps-per-trial` steps between trials and `--train-steps` more at the end.
Then the MEI method the rig's [selection] section describes (ImageChooser's
`mei` kind: start from the model's best natural pool image for the neuron, keep
the natural pool's range of mean level and RMS contrast, maximise the members'
mean minus `mei_spread_penalty` spreads; stimulus/synthesis.py) makes one image
per neuron.

The oracle: the same synthesis (same start rule, bound, steps, step size) run on
the virtual cortex's ground truth, which is differentiable (GroundTruth below):
what this method reaches when the model is perfect. Per neuron, on the ground truth:
  - the MEI's rate, the oracle MEI's rate, the best natural pool image's rate
    (the strictest pool reference; MEIs are bounded to natural contrast, so gaudy
    images are not the reference) and the rate of the pool image the model ranks best;
  - relative gain = (MEI - best natural) / (oracle MEI - best natural): 1 means
    the model's MEI gains over the pool as much as the oracle's, 0 no gain, < 0 a loss.
Reported: the share of neurons whose MEI beats the best natural pool image (goal
>= 80%), the median relative gain, and the same for the unconstrained method
(noise start, no bound, no penalty; `--compare-plain`) and any `--variant START,BOUND,PENALTY`
on the same fitted model.

    cortexloop bench mei [--presentations 1500] [--steps 100] [--model KIND] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from acquisition.population import POOL_CAP
from bench.sessions import bench_rig, mean_correlation, predict_mean, store_dir
from controller.progress import progress_bar
from controller.session import run_in_process
from stimulus.synthesis import NaturalRange, best_pool_images, from_pixels, image_stats, most_exciting_images

GOAL_SHARE = 0.8
GOAL_RATIO = 0.7  # median observed/predicted rate of the MEIs (the model's MEIs hold on the neuron)


class GroundTruth:
    """The virtual cortex's true rates as a Predictor with one member, differentiable in the images.

    The same computation as acquisition.population.Population.rates (calibrated drive, divisive
    normalization across the population, rate map), written with torch ops so gradients flow; checked
    against Population.rates on the pool (`check`). The normalization pool needs every neuron, so all
    are computed and the asked-for ones returned.
    """

    n_members = 1
    version = 0

    def __init__(self, population):
        if population.custom_fns:
            raise ValueError("the ground truth of custom neuron types is not differentiable: use built-in types")
        self.pop = population
        self.n_neurons = population.n_neurons
        self.need_amp = any(g.needs_amp for g in population.groups)
        self.need_blob = any(g.needs_blob for g in population.groups)
        self.peak = torch.as_tensor(population.peak_hz, dtype=torch.float64)
        self.base = torch.as_tensor(population._builtin_baseline, dtype=torch.float64)
        self.suppression = torch.as_tensor(population.suppression_index, dtype=torch.float64)

    def rates(self, images: torch.Tensor, neurons=None) -> torch.Tensor:
        x = images if images.shape[1] == 3 else images.expand(-1, 3, -1, -1)
        feats = self.pop.bank.compute(x, self.need_amp, self.need_blob)
        d = (torch.cat([g.drive(feats) for g in self.pop.groups], 1) / self.pop._scale).double()
        cfg = self.pop.cfg
        c2 = cfg.semi_saturation**2
        e, neg = d.clamp_min(0.0), (-d).clamp_min(0.0)
        pool = e.clamp(max=POOL_CAP).pow(2).mean(1, keepdim=True)
        excitation = e.pow(2) / (c2 + e.pow(2) + cfg.normalization_strength * pool)
        suppression = (self.suppression * pool / (c2 + pool) + neg.pow(2) / (c2 + neg.pow(2))).clamp(max=1.0)
        r = (self.base * (1 - suppression) + (self.peak - self.base) * excitation).float()
        r = r if neurons is None else r[:, list(neurons)]
        return r.unsqueeze(0)

    def check(self, images: np.ndarray) -> float:
        """Largest |difference| (Hz) from Population.rates on these uint8 images."""
        with torch.no_grad():
            mine = self.rates(from_pixels(images))[0].double().numpy()
        return float(np.abs(mine - self.pop.rates(images)).max())


def recorded_starts(session_dir) -> np.ndarray:
    """(N, H, W, C) per neuron, the shown image with its highest recorded count in a stored session (the MEI start
    "recorded" of stimulus/selection.py, over the whole session)."""
    from records.store import SessionStore

    store = SessionStore.open(session_dir)
    try:
        rows = store.responses(valid_only=True)
        best = np.asarray(rows["counts"]).argmax(0)
        return np.stack([store.image(rows["image_hash"][i]) for i in best])
    finally:
        store.close()


def synthesize_meis(
    predictor,
    neurons,
    pool: np.ndarray,
    candidates: np.ndarray,
    sel,
    steps: int,
    seed: int,
    bound: NaturalRange | None,
    start: str,
    spread_penalty: float,
    recorded: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """MEIs by the rig's method: (uint8 images, pool index each started from, -1 for noise or a recorded start).
    recorded: per neuron, the shown image it answered most strongly (start "recorded", see recorded_starts)."""
    starts = np.full(len(neurons), -1)
    init = None
    if start == "pool":
        starts = candidates[best_pool_images(predictor, neurons, pool[candidates], spread_penalty)]
        init = pool[starts]
    elif start == "recorded":
        init = recorded[list(neurons)]
    meis = most_exciting_images(
        predictor,
        neurons,
        pool.shape[1:],
        steps=steps,
        seed=seed,
        init=init,
        step_size=sel.synthesis_step_size,
        jitter_px=sel.synthesis_jitter_px,
        spread_penalty=spread_penalty,
        project=bound,
    )
    return meis, starts


def parse_variant(text: str) -> tuple[str, str, float]:
    """ "pool,natural,1" -> ("pool", "natural", 1.0), with a clear error for anything else."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3 or parts[0] not in ("pool", "recorded", "noise") or parts[1] not in ("natural", "none"):
        raise SystemExit(
            f"--variant {text!r}: expected START,BOUND,PENALTY with START pool|recorded|noise, BOUND natural|none"
        )
    try:
        penalty = float(parts[2])
    except ValueError:
        raise SystemExit(f"--variant {text!r}: PENALTY must be a number") from None
    return parts[0], parts[1], penalty


def main(argv: list[str] | None = None) -> int:
    """`cortexloop bench mei` (the module docstring says what it runs and reports); returns the exit code."""
    ap = argparse.ArgumentParser(prog="cortexloop bench mei", description=__doc__.split("\n")[0])
    ap.add_argument("--presentations", type=int, default=1500, help="random natural images shown before synthesis")
    ap.add_argument("--model", default=None, help="model kind (default: the rig file's [model] kind)")
    ap.add_argument("--device", default=None, help="model device (default: the rig file's)")
    ap.add_argument("--train-steps", type=int, default=2000, help="training steps after the data are in")
    ap.add_argument("--steps", type=int, default=100, help="gradient steps per MEI (model and oracle)")
    ap.add_argument(
        "--start",
        choices=["noise", "pool", "recorded"],
        default=None,
        help="MEIs start from noise, the best pool image or the shown image the neuron answered most strongly "
        "(default: the rig's selection.mei_start)",
    )
    ap.add_argument(
        "--spread-penalty",
        type=float,
        default=None,
        help="members' spreads subtracted from their mean (default: the rig's selection.mei_spread_penalty)",
    )
    ap.add_argument(
        "--bound",
        choices=["natural", "none"],
        default=None,
        help="contrast and mean-level bound (default: the rig's selection.contrast_bound)",
    )
    ap.add_argument(
        "--compare-plain",
        action="store_true",
        help="also run the unconstrained method (noise start, no bound, no penalty) on the same model",
    )
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="START,BOUND,PENALTY",
        help="also run this method on the same model, e.g. pool,none,0 (repeatable)",
    )
    ap.add_argument("--neurons", type=int, default=20)
    ap.add_argument("--ensemble-size", type=int, default=4)
    ap.add_argument("--pool-size", type=int, default=2000)
    ap.add_argument("--size-px", type=int, default=32)
    ap.add_argument("--steps-per-trial", type=int, default=20, help="training steps between trials")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rig", help="rig file the session starts from (default rigs/sim.toml)")
    ap.add_argument("--store", help="directory for the session (default: a temporary one)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    images_per_trial = 5
    model_keys = {"ensemble_size": args.ensemble_size, "steps_per_trial": args.steps_per_trial, "seed": args.seed}
    if args.model:
        model_keys["kind"] = args.model
    if args.device:
        model_keys["device"] = args.device
    rig = bench_rig(
        args.rig,
        session={"n_trials": -(-args.presentations // images_per_trial), "seed": args.seed},
        trial={"images_per_trial": images_per_trial},
        images={"size_px": args.size_px, "pool_size": args.pool_size, "test_size": 200, "seed": args.seed},
        cortex={"population": {"n_neurons": args.neurons, "seed": args.seed}},
        model=model_keys,
        selection={"mix": {"random": 1.0}, "seed": args.seed, "hypotheses": []},
    )
    sel = rig.selection
    start = args.start or sel.mei_start
    penalty = sel.mei_spread_penalty if args.spread_penalty is None else args.spread_penalty
    bound_kind = args.bound or sel.contrast_bound
    fit_dir = store_dir(args.store) / "fit"
    with progress_bar("mei: fitting the model through the engine", rig.session.n_trials) as advance:
        summary, parts = run_in_process(rig, fit_dir, after_update=lambda e, t: advance())
    worker, pop = parts.model, parts.source.population
    worker.model.train(args.train_steps)
    predictor = worker.snapshot()
    pools = worker.pools
    accuracy = mean_correlation(predict_mean(predictor, pools.test), pop.rates(pools.test))
    t_fit = time.perf_counter() - t0

    natural = np.flatnonzero(np.asarray(pools.train_kind) == "natural")
    bound = NaturalRange.of(pools.train[natural], sel.contrast_percentiles) if bound_kind == "natural" else None
    oracle = GroundTruth(pop)
    oracle_error_hz = oracle.check(pools.train[natural[:64]])
    neurons = list(range(pop.n_neurons))
    diag = np.arange(pop.n_neurons)

    recorded = recorded_starts(fit_dir)
    t1 = time.perf_counter()
    meis, model_start = synthesize_meis(
        predictor, neurons, pools.train, natural, sel, args.steps, args.seed, bound, start, penalty, recorded
    )
    t_mei = time.perf_counter() - t1
    t2 = time.perf_counter()
    oracle_meis, _ = synthesize_meis(
        oracle, neurons, pools.train, natural, sel, args.steps, args.seed, bound, start, 0.0, recorded
    )
    t_oracle = time.perf_counter() - t2

    true_pool = pop.rates(pools.train[natural])
    best_natural = true_pool.max(0)
    pool_pred = predict_mean(predictor, pools.train[natural])
    model_pick_true = true_pool[pool_pred.argmax(0), diag]
    true_mei = pop.rates(meis)[diag, diag]
    # Observed over predicted, as a session reports it (stimulus/mei_hold.py): the rate the MEI drives the neuron
    # to (here its true rate, what its counts average to) over the members' mean rate the model predicts for it.
    pred_mei = predict_mean(predictor, meis)[diag, diag]
    with np.errstate(divide="ignore", invalid="ignore"):
        obs_over_pred = np.where(pred_mei > 0, true_mei / pred_mei, np.nan)
    true_oracle = pop.rates(oracle_meis)[diag, diag]
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_gain = (true_mei - best_natural) / (true_oracle - best_natural)
    wins = true_mei > best_natural
    oracle_wins = true_oracle > best_natural
    level, contrast = (v.numpy() for v in image_stats(from_pixels(meis)))
    in_bound = bound.contains(from_pixels(meis), tol=2 / 255).numpy() if bound is not None else np.ones(len(meis), bool)

    result = {
        "engine_mode": summary["engine_mode"],
        "model_kind": rig.model.kind,
        "training_steps": (summary.get("model") or {}).get("training_steps"),
        "method": {
            "start": start,
            "spread_penalty": penalty,
            "bound": bound_kind,
            "bound_range": bound.describe() if bound is not None else None,
            "contrast_percentiles": list(sel.contrast_percentiles),
            "steps": args.steps,
            "step_size": sel.synthesis_step_size,
        },
        "share_mei_beats_best_natural": float(wins.mean()),
        "goal_share": GOAL_SHARE,
        "goal_met": bool(wins.mean() >= GOAL_SHARE),
        "share_oracle_mei_beats_best_natural": float(oracle_wins.mean()),
        "median_relative_gain": float(np.nanmedian(rel_gain)),
        "median_observed_over_predicted": float(np.nanmedian(obs_over_pred)),
        "goal_observed_over_predicted": GOAL_RATIO,
        "goal_observed_over_predicted_met": bool(np.nanmedian(obs_over_pred) >= GOAL_RATIO),
        "median_ratio_mei_over_oracle_mei": float(np.median(true_mei / true_oracle)),
        "median_ratio_mei_over_best_natural": float(np.median(true_mei / best_natural)),
        "median_ratio_oracle_over_best_natural": float(np.median(true_oracle / best_natural)),
        "share_mei_beats_model_pick": float((true_mei > model_pick_true).mean()),
        "share_meis_within_bound": float(in_bound.mean()),
        "model_test_accuracy": accuracy,
        "oracle_max_error_hz": oracle_error_hz,
        "seconds_fit": t_fit,
        "seconds_meis": t_mei,
        "seconds_oracle": t_oracle,
    }
    per_neuron = {
        "mei_hz": true_mei.tolist(),
        "oracle_mei_hz": true_oracle.tolist(),
        "best_natural_hz": best_natural.tolist(),
        "model_pick_hz": model_pick_true.tolist(),
        "mei_predicted_hz": pred_mei.tolist(),
        "observed_over_predicted": [None if not np.isfinite(v) else float(v) for v in obs_over_pred],
        "relative_gain": [None if not np.isfinite(g) else float(g) for g in rel_gain],
        "model_start_pool_index": model_start.tolist(),
        "mei_mean_level": level.tolist(),
        "mei_rms_contrast": contrast.tolist(),
    }

    print(
        f"MEIs from the {rig.model.kind} model fitted by the engine ({summary['engine_mode']}) on "
        f"{summary['images_shown']} random natural images (held-out accuracy {accuracy:.3f}); {args.steps} steps "
        f"from {start}, bound {bound_kind}, spread penalty {penalty:g}; oracle = the same synthesis on the ground "
        f"truth (matches the cortex within {oracle_error_hz:.1e} Hz)"
    )
    print(
        f"{'neuron':>6s} {'MEI Hz':>8s} {'oracle Hz':>10s} {'best natural Hz':>16s} {'model pick Hz':>14s} "
        f"{'rel. gain':>9s} {'MEI wins':>8s}"
    )
    for n in neurons:
        print(
            f"{n:6d} {true_mei[n]:8.1f} {true_oracle[n]:10.1f} {best_natural[n]:16.1f} {model_pick_true[n]:14.1f} "
            f"{rel_gain[n]:9.2f} {'yes' if wins[n] else 'no':>8s}"
        )
    print(
        f"MEI beats the best natural image for {wins.mean():.0%} of neurons (goal >= {GOAL_SHARE:.0%}: "
        f"{'met' if result['goal_met'] else 'MISSED'}); the oracle's for {oracle_wins.mean():.0%}; median relative "
        f"gain {result['median_relative_gain']:.2f}; median MEI / oracle MEI "
        f"{result['median_ratio_mei_over_oracle_mei']:.2f}; median observed/predicted (true rate over the model's "
        f"prediction) {result['median_observed_over_predicted']:.2f} (goal >= {GOAL_RATIO:g}: "
        f"{'met' if result['goal_observed_over_predicted_met'] else 'MISSED'}); fit {t_fit:.0f} s, MEIs {t_mei:.0f} s, oracle "
        f"{t_oracle:.0f} s"
    )

    variants = []
    for text in (["noise,none,0"] if args.compare_plain else []) + args.variant:
        v_start, v_bound, v_penalty = parse_variant(text)
        t3 = time.perf_counter()
        v_range = NaturalRange.of(pools.train[natural], sel.contrast_percentiles) if v_bound == "natural" else None
        v_meis, _ = synthesize_meis(
            predictor, neurons, pools.train, natural, sel, args.steps, args.seed, v_range, v_start, v_penalty, recorded
        )
        v_true = pop.rates(v_meis)[diag, diag]
        with np.errstate(divide="ignore", invalid="ignore"):
            v_gain = (v_true - best_natural) / (true_oracle - best_natural)
        variants.append(
            {
                "start": v_start,
                "bound": v_bound,
                "spread_penalty": v_penalty,
                "share_mei_beats_best_natural": float((v_true > best_natural).mean()),
                "share_mei_beats_model_pick": float((v_true > model_pick_true).mean()),
                "median_relative_gain": float(np.nanmedian(v_gain)),
                "median_ratio_mei_over_best_natural": float(np.median(v_true / best_natural)),
                "mei_hz": v_true.tolist(),
                "seconds": time.perf_counter() - t3,
            }
        )
        print(
            f"variant start {v_start}, bound {v_bound}, spread penalty {v_penalty:g}: MEI beats the best natural "
            f"image for {variants[-1]['share_mei_beats_best_natural']:.0%} of neurons; median relative gain "
            f"{variants[-1]['median_relative_gain']:.2f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "benchmark": "mei",
                    "engine_mode": summary["engine_mode"],
                    "args": vars(args),
                    "summary": result,
                    "variants": variants,
                    "per_neuron": per_neuron,
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
