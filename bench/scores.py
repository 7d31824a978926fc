"""Benchmark: what each selection objective rewards, on a model fitted by the engine.

A session of the product's engine (in process, virtual clock, bench/sessions.py)
shows random natural pool images and trains the rig's model on the virtual
cortex's spikes. Then every training-pool image (natural and gaudy) is scored by
each objective the rig file offers, exactly as ImageChooser scores candidates
(EPIG against the chooser's own reference set of natural pool images), and for
each objective the benchmark reports:
  - the correlation across pool images between the score and the image's RMS contrast,
  - the share of gaudy images among the top `--top` images (the pool is `gaudy_share` gaudy),
  - among natural images only (what candidates_from = "natural" scores): the correlation with
    RMS contrast, and where the top `--top` natural images sit in the natural pool's contrast
    distribution (percentile; 50 = no preference for contrast),
  - the correlation between the score and the image's true information value: how much a
    presentation would reduce the members' disagreement is unknowable, so the proxy is
    the ground truth's own question, the squared error of the members' mean prediction on
    the image (large where the model is wrong; a useful objective should prefer images
    whose responses the model gets wrong).

    python -m bench.scores [--presentations 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from bench.sessions import bench_rig, mean_correlation, predict_mean, store_dir
from controller.progress import progress_bar
from controller.session import run_in_process
from stimulus.objectives import OBJECTIVES
from stimulus.selection import ImageChooser
from stimulus.synthesis import from_pixels, image_stats


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.scores` (the module docstring says what it runs and reports); returns the exit code."""
    ap = argparse.ArgumentParser(prog="python -m bench.scores", description=__doc__.split("\n")[0])
    ap.add_argument("--presentations", type=int, default=300, help="random natural images shown before scoring")
    ap.add_argument("--model", default=None, help="model kind (default: the rig file's)")
    ap.add_argument("--neurons", type=int, default=20)
    ap.add_argument("--pool-size", type=int, default=2000)
    ap.add_argument("--steps-per-trial", type=int, default=20)
    ap.add_argument("--top", type=int, default=50, help="how many top-scored images the gaudy share is taken over")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rig", help="rig file (default rigs/sim.toml)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    model = {"steps_per_trial": args.steps_per_trial, "seed": args.seed}
    if args.model:
        model["kind"] = args.model
    rig = bench_rig(
        args.rig,
        session={"n_trials": -(-args.presentations // 5), "seed": args.seed},
        trial={"images_per_trial": 5},
        images={"pool_size": args.pool_size, "seed": args.seed},
        cortex={"population": {"n_neurons": args.neurons, "seed": args.seed}},
        model=model,
        selection={"mix": {"random": 1.0}, "seed": args.seed, "hypotheses": []},
    )
    t0 = time.perf_counter()
    with progress_bar("scores: fitting the model through the engine", rig.session.n_trials) as advance:
        summary, parts = run_in_process(rig, store_dir(None) / "fit", after_update=lambda e, t: advance())
    worker, pop = parts.model, parts.source.population
    predictor = worker.snapshot()
    pools = worker.pools
    accuracy = mean_correlation(predict_mean(predictor, pools.test), pop.rates(pools.test))
    gaudy = np.asarray(pools.train_kind) == "gaudy"
    x_all = from_pixels(pools.train)
    contrast = image_stats(x_all)[1].numpy()
    err = ((predict_mean(predictor, pools.train) - pop.rates(pools.train)) ** 2).sum(1)
    results = {}
    for objective in OBJECTIVES:
        chooser = ImageChooser(
            rig.selection.model_copy(update={"objective": objective}), pools, seed=args.seed, window_s=worker.window_s
        )
        score_fn = chooser._objective(predictor)
        with torch.no_grad():
            scores = (
                torch.cat([score_fn(predictor.rates(x_all[s : s + 256])).sum(1) for s in range(0, len(x_all), 256)])
                .double()
                .numpy()
            )
        top = np.argsort(-scores)[: args.top]
        nat = np.flatnonzero(~gaudy)
        top_nat = nat[np.argsort(-scores[nat])[: args.top]]
        # Where the top natural images sit in the natural pool's contrast distribution (50% = no preference).
        contrast_rank = (contrast[nat][None, :] < contrast[top_nat][:, None]).mean(1)
        results[objective] = {
            "corr_with_rms_contrast": float(np.corrcoef(scores, contrast)[0, 1]),
            "corr_with_rms_contrast_natural_only": float(np.corrcoef(scores[nat], contrast[nat])[0, 1]),
            "top_natural_contrast_percentile": float(100 * contrast_rank.mean()),
            "gaudy_share_of_top": float(gaudy[top].mean()),
            "corr_with_model_error": float(np.corrcoef(scores, err)[0, 1]),
            "corr_with_model_error_natural_only": float(np.corrcoef(scores[~gaudy], err[~gaudy])[0, 1]),
        }
    print(
        f"{rig.model.kind} model fitted by the engine on {summary['images_shown']} random natural images "
        f"(held-out accuracy {accuracy:.3f}); pool {len(gaudy)} images, {gaudy.mean():.0%} gaudy; "
        f"{time.perf_counter() - t0:.0f} s"
    )
    print(
        f"{'objective':>13s} {'r(contrast)':>12s} {'gaudy in top ' + str(args.top):>16s} {'r(model error)':>15s} "
        f"{'natural only: r(contrast)':>26s} {'top contrast pct':>17s} {'r(error)':>9s}"
    )
    for k, v in results.items():
        print(
            f"{k:>13s} {v['corr_with_rms_contrast']:12.2f} {v['gaudy_share_of_top']:16.0%} "
            f"{v['corr_with_model_error']:15.2f} {v['corr_with_rms_contrast_natural_only']:26.2f} "
            f"{v['top_natural_contrast_percentile']:17.0f} {v['corr_with_model_error_natural_only']:9.2f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "benchmark": "scores",
                    "args": vars(args),
                    "model_kind": rig.model.kind,
                    "model_test_accuracy": accuracy,
                    "images_shown": summary["images_shown"],
                    "objectives": results,
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
